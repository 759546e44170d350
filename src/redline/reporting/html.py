"""A self-contained HTML report: one file that opens offline and makes no network request.

Everything comes from records (see ``redline.report``) and a ``Summary``. Raw values never reach the page: a
record's ``value`` (``--reveal``) is dropped, snippets are the engine's redacted ones, findings are identified by
their fingerprint. Text from records is escaped twice over: server-rendered parts with ``html.escape``, and the
findings table is built by the page script from a JSON island whose ``<``, ``>`` and ``&`` are ``\\u``-escaped and
whose strings are put in the page with ``textContent`` only.

Charts are drawn by Chart.js (MIT, vendored from the npm package under ``static/``), inlined into the page.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from redline import __version__
from redline.engine import Rule
from redline.report import Summary
from redline.reporting.model import (
    SEVERITIES,
    SEVERITY_RANK,
    fix_for,
    is_probe,
    kind_of,
    location_of,
    rule_index,
    safe_text,
    severity,
    source_of,
    source_type,
    type_of,
)

CHART_JS = "chart.umd.min.js"
MAX_SNIPPET = 160
MAX_CHAT_ROWS = 200
TOP_TYPES = 15
TOP_SOURCES = 10


def _static(name: str) -> str:
    return (resources.files("redline.reporting") / "static" / name).read_text(encoding="utf-8")


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _json_island(data: Any) -> str:
    """JSON that is safe inside ``<script type="application/json">``: no ``</script>``, no ``<!--``."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return (text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _script_safe(js: str) -> str:
    low = js.lower()
    if "</script" in low or "<!--" in low:
        raise ValueError("embedded script contains </script or <!--; it cannot be inlined safely")
    return js


def _snippet(rec: Mapping[str, Any]) -> str:
    text = rec.get("snippet")
    if not isinstance(text, str) or not text:
        evidence = rec.get("evidence")
        if isinstance(evidence, list) and evidence:
            text = "; ".join(str(e) for e in evidence)
        else:
            text = str(rec.get("detail") or rec.get("verdict") or "")
    text = safe_text(text)
    return text if len(text) <= MAX_SNIPPET else text[:MAX_SNIPPET - 1] + "…"


def _size(n: int) -> str:
    if n < 1000:
        return f"{n} B"
    for unit, div in (("kB", 1e3), ("MB", 1e6), ("GB", 1e9)):
        if n < div * 1000 or unit == "GB":
            return f"{n / div:.1f} {unit}"
    return f"{n} B"  # pragma: no cover


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.2f} s"
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s} s" if m < 60 else f"{m // 60} h {m % 60} min"


def _when(iso: str | None) -> str:
    if not iso:
        return "not recorded"
    try:
        dt = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC)
        return dt.strftime("%Y-%m-%d %H:%M:%S UTC")
    return dt.strftime("%Y-%m-%d %H:%M:%S")


# Probe results that say nothing is reachable are counted in the summary, not listed as findings.
_QUIET_VERDICTS = ("closed", "timeout", "not-that-service")


def _fingerprint(rec: Mapping[str, Any]) -> str:
    fp = rec.get("fingerprint")
    if isinstance(fp, str) and fp:
        return fp
    if is_probe(rec):  # an endpoint is not secret; a short hash keeps the column uniform
        key = f"{source_of(rec)}/{rec.get('service')}/{rec.get('verdict')}"
        return hashlib.sha256(key.encode()).hexdigest()[:24]
    return ""


