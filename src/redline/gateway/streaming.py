"""Responses: response-side policy (redact / block what a model echoes), placeholder restoration, SSE relay.

Streamed text goes through a :class:`StreamGuard` per choice and field: the response filter sees text up to the
last token boundary (the unfinished word is held back, so a key split across chunks is still found whole),
then placeholders are restored, holding back only a tail that may be the start of a placeholder. Nothing
else is buffered: the time-to-first-token cost is at most one chunk.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from redline.engine import Finding, Scanner
from redline.gateway.inspect import dumps, json_escape, message_texts, replace_spans, response_texts, set_path
from redline.gateway.policy import PolicyEngine
from redline.redact import PLACEHOLDER, Redactor, StreamRestorer, Vault

CONTEXT_CHARS = 256  # emitted text kept as context for the next scan (context words, keyword rules)
MAX_HOLD = 16 * 1024  # never hold back more than this, even inside one long token
_BOUNDARY_TAIL = re.compile(r"[\s\"'<>()\[\]{},;\u0080-\U0010ffff][^\s\"'<>()\[\]{},;\u0080-\U0010ffff]*\Z")
_PEM_BEGIN = "-----BEGIN "


class ResponseBlocked(Exception):
    def __init__(self, types: Iterable[str]) -> None:
        self.types = sorted(set(types))
        super().__init__(", ".join(self.types))


class ResponseFilter:
    """The response side of the policy for one request (provider and model fixed)."""

    def __init__(self, scanner: Scanner, engine: PolicyEngine, redactor: Redactor, provider: str, model: str) -> None:
        self.scanner = scanner
        self.engine = engine
        self.redactor = redactor
        self.provider = provider
        self.model = model
        self.findings: list[Finding] = []

    def apply(self, text: str, ctx: str = "") -> str:
        """``text`` with the response policy applied; ``ctx`` is text already sent just before it."""
        window = ctx + text if ctx else text
        found = self.scanner.scan_text(window)
        if not found:
            return text
        base = len(ctx)
        found = [f for f in found if f.end > base]
        if not found:
            return text
        actions = self.engine.response_actions(self.provider, self.model, found)
        spans: list[tuple[int, int, str]] = []
        blocked: list[str] = []
        for f, a in zip(found, actions, strict=True):
            if not self.engine.counts(f):
                continue
            self.findings.append(f)
            if a.action == "block":
                blocked.append(f.type)
            elif a.action == "redact":
                start = max(f.start, base)
                rep = self.redactor.replacement(window, start, f.end, f, a.operator or "mask", None)  # type: ignore[arg-type]
                spans.append((start - base, f.end - base, rep))
        if blocked:
            raise ResponseBlocked(blocked)
        return replace_spans(text, spans)


def restore_json(vault: Vault, text: str) -> str:
    """Restore placeholders inside a JSON document (tool-call arguments): values are JSON-escaped."""
    if "<" not in text or not len(vault):
        return text

    def sub(m: re.Match[str]) -> str:
        v = vault.lookup(m.group())
        return m.group() if v is None else json_escape(v)

    return PLACEHOLDER.sub(sub, text)


class StreamGuard:
    """One streamed text (a choice's content, one tool call's arguments): filter, then restore."""

    def __init__(self, filt: ResponseFilter | None, vault: Vault | None, json_escaped: bool = False) -> None:
        self.filt = filt
        self.restorer: StreamRestorer | None = None
        if vault is not None and len(vault):
            self.restorer = vault.stream_restorer(functools.partial(restore_json, vault) if json_escaped else None)
        self._held = ""
        self._ctx = ""

    def _filter(self, text: str) -> str:
        if self.filt is None or not text:
            return text
        out = self.filt.apply(text, self._ctx)
        self._ctx = (self._ctx + text)[-CONTEXT_CHARS:]
        return out

    def _restore(self, text: str) -> str:
        return self.restorer.feed(text) if self.restorer is not None else text

    def feed(self, chunk: str) -> str:
        if self.filt is None:
            return self._restore(chunk)
        buf = self._held + chunk if self._held else chunk
        cut = len(buf)
        m = _BOUNDARY_TAIL.search(buf)
        cut = m.start() + 1 if m else 0
        pem = buf.rfind(_PEM_BEGIN)
        if pem != -1 and buf.find("-----END ", pem) == -1:
            cut = min(cut, pem)
        if len(buf) - cut > MAX_HOLD:
            cut = len(buf)
        self._held = buf[cut:]
        return self._restore(self._filter(buf[:cut]))

    def flush(self) -> str:
        held, self._held = self._held, ""
        out = self._restore(self._filter(held)) if held else ""
        if self.restorer is not None:
            out += self.restorer.flush()
        return out

    @property
    def passthrough(self) -> bool:
        return self.filt is None and self.restorer is None


def process_response_body(body: Any, filt: ResponseFilter | None, vault: Vault | None) -> bool:
    """Apply the response policy and restore placeholders in a non-streamed response; True when changed."""
    if filt is None and (vault is None or not len(vault)):
        return False
    changed = False
    for rt in response_texts(body):
        text = rt.text
        if filt is not None:
            text = filt.apply(text)
        if vault is not None and len(vault):
            text = restore_json(vault, text) if rt.json_escaped else vault.restore(text)
        if text != rt.text:
            set_path(body, rt.path, text)
            changed = True
    return changed


@dataclass
class StreamState:
    """Per-request state of an SSE relay."""

    filt: ResponseFilter | None
    vault: Vault | None
    strip_usage: bool  # usage was asked for by us, not by the client
    chat: bool
    guards: dict[tuple[int, str, int], StreamGuard] = field(default_factory=dict)
    open_choices: set[int] = field(default_factory=set)
    finished_choices: set[int] = field(default_factory=set)
    usage: dict[str, Any] | None = None
    last: dict[str, Any] | None = None  # the last chunk's envelope, for synthetic chunks

    @property
    def passthrough(self) -> bool:
        return self.filt is None and (self.vault is None or not len(self.vault))

    def _guard(self, key: tuple[int, str, int]) -> StreamGuard:
        g = self.guards.get(key)
        if g is None:
            g = StreamGuard(self.filt, self.vault, json_escaped=key[1] == "tool")
            self.guards[key] = g
        return g

    def transform(self, obj: Any) -> Any | None:
        """Rewrite one SSE chunk; None drops it. Raises ResponseBlocked."""
        if not isinstance(obj, dict):
            return obj
        usage = obj.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
        if self.strip_usage and "usage" in obj:
            if usage and not obj.get("choices"):
                return None
            del obj["usage"]
        choices = obj.get("choices")
        if not isinstance(choices, list):
            return obj
        self.last = {k: v for k, v in obj.items() if k not in ("choices", "usage")}
        for ch in choices:
            if not isinstance(ch, dict):
                continue
            idx = ch.get("index", 0) if isinstance(ch.get("index", 0), int) else 0
            self.open_choices.add(idx)
            if not self.passthrough:
                if self.chat:
                    self._delta(idx, ch.get("delta"))
                elif isinstance(ch.get("text"), str):
                    ch["text"] = self._guard((idx, "text", 0)).feed(ch["text"])
            if ch.get("finish_reason") is not None:
                self.finished_choices.add(idx)
                if not self.passthrough:
                    self._flush_choice(idx, ch)
        return obj

    def _delta(self, idx: int, delta: Any) -> None:
        if not isinstance(delta, dict):
            return
        for rt in message_texts(delta, ()):
            if rt.path[0] == "tool_calls":
                call = delta["tool_calls"][rt.path[1]]
                k = call.get("index", rt.path[1]) if isinstance(call, dict) else rt.path[1]
                key = (idx, "tool", k if isinstance(k, int) else 0)
            else:
                key = (idx, str(rt.path[0]), 0)
            set_path(delta, rt.path, self._guard(key).feed(rt.text))

    def _flush_choice(self, idx: int, ch: dict[str, Any]) -> None:
        for key in [k for k in self.guards if k[0] == idx]:
            rest = self.guards.pop(key).flush()
            if not rest:
                continue
            _, field_name, k = key
            if not self.chat:
                ch["text"] = (ch.get("text") or "") + rest
                continue
            delta = ch.get("delta")
            if not isinstance(delta, dict):
                delta = {}
                ch["delta"] = delta
            if field_name == "tool":
                calls = delta.get("tool_calls")
                if not isinstance(calls, list):
                    calls = []
                    delta["tool_calls"] = calls
                for call in calls:
                    if isinstance(call, dict) and call.get("index") == k:
                        fn = call.setdefault("function", {})
                        fn["arguments"] = (fn.get("arguments") or "") + rest
                        break
                else:
                    calls.append({"index": k, "function": {"arguments": rest}})
            else:
                delta[field_name] = (delta.get(field_name) or "") + rest

    def flush_all(self) -> dict[str, Any] | None:
        """A synthetic chunk with text still held back (a stream that ended without finish_reason)."""
        if not self.guards:
            return None
        choices: list[dict[str, Any]] = []
        for idx in sorted({k[0] for k in self.guards}):
            ch: dict[str, Any] = {"index": idx, "delta": {}} if self.chat else {"index": idx, "text": ""}
            self._flush_choice(idx, ch)
            if ch.get("delta") or ch.get("text"):
                ch["finish_reason"] = None
                choices.append(ch)
        if not choices:
            return None
        return {**(self.last or {}), "choices": choices}


def sse_event(obj: Any) -> bytes:
    return b"data: " + dumps(obj) + b"\n\n"


def sse_error(message: str, type: str = "upstream_error", code: str | None = None) -> bytes:
    return sse_event({"error": {"message": message, "type": type, "param": None, "code": code}})


class SSEParser:
    """Incremental parser of an upstream SSE byte stream into ``data`` payloads (None for comments)."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf + data if self._buf else data
        if b"\r" in buf:
            buf = buf.replace(b"\r\n", b"\n")
        out: list[bytes] = []
        start = 0
        while True:
            end = buf.find(b"\n\n", start)
            if end == -1:
                break
            block = buf[start:end]
            start = end + 2
            payload = _data_of(block)
            if payload is not None:
                out.append(payload)
        self._buf = buf[start:]
        return out

    def pending(self) -> bool:
        return bool(self._buf.strip())


def _data_of(block: bytes) -> bytes | None:
    lines = [ln[5:].removeprefix(b" ") for ln in block.split(b"\n") if ln.startswith(b"data:")]
    if not lines:
        return None
    return b"\n".join(lines)
