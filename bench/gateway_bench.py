"""Gateway benchmark: added latency and throughput of the redline gateway, and LiteLLM's proxy for comparison.

Everything runs on this machine, on loopback: the recording upstream stand-in (tests/gateway/upstream.py) in
its own process, the gateway (``redline gateway``) and LiteLLM's proxy each with the same number of worker
processes, and a load generator (raw asyncio HTTP/1.1 keep-alive client, so the client is not the bottleneck).

Each request is a chat completion with a 2 KB prompt holding a generated secret and personal data; the policy
is fully on (secret redacted, personal data pseudonymised and restored in the answer, responses scanned).

    .venv/bin/python bench/gateway_bench.py                       # redline only
    python -m venv bench/.venv-litellm && bench/.venv-litellm/bin/pip install "litellm[proxy]<1.110"
    .venv/bin/python bench/gateway_bench.py --litellm             # with LiteLLM's proxy

The table gives, per target, sequential latency (p50/p99, and what the proxy adds over calling the upstream
directly), throughput at ``--clients`` concurrent clients, and the CPU time the serving process tree spent per
request during the throughput run. On a shared machine wall-clock latency is mostly scheduling delay (four
process wake-ups per proxied request instead of two); CPU ms/request is the figure other load distorts least.
The machine (CPU count and model) and its load average before and after are printed with the table.
``bench/gateway_profile.py`` breaks the gateway's CPU time down (stages, cProfile, without the engine).

Request counts and durations are bounded; only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from redline.synth import fake_pii, fake_secret  # noqa: E402

LITELLM = ROOT / "bench" / ".venv-litellm" / "bin" / "litellm"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prompt_2kb(seed: int = 7) -> str:
    rng = random.Random(seed)
    secret = fake_secret("openai-project-key", rng)
    email = fake_pii("email", rng)
    filler = ("Our service retries failed payments three times with exponential backoff, then marks the "
              "invoice as overdue and notifies the account owner. ")
    head = f"Please review this incident report. The on-call engineer was {email}. "
    mid = f"During debugging someone pasted the config line OPENAI_API_KEY={secret} into the ticket. "
    body = head + filler * 6 + mid + filler * 6 + f"Reply to {email} with a summary."
    while len(body) < 2048:
        body += " " + filler
    return body[:2048] if len(body) > 2048 else body


# ---------------------------------------------------------------------------------------------- load client


class Conn:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    async def post(self, path: str, body: bytes, headers: dict[str, str], method: str = "POST") -> tuple[int, bytes]:
        if self.writer is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        h = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.writer.write(f"{method} {path} HTTP/1.1\r\nhost: {self.host}:{self.port}\r\ncontent-type: "
                          f"application/json\r\ncontent-length: {len(body)}\r\n{h}\r\n".encode() + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        hdrs = {ln.split(":", 1)[0].strip().lower(): ln.split(":", 1)[1].strip() for ln in lines[1:] if ":" in ln}
        if "content-length" in hdrs:
            data = await self.reader.readexactly(int(hdrs["content-length"]))
        elif hdrs.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                if size == 0:
                    await self.reader.readuntil(b"\r\n")
                    break
                parts.append(await self.reader.readexactly(size))
                await self.reader.readexactly(2)
            data = b"".join(parts)
        else:
            data = await self.reader.read()
            self.writer.close()
            self.writer = None
        if hdrs.get("connection", "").lower() == "close":
            self.writer.close() if self.writer else None
            self.writer = None
        return status, data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class Target:
    def __init__(self, name: str, port: int, path: str, model: str, key: str | None, expect: str,
                 pid: int | None = None) -> None:
        self.name, self.port, self.path, self.model, self.key, self.expect = name, port, path, model, key, expect
        self.pid = pid  # the serving process (and its workers): its CPU time is measured

    def body(self, prompt: str) -> bytes:
        return json.dumps({"model": self.model, "messages": [{"role": "user", "content": prompt}]}).encode()

    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.key}"} if self.key else {}


async def one(conn: Conn, t: Target, body: bytes) -> float:
    t0 = time.perf_counter()
    status, data = await conn.post(t.path, body, t.headers())
    dt = time.perf_counter() - t0
    if status != 200:
        raise RuntimeError(f"{t.name}: HTTP {status}: {data[:300]!r}")
    return dt


async def latency(targets: list[Target], prompt: str, n: int) -> dict[str, list[float]]:
    """Sequential requests, targets interleaved so drift affects all alike.

    Interleave only targets that leave no work behind: LiteLLM's proxy keeps burning CPU after it has answered
    (callbacks, logging), which would be charged to whichever target is measured next on a small machine.
    """
    conns = {t.name: Conn("127.0.0.1", t.port) for t in targets}
    bodies = {t.name: t.body(prompt) for t in targets}
    out: dict[str, list[float]] = {t.name: [] for t in targets}
    for t in targets:  # warm up
        for _ in range(50):
            await one(conns[t.name], t, bodies[t.name])
    for _ in range(n):
        for t in targets:
            out[t.name].append(await one(conns[t.name], t, bodies[t.name]))
    for c in conns.values():
        c.close()
    return out


async def throughput(t: Target, prompt: str, clients: int, seconds: float, max_requests: int
                     ) -> tuple[float, int, float]:
    """Requests per second, errors, and CPU ms per request of the serving process tree."""
    body = t.body(prompt)
    done = 0
    errors = 0
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done, errors
        conn = Conn("127.0.0.1", t.port)
        while time.perf_counter() < stop and done < max_requests:
            try:
                await one(conn, t, body)
                done += 1
            except Exception:
                errors += 1
                conn.close()
                conn = Conn("127.0.0.1", t.port)
                if errors > 100:
                    raise
        conn.close()

    warm = Conn("127.0.0.1", t.port)
    for _ in range(20):
        await one(warm, t, body)
    warm.close()
    cpu0 = proc_cpu_seconds(t.pid) if t.pid else 0.0
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    elapsed = time.perf_counter() - t0
    cpu = (proc_cpu_seconds(t.pid) - cpu0) if t.pid else 0.0
    return done / elapsed, errors, cpu / max(1, done) * 1000


# ---------------------------------------------------------------------------------------------- processes


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listening on {port} after {timeout}s")


def start(cmd: list[str], port: int, env: dict[str, str] | None = None, log: Path | None = None
          ) -> subprocess.Popen[bytes]:
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)
    wait_port(port, proc)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


UPSTREAM_MAIN = """
import sys, time
sys.path.insert(0, {root!r})
from tests.gateway.upstream import Upstream
u = Upstream()
u.record = False
u.start()
print(u.port, flush=True)
while True:
    time.sleep(3600)
