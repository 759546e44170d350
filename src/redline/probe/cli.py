"""``redline probe TARGET...``: find exposed databases on hosts you own (see docs/probe.md)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from contextlib import ExitStack
from typing import IO, Any

from redline import __version__

FORMATS = ("table", "json", "jsonl", "sarif", "html")
EXIT_OK, EXIT_OPEN, EXIT_ERROR = 0, 1, 2
_SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
_LEVEL = {"open": "error", "restricted": "warning", "auth-required": "note"}
_STYLE = {"open": "bold red", "auth-required": "green", "restricted": "yellow", "not-that-service": "dim",
          "closed": "dim", "timeout": "dim"}


def register(subparsers: Any) -> None:
    from redline.probe.targets import DEFAULT_MAX_HOSTS, DEFAULT_PORTS

    p = subparsers.add_parser(
        "probe", help="find exposed databases (ClickHouse, Redis, PostgreSQL, ...) on hosts you own",
        description="Probe hosts you own for databases that answer without a password. Only the targets given "
                    "are probed; nothing is written and no password other than the empty default is tried.")
    p.add_argument("targets", nargs="*", metavar="TARGET", help="host, host:port, [v6]:port or CIDR block")
    p.add_argument("--targets", dest="targets_file", action="append", metavar="FILE",
                   help="read targets from FILE (one or more a line, # comments)")
    p.add_argument("--ports", metavar="LIST",
                   help=f"ports for targets without one (default {','.join(map(str, DEFAULT_PORTS))})")
    p.add_argument("--max-hosts", type=int, metavar="N",
                   help=f"allow up to N addresses (default {DEFAULT_MAX_HOSTS})")
    p.add_argument("--concurrency", type=int, default=32, metavar="N", help="endpoints probed at once (default 32)")
    p.add_argument("--rate", type=float, default=100.0, metavar="N", help="new connections a second (default 100)")
    p.add_argument("--timeout", type=float, default=3.0, metavar="S",
                   help="seconds per connection (default 3; an endpoint takes at most 4x this for probing)")
    p.add_argument("--inspect", action="store_true",
                   help="for open ClickHouse, PostgreSQL and Redis: list tables/keys and scan a sample (read-only)")
    p.add_argument("--sample", type=int, default=1000, metavar="N", help="rows/keys sampled per table (default 1000)")
    p.add_argument("--pg-user", default="postgres", metavar="NAME",
                   help="PostgreSQL role to try without a password (default postgres)")
    p.add_argument("-f", "--format", choices=FORMATS, default="table")
    p.add_argument("-o", "--output", metavar="FILE", help="write results here instead of stdout")
    p.add_argument("--all", action="store_true", help="table: also list closed, timed-out and other endpoints")
    p.set_defaults(func=cmd_probe)


def _error(message: str) -> Exception:
    from redline.cli import CliError

    return CliError(message)


def cmd_probe(args: argparse.Namespace) -> int:
    from redline.probe import Options, probe
    from redline.probe.targets import DEFAULT_PORTS, TargetError, expand, parse_ports, read_target_file

    if args.timeout <= 0 or args.timeout > 600:
        raise _error("--timeout must be between 0 and 600 seconds")
    if args.concurrency < 1 or args.concurrency > 4096:
        raise _error("--concurrency must be between 1 and 4096")
    if args.rate <= 0:
        raise _error("--rate must be positive")
    if args.sample < 1:
        raise _error("--sample must be at least 1")
    if args.max_hosts is not None and args.max_hosts < 1:
        raise _error("--max-hosts must be at least 1")
    try:
        targets = list(args.targets)
        for path in args.targets_file or ():
            targets += read_target_file(path)
        ports = parse_ports(args.ports) if args.ports else DEFAULT_PORTS
        endpoints = expand(targets, ports, args.max_hosts)
    except TargetError as exc:
        raise _error(str(exc)) from None
    opts = Options(timeout=args.timeout, concurrency=args.concurrency, rate=args.rate, pg_user=args.pg_user)
    started = time.monotonic()
    results = asyncio.run(probe(endpoints, opts))
    if args.inspect and any(r.verdict == "open" for r in results):
        from redline.engine import Scanner
        from redline.probe.inspect import inspect_results

        inspect_results(results, timeout=args.timeout, scanner=Scanner(), sample=args.sample, pg_user=args.pg_user)
    seconds = time.monotonic() - started
    with ExitStack() as stack:
        if args.output and args.output != "-":
            try:
                out: IO[str] = stack.enter_context(open(args.output, "w", encoding="utf-8"))
            except OSError as exc:
                raise _error(f"cannot write {args.output}: {exc.strerror or exc}") from None
        else:
            out = sys.stdout
        write(results, args.format, out, seconds=seconds, show_all=args.all)
    if args.format != "table" or (args.output and args.output != "-"):
        print("redline: " + summary_line(results, seconds), file=sys.stderr)
    return EXIT_OPEN if any(r.verdict == "open" for r in results) else EXIT_OK


def summary(results: list[Any], seconds: float) -> dict[str, Any]:
    counts = Counter(r.verdict for r in results)
    return {"endpoints": len(results), "hosts": len({r.host for r in results}), "by_verdict": dict(counts),
            "open": counts.get("open", 0), "seconds": round(seconds, 3)}


def summary_line(results: list[Any], seconds: float) -> str:
    s = summary(results, seconds)
    parts = ", ".join(f"{v} {k}" for k, v in sorted(s["by_verdict"].items(), key=lambda kv: -kv[1]))
    return f"{s['endpoints']} endpoint(s) on {s['hosts']} host(s) in {seconds:.2f} s: {parts or 'none'}"


def write(results: list[Any], fmt: str, out: IO[str], *, seconds: float = 0.0, show_all: bool = False) -> None:
    if fmt == "jsonl":
        for r in results:
            out.write(json.dumps(r.to_dict(), ensure_ascii=False) + "\n")
    elif fmt == "json":
        json.dump({"results": [r.to_dict() for r in results], "summary": summary(results, seconds)}, out,
                  ensure_ascii=False, indent=2)
        out.write("\n")
    elif fmt == "sarif":
        json.dump(sarif(results), out, ensure_ascii=False, indent=2)
        out.write("\n")
    elif fmt == "html":  # redline.reporting: the self-contained HTML report (docs/reports.md)
        from redline.reporting.html import probe_html

        out.write(probe_html([r.to_dict() for r in results], seconds=seconds))
    else:
        _table(results, out, seconds, show_all)
    out.flush()


def _table(results: list[Any], out: IO[str], seconds: float, show_all: bool) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(file=out, soft_wrap=False, width=None if out.isatty() else 160)
    shown = [r for r in results if show_all or r.verdict in ("open", "auth-required", "restricted")
             or r.service is not None]
    if shown:
        t = Table(header_style="bold")
        for col in ("endpoint", "service", "verdict", "severity", "version", "evidence", "fix"):
            t.add_column(col, overflow="fold")
        for r in shown:
            t.add_row(escape(r.label), escape(r.service or "-"), f"[{_STYLE.get(r.verdict, '')}]{r.verdict}[/]",
                      r.severity, escape(r.version or ""), escape("; ".join(r.evidence)), escape(r.fix))
        console.print(t)
    for r in results:
        if r.inspect:
            console.print(f"[bold]{escape(r.label)}[/] {escape(r.inspect['service'])} via "
                          f"{escape(r.inspect['via'])}:")
            for tab in r.inspect["tables"]:
                console.print("  " + escape(tab["summary"]))
            for err in r.inspect["errors"]:
                console.print("  [yellow]error:[/] " + escape(err))
    console.print(escape(summary_line(results, seconds)))


def sarif(results: list[Any]) -> dict[str, Any]:
    reported = [r for r in results if r.verdict in _LEVEL]
    rule_ids = sorted({f"{r.verdict}-{r.service or 'service'}" for r in reported})
    rules = [{"id": rid, "name": "".join(p.capitalize() for p in rid.replace(".", "-").split("-")),
              "shortDescription": {"text": _rule_text(rid)},
              "properties": {"tags": ["exposure", "network"]}} for rid in rule_ids]
    index = {rid: i for i, rid in enumerate(rule_ids)}
    out = []
    for r in reported:
        rid = f"{r.verdict}-{r.service or 'service'}"
        text = f"{r.service or 'service'} at {r.label} is {r.verdict}: {'; '.join(r.evidence)}"
        if r.inspect:
            text += " | " + " | ".join(t["summary"] for t in r.inspect["tables"])
        res: dict[str, Any] = {
            "ruleId": rid, "ruleIndex": index[rid], "level": _LEVEL[r.verdict], "message": {"text": text},
            "locations": [{"logicalLocations": [{"fullyQualifiedName": r.label, "kind": "resource"}]}],
            "partialFingerprints": {"redlineEndpoint/v1": f"{r.label}/{r.service}/{r.verdict}"},
            "properties": {"severity": r.severity, "version": r.version, "fix": r.fix, "service": r.service},
        }
        out.append(res)
    return {"$schema": _SARIF_SCHEMA, "version": "2.1.0", "runs": [{
        "tool": {"driver": {"name": "redline", "version": __version__, "rules": rules}},
        "results": out}]}


def _rule_text(rid: str) -> str:
    for verdict, text in (("open", "{} answers without authentication"),
                          ("restricted", "{} is reachable but refuses this client"),
                          ("auth-required", "{} is reachable and requires authentication")):
        if rid.startswith(verdict + "-"):
            return text.format(rid[len(verdict) + 1:])
    return rid
