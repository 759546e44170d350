"""Probe targets: hosts, ``host:port``, ``[v6]:port``, CIDR blocks and target files, expanded to endpoints.

Only what the operator names is probed; a CIDR block is expanded with :mod:`ipaddress` and anything above
``DEFAULT_MAX_HOSTS`` addresses must be allowed explicitly with ``--max-hosts``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PORTS: tuple[int, ...] = (8123, 8443, 9000, 9440, 6379, 5432, 9200, 27017, 11211, 5984)
DEFAULT_MAX_HOSTS = 256
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62})(?:\.[A-Za-z0-9_-]{1,63})*\.?$")


class TargetError(ValueError):
    """A target that cannot be parsed, or more addresses than allowed; the message is one line."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int

    @property
    def label(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_port(text: str, what: str = "port") -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise TargetError(f"bad {what} {text!r}: use 1-65535")
    return int(text)


def parse_ports(text: str) -> tuple[int, ...]:
    """``"8123,9000-9002"`` -> (8123, 9000, 9001, 9002); at most 1,024 ports."""
    out: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if "-" in part:
            lo_s, hi_s = part.split("-", 1)
            lo, hi = parse_port(lo_s), parse_port(hi_s)
            if hi < lo or hi - lo >= 1024:
                raise TargetError(f"bad port range {part!r}")
            out.extend(range(lo, hi + 1))
        else:
            out.append(parse_port(part))
    if not out:
        raise TargetError("no ports given")
    if len(set(out)) > 1024:
        raise TargetError("more than 1,024 ports")
    return tuple(dict.fromkeys(out))


def _split(target: str) -> tuple[str, int | None]:
    """``host``, ``host:port``, ``[v6]``, ``[v6]:port``, bare IPv6, CIDR (``10.0.0.0/30``, ``10.0.0.0/30:6379``)."""
    t = target.strip()
    if not t:
        raise TargetError("empty target")
    if t.startswith("["):
        m = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?", t)
        if not m:
            raise TargetError(f"bad target {target!r}")
        return m.group(1), parse_port(m.group(2)) if m.group(2) else None
    if t.count(":") == 1:
        host, port = t.split(":")
        return host, parse_port(port)
    return t, None  # a name, IPv4, CIDR or bare IPv6 (several colons)


def _addresses(host: str) -> list[str]:
    if "/" in host:
        try:
            net = ipaddress.ip_network(host, strict=False)
        except ValueError:
            raise TargetError(f"bad CIDR block {host!r}") from None
        if net.num_addresses > 1 << 20:
            raise TargetError(f"{host}: {net.num_addresses:,} addresses is far too many")
        hosts = list(net.hosts()) if net.num_addresses > 2 else list(net)
        return [str(a) for a in hosts]
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    if not _HOSTNAME.match(host):
        raise TargetError(f"bad target {host!r}: not a host name, address or CIDR block")
    return [host.rstrip(".").lower()]


def read_target_file(path: str) -> list[str]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise TargetError(f"cannot read targets file {path}: {exc.strerror or exc}") from None
    out: list[str] = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        out.extend(line.split())
    return out


def expand(targets: Iterable[str], ports: Sequence[int] = DEFAULT_PORTS,
           max_hosts: int | None = None) -> list[Endpoint]:
    """Endpoints in the order given (duplicates dropped). More than 256 addresses needs ``max_hosts``."""
    limit = DEFAULT_MAX_HOSTS if max_hosts is None else max_hosts
    seen_hosts: dict[str, None] = {}
    endpoints: dict[Endpoint, None] = {}
    for target in targets:
        host, port = _split(target)
        for addr in _addresses(host):
            seen_hosts.setdefault(addr, None)
            if len(seen_hosts) > limit:
                hint = "raise --max-hosts" if max_hosts is not None else "pass --max-hosts N to allow more"
                raise TargetError(f"more than {limit} addresses in the targets: {hint}")
            for p in (port,) if port is not None else ports:
                endpoints.setdefault(Endpoint(addr, p), None)
    if not endpoints:
        raise TargetError("no targets given")
    return list(endpoints)