"""


def start_upstream(procs: list[subprocess.Popen[bytes]]) -> tuple[subprocess.Popen[bytes], int]:
    """Start the local OpenAI-compatible stand-in (added to ``procs``); return it and the port it listens on."""
    up = subprocess.Popen([sys.executable, "-c", UPSTREAM_MAIN.format(root=str(ROOT))], stdout=subprocess.PIPE,
                          start_new_session=True)
    procs.append(up)
    assert up.stdout is not None
    return up, int(up.stdout.readline())


def gateway_config(upstream_port: int, tmp: Path) -> Path:
    cfg = {
        "providers": [{"name": "local", "base_url": f"http://127.0.0.1:{upstream_port}/v1"}],
        "models": [{"name": "bench", "provider": "local", "upstream": "echo-64"}],
        # The built-in rules only (they detect email addresses themselves): the product's default detection.
        "policy": {"default": {"request": {"secret": "redact", "pii": "pseudonymize", "chat": "allow"},
                               "response": {"secret": "redact"}}},
        "store": {"audit": str(tmp / "audit.db"), "keys": str(tmp / "keys.db")},
    }
    path = tmp / "redline.yaml"
    path.write_text(json.dumps(cfg))  # JSON is YAML
    return path


def litellm_config(upstream_port: int, tmp: Path) -> Path:
    path = tmp / "litellm.yaml"
    path.write_text(json.dumps({
        "model_list": [{"model_name": "bench", "litellm_params": {
            "model": "openai/echo-64", "api_base": f"http://127.0.0.1:{upstream_port}/v1", "api_key": "x"}}],
        "litellm_settings": {"telemetry": False, "drop_params": True},
    }))
    return path


def proc_cpu_seconds(pid: int, which: tuple[int, ...] = (11, 12)) -> float:
    """User + system CPU time of a process and all its live descendants (all threads), from /proc.

    ``which``: fields after the command name to add up (11 utime, 12 stime).
    """
    tck = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                st = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            ppid = int(st.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(d))
    total = 0.0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(fields[i]) for i in which) / tck
        todo.extend(children.get(p, []))
    return total


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds of a process's threads: ``main`` (the event loop) and ``other`` (audit writes, executors)."""
    tck = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                st = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
                name = "main" if int(tid) == pid else "other"
                f = st.rsplit(")", 1)[1].split()
                out[name] = out.get(name, 0.0) + (int(f[11]) + int(f[12])) / tck
    return out