def prepare(records: Iterable[Mapping[str, Any]], rules: Mapping[str, Rule]
            ) -> tuple[list[Mapping[str, Any]], Counter[str]]:
    """The records a report lists, and the probe verdict counts (all endpoints, listed or not).

    A probe result is listed when something answered (open, auth-required, restricted, or an identified service);
    the sampled findings of ``--inspect`` become database-like records located at ``endpoint table.column``.
    """
    out: list[Mapping[str, Any]] = []
    verdicts: Counter[str] = Counter()
    for rec in records:
        if not isinstance(rec, Mapping):
            continue
        if not is_probe(rec):
            out.append(rec)
            continue
        verdict = str(rec.get("verdict", ""))
        verdicts[verdict] += 1
        if verdict in _QUIET_VERDICTS and not (verdict == "not-that-service" and rec.get("service")):
            continue
        out.append({**rec, "kind": "probe"})
        inspect = rec.get("inspect")
        if not isinstance(inspect, Mapping):
            continue
        for tab in inspect.get("tables") or ():
            for ex in tab.get("examples") or () if isinstance(tab, Mapping) else ():
                typ = str(ex.get("type", "unknown"))
                rule = rules.get(typ)
                kind = rule.kind if rule else ("chat" if typ.startswith("chat") else "secret")
                out.append({"table": f"{source_of(rec)} {tab.get('table', '?')}", "column": ex.get("column", ""),
                            "kind": kind, "type": typ, "confidence": "medium",
                            "fingerprint": str(ex.get("fingerprint", "")), "snippet": str(ex.get("snippet", "")),
                            "via": "probe --inspect (one example per type and column)"})
    return out, verdicts


def summary_from_records(records: Sequence[Mapping[str, Any]]) -> Summary:
    """A summary for records read back from a file (no timing or byte counts were saved with them)."""
    summary = Summary()
    summary.sources = len({source_of(r) for r in records})
    for rec in records:
        summary.by_kind[kind_of(rec)] += 1
        summary.by_type[type_of(rec)] += 1
    return summary


def build_data(records: Sequence[Mapping[str, Any]], rules: Mapping[str, Rule]) -> dict[str, Any]:
    """The page's data: one compact row per finding and the chart series. No raw values."""
    rows: list[dict[str, Any]] = []
    sev_count: Counter[str] = Counter()
    kind_sev: dict[str, Counter[str]] = defaultdict(Counter)
    type_count: Counter[str] = Counter()
    type_kind: dict[str, str] = {}
    source_count: Counter[str] = Counter()
    for rec in records:
        sev, kind, typ, src = severity(rec), kind_of(rec), type_of(rec), source_of(rec)
        sev_count[sev] += 1
        kind_sev[kind][sev] += 1
        type_count[typ] += 1
        type_kind.setdefault(typ, kind)
        source_count[src] += 1
        rule = rules.get(typ)
        rows.append({
            "sev": sev, "kind": kind, "type": typ, "name": rule.name if rule else typ,
            "src": src, "srcType": source_type(rec), "loc": location_of(rec),
            "conf": str(rec.get("confidence") or rec.get("verdict") or ""), "fp": _fingerprint(rec),
            "snip": _snippet(rec),
        })
    rows.sort(key=lambda r: (-SEVERITY_RANK[r["sev"]], r["src"], r["loc"]))
    kinds = sorted(kind_sev, key=lambda k: -sum(kind_sev[k].values()))
    top_types = type_count.most_common(TOP_TYPES)
    other_types = sum(type_count.values()) - sum(n for _, n in top_types)
    top_sources = source_count.most_common(TOP_SOURCES)
    return {
        "findings": rows,
        "charts": {
            "severity": {"labels": list(SEVERITIES), "data": [sev_count[s] for s in SEVERITIES]},
            "kinds": {"labels": kinds, "series": {s: [kind_sev[k][s] for k in kinds] for s in SEVERITIES}},
            "types": {"labels": [t for t, _ in top_types] + (["(other types)"] if other_types else []),
                      "data": [n for _, n in top_types] + ([other_types] if other_types else []),
                      "kinds": [type_kind[t] for t, _ in top_types] + (["other"] if other_types else [])},
            "sources": {"labels": [s for s, _ in top_sources], "data": [n for _, n in top_sources]},
        },
    }


