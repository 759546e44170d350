/* redline report: charts, filtering and sorting. Data comes from the JSON island; text goes in with textContent. */
(function () {
  "use strict";
  var SEVERITIES = ["critical", "high", "medium", "low", "info"];
  var SEV_RANK = { critical: 5, high: 4, medium: 3, low: 2, info: 1 };
  var CONF_RANK = { high: 3, medium: 2, low: 1 };
  var PAGE = 500;
  var css = getComputedStyle(document.documentElement);
  function color(name, fallback) { return (css.getPropertyValue("--" + name) || "").trim() || fallback; }
  var SEV_COLOR = {}, KIND_COLOR = {};
  SEVERITIES.forEach(function (s) { SEV_COLOR[s] = color(s, "#888"); });
  ["secret", "pii", "chat", "probe"].forEach(function (k) { KIND_COLOR[k] = color(k, "#5b6474"); });

  var data = JSON.parse(document.getElementById("redline-data").textContent);
  var rows = data.findings;
  var state = { text: "", sev: "", kind: "", type: "", srcType: "", sort: { key: "sev", dir: -1 },
                srcSort: { key: "n", dir: -1 }, shown: PAGE };
  var api = { data: data, state: state, charts: {}, filtered: rows, errors: [] };
  window.redline = api;

  function $(id) { return document.getElementById(id); }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function uniq(key) {
    var seen = {}, out = [];
    rows.forEach(function (r) { if (!seen[r[key]]) { seen[r[key]] = 1; out.push(r[key]); } });
    return out;
  }
  function fillSelect(id, values) {
    var sel = $(id);
    values.forEach(function (v) { var o = el("option", null, v); o.value = v; sel.appendChild(o); });
  }

  // -- filtering and sorting ------------------------------------------------------------------------------------
  function matches(r) {
    if (state.sev && r.sev !== state.sev) return false;
    if (state.kind && r.kind !== state.kind) return false;
    if (state.type && r.type !== state.type) return false;
    if (state.srcType && r.srcType !== state.srcType) return false;
    if (state.text) {
      var hay = (r.src + "\n" + r.loc + "\n" + r.type + "\n" + r.name + "\n" + r.fp + "\n" + r.snip + "\n" +
                 r.kind).toLowerCase();
      var words = state.text.toLowerCase().split(/\s+/);
      for (var i = 0; i < words.length; i++) if (words[i] && hay.indexOf(words[i]) < 0) return false;
    }
    return true;
  }
  function sortValue(r, key) {
    if (key === "sev") return SEV_RANK[r.sev] || 0;
    if (key === "conf") return CONF_RANK[r.conf] || 0;
    if (key === "loc") { var n = parseInt(r.loc, 10); return isNaN(n) ? r.loc : n; }
    return r[key];
  }
  function compare(a, b, key, dir) {
    var x = sortValue(a, key), y = sortValue(b, key);
    if (typeof x === "number" && typeof y === "number") { if (x !== y) return (x - y) * dir; }
    else {
      var c = String(x).localeCompare(String(y), undefined, { numeric: true });
      if (c) return c * dir;
    }
    return 0;
  }

  function renderFindings() {
    var list = rows.filter(matches);
    var key = state.sort.key, dir = state.sort.dir;
    list = list.map(function (r, i) { return [r, i]; });
    list.sort(function (a, b) { return compare(a[0], b[0], key, dir) || a[1] - b[1]; });
    list = list.map(function (p) { return p[0]; });
    api.filtered = list;
    var tbody = $("findings-table").tBodies[0];
    var frag = document.createDocumentFragment();
    list.slice(0, state.shown).forEach(function (r) {
      var tr = el("tr");
      var td = el("td"); td.appendChild(el("span", "sev sev-" + r.sev, r.sev)); tr.appendChild(td);
      td = el("td"); td.appendChild(el("span", "kind kind-" + r.kind, r.kind)); tr.appendChild(td);
      td = el("td", null, r.type); td.title = r.name; tr.appendChild(td);
      tr.appendChild(el("td", "src", r.src));
      tr.appendChild(el("td", null, r.loc));
      tr.appendChild(el("td", null, r.conf));
      tr.appendChild(el("td", "snip", r.snip));
      tr.appendChild(el("td", "fp", r.fp));
      frag.appendChild(tr);
    });
    tbody.textContent = "";
    tbody.appendChild(frag);
    var more = $("f-more");
    more.hidden = list.length <= state.shown;
    more.textContent = "Show " + Math.min(PAGE, list.length - state.shown) + " more";
    $("f-count").textContent = list.length === rows.length
      ? rows.length + " finding(s)"
      : "showing " + list.length + " of " + rows.length + " finding(s)";
    renderSources(list);
    markSorted($("findings-table"), state.sort);
  }

  function renderSources(list) {
    var by = {}, order = [];
    list.forEach(function (r) {
      var s = by[r.src];
      if (!s) {
        s = by[r.src] = { src: r.src, srcType: r.srcType, n: 0, critical: 0, high: 0, medium: 0, low: 0, info: 0,
                          kindSet: {} };
        order.push(s);
      }
      s.n += 1; s[r.sev] += 1; s.kindSet[r.kind] = 1;
    });
    order.forEach(function (s) { s.kinds = Object.keys(s.kindSet).sort().join(", "); });
    var key = state.srcSort.key, dir = state.srcSort.dir;
    order.sort(function (a, b) {
      var x = a[key], y = b[key];
      var c = typeof x === "number" ? x - y : String(x).localeCompare(String(y), undefined, { numeric: true });
      return c * dir || a.src.localeCompare(b.src);
    });
    var tbody = $("sources-table").tBodies[0];
    var frag = document.createDocumentFragment();
    order.forEach(function (s) {
      var tr = el("tr");
      var td = el("td", "src");
      var a = el("a", null, s.src); a.href = "#findings"; a.title = "show only this source";
      a.addEventListener("click", function (ev) {
        ev.preventDefault(); $("f-text").value = s.src; state.text = s.src; state.shown = PAGE; renderFindings();
      });
      td.appendChild(a); tr.appendChild(td);
      tr.appendChild(el("td", null, s.srcType));
      ["n", "critical", "high", "medium", "low"].forEach(function (k) { tr.appendChild(el("td", "num", s[k])); });
      tr.appendChild(el("td", null, s.kinds));
      frag.appendChild(tr);
    });
    tbody.textContent = "";
    tbody.appendChild(frag);
    markSorted($("sources-table"), state.srcSort);
  }

  function markSorted(table, sort) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
      if (th.dataset.key === sort.key) th.setAttribute("aria-sort", sort.dir > 0 ? "ascending" : "descending");
      else th.removeAttribute("aria-sort");
    });
  }
  function sortable(table, sort, render) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
      th.tabIndex = 0;
      function go() {
        var key = th.dataset.key;
        if (sort.key === key) sort.dir = -sort.dir;
        else { sort.key = key; sort.dir = th.classList.contains("num") || key === "sev" || key === "conf" ? -1 : 1; }
        render();
      }
      th.addEventListener("click", go);
      th.addEventListener("keydown", function (ev) { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); go(); } });
    });
  }

  api.setFilter = function (name, value) {
    state[name] = value || "";
    var ids = { text: "f-text", sev: "f-sev", kind: "f-kind", type: "f-type", srcType: "f-srctype" };
    if (ids[name]) $(ids[name]).value = state[name];
    state.shown = PAGE;
    renderFindings();
    return api.filtered.length;
  };

  function setupControls() {
    fillSelect("f-sev", SEVERITIES.filter(function (s) { return rows.some(function (r) { return r.sev === s; }); }));
    fillSelect("f-kind", uniq("kind").sort());
    fillSelect("f-type", uniq("type").sort());
    var timer = null;
    $("f-text").addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(function () { state.text = $("f-text").value.trim(); state.shown = PAGE; renderFindings(); },
                         120);
    });
    [["f-sev", "sev"], ["f-kind", "kind"], ["f-type", "type"], ["f-srctype", "srcType"]].forEach(function (p) {
      $(p[0]).addEventListener("change", function () { state[p[1]] = $(p[0]).value; state.shown = PAGE; renderFindings(); });
    });
    $("f-reset").addEventListener("click", function () {
      ["text", "sev", "kind", "type", "srcType"].forEach(function (k) { state[k] = ""; });
      ["f-text", "f-sev", "f-kind", "f-type", "f-srctype"].forEach(function (id) { $(id).value = ""; });
      state.shown = PAGE;
      renderFindings();
    });
    $("f-more").addEventListener("click", function () { state.shown += PAGE; renderFindings(); });
    sortable($("findings-table"), state.sort, renderFindings);
    sortable($("sources-table"), state.srcSort, function () { renderSources(api.filtered); });
  }

  // -- charts ---------------------------------------------------------------------------------------------------
  function charts() {
    if (typeof window.Chart !== "function") { api.errors.push("Chart.js is missing"); return; }
    var Chart = window.Chart;
    Chart.defaults.animation = false;
    Chart.defaults.responsive = true;
    Chart.defaults.maintainAspectRatio = false;
    Chart.defaults.datasets.bar.maxBarThickness = 36;
    Chart.defaults.font.family = css.getPropertyValue("font-family") || "sans-serif";
    var c = data.charts;
    function filterOnClick(field, labels) {
      return function (ev, elements) {
        if (!elements.length) return;
        var label = labels[elements[0].index];
        if (field === "type" && label === "(other types)") return;
        api.setFilter(field, label);
        $("findings").scrollIntoView();
      };
    }
    api.charts.severity = new Chart($("chart-severity"), {
      type: "doughnut",
      data: { labels: c.severity.labels,
              datasets: [{ data: c.severity.data, backgroundColor: c.severity.labels.map(function (s) { return SEV_COLOR[s]; }) }] },
      options: { plugins: { legend: { position: "right" } }, onClick: filterOnClick("sev", c.severity.labels) }
    });
    api.charts.kinds = new Chart($("chart-kinds"), {
      type: "bar",
      data: { labels: c.kinds.labels,
              datasets: SEVERITIES.map(function (s) { return { label: s, data: c.kinds.series[s], backgroundColor: SEV_COLOR[s] }; })
                .filter(function (d) { return d.data.some(function (v) { return v > 0; }); }) },
      options: { scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } },
                 onClick: filterOnClick("kind", c.kinds.labels) }
    });
    api.charts.types = new Chart($("chart-types"), {
      type: "bar",
      data: { labels: c.types.labels,
              datasets: [{ label: "findings", data: c.types.data,
                           backgroundColor: c.types.kinds.map(function (k) { return KIND_COLOR[k] || "#8a94a6"; }) }] },
      options: { indexAxis: "y", plugins: { legend: { display: false } },
                 scales: { x: { beginAtZero: true, ticks: { precision: 0 } } },
                 onClick: filterOnClick("type", c.types.labels) }
    });
    var short = c.sources.labels.map(function (s) { return s.length > 42 ? "…" + s.slice(-41) : s; });
    api.charts.sources = new Chart($("chart-sources"), {
      type: "bar",
      data: { labels: short, datasets: [{ label: "findings", data: c.sources.data, backgroundColor: "#1864ab" }] },
      options: { indexAxis: "y", plugins: { legend: { display: false },
                                            tooltip: { callbacks: { title: function (items) { return c.sources.labels[items[0].dataIndex]; } } } },
                 scales: { x: { beginAtZero: true, ticks: { precision: 0 } } },
                 onClick: filterOnClick("text", c.sources.labels) }
    });
  }

  setupControls();
  renderFindings();
  try { charts(); } catch (err) { api.errors.push(String(err)); throw err; }
  api.ready = true;
  document.documentElement.setAttribute("data-redline-ready", "1");
})();
