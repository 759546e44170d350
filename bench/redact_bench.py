"""Benchmark: `redline redact` throughput and the logging filter's overhead per record.

    .venv/bin/python bench/redact_bench.py [--size-mb 100] [--records 100000]

1. Generates bench/data/redact-100MB-quiet.log (realistic low hit density) and redact-100MB.log (an AI
   gateway's log, a conversation on every fifth line) with redline.synth.write_log (git-ignored; kept between
   runs) and, for each, times `redline redact FILE -o /dev/null` in-process on one core (default policy: chat
   kept, so chat rules are not run) and with chat summarised (all rules). Also times the redaction step
   alone on the findings.
2. Times RedactingFilter.filter on 200-byte records (p50/p99 µs, single records, no handler I/O), against the
   same loop without the filter, for clean records and records holding a secret.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import random
import sys
import time
from pathlib import Path

from redline.engine import Scanner, iter_text_chunks
from redline.redact import Policy
from redline.redact.stream import StreamRedactor
from redline.synth import fake_secret, write_log

DATA = Path(__file__).resolve().parent / "data"


def _pin() -> None:
    if hasattr(os, "sched_setaffinity"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {0})


def bench_redact(path: Path, policy: Policy, label: str) -> tuple[str, float, float, float, int]:
    from redline.cli import main

    size = path.stat().st_size
    t = time.perf_counter()
    args = [str(path), "-o", os.devnull]
    if policy.kinds["chat"].operator != "keep":
        pol = DATA / "chat-summary.toml"
        pol.write_text('[kinds]\nchat = "summary"\n')
        args += ["--policy", str(pol)]
    rc = main(["redact", *args])
    wall = time.perf_counter() - t
    assert rc == 0
    # Detection alone and redaction alone, on the same chunks.
    red = StreamRedactor(Scanner(kinds=sorted(policy.kinds_needed() or {"secret", "pii", "chat"})), policy)
    scan_s = apply_s = 0.0
    n = 0
    with path.open("rb") as fh:
        for chunk in iter_text_chunks(fh, 1 << 20):
            t0 = time.perf_counter()
            findings = red.scanner.scan_text(chunk)
            t1 = time.perf_counter()
            n += len(findings)
            red.scanner.scan_text = lambda _t, f=findings: f  # type: ignore[method-assign]
            red.redact_chunk(chunk)
            del red.scanner.scan_text
            apply_s += time.perf_counter() - t1
            scan_s += t1 - t0
    mb = size / 1e6
    return label, mb / wall, mb / scan_s, mb / apply_s, n


def _percentiles(xs: list[int]) -> tuple[float, float]:
    xs.sort()
    return xs[len(xs) // 2] / 1000, xs[int(len(xs) * 0.99)] / 1000


def bench_filter(records: int) -> list[tuple[str, float, float]]:
    import redline.logging as rl

    flt = rl.RedactingFilter()
    key = fake_secret("github-pat", random.Random(1))
    clean = ("request done user_id=%d path=/v1/chat/completions status=200 latency_ms=412 model=deepseek-chat "
             "tokens=812 upstream=api.deepseek.com region=eu-west-1 trace=4bf92f3577b34da6a3ce929d0e0e4736 ok")
    dirty = "upstream auth failed user_id=%d path=/v1/chat/completions status=401 token=" + key + \
        " model=deepseek-chat region=eu-west-1 retry=3 trace=4bf92f3577b34da6a3ce929d0e0e4736"
    rows = []
    for label, msg in (("clean 200-byte record", clean), ("record with a secret", dirty)):
        base: list[int] = []
        with_f: list[int] = []
        for i in range(records):
            rec = logging.LogRecord("app", logging.INFO, __file__, 1, msg, (i,), None)
            t0 = time.perf_counter_ns()
            rec.getMessage()
            t1 = time.perf_counter_ns()
            base.append(t1 - t0)
            rec2 = logging.LogRecord("app", logging.INFO, __file__, 1, msg, (i,), None)
            t2 = time.perf_counter_ns()
            flt.filter(rec2)
            rec2.getMessage()
            with_f.append(time.perf_counter_ns() - t2)
        b50, b99 = _percentiles(base)
        f50, f99 = _percentiles(with_f)
        rows.append((f"{label} ({len(msg % 0)} B)", f50 - b50, f99 - b99))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mb", type=int, default=100)
    ap.add_argument("--records", type=int, default=100_000)
    args = ap.parse_args(argv)
    _pin()
    DATA.mkdir(parents=True, exist_ok=True)
    # The quiet log is an application log with realistic low hit density (only about one line in 500 carries a
    # secret, personal data or a conversation); the gateway log has a conversation on every fifth line.
    for mix, name in (("quiet", f"redact-{args.size_mb}MB-quiet.log"), ("gateway", f"redact-{args.size_mb}MB.log")):
        path = DATA / name
        if not path.exists():
            print(f"generating {path} ...", file=sys.stderr)
            write_log(path, args.size_mb * 1_000_000, mix=mix)
        print(f"redline redact on {path.name} ({path.stat().st_size / 1e6:.0f} MB, {mix} mix), one core")
        print(f"{'policy':<34}{'end-to-end MB/s':>16}{'detect MB/s':>13}{'redact MB/s':>13}{'findings':>10}")
        for policy, label in ((Policy.default(), "default (chat kept)"),
                              (Policy.from_dict({"kinds": {"chat": "summary"}}), "chat summarised")):
            row, e2e, det, app, n = bench_redact(path, policy, label)
            print(f"{row:<34}{e2e:>16.1f}{det:>13.1f}{app:>13.1f}{n:>10}")
        print()
    print(f"RedactingFilter overhead per record, {args.records} records, one core")
    print(f"{'record':<40}{'p50 µs':>10}{'p99 µs':>10}")
    for label, p50, p99 in bench_filter(args.records):
        print(f"{label:<40}{p50:>10.1f}{p99:>10.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
