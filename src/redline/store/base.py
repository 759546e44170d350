"""Interfaces shared by the gateway and the store backends (SQLite by default, ClickHouse for scale).

An audit event never carries a raw secret or raw personal data: finding types, counts and keyed fingerprints
only, plus (when configured) the prompt as it was after redaction.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

Action = Literal["allow", "redact", "pseudonymize", "block", "reroute", "error", "denied"]
GroupBy = Literal["team", "model", "provider", "key"]


@dataclass
class AuditEvent:
    ts: datetime  # UTC
    request_id: str
    key_id: str | None
    team: str | None
    user: str | None
    provider: str  # provider that served (after reroute), or the one asked for when refused
    model: str
    endpoint: str  # "chat.completions" | "completions" | "embeddings" | "models"
    action: Action
    status: int  # HTTP status returned to the client
    stream: bool = False
    finding_counts: dict[str, int] = field(default_factory=dict)  # finding type -> count (request + response)
    finding_kinds: dict[str, int] = field(default_factory=dict)  # kind -> count
    fingerprints: list[str] = field(default_factory=list)
    latency_ms: float = 0.0  # total, as the client saw it
    upstream_ms: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    rerouted_from: str | None = None
    error: str | None = None  # a message of ours, never request content
    redacted_prompt: str | None = None  # only when the config asks for it

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``ts`` as an ISO 8601 UTC string, everything else as is."""
        d = asdict(self)
        d["ts"] = as_utc(self.ts).isoformat()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AuditEvent:
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        if isinstance(kw.get("ts"), str):
            kw["ts"] = datetime.fromisoformat(kw["ts"])
        kw["ts"] = as_utc(kw["ts"])
        return cls(**kw)


def as_utc(ts: datetime) -> datetime:
    """Naive datetimes are taken to be UTC; aware ones are converted."""
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


@dataclass
class UsageRow:
    group: str  # the team, model, provider or key id
    requests: int
    blocked: int
    redacted: int
    rerouted: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    denied: int = 0  # refused before the policy ran: bad key, rate limit, budget (action "denied")
    errors: int = 0  # upstream or gateway errors (action "error")

    @property
    def cost_per_1k_requests(self) -> float:
        return self.cost_usd / self.requests * 1000 if self.requests else 0.0

    @property
    def tokens_per_request(self) -> float:
        return (self.prompt_tokens + self.completion_tokens) / self.requests if self.requests else 0.0


@dataclass
class FindingRow:
    """Findings of one type in one group (a team or key, or ``""`` when not grouped): never values."""

    group: str
    type: str
    count: int  # findings
    events: int  # requests they were found in


@dataclass
class FingerprintRow:
    """One keyed fingerprint (the same secret or personal datum seen again), where and when it was seen."""

    fingerprint: str
    events: int
    first_seen: datetime
    last_seen: datetime
    teams: list[str] = field(default_factory=list)  # "-" for requests without a key
    keys: list[str] = field(default_factory=list)


GROUP_NAMES: tuple[GroupBy, ...] = ("team", "model", "provider", "key")


def check_group(by: str | None) -> None:
    """A grouping the stores know, or None for no grouping."""
    if by is not None and by not in GROUP_NAMES:
        raise ValueError(f"cannot group by {by!r}: use team, model, provider or key")


def usage_row(group: str, r: Sequence[Any]) -> UsageRow:
    """A UsageRow from the 9 aggregates every backend selects in this order: requests, blocked, redacted,
    rerouted, prompt tokens, completion tokens, cost, denied, errors."""
    return UsageRow(group=group, requests=int(r[0]), blocked=int(r[1] or 0), redacted=int(r[2] or 0),
                    rerouted=int(r[3] or 0), prompt_tokens=int(r[4] or 0), completion_tokens=int(r[5] or 0),
                    cost_usd=float(r[6] or 0.0), denied=int(r[7] or 0), errors=int(r[8] or 0))


class AuditStore(Protocol):
    """Append-mostly store of audit events. Implementations: SQLite (default), ClickHouse."""

    def write(self, events: Sequence[AuditEvent]) -> None:
        """Persist a batch (called from a background writer, not on the request path)."""
        ...

    def events(self, since: datetime, until: datetime | None = None, *, limit: int | None = None,
               team: str | None = None, action: str | None = None) -> Iterator[AuditEvent]:
        """Events in time order, optionally filtered."""
        ...

    def usage(self, since: datetime, by: GroupBy, *, until: datetime | None = None) -> list[UsageRow]:
        """One row per group, highest cost first. Events without a team/key are grouped under ``"-"``."""
        ...

    def spend(self, since: datetime, *, key_id: str | None = None, team: str | None = None) -> float:
        """Cost in USD since ``since`` for a key or a team (budgets)."""
        ...

    def recent(self, since: datetime, *, limit: int = 100, team: str | None = None, action: str | None = None,
               key_id: str | None = None, provider: str | None = None,
               model: str | None = None) -> list[AuditEvent]:
        """The newest events first (the dashboard's event list), optionally filtered."""
        ...

    def timeseries(self, since: datetime, until: datetime | None = None, *, bucket_seconds: int = 3600,
                   by: GroupBy | None = None) -> list[tuple[datetime, UsageRow]]:
        """Usage per time bucket (UTC, aligned to the epoch), per group when ``by`` is given (else group
        ``""``); in bucket then group order, empty buckets left out."""
        ...

    def findings(self, since: datetime, until: datetime | None = None, *,
                 by: GroupBy | None = None) -> list[FindingRow]:
        """Finding counts per type (and per group), most frequent first."""
        ...

    def fingerprints(self, since: datetime, until: datetime | None = None, *,
                     limit: int = 50) -> list[FingerprintRow]:
        """The fingerprints seen in the most requests, most frequent first."""
        ...

    def count(self, since: datetime | None = None, until: datetime | None = None) -> int:
        """Events in ``[since, until)`` (either end open when None)."""
        ...

    def purge(self, before: datetime) -> int:
        """Delete events older than ``before``; returns how many (or an estimate where exact counts are costly)."""
        ...

    def close(self) -> None:
        ...


@dataclass
class KeyRecord:
    key_id: str  # public id, e.g. "rk_3f9a…" prefix; shown in audit events
    team: str
    user: str | None
    name: str | None
    created: datetime
    revoked: datetime | None = None
    admin: bool = False
    budget_usd: float | None = None  # per calendar month
    rpm: int | None = None  # requests per minute
    models: list[str] | None = None  # allowed models; None = all


class KeyStore(Protocol):
    """Virtual API keys, stored hashed (the secret is shown once, at creation)."""

    def create(self, team: str, *, user: str | None = None, name: str | None = None, admin: bool = False,
               budget_usd: float | None = None, rpm: int | None = None,
               models: list[str] | None = None) -> tuple[KeyRecord, str]:
        """Returns the record and the secret (``rl-…``); only the hash is stored."""
        ...

    def authenticate(self, secret: str) -> KeyRecord | None:
        """The active (not revoked) key with this secret, or None."""
        ...

    def revoke(self, key_id: str) -> bool:
        """True when an active key was revoked; False when unknown or already revoked."""
        ...

    def get(self, key_id: str) -> KeyRecord | None:
        """The key with this id, revoked or not."""
        ...

    def list(self) -> list[KeyRecord]:
        ...

    def close(self) -> None:
        ...
