"""Writing scan results: a readable table, JSON lines, JSON, CSV, SARIF 2.1.0 and HTML (``redline.reporting``).

Every format takes the same records (dicts built by a scanner front end from engine findings) and never sees a
raw value unless the user asked for ``--reveal``.
"""

from __future__ import annotations

import csv
import json
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import orjson

from redline import __version__
from redline.engine import Rule

FORMATS = ("table", "jsonl", "json", "csv", "sarif", "html")
CSV_FIELDS = ("path", "line", "column", "start", "end", "end_line", "kind", "type", "confidence", "fingerprint",
              "snippet")
_SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
_SARIF_LEVEL = {"high": "error", "medium": "warning", "low": "note"}


@dataclass
class Summary:
    sources: int = 0
    bytes: int = 0
    chars: int = 0
    seconds: float = 0.0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    by_kind: Counter[str] = field(default_factory=Counter)
    by_type: Counter[str] = field(default_factory=Counter)
    # What was scanned (passwords hidden), when (ISO 8601, UTC) and whether the scan only read: for reports.
    targets: list[str] = field(default_factory=list)
    started_at: str | None = None
    read_only: bool | None = None
    # Per-table/column results of database scans (see redline.scan.db).
    databases: list[dict[str, Any]] = field(default_factory=list)

    def add(self, rec: dict[str, Any]) -> None:
        self.by_kind[rec["kind"]] += 1
        self.by_type[rec["type"]] += 1

    @property
    def findings(self) -> int:
        return sum(self.by_kind.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "sources": self.sources,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "findings": self.findings,
            "by_kind": dict(self.by_kind),
            "by_type": dict(self.by_type.most_common()),
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
            "errors": self.errors,
            **({"targets": self.targets} if self.targets else {}),
            **({"started_at": self.started_at} if self.started_at else {}),
            **({"read_only": self.read_only} if self.read_only is not None else {}),
            **({"databases": self.databases} if self.databases else {}),
        }


def location(rec: dict[str, Any]) -> str:
    if "path" in rec:
        return f"{rec['path']}:{rec['line']}:{rec['column']}"
    return ".".join(str(rec[k]) for k in ("table", "column") if k in rec) + (f"#{rec['row']}" if "row" in rec else "")


class Writer:
    """Streams records in the chosen format; ``close`` writes what needs all records (JSON, SARIF, table)."""

    def __init__(self, fmt: str, out: IO[str], rules: Sequence[Rule], *, color: bool | None = None) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
        self.fmt = fmt
        self.out = out
        self.rules = {r.id: r for r in rules}
        self.records: list[dict[str, Any]] = []
        self.color = color
        self._csv: Any = None
        if fmt == "csv":
            self._csv = csv.DictWriter(out, fieldnames=[*CSV_FIELDS, "value"], extrasaction="ignore")
            self._csv.writeheader()

    def write(self, rec: dict[str, Any]) -> None:
        if self.fmt == "jsonl":
            # orjson: several times faster, which shows where findings are dense (a conversation per line);
            # the standard library for what it refuses (a lone surrogate from bytes that are not UTF-8).
            try:
                line = orjson.dumps(rec).decode()
            except (TypeError, UnicodeError):
                line = json.dumps(rec, ensure_ascii=False, separators=(",", ":"))
            self.out.write(line + "\n")
        elif self.fmt == "csv":
            self._csv.writerow(rec)
        else:
            self.records.append(rec)

    def close(self, summary: Summary) -> None:
        if self.fmt == "json":
            json.dump({"findings": self.records, "summary": summary.to_dict()}, self.out, ensure_ascii=False,
                      indent=2)
            self.out.write("\n")
        elif self.fmt == "sarif":
            json.dump(sarif(self.records, self.rules.values()), self.out, ensure_ascii=False, indent=2)
            self.out.write("\n")
        elif self.fmt == "table":
            self._table(summary)
        elif self.fmt == "html":
            from redline.reporting.html import render_html

            self.out.write(render_html(self.records, summary, self.rules.values()))
        self.out.flush()

    def _table(self, summary: Summary) -> None:
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        console = Console(file=self.out, force_terminal=self.color, soft_wrap=False,
                          width=None if self.out.isatty() else 160)
        if self.records:
            table = Table(show_lines=False, header_style="bold")
            for col in ("location", "kind", "type", "conf.", "snippet", "fingerprint"):
                table.add_column(col, overflow="fold")
            style = {"secret": "red", "pii": "yellow", "chat": "magenta"}
            for rec in self.records:
                table.add_row(escape(location(rec)), f"[{style.get(rec['kind'], '')}]{rec['kind']}[/]", rec["type"],
                              rec["confidence"], escape(rec.get("value") or rec["snippet"]), rec["fingerprint"])
            console.print(table)
        if summary.databases:
            from redline.scan.db import print_summary

            for db in summary.databases:
                print_summary(db, self.out)
        console.print(escape(summary_line(summary)))


