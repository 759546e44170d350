"""The one result type that flows from the engine to every front end."""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import asdict, dataclass
from typing import Literal

Kind = Literal["secret", "pii", "chat"]
Confidence = Literal["high", "medium", "low"]

KINDS: tuple[Kind, ...] = ("secret", "pii", "chat")
CONFIDENCES: tuple[Confidence, ...] = ("high", "medium", "low")
CONFIDENCE_RANK: dict[str, int] = {"low": 0, "medium": 1, "high": 2}

FINGERPRINT_ENV = "REDLINE_FINGERPRINT_KEY"


@dataclass(frozen=True, slots=True)
class Finding:
    """Something sensitive at ``text[start:end]``.

    The raw value is deliberately not kept: ``fingerprint`` (keyed HMAC) lets findings be correlated and
    ``snippet`` lets a person recognise them, neither discloses the value.
    """

    kind: Kind
    type: str
    start: int
    end: int
    confidence: Confidence
    fingerprint: str
    snippet: str

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def shifted(self, offset: int) -> Finding:
        return Finding(
            self.kind, self.type, self.start + offset, self.end + offset,
            self.confidence, self.fingerprint, self.snippet,
        )


class Fingerprinter:
    """Keyed HMAC-SHA256 of values, so equal values correlate across records without being stored."""

    def __init__(self, key: bytes | str | None = None) -> None:
        if key is None:
            key = os.environ.get(FINGERPRINT_ENV) or None
        if key is None:
            # Random per process: fingerprints still correlate within a run, and cannot be brute-forced
            # offline against a dictionary of likely passwords afterwards.
            key = os.urandom(32)
            self.ephemeral = True
        else:
            self.ephemeral = False
        # Keying once and copying is cheaper than hmac.new per value.
        self._base = hmac.new(key.encode() if isinstance(key, str) else key, digestmod=hashlib.sha256)

    def __call__(self, value: str) -> str:
        h = self._base.copy()
        h.update(value.encode("utf-8", "surrogatepass"))
        return h.hexdigest()[:24]


def redacted_snippet(value: str, kind: str) -> str:
    """A short prefix and the length: enough to recognise a key (``sk-pr…``), not to use it."""
    n = len(value)
    if kind == "chat":
        return f"[chat transcript, {n} chars]"
    keep = min(4, n // 4) if kind == "secret" else min(2, n // 5)
    prefix = "".join(c if c.isprintable() else "?" for c in value[:keep])
    return f"{prefix}…({n} chars)"