def machine() -> str:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    la = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"machine: {os.cpu_count()} CPU(s) (nproc {len(os.sched_getaffinity(0))}), {model}; load average {la}"


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--requests", type=int, default=2000, help="sequential requests per target for latency")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=10.0, help="duration of each throughput run")
    ap.add_argument("--litellm", action="store_true", help="also run LiteLLM's proxy (bench/.venv-litellm)")
    ap.add_argument("--nice", type=int, default=None, metavar="N",
                    help="run the benchmark's own processes (client, upstream, gateway, LiteLLM) at this nice value, "
                         "e.g. -10 as root, to measure with less interference from other load on a shared machine")
    args = ap.parse_args()
    if args.nice is not None:
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)  # inherited by every process started below

    prompt = prompt_2kb()
    tmp = Path(tempfile.mkdtemp(prefix="redline-gwbench-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        up, up_port = start_upstream(procs)

        from redline.store.sqlite import SqliteKeyStore

        cfg = gateway_config(up_port, tmp)
        with SqliteKeyStore(tmp / "keys.db") as ks:
            _, key = ks.create("bench")
        gw_port = free_port()
        procs.append(start([str(Path(sys.executable).parent / "redline"), "gateway", "--config", str(cfg), "--port",
                            str(gw_port), "--workers", str(args.workers)], gw_port, log=tmp / "gateway.log"))
        targets = [Target("direct", up_port, "/v1/chat/completions", "echo-64", None, "", pid=up.pid),
                   Target("redline", gw_port, "/v1/chat/completions", "bench", key, "", pid=procs[-1].pid)]

        # Sanity: the gateway's upstream never sees the planted values, the answer has them back.
        async def check() -> None:
            c = Conn("127.0.0.1", gw_port)
            status, data = await c.post("/v1/chat/completions", targets[1].body(prompt), targets[1].headers())
            c.close()
            assert status == 200, data[:300]
            answer = json.loads(data)["choices"][0]["message"]["content"]
            assert "[REDACTED:openai-project-key]" in answer, answer[:300]
            assert answer.replace("[REDACTED:openai-project-key]", "") != answer
        asyncio.run(check())

        lite_port = None
        if args.litellm:
            if not LITELLM.exists():
                print(f"LiteLLM not installed at {LITELLM}; see --help", file=sys.stderr)
                return 2
            lite_port = free_port()
            master = "sk-" + secrets.token_hex(32)  # LiteLLM authenticates with its master key (no database)
            procs.append(start([str(LITELLM), "--config", str(litellm_config(up_port, tmp)), "--port",
                                str(lite_port), "--host", "127.0.0.1", "--num_workers", str(args.workers)],
                               lite_port, env={"LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False",
                                               "LITELLM_MASTER_KEY": master},
                               log=tmp / "litellm.log"))
            targets.append(Target("litellm", lite_port, "/v1/chat/completions", "bench", master, "",
                                  pid=procs[-1].pid))

        load_before = machine()
        lat = asyncio.run(latency(targets[:2], prompt, args.requests))  # direct and redline, interleaved
        for t in targets[2:]:  # LiteLLM on its own
            lat.update(asyncio.run(latency([t], prompt, args.requests)))
        rows = []
        base50, base99 = pct(lat["direct"], 50), pct(lat["direct"], 99)
        tput: dict[str, tuple[float, int, float]] = {}
        for t in targets:
            tput[t.name] = asyncio.run(throughput(t, prompt, args.clients, args.seconds, 200_000))
        for t in targets:
            p50, p99 = pct(lat[t.name], 50), pct(lat[t.name], 99)
            rows.append((t.name, p50 * 1000, p99 * 1000, (p50 - base50) * 1000, (p99 - base99) * 1000,
                         statistics.mean(lat[t.name]) * 1000, *tput[t.name]))
        print(f"\n2 KB prompt with a secret and an email, full policy; {args.requests} sequential requests for "
              f"latency, {args.clients} clients x {args.seconds:.0f} s for throughput; {args.workers} worker(s)")
        print(f"before: {load_before}" + (f"; benchmark processes at nice {args.nice}" if args.nice is not None
                                           else ""))
        print(f"after:  {machine()}\n")
        print(f"| {'target':<8} | p50 ms | p99 ms | added p50 ms | added p99 ms | mean ms | req/s @{args.clients} "
              f"| errors | CPU ms/req |")
        print("|----------|-------:|-------:|-------------:|-------------:|--------:|-----------:|-------:|-----------:|")
        for name, p50, p99, a50, a99, mean, rps, errs, cpu in rows:
            added50 = "—" if name == "direct" else f"{a50:.3f}"
            added99 = "—" if name == "direct" else f"{a99:.3f}"
            print(f"| {name:<8} | {p50:6.3f} | {p99:6.3f} | {added50:>12} | {added99:>12} | {mean:7.3f} "
                  f"| {rps:10.0f} | {errs:6d} | {cpu:10.3f} |")
        print("\nCPU ms/req: user + system CPU time of the serving process tree (all threads and workers) during the "
              "throughput run, per request; for direct, the upstream stand-in itself.")
        if "litellm" in tput and tput["litellm"][0] > 0:
            print(f"throughput redline / litellm: {tput['redline'][0] / tput['litellm'][0]:.1f}x; "
                  f"CPU per request litellm / redline: {tput['litellm'][2] / max(1e-9, tput['redline'][2]):.1f}x")
        return 0
    finally:
        for p in reversed(procs):
            stop(p)


if __name__ == "__main__":
    sys.exit(main())