def summary_line(summary: Summary) -> str:
    kinds = ", ".join(f"{k}: {v}" for k, v in sorted(summary.by_kind.items())) or "none"
    mb = summary.bytes / 1e6
    rate = f", {mb / summary.seconds:.1f} MB/s" if summary.seconds > 0 and mb >= 1 else ""
    text = (f"{summary.findings} finding(s) ({kinds}) in {summary.sources} source(s), {mb:.2f} MB, "
            f"{summary.seconds:.2f} s{rate}")
    if summary.skipped:
        text += f"; skipped {len(summary.skipped)} (binary)"
    if summary.errors:
        text += f"; {len(summary.errors)} error(s)"
    return text


def sarif(records: Iterable[dict[str, Any]], rules: Iterable[Rule]) -> dict[str, Any]:
    records = list(records)
    used = sorted({r["type"] for r in records})
    by_id = {r.id: r for r in rules}
    rule_index = {rid: i for i, rid in enumerate(used)}
    driver_rules = []
    for rid in used:
        rule = by_id.get(rid)
        entry: dict[str, Any] = {
            "id": rid,
            "name": "".join(p.capitalize() for p in rid.split("-")),
            "shortDescription": {"text": rule.name if rule else rid},
            "properties": {"kind": rule.kind if rule else "unknown", "tags": list(rule.tags) if rule else []},
        }
        if rule and rule.fix:
            entry["help"] = {"text": rule.fix}
        driver_rules.append(entry)
    results = []
    for rec in records:
        rule = by_id.get(rec["type"])
        name = rule.name if rule else rec["type"]
        result: dict[str, Any] = {
            "ruleId": rec["type"],
            "ruleIndex": rule_index[rec["type"]],
            "level": _SARIF_LEVEL.get(rec["confidence"], "warning"),
            "message": {"text": f"{name} ({rec['kind']}): {rec['snippet']}"},
            "partialFingerprints": {"redlineFingerprint/v1": rec["fingerprint"]},
            "properties": {"kind": rec["kind"], "confidence": rec["confidence"]},
        }
        if "path" in rec:
            region: dict[str, Any] = {"startLine": rec["line"], "startColumn": rec["column"]}
            region["endLine"] = rec.get("end_line", rec["line"])
            region["endColumn"] = rec["end"] + 1
            uri = rec["path"] if rec["path"] != "-" else "stdin"
            result["locations"] = [{"physicalLocation": {"artifactLocation": {"uri": uri}, "region": region}}]
        else:
            result["locations"] = [{"logicalLocations": [{"fullyQualifiedName": location(rec), "kind": "member"}]}]
        results.append(result)
    return {
        "$schema": _SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "redline", "version": __version__,
                                "rules": driver_rules}},
            "results": results,
        }],
    }


def stdout() -> IO[str]:
    return sys.stdout
