"""Where the gateway's time goes: CPU time of the gateway process per request, and a cProfile of the request path.

CPU time (utime + stime of the gateway process, all threads) per request is a metric that a busy machine does not
distort much, unlike wall-clock latency. Same setup as ``gateway_bench.py`` (2 KB prompt with a secret and an
email, full policy, the local upstream stand-in in its own process), one worker, loopback only, bounded counts.

    .venv/bin/python bench/gateway_profile.py                      # CPU ms/request
    .venv/bin/python bench/gateway_profile.py --profile 30         # plus the top 30 functions (cProfile)
    .venv/bin/python bench/gateway_profile.py --stages             # plus in-process cost of each request stage
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from gateway_bench import (  # noqa: E402
    Conn,
    Target,
    gateway_config,
    machine,
    one,
    proc_cpu_seconds,
    prompt_2kb,
    start,
    start_upstream,
    stop,
    thread_cpu_seconds,
)

from redline.gateway.cli import DEFAULT_HOST  # noqa: E402

PROFILED_GATEWAY = """
import cProfile, os, sys
sys.path.insert(0, {root!r})
import uvicorn
from redline.gateway.app import app_from_env
import time
prof = cProfile.Profile(time.thread_time)  # CPU time of the event-loop thread, not wall time
if {stub!r}:
    from redline.engine import Scanner
    Scanner.scan_text = lambda self, text, *a, **k: []  # diagnostic only: the gateway without the engine's cost
app = app_from_env()
cfg = dict(host={host!r}, port={port}, log_level="warning", access_log=False)
for mod, opt, value in (("uvloop", "loop", "uvloop"), ("httptools", "http", "httptools")):
    try:
        __import__(mod)
        cfg[opt] = value
    except ImportError:
        pass
server = uvicorn.Server(uvicorn.Config(app, **cfg))
import signal
def on_usr1(*_):
    prof.enable()
def on_usr2(*_):
    prof.disable()
    prof.dump_stats({out!r})