def _summary_section(summary: Summary, records: Sequence[Mapping[str, Any]], input_name: str | None,
                     generated_at: datetime, verdicts: Counter[str] | None = None) -> str:
    targets = [safe_text(t) for t in getattr(summary, "targets", None) or []]
    if targets:
        shown = ", ".join(targets[:5]) + (f" and {len(targets) - 5} more" if len(targets) > 5 else "")
    elif input_name:
        shown = f"findings read from {input_name}"
    else:
        shown = "not recorded"
    read_only = getattr(summary, "read_only", None)
    mode = {True: "read-only", False: "not read-only (the scan could change what it touched)",
            None: "not recorded"}[read_only]
    sev = Counter(severity(r) for r in records)
    source_types = Counter(source_type(r) for r in {source_of(r): r for r in records}.values())
    what = ", ".join(f"{n} {t}{'s' if n != 1 else ''}" for t, n in source_types.most_common()) or "no source"
    cards = [
        ("Findings", f"{len(records):,}", f"in {what}"),
        ("Critical / high", f"{sev['critical']:,} / {sev['high']:,}", "see severity below"),
        ("Sources scanned", f"{summary.sources:,}",
         _size(summary.bytes) + (f", {len(summary.skipped)} skipped" if summary.skipped else "")
         if summary.bytes or summary.skipped else "byte count not recorded"),
        ("Duration", _duration(summary.seconds) if summary.seconds else "not recorded", ""),
    ]
    if verdicts:
        cards.insert(2, ("Endpoints probed", f"{sum(verdicts.values()):,}",
                         f"{verdicts.get('open', 0):,} open without authentication"))
    card_html = "".join(
        f'<div class="card"><div class="card-label">{_e(label)}</div><div class="card-value">{_e(value)}</div>'
        f'<div class="card-note">{_e(note)}</div></div>' for label, value, note in cards)
    facts = [
        ("Scanned", shown),
        ("Started", _when(getattr(summary, "started_at", None))),
        ("Report generated", _when(generated_at.isoformat())),
        ("Mode", mode),
        ("By kind", ", ".join(f"{k}: {n:,}" for k, n in sorted(summary.by_kind.items())) or "none"),
        ("redline", __version__),
    ]
    if verdicts:
        facts.insert(5, ("Probe verdicts", ", ".join(f"{v}: {n:,}" for v, n in verdicts.most_common())))
    fact_html = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in facts)
    extra = ""
    if summary.errors:
        extra += (f'<details class="problems"><summary>{len(summary.errors)} error(s) during the scan</summary><ul>'
                  + "".join(f"<li>{_e(safe_text(err))}</li>" for err in summary.errors[:200]) + "</ul></details>")
    if summary.skipped:
        extra += (f'<details class="problems"><summary>{len(summary.skipped)} source(s) skipped</summary><ul>'
                  + "".join(f"<li>{_e(safe_text(p))}: {_e(r)}</li>" for p, r in summary.skipped[:200])
                  + "</ul></details>")
    return (f'<section id="summary"><div class="cards">{card_html}</div>'
            f'<table class="facts" id="facts">{fact_html}</table>{extra}</section>')


