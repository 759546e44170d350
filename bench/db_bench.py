"""Full-scan throughput and memory of ``redline scan clickhouse://... --full`` on a generated log_stream table.

Starts a throwaway ClickHouse (tests/servers.py), loads generated rows shaped like DeepSeek's leaked log_stream
(100k distinct rows, repeated with shifted timestamps up to the requested sizes), then runs the redline console
script once per size and prints rows/s, MB/s and peak RSS. Memory must stay flat between sizes.

    .venv/bin/python bench/db_bench.py                 # 100k and 1M rows
    .venv/bin/python bench/db_bench.py --rows 100000 --rows 1000000 --batch-size 5000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.servers import (  # noqa: E402
    LOG_STREAM_COLUMNS,
    clickhouse_client,
    clickhouse_create_log_stream,
    clickhouse_insert,
    log_stream_tuples,
    start_clickhouse,
)

from redline.synth import log_stream_rows  # noqa: E402

DISTINCT = 100_000


def load(client: object, table: str, rows: int) -> None:
    c: object = client
    clickhouse_create_log_stream(c, table)
    base = min(rows, DISTINCT)
    clickhouse_insert(c, table, LOG_STREAM_COLUMNS, log_stream_tuples(log_stream_rows(base, seed=1)))
    done, k = base, 1
    cols = ", ".join(f"`{x}`" for x in LOG_STREAM_COLUMNS[1:])
    hi = c.execute(f"SELECT toUInt32(max(timestamp)) FROM {table}")[0][0]  # type: ignore[attr-defined]
    while done < rows:
        n = min(base, rows - done)
        c.execute(f"INSERT INTO {table} SELECT timestamp + {86400 * k}, {cols} FROM {table} "  # type: ignore[attr-defined]
                  f"WHERE timestamp <= toDateTime({hi}) LIMIT {n}")
        done += n
        k += 1
    got = c.execute(f"SELECT count() FROM {table}")[0][0]  # type: ignore[attr-defined]
    assert got == rows, (got, rows)


def run_scan(url: str, table: str, batch: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        summary = Path(tmp) / "summary.json"
        cmd = [str(Path(sys.executable).with_name("redline")), "scan", url, "--tables", table, "--full",
               "--format", "jsonl", "-o", os.devnull, "--no-progress", "--fail-on", "never",
               "--batch-size", str(batch), "--db-summary", str(summary)]
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        err = proc.stderr.read().decode() if proc.stderr else ""
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"redline failed: {err}")
        s = json.loads(summary.read_text())
        findings = sum(c["findings"] for t in s["tables"] for c in t["columns"])
        return {"rows": s["rows"], "seconds": seconds, "scan_seconds": s["seconds"],
                "mb": _chars(s) / 1e6, "findings": findings, "peak_rss_mb": usage.ru_maxrss / 1024}


def _chars(summary: dict[str, object]) -> int:
    # bytes_read of a database scan are the characters of the text cells scanned
    tables = summary["tables"]
    assert isinstance(tables, list)
    return sum(int(c.get("chars", 0)) for t in tables for c in t["columns"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, action="append", help="table sizes (default 100000 and 1000000)")
    ap.add_argument("--batch-size", type=int, default=5000)
    args = ap.parse_args()
    sizes = args.rows or [100_000, 1_000_000]
    server = start_clickhouse()
    try:
        client = clickhouse_client(server)
        client.execute("CREATE DATABASE IF NOT EXISTS bench")
        for n in sizes:
            t = time.perf_counter()
            load(client, f"bench.log_stream_{n}", n)
            print(f"loaded {n:,} rows in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        print(f"ClickHouse {client.execute('SELECT version()')[0][0]}, redline scan --full --format jsonl, "
              f"batch {args.batch_size}")
        print(f"{'rows':>10} {'seconds':>8} {'rows/s':>9} {'MB':>8} {'MB/s':>6} {'findings':>9} {'peak RSS MB':>12}")
        for n in sizes:
            r = run_scan(server.url("bench"), f"log_stream_{n}", args.batch_size)
            print(f"{r['rows']:>10,.0f} {r['seconds']:>8.1f} {r['rows'] / r['seconds']:>9,.0f} {r['mb']:>8.1f} "
                  f"{r['mb'] / r['seconds']:>6.2f} {r['findings']:>9,.0f} {r['peak_rss_mb']:>12.1f}")
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
