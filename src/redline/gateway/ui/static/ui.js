// redline dashboard: draws the charts whose Chart.js configs the server embeds in #chart-data, and asks for
// confirmation on forms marked data-confirm. No build step; Chart.js is vendored next to this file.
(function () {
  "use strict";
  window.redlineCharts = {};

  function money(v) { return "$" + Number(v).toLocaleString(undefined, {maximumFractionDigits: 4}); }
  function plain(v) { return Number(v).toLocaleString(); }

  function draw() {
    var el = document.getElementById("chart-data");
    if (!el || typeof Chart === "undefined") { return; }
    var specs = JSON.parse(el.textContent);
    Chart.defaults.font.family = "system-ui, -apple-system, 'Segoe UI', sans-serif";
    Chart.defaults.color = "#334155";
    document.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
      var spec = specs[canvas.dataset.chart];
      if (!spec) { return; }
      var fmt = spec.unit === "usd" ? money : plain;
      var round = spec.type === "doughnut" || spec.type === "pie";
      var options = {
        responsive: true, maintainAspectRatio: false, animation: false,
        plugins: {
          legend: {display: round || spec.data.datasets.length > 1, position: round ? "right" : "top"},
          tooltip: {callbacks: {label: function (c) {
            var v = c.parsed && typeof c.parsed === "object" ? (spec.horizontal ? c.parsed.x : c.parsed.y) : c.parsed;
            return (c.dataset.label ? c.dataset.label + ": " : "") + fmt(v);
          }}}
        }
      };
      if (!round) {
        var value = {beginAtZero: true, stacked: !!spec.stacked, ticks: {callback: function (v) { return fmt(v); }}};
        var category = {stacked: !!spec.stacked, ticks: {autoSkip: true, maxRotation: 0}};
        options.indexAxis = spec.horizontal ? "y" : "x";
        options.scales = spec.horizontal ? {x: value, y: category} : {x: category, y: value};
      }
      if (!spec.data.labels.length) {
        canvas.parentNode.classList.add("empty");
      }
      window.redlineCharts[canvas.dataset.chart] = new Chart(canvas, {type: spec.type, data: spec.data, options: options});
    });
  }

  function confirmForms() {
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (ev) {
        if (!window.confirm(form.dataset.confirm)) { ev.preventDefault(); }
      });
    });
  }

  function autoFilter() {
    var f = document.getElementById("event-filters");
    if (!f) { return; }
    f.querySelectorAll("select").forEach(function (s) {
      s.addEventListener("change", function () { f.requestSubmit ? f.requestSubmit() : f.submit(); });
    });
  }

  document.addEventListener("DOMContentLoaded", function () { draw(); confirmForms(); autoFilter(); });
}());
