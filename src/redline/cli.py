"""The ``redline`` command line. Every subcommand is a thin front end over the engine."""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import io
import os
import re
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, NoReturn

from redline import __version__
from redline.engine import RuleError, Scanner
from redline.engine.finding import CONFIDENCE_RANK, FINGERPRINT_ENV
from redline.engine.rules import PATTERN_FLAGS

EXIT_OK, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2
# Front-end modules and the subcommands each registers: only the module a command needs is imported.
FRONT_ENDS: dict[str, tuple[str, ...]] = {
    "redline.redact.cli": ("redact",),
    "redline.gateway.cli": ("gateway",),
    "redline.store.cli": ("keys", "usage", "audit"),
    "redline.probe.cli": ("probe",),
    "redline.reporting.cli": ("report",),
}


DEMO_REPORT = "redline-demo-report.html"
DB_URL = re.compile(r"^(?:sqlite|postgres|postgresql|clickhouse)(?:\+\w+)?://", re.IGNORECASE)


class CliError(Exception):
    """A usage or input problem: printed as one line, exit code 2."""


def _split_ids(values: Sequence[str] | None) -> list[str]:
    out: list[str] = []
    for v in values or ():
        out.extend(x.strip() for x in v.split(",") if x.strip())
    return out


def _read_baseline(path: str | None) -> set[str]:
    if not path:
        return set()
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise CliError(f"cannot read baseline {path}: {exc.strerror or exc}") from None
    fps = set()
    for n, line in enumerate(lines, 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if not all(c in "0123456789abcdef" for c in line):
            raise CliError(f"{path}:{n}: not a fingerprint: {line[:30]!r}")
        fps.add(line)
    if fps and not os.environ.get(FINGERPRINT_ENV):
        raise CliError(f"a baseline needs stable fingerprints: set {FINGERPRINT_ENV} to the key used to write it")
    return fps


def scanner_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "extra_rule_paths": args.rules or [],
        "disabled": _split_ids(args.disable),
        "enabled": _split_ids(args.enable),
        "kinds": _split_ids(args.kind) or None,
        "backend": args.backend,
        "baseline": _read_baseline(args.baseline),
    }


def make_scanner(kwargs: dict[str, Any]) -> Scanner:
    bad = set(kwargs.get("kinds") or ()) - {"secret", "pii", "chat"}
    if bad:
        raise CliError(f"unknown kind(s) {', '.join(sorted(bad))}: use secret, pii or chat")
    try:
        scanner = Scanner(**kwargs)
    except RuleError as exc:
        raise CliError(str(exc)) from None
    except ValueError as exc:
        raise CliError(str(exc)) from None
    # Everything built so far (rules, compiled patterns, imported modules) lives as long as the command: out of
    # the collector's reach, later collections need not walk it again and again during a scan.
    gc.freeze()
    return scanner


def _open_output(stack: ExitStack, path: str | None) -> IO[str]:
    if not path or path == "-":
        return sys.stdout
    try:
        return stack.enter_context(open(path, "w", encoding="utf-8", newline=""))
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror or exc}") from None


def cmd_scan(args: argparse.Namespace) -> int:
    from redline.report import Summary, Writer, summary_line
    from redline.reporting.model import safe_text
    from redline.scan.files import FileResult, InputError, iter_paths, scan_file, scan_files_parallel

    if args.jobs < 1:
        raise CliError("--jobs must be at least 1")
    if args.write_baseline and not os.environ.get(FINGERPRINT_ENV):
        raise CliError(f"--write-baseline needs stable fingerprints: set {FINGERPRINT_ENV} first")
    kwargs = scanner_kwargs(args)
    scanner = make_scanner(kwargs)
    min_rank = CONFIDENCE_RANK[args.min_confidence]
    fail_rank = None if args.fail_on == "never" else CONFIDENCE_RANK["low" if args.fail_on == "any" else args.fail_on]
    summary = Summary(targets=[safe_text(p) for p in args.paths], read_only=True,
                      started_at=datetime.now(UTC).isoformat(timespec="seconds"))
    failing = False
    baseline_out: list[str] = []
    started = time.perf_counter()
    with ExitStack() as stack:
        out = _open_output(stack, args.output)
        writer = Writer(args.format, out, scanner.all_rules)

        def emit(rec: dict[str, Any]) -> None:
            nonlocal failing
            if CONFIDENCE_RANK[rec["confidence"]] < min_rank:
                return
            summary.add(rec)
            if fail_rank is not None and CONFIDENCE_RANK[rec["confidence"]] >= fail_rank:
                failing = True
            if args.write_baseline:
                baseline_out.append(rec["fingerprint"])
            writer.write(rec)

        db_urls = [p for p in args.paths if DB_URL.match(p)]
        files: list[str] = []
        for item in iter_paths([p for p in args.paths if not DB_URL.match(p)], args.exclude or ()):
            if isinstance(item, InputError):
                summary.errors.append(str(item))
                print(f"redline: {item}", file=sys.stderr)
            else:
                files.append(item)
        if files.count("-") > 1:
            raise CliError("stdin ('-') can be given only once")

        def account(res: FileResult) -> None:
            summary.sources += 1
            summary.bytes += res.bytes_read
            summary.chars += res.chars
            if res.skipped:
                summary.skipped.append((res.path, res.skipped))
            if res.error:
                summary.errors.append(res.error)
                print(f"redline: {res.error}", file=sys.stderr)
            db_summary = getattr(res, "summary", None)
            if db_summary:
                summary.databases.append(db_summary)

        for url in db_urls:
            # Database URLs go to the database scanner; records flow through the same writer.
            try:
                db = importlib.import_module("redline.scan.db")
            except ModuleNotFoundError:
                raise CliError(f"scanning databases is not available in this installation: {url}") from None
            account(db.scan_database(url, scanner, args, emit))

        progress = _progress(args, files)
        try:
            if args.jobs > 1 and len(files) > 1 and "-" not in files:
                for res in scan_files_parallel(files, kwargs, args.jobs, reveal=args.reveal):
                    for rec in res.records:
                        emit(rec)
                    account(res)
                    if progress:
                        progress.advance_file(res.path)
            else:
                for path in files:
                    res = scan_file(scanner, path, reveal=args.reveal, sink=emit,
                                    on_progress=progress.advance if progress else None)
                    account(res)
                    if progress:
                        progress.advance_file(path)
        finally:
            if progress:
                progress.stop()
        summary.seconds = time.perf_counter() - started
        writer.close(summary)
    if args.format != "table":
        print(summary_line(summary), file=sys.stderr)
    if args.write_baseline:
        try:
            Path(args.write_baseline).write_text(
                "# redline baseline: fingerprints of accepted findings\n" + "\n".join(sorted(set(baseline_out)))
                + "\n", encoding="utf-8")
        except OSError as exc:
            raise CliError(f"cannot write {args.write_baseline}: {exc.strerror or exc}") from None
    if summary.errors:
        return EXIT_ERROR
    return EXIT_FINDINGS if failing else EXIT_OK