signal.signal(signal.SIGUSR1, on_usr1)
signal.signal(signal.SIGUSR2, on_usr2)
server.run()
"""


async def load(port: int, t: Target, body: bytes, n: int, clients: int) -> None:
    left = n

    async def worker() -> None:
        nonlocal left
        conn = Conn("127.0.0.1", port)
        while left > 0:
            left -= 1
            await one(conn, t, body)
        conn.close()

    await asyncio.gather(*(worker() for _ in range(clients)))


def stages(prompt: str, n: int, upstream_port: int = 0) -> None:
    """In-process cost of each stage of the request path, µs per request (no HTTP)."""
    import random

    from redline.gateway.app import Gateway, _dumps, _loads
    from redline.gateway.config import parse_config
    from redline.gateway.inspect import request_segments, scan_segments
    from redline.gateway.streaming import ResponseFilter, process_response_body
    from redline.store.sqlite import SqliteAuditStore, SqliteKeyStore

    tmp = Path(tempfile.mkdtemp(prefix="redline-gwprof-"))
    cfg = json.loads(gateway_config(1, tmp).read_text())
    gw = Gateway(parse_config(cfg), key_store=SqliteKeyStore(tmp / "k.db"), audit_store=SqliteAuditStore(tmp / "a.db"))
    raw = json.dumps({"model": "bench", "messages": [{"role": "user", "content": prompt}]}).encode()
    random.seed(1)

    def timeit(name: str, fn: object) -> None:
        f = fn  # type: ignore[assignment]
        for _ in range(20):
            f()  # type: ignore[operator]
        t0 = time.process_time()
        for _ in range(n):
            f()  # type: ignore[operator]
        print(f"  {name:<40} {(time.process_time() - t0) / n * 1e6:8.1f} µs")

    body = _loads(raw)
    segs = request_segments(body)
    texts = [s.text for s in segs]
    found = scan_segments(gw.scanner, texts)
    decision = gw.engine.evaluate("local", "bench", [f for _, f in found])
    print(f"stages ({n} iterations each, CPU µs per call; {len(found)} findings in the prompt):")
    timeit("json parse request (2 KB)", lambda: _loads(raw))
    timeit("request_segments", lambda: request_segments(_loads(raw)))
    timeit("engine scan (scan_segments)", lambda: scan_segments(gw.scanner, texts))
    timeit("policy evaluate", lambda: gw.engine.evaluate("local", "bench", [f for _, f in found]))

    def rewrite() -> None:
        b = _loads(raw)
        gw._rewrite(b, request_segments(b), found, decision)

    timeit("parse + segments + rewrite", rewrite)
    b = _loads(raw)
    vault = gw._rewrite(b, request_segments(b), found, decision)
    timeit("json serialise request", lambda: _dumps(b))
    answer = {"id": "c", "object": "chat.completion", "created": 1, "model": "echo-64",
              "choices": [{"index": 0, "message": {"role": "assistant", "content": "You said: " + b["messages"][0][
                  "content"]}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 500, "completion_tokens": 500}}
    ans_raw = json.dumps(answer).encode()
    filt = ResponseFilter(gw.scanner, gw.engine, gw.redactor, "local", "bench")

    def response() -> None:
        o = _loads(ans_raw)
        process_response_body(o, filt, vault)
        _dumps(o)

    timeit("response: parse + scan + restore + dump", response)
    timeit("engine scan of the answer alone", lambda: gw.scanner.scan_text(answer["choices"][0]["message"]["content"]))
    clean = texts[0]
    for _, f in sorted(found, key=lambda x: -x[1].start):
        clean = clean[:f.start] + "[REDACTED]" + clean[f.end:]
    timeit("engine scan, same prompt without findings", lambda: gw.scanner.scan_text(clean))

    from redline.gateway.app import _Ctx

    async def audit_and_upstream() -> None:
        await gw.startup()
        findings = [f for _, f in found]

        def fin() -> None:
            ctx = _Ctx(rid="req_x", endpoint="chat.completions", t0=time.perf_counter(), key=None,
                       provider="local", model="echo-64", action="redact", findings=findings, upstream_ms=0.3,
                       prompt_tokens=500, completion_tokens=500)
            gw.finish(ctx)

        timeit("audit + metrics (Gateway.finish)", fin)
        if upstream_port:
            import aiohttp
            import httpx

            url = f"http://127.0.0.1:{upstream_port}/v1/chat/completions"
            payload = _dumps(b)
            hdrs = {"content-type": "application/json"}
            async with aiohttp.ClientSession() as session:
                async def a_one() -> None:
                    async with session.post(url, data=payload, headers=hdrs) as r:
                        await r.read()
                await atime("upstream round trip, aiohttp (client side)", a_one)
            async with httpx.AsyncClient() as client:
                async def h_one() -> None:
                    r = await client.post(url, content=payload, headers=hdrs)
                    _ = r.content
                await atime("upstream round trip, httpx (client side)", h_one)
        await gw.shutdown()

    async def atime(name: str, fn: Any) -> None:
        for _ in range(20):
            await fn()
        t0 = time.thread_time()
        for _ in range(n):
            await fn()
        print(f"  {name:<40} {(time.thread_time() - t0) / n * 1e6:8.1f} µs")

    try:
        import uvloop

        uvloop.run(audit_and_upstream())
    except ImportError:
        asyncio.run(audit_and_upstream())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--profile", type=int, default=0, metavar="N", help="print the top N functions (cProfile)")
    ap.add_argument("--stages", action="store_true", help="also time each stage in-process")
    ap.add_argument("--stub-engine", action="store_true",
                    help="diagnostic: replace the engine's scan with one that finds nothing (the gateway's own cost)")
    args = ap.parse_args()
    prompt = prompt_2kb()
    print(machine())
    tmp = Path(tempfile.mkdtemp(prefix="redline-gwprof-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        up, up_port = start_upstream(procs)
        if args.stages:
            stages(prompt, 500, up_port)
        from gateway_bench import free_port

        from redline.store.sqlite import SqliteKeyStore

        cfg = gateway_config(up_port, tmp)
        with SqliteKeyStore(tmp / "keys.db") as ks:
            _, key = ks.create("bench")
        port = free_port()
        out = tmp / "gateway.prof"
        env = {"REDLINE_GATEWAY_CONFIG": str(cfg)}
        code = PROFILED_GATEWAY.format(root=str(ROOT / "src"), host=DEFAULT_HOST, port=port, out=str(out),
                                       stub=args.stub_engine)
        gw = start([sys.executable, "-c", code], port, env=env, log=tmp / "gateway.log")
        procs.append(gw)
        t = Target("redline", port, "/v1/chat/completions", "bench", key, "")
        body = t.body(prompt)
        asyncio.run(load(port, t, body, 200, args.clients))  # warm up
        n = args.requests
        healthz = Target("healthz", port, "/healthz", "", None, "")

        async def floor() -> None:
            async def worker(k: int) -> None:
                conn = Conn("127.0.0.1", port)
                for _ in range(k):
                    status, _ = await conn.post("/healthz", b"", {}, method="GET")
                    assert status == 200
                conn.close()
            await asyncio.gather(*(worker(n // args.clients) for _ in range(args.clients)))

        _ = healthz
        c0 = proc_cpu_seconds(gw.pid)
        asyncio.run(floor())
        c1 = proc_cpu_seconds(gw.pid)
        print(f"floor: GET /healthz (uvicorn + Starlette + HTTP syscalls, no proxying): "
              f"{(c1 - c0) / n * 1000:.3f} ms CPU/request")
        c0, u0, w0, th0 = proc_cpu_seconds(gw.pid), proc_cpu_seconds(up.pid), time.perf_counter(), \
            thread_cpu_seconds(gw.pid)
        s0 = proc_cpu_seconds(gw.pid, (12,))
        asyncio.run(load(port, t, body, n, args.clients))
        c1, u1, w1, th1 = proc_cpu_seconds(gw.pid), proc_cpu_seconds(up.pid), time.perf_counter(), \
            thread_cpu_seconds(gw.pid)
        s1 = proc_cpu_seconds(gw.pid, (12,))
        print(f"{n} requests, {args.clients} clients: gateway CPU {(c1 - c0) / n * 1000:.3f} ms/request, upstream "
              f"CPU {(u1 - u0) / n * 1000:.3f} ms/request, {n / (w1 - w0):.0f} req/s; load {os.getloadavg()}")
        print(f"  of which system (kernel: sockets, epoll) {(s1 - s0) / n * 1000:.3f} ms/request")
        for name in sorted(th1, key=lambda k: th0.get(k, 0.0) - th1[k]):
            d = th1[name] - th0.get(name, 0.0)
            if d > 0:
                print(f"  thread {name:<16} {d / n * 1000:.3f} ms CPU/request")
        if args.profile:
            import signal

            gw.send_signal(signal.SIGUSR1)
            time.sleep(0.3)
            asyncio.run(load(port, t, body, args.requests, args.clients))
            gw.send_signal(signal.SIGUSR2)
            deadline = time.monotonic() + 10
            while not out.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(0.5)
            st = pstats.Stats(str(out))
            st.sort_stats("tottime").print_stats(args.profile)
            st.sort_stats("cumulative").print_stats(args.profile)
        return 0
    finally:
        for p in reversed(procs):
            stop(p)


if __name__ == "__main__":
    sys.exit(main())
