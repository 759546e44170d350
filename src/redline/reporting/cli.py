"""``redline report FILE.jsonl``: turn a saved ``--format jsonl`` run into an HTML, SARIF, JSON, CSV or table report."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from contextlib import ExitStack
from typing import IO, Any

REPORT_FORMATS = ("html", "sarif", "json", "csv", "table")
_FINDING_FIELDS = ("kind", "type", "confidence", "fingerprint", "snippet")
_FILE_FIELDS = ("line", "column", "start", "end")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "report", help="build a report (HTML, SARIF, …) from a saved jsonl run",
        description="Read findings saved with `redline scan --format jsonl` (or `-` for stdin) and write them as a "
                    "report. Raw values (`--reveal`) are never carried over.")
    p.add_argument("input", metavar="FINDINGS.jsonl", help="a jsonl file of findings, or - for stdin")
    p.add_argument("-f", "--format", choices=REPORT_FORMATS, default="html")
    p.add_argument("-o", "--output", metavar="FILE", help="write the report here instead of stdout")
    p.add_argument("--title", default=None, help="title of the HTML report")
    p.set_defaults(func=cmd_report)


def _check(rec: Any, where: str) -> dict[str, Any]:
    from redline.cli import CliError

    if not isinstance(rec, dict):
        raise CliError(f"{where}: expected a JSON object (one finding per line), got {type(rec).__name__}")
    if "host" in rec and "path" not in rec and "table" not in rec:
        return rec  # a probe result: host/port/service/verdict
    if "path" not in rec and "table" not in rec:
        raise CliError(f"{where}: a finding needs a location: 'path' (files), 'table' (databases) or 'host' (probes)")
    missing = [k for k in _FINDING_FIELDS if k not in rec]
    if "path" in rec:
        missing += [k for k in _FILE_FIELDS if not isinstance(rec.get(k), int)]
    if missing:
        raise CliError(f"{where}: missing or invalid field(s): {', '.join(missing)}")
    if not all(isinstance(rec[k], str) for k in _FINDING_FIELDS):
        raise CliError(f"{where}: kind, type, confidence, fingerprint and snippet must be strings")
    return rec


def read_records(lines: Iterable[str], name: str) -> list[dict[str, Any]]:
    """Parse jsonl findings; a malformed line is a CliError naming ``name:line``. Raw values are dropped."""
    from redline.cli import CliError

    records: list[dict[str, Any]] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CliError(f"{name}:{n}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        rec = _check(rec, f"{name}:{n}")
        rec.pop("value", None)
        records.append(rec)
    return records


def _read_input(path: str) -> tuple[list[dict[str, Any]], str]:
    from redline.cli import CliError

    if path == "-":
        return read_records(sys.stdin, "<stdin>"), "standard input"
    try:
        with open(path, encoding="utf-8") as fh:
            return read_records(fh, path), path
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise CliError(f"{path}: not UTF-8 text; expected the jsonl written by redline scan --format jsonl") from None


def cmd_report(args: argparse.Namespace) -> int:
    from redline.cli import EXIT_OK, CliError
    from redline.engine import builtin_rules
    from redline.report import Writer
    from redline.reporting.html import render_html, summary_from_records

    records, name = _read_input(args.input)
    if args.format == "html" and args.output in (None, "-") and sys.stdout.isatty():
        raise CliError("an HTML report belongs in a file: add --output report.html")
    rules = builtin_rules()
    summary = summary_from_records(records)
    with ExitStack() as stack:
        out: IO[str] = sys.stdout
        if args.output and args.output != "-":
            try:
                out = stack.enter_context(open(args.output, "w", encoding="utf-8", newline=""))
            except OSError as exc:
                raise CliError(f"cannot write {args.output}: {exc.strerror or exc}") from None
        if args.format == "html":
            out.write(render_html(records, summary, rules, input_name=name,
                                  title=args.title or "redline report"))
            out.flush()
        else:
            writer = Writer(args.format, out, rules, color=None)
            for rec in records:
                writer.write(rec)
            writer.close(summary)
    if args.output and args.output != "-":
        print(f"redline report: {len(records)} finding(s) from {name} -> {args.output}", file=sys.stderr)
    return EXIT_OK