class _Progress:
    def __init__(self, files: list[str]) -> None:
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

        self.sizes = {f: (os.path.getsize(f) if f != "-" and os.path.isfile(f) else 0) for f in files}
        self.progress = Progress(TextColumn("scanning"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                                 transient=True, console=_stderr_console())
        self.task = self.progress.add_task("scan", total=sum(self.sizes.values()) or None)
        self.done: dict[str, int] = {}
        self.current = 0
        self.progress.start()

    def advance(self, n: int) -> None:
        self.current += n
        self.progress.advance(self.task, n)

    def advance_file(self, path: str) -> None:
        rest = self.sizes.get(path, 0) - self.current
        if rest > 0:
            self.progress.advance(self.task, rest)
        self.current = 0

    def stop(self) -> None:
        self.progress.stop()


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(file=sys.stderr)


def _progress(args: argparse.Namespace, files: list[str]) -> _Progress | None:
    if args.no_progress or not sys.stderr.isatty() or not files:
        return None
    return _Progress(files)


def cmd_rules(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    scanner = make_scanner({"extra_rule_paths": args.rules or []})
    if args.action == "check":
        return _check_rules(scanner, args.rules or [])
    active = {r.id for r in scanner.rules}
    table = Table(header_style="bold")
    for col in ("id", "kind", "confidence", "on", "name"):
        table.add_column(col)
    shown = 0
    for r in sorted(scanner.all_rules, key=lambda r: (r.kind, r.id)):
        if args.kind and r.kind != args.kind:
            continue
        table.add_row(r.id, r.kind, r.confidence, "yes" if r.id in active else "no", r.name)
        shown += 1
    Console().print(table)
    print(f"{shown} rule(s)")
    return EXIT_OK


def _check_rules(scanner: Scanner, paths: Sequence[str]) -> int:
    """Run the examples of user rule files (all rules when no path is given), as the test suite does."""
    from redline.engine import load_rule_paths

    rules = load_rule_paths(paths) if paths else list(scanner.all_rules)
    failures = 0
    for rule in rules:
        for i, ex in enumerate(rule.examples):
            hits = [f for f in scanner.scan_text(ex.text) if f.type == rule.id]
            values = [ex.text[f.start:f.end] for f in hits]
            if not hits or (ex.value is not None and ex.value not in values):
                failures += 1
                print(f"{rule.source}: {rule.id}: example {i + 1} not found{_anchor_hint(rule, ex.text)}")
        for i, neg in enumerate(rule.negative_examples):
            if any(f.type == rule.id for f in scanner.scan_text(neg)):
                failures += 1
                print(f"{rule.source}: {rule.id}: negative example {i + 1} matched")
    print(f"{len(rules)} rule(s) checked, {failures} failure(s)")
    return EXIT_FINDINGS if failures else EXIT_OK


def _anchor_hint(rule: Any, text: str) -> str:
    """Why an example may be missed: a match of the pattern that holds no match of the rule's anchor."""
    if rule.anchor is None:
        return ""
    anchor = re.compile(rule.anchor, PATTERN_FLAGS)
    if any(anchor.search(m.group()) is None for m in rule.regex.finditer(text)):
        return " (the pattern matches, but its match holds no match of the rule's anchor)"
    return ""


def cmd_demo(args: argparse.Namespace) -> int:
    from importlib import resources

    sample = resources.files("redline") / "samples" / "log_stream.jsonl"
    with resources.as_file(sample) as path:
        if not path.exists():
            raise CliError("the bundled sample is missing from this installation")
        print(f"redline demo: scanning {path.name}, a generated sample shaped like DeepSeek's leaked "
              f"ClickHouse log_stream table (all values are fakes)\n")
        ns = build_parser().parse_args(["scan", str(path), "--fail-on", "never", "--no-progress",
                                        *(["--format", args.format] if args.format else [])])
        code = cmd_scan(ns)
        # The same scan again as an HTML report a person can open (its summary line would repeat: hidden).
        report = Path(DEMO_REPORT).resolve()
        ns = build_parser().parse_args(["scan", str(path), "--fail-on", "never", "--no-progress",
                                        "--format", "html", "--output", str(report)])
        with contextlib.redirect_stderr(io.StringIO()):
            cmd_scan(ns)
        print(f"\nredline demo: wrote the HTML report {report} (open it in a browser)",
              file=sys.stdout if args.format in (None, "table") else sys.stderr)
        return code


def _add_engine_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rules", action="append", metavar="PATH", help="extra rule file or folder (repeatable)")
    p.add_argument("--disable", action="append", metavar="ID", help="turn rule ids off (comma-separated)")
    p.add_argument("--enable", action="append", metavar="ID", help="turn on rules that are off by default")
    p.add_argument("--kind", action="append", metavar="KIND", help="only these kinds: secret, pii, chat")
    p.add_argument("--baseline", metavar="FILE", help="drop findings whose fingerprint is listed in FILE")
    p.add_argument("--backend", choices=("auto", "hyperscan", "re"), default=None,
                   help="matching backend (default: hyperscan when installed)")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line. Given the ``command`` about to run, only the front end that provides it is imported
    (pydantic, Starlette and the like would add a quarter of a second to every ``redline scan``); without
    one (help, an unknown command), all are."""
    from redline.report import FORMATS

    parser = argparse.ArgumentParser(prog="redline", description="Keep secrets and personal data from leaking "
                                     "through AI: detect, redact, scan.")
    parser.add_argument("--version", action="version", version=f"redline {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    scan = sub.add_parser("scan", help="scan files, folders, gzip/zstd logs or stdin for secrets, PII and chats")
    scan.add_argument("paths", nargs="+", metavar="PATH", help="file, folder, or - for stdin")
    scan.add_argument("-f", "--format", choices=FORMATS, default="table")
    scan.add_argument("-o", "--output", metavar="FILE", help="write results here instead of stdout")
    scan.add_argument("--exclude", action="append", metavar="GLOB", help="skip matching paths (repeatable)")
    scan.add_argument("-j", "--jobs", type=int, default=1, help="files scanned in parallel (default 1)")
    scan.add_argument("--min-confidence", choices=("low", "medium", "high"), default="low",
                      help="report only findings at or above this confidence")
    scan.add_argument("--fail-on", choices=("any", "low", "medium", "high", "never"), default="any",
                      help="exit 1 when a finding at or above this confidence is reported (default any)")
    scan.add_argument("--reveal", action="store_true", help="include raw values in the output (careful)")
    scan.add_argument("--write-baseline", metavar="FILE", help="write the fingerprints of all findings to FILE")
    scan.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_engine_options(scan)
    with contextlib.suppress(ModuleNotFoundError):
        importlib.import_module("redline.scan.db").add_scan_options(scan)
    scan.set_defaults(func=cmd_scan)

    rules = sub.add_parser("rules", help="list rules, or check rule files against their examples")
    rules.add_argument("action", choices=("list", "check"), nargs="?", default="list")
    rules.add_argument("--rules", action="append", metavar="PATH", help="rule file or folder to add / check")
    rules.add_argument("--kind", choices=("secret", "pii", "chat"))
    rules.set_defaults(func=cmd_rules)

    demo = sub.add_parser("demo", help="scan the bundled sample of a leaked log table")
    demo.add_argument("-f", "--format", choices=FORMATS)
    demo.set_defaults(func=cmd_demo)

    # Front ends register their own subcommands: each module has `register(subparsers)`.
    wanted = [m for m, commands in FRONT_ENDS.items() if command in commands]
    if not wanted and command not in ("scan", "rules", "demo"):
        wanted = list(FRONT_ENDS)
    for module in wanted:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if not exc.name or not (module + ".").startswith(exc.name + "."):
                raise  # a real missing dependency inside the front end, not an absent front end
            continue
        mod.register(sub)
    return parser


def _fail(message: str) -> NoReturn:
    print(f"redline: error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_ERROR
    try:
        code: int = args.func(args)
        return code
    except CliError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        print("redline: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `redline scan ... | head` closing the pipe early is not an error worth a traceback.
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        return EXIT_OK


if __name__ == "__main__":
    # Run through the imported module so front ends raising redline.cli.CliError see the same class.
    from redline.cli import main as _main

    sys.exit(_main())