def _fixes_section(records: Sequence[Mapping[str, Any]], rules: Mapping[str, Rule]) -> str:
    groups: dict[tuple[str, str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for rec in records:
        groups[(kind_of(rec), type_of(rec), str(rec.get("verdict", "")) if is_probe(rec) else "")].append(rec)
    if not groups:
        return '<p class="empty">Nothing to fix: no findings.</p>'
    rows = []
    ordered = sorted(groups.items(), key=lambda kv: (-max(SEVERITY_RANK[severity(r)] for r in kv[1]),
                                                     -len(kv[1]), kv[0][1], kv[0][2]))
    for (kind, typ, verdict), recs in ordered:
        worst = max((severity(r) for r in recs), key=lambda s: SEVERITY_RANK[s])
        fix = fix_for(typ, kind, rules, recs[0])
        name = f"{fix.name} ({verdict})" if verdict else fix.name
        follow = f' <span class="follow-up">{_e(fix.follow_up)}</span>' if fix.follow_up else ""
        rows.append(
            f'<tr data-type="{_e(typ)}"><td><span class="sev sev-{_e(worst)}">{_e(worst)}</span></td>'
            f'<td><span class="kind kind-{_e(kind)}">{_e(kind)}</span></td>'
            f'<td><div class="type-name">{_e(name)}</div><code>{_e(typ)}</code></td>'
            f'<td class="num">{len(recs):,}</td><td class="fix">{_e(fix.text)}{follow}</td></tr>')
    return ('<table class="data" id="fixes-table"><thead><tr><th>worst</th><th>kind</th><th>type</th>'
            '<th class="num">findings</th><th>fix</th></tr></thead><tbody>' + "".join(rows) + "</tbody></table>")


def _chats_section(records: Sequence[Mapping[str, Any]]) -> str:
    chats = [r for r in records if kind_of(r) == "chat"]
    if not chats:
        return '<p class="empty">No chat transcripts found.</p>'
    by_source: Counter[str] = Counter(source_of(r) for r in chats)
    intro = (f"<p>{len(chats):,} chat transcript(s) in {len(by_source):,} source(s). Each is a conversation with "
             "a model stored where it should not be; the table lists where.</p>")
    rows = "".join(
        f'<tr><td class="src">{_e(source_of(r))}</td><td>{_e(location_of(r))}</td><td><code>{_e(type_of(r))}'
        f'</code></td><td>{_e(r.get("confidence", ""))}</td><td>{_e(_snippet(r))}</td>'
        f'<td><code>{_e(_fingerprint(r))}</code></td></tr>' for r in chats[:MAX_CHAT_ROWS])
    more = (f'<p class="note">and {len(chats) - MAX_CHAT_ROWS:,} more: filter the findings table by kind '
            "<em>chat</em>.</p>" if len(chats) > MAX_CHAT_ROWS else "")
    return (intro + '<div class="scroll short"><table class="data" id="chat-table"><thead><tr><th>source</th>'
            '<th>where</th><th>type</th>'
            '<th>confidence</th><th>what</th><th>fingerprint</th></tr></thead><tbody>' + rows + "</tbody></table></div>"
            + more)


def render_html(records: Iterable[Mapping[str, Any]], summary: Summary | None, rules: Iterable[Rule], *,
                title: str = "redline report", input_name: str | None = None,
                generated_at: datetime | None = None) -> str:
    """The whole report as one HTML document (a string)."""
    by_id = rule_index(rules)
    recs, verdicts = prepare(records, by_id)
    if summary is None:
        summary = summary_from_records(recs)
    generated_at = generated_at or datetime.now(UTC).replace(microsecond=0)
    data = build_data(recs, by_id)
    body = (
        _summary_section(summary, recs, input_name, generated_at, verdicts)
        + '<section id="charts"><h2>Severity and counts</h2><div class="charts">'
        + "".join(f'<figure class="chart"><figcaption>{_e(cap)}</figcaption><div class="chart-box">'
                  f'<canvas id="chart-{cid}" role="img" aria-label="{_e(cap)}"></canvas></div></figure>'
                  for cid, cap in (("severity", "Findings by severity"), ("kinds", "Findings by kind and severity"),
                                   ("types", "Findings by type"),
                                   ("sources", "Files, tables and endpoints with most findings")))
        + "</div></section>"
        + '<section id="findings"><h2>Findings</h2>' + _FINDINGS_CONTROLS + "</section>"
        + '<section id="chats"><h2>Chat transcripts</h2>' + _chats_section(recs) + "</section>"
        + '<section id="fixes"><h2>How to fix</h2>' + _fixes_section(recs, by_id) + "</section>"
        + _METHOD
    )
    page = _static("report.html")
    replacements = {
        "@@TITLE@@": _e(title),
        "@@CSS@@": _static("report.css"),
        "@@BODY@@": body,
        "@@DATA@@": _json_island(data),
        "@@CHARTJS@@": _script_safe(_static(CHART_JS)),
        "@@APPJS@@": _script_safe(_static("report.js")),
    }
    # re.sub does not rescan what it inserted: a "@@" inside Chart.js or a record stays as it is.
    return re.sub(r"@@[A-Z]+@@", lambda m: replacements.get(m.group(0), m.group(0)), page)


_FINDINGS_CONTROLS = """
<div class="controls" id="controls">
  <label>Search <input type="search" id="f-text" placeholder="path, table, type, fingerprint…" autocomplete="off">
  </label>
  <label>Severity <select id="f-sev"><option value="">all</option></select></label>
  <label>Kind <select id="f-kind"><option value="">all</option></select></label>
  <label>Type <select id="f-type"><option value="">all</option></select></label>
  <label>Source <select id="f-srctype"><option value="">all</option><option value="file">files</option>
    <option value="table">tables</option><option value="endpoint">endpoints</option></select></label>
  <button type="button" id="f-reset">Reset</button>
  <span class="count" id="f-count" aria-live="polite"></span>
</div>
<h3>By file, table or endpoint</h3>
<div class="scroll"><table class="data sortable" id="sources-table">
  <thead><tr><th data-key="src">source</th><th data-key="srcType">is a</th><th data-key="n" class="num">findings</th>
  <th data-key="critical" class="num">critical</th><th data-key="high" class="num">high</th>
  <th data-key="medium" class="num">medium</th><th data-key="low" class="num">low</th>
  <th data-key="kinds">kinds</th></tr></thead><tbody></tbody></table></div>
<h3>Every finding</h3>
<div class="scroll"><table class="data sortable" id="findings-table">
  <thead><tr><th data-key="sev">severity</th><th data-key="kind">kind</th><th data-key="type">type</th>
  <th data-key="src">source</th><th data-key="loc">where</th><th data-key="conf">confidence</th>
  <th data-key="snip">redacted snippet</th><th data-key="fp">fingerprint</th></tr></thead><tbody></tbody></table></div>
<p><button type="button" id="f-more" hidden>Show more</button></p>
<noscript><p class="note">The findings table needs JavaScript; the sections below do not.</p></noscript>
"""

_METHOD = """
<section id="method"><h2>How to read this report</h2>
<p>Severity combines what was found with how sure redline is. Secrets: high confidence is <b>critical</b>, medium
is <b>high</b>, low is <b>medium</b>. Personal data and chat transcripts: high, medium and low confidence are
<b>high</b>, <b>medium</b> and <b>low</b>. Probed endpoints keep the probe's own grade: a database that answers
without authentication is <b>high</b>, one that asks for a password is <b>low</b>; closed and silent ports are
counted in the summary but not listed.</p>
<p>Nothing raw is in this file: snippets are redacted by the scanner and each finding is identified by its
fingerprint (a keyed hash). Compare fingerprints across runs, or pass them to <code>redline scan --baseline</code>
to accept known findings.</p>
</section>
"""


def probe_html(results: Sequence[Mapping[str, Any]], *, seconds: float = 0.0, targets: Sequence[str] = (),
               title: str = "redline probe report") -> str:
    """The HTML report for ``redline probe`` results (``Result.to_dict()``): endpoints, verdicts, fixes."""
    from redline.engine import builtin_rules

    summary = Summary(sources=len(results), seconds=seconds, read_only=True,
                      targets=list(targets) or sorted({str(r.get("host", "?")) for r in results}))
    now = datetime.now(UTC).replace(microsecond=0)
    summary.started_at = datetime.fromtimestamp(now.timestamp() - seconds, UTC).isoformat(timespec="seconds")
    rules = builtin_rules()
    listed, _ = prepare(results, rule_index(rules))
    for rec in listed:
        summary.by_kind[kind_of(rec)] += 1
        summary.by_type[type_of(rec)] += 1
    return render_html(results, summary, rules, title=title, generated_at=now)
