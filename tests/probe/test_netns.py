"""Redis in a network namespace the test creates (a veth pair on a private /30): seen from the host it is a
separate machine, so Redis's protected mode applies: ``restricted`` with protected mode on, ``open`` with it off.
Skipped when ``ip netns`` is not permitted (not root, or no CAP_NET_ADMIN)."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest

from redline.probe import Options, probe
from redline.probe.targets import expand


def _ip(*args: str, ns: str | None = None) -> None:
    cmd = ["ip", *(["netns", "exec", ns, "ip"] if ns else []), *args]
    subprocess.run(cmd, check=True, capture_output=True, timeout=10)


@pytest.fixture(scope="module")
def netns() -> Iterator[tuple[str, str]]:
    """``(namespace, address)``: a namespace reachable from here at ``address`` (10.213.N.2)."""
    if not shutil.which("ip") or os.geteuid() != 0:
        pytest.skip("network namespaces need root and iproute2")
    used = subprocess.run(["ip", "-4", "addr"], capture_output=True, text=True).stdout
    n = next((i for i in random.sample(range(1, 250), 40) if f"10.213.{i}." not in used), None)
    if n is None:
        pytest.skip("no free 10.213.N.0/30 subnet")
    name, host_if, ns_if = f"rlprobe{n}", f"rlp{n}h", f"rlp{n}n"
    try:
        _ip("netns", "add", name)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"ip netns add not permitted: {exc.stderr.decode(errors='replace').strip()}")
    try:
        _ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        _ip("link", "set", ns_if, "netns", name)
        _ip("addr", "add", f"10.213.{n}.1/30", "dev", host_if)
        _ip("link", "set", host_if, "up")
        _ip("addr", "add", f"10.213.{n}.2/30", "dev", ns_if, ns=name)
        _ip("link", "set", ns_if, "up", ns=name)
        _ip("link", "set", "lo", "up", ns=name)
        yield name, f"10.213.{n}.2"
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot set up the veth pair: {exc.stderr.decode(errors='replace').strip()}")
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def _wait(addr: str, port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {proc.returncode}")
        with socket.socket() as s:
            s.settimeout(0.3)
            if s.connect_ex((addr, port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"redis-server did not listen on {addr}:{port}")


@pytest.fixture(scope="module")
def redis_in_netns(netns: tuple[str, str]) -> Iterator[tuple[str, int, int]]:
    binary = shutil.which("redis-server")
    if not binary:
        pytest.skip("redis-server is not installed (Debian package redis-server)")
    name, addr = netns
    procs: list[subprocess.Popen[bytes]] = []
    tmp = tempfile.mkdtemp(prefix="redline-netns-redis-")
    try:
        for port, protected in ((6379, "yes"), (6380, "no")):
            procs.append(subprocess.Popen(
                ["ip", "netns", "exec", name, binary, "--port", str(port), "--save", "", "--appendonly", "no",
                 "--protected-mode", protected, "--dir", tmp, "--logfile", f"{tmp}/{port}.log"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
            _wait(addr, port, procs[-1])
        yield addr, 6379, 6380
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def test_protected_mode_is_restricted_and_unprotected_is_open(redis_in_netns: tuple[str, int, int]) -> None:
    addr, protected, unprotected = redis_in_netns
    # the whole default port list against the "other host": only Redis answers, everything else is closed
    eps = expand([addr, f"{addr}:{unprotected}"])
    results = {r.port: r for r in asyncio.run(probe(eps, Options(timeout=2)))}
    assert (results[protected].service, results[protected].verdict) == ("redis", "restricted")
    assert any("protected mode" in e for e in results[protected].evidence)
    assert (results[unprotected].service, results[unprotected].verdict) == ("redis", "open")
    assert {r.verdict for p, r in results.items() if p not in (protected, unprotected)} == {"closed"}
