"""``redline redact``: copy logs with secrets and personal data replaced, keeping their format."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from redline.cli import EXIT_FINDINGS, EXIT_OK, CliError, _add_engine_options, make_scanner, scanner_kwargs
from redline.engine import RuleError, builtin_rules, load_rule_paths
from redline.redact.policy import Policy, PolicyError
from redline.redact.stream import Hit, OutputSink, StreamRedactor, open_output, redact_source, sniff_compression
from redline.scan.files import InputError, iter_paths


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "redact", help="copy logs with secrets and personal data redacted (lines, JSON lines, gzip/zstd kept)",
        description="Redact files or stdin. Plain lines stay lines, JSON lines stay valid JSON with the same keys, "
                    "gzip/zstd input gives gzip/zstd output.")
    p.add_argument("paths", nargs="*", metavar="PATH", help="file, folder, or - for stdin (default: stdin)")
    p.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    p.add_argument("--policy", metavar="FILE", help="policy (TOML or YAML) choosing operators per kind and type")
    p.add_argument("--check", action="store_true",
                   help="write nothing; list what would be redacted and exit 1 if anything would be")
    p.add_argument("--exclude", action="append", metavar="GLOB", help="skip matching paths (repeatable)")
    p.add_argument("--stats", action="store_true", help="print throughput and counts to stderr")
    _add_engine_options(p)
    p.set_defaults(func=cmd_redact)


def _load_policy(path: str | None) -> Policy:
    if not path:
        return Policy.default()
    try:
        return Policy.from_file(path)
    except PolicyError as exc:
        raise CliError(str(exc)) from None


def cmd_redact(args: argparse.Namespace) -> int:
    policy = _load_policy(args.policy)
    kwargs = scanner_kwargs(args)
    # Scanning only the kinds the policy changes is exact (kept findings are ignored) and much faster: chat
    # rules cost most, and chat is kept by default.
    try:
        rules = [*builtin_rules(), *load_rule_paths(kwargs["extra_rule_paths"])]
    except RuleError as exc:
        raise CliError(str(exc)) from None
    needed = policy.kinds_needed({r.id: r.kind for r in rules})
    if needed is not None:
        wanted = needed & set(kwargs["kinds"]) if kwargs["kinds"] else needed
        kwargs["kinds"] = sorted(wanted) or ["secret"]
    scanner = make_scanner(kwargs)
    try:
        redactor = StreamRedactor(scanner, policy)
        if "hash" in policy.operators:
            redactor.redactor.fingerprint("")  # resolve the hash key now: a missing key is a usage error
    except PolicyError as exc:
        raise CliError(str(exc)) from None

    files: list[str] = []
    for item in iter_paths(args.paths or ["-"], args.exclude or ()):
        if isinstance(item, InputError):
            raise CliError(str(item))
        files.append(item)
    if files.count("-") > 1:
        raise CliError("stdin ('-') can be given only once")
    if args.output and args.output != "-":
        out_real = os.path.realpath(args.output)
        if any(f != "-" and os.path.realpath(f) == out_real for f in files):
            raise CliError(f"{args.output}: output would overwrite an input")
    try:
        kinds = {sniff_compression(f) for f in files}
    except InputError as exc:
        raise CliError(str(exc)) from None
    if len(kinds) > 1:
        raise CliError("inputs mix compressions (plain, gzip, zstd): redact them separately")
    compression = kinds.pop() if kinds else None

    hits = 0

    def show(hit: Hit) -> None:
        nonlocal hits
        hits += 1
        print(f"{current}:{hit.line}: {hit.kind} {hit.type} -> {hit.operator}  {hit.snippet}")

    if args.check:
        redactor.on_hit = show
    started = time.perf_counter()
    current = ""
    sink: OutputSink | None = None
    try:
        if not args.check:
            sink = open_output(args.output, compression)
        for path in files:
            current = "<stdin>" if path == "-" else path
            redact_source(redactor, path, sink)
    except InputError as exc:
        raise CliError(str(exc)) from None
    finally:
        if sink is not None:
            sink.close()
    stats = redactor.stats
    elapsed = time.perf_counter() - started
    if args.stats or args.check:
        mb = stats.bytes_in / 1e6
        print(f"redline redact: {len(files)} source(s), {stats.lines} line(s), {mb:.1f} MB in {elapsed:.2f}s "
              f"({mb / elapsed if elapsed > 0 else 0:.1f} MB/s); {sum(stats.replacements.values())} replacement(s) "
              f"in {stats.records_changed} record(s), {stats.records_dropped} dropped", file=sys.stderr)
    if args.check:
        return EXIT_FINDINGS if stats.total else EXIT_OK
    return EXIT_OK
