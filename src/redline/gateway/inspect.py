"""What the upstream will see: every text in a request body, with its JSON path so it can be rewritten in place.

Requests are walked generically: every string value is inspected (all message roles, tool messages, tool-call
arguments, multimodal text parts, tool schemas, ``prompt``, ``input``, ``user``…) except a short list of
structural fields (``model``, ``role``, ``type``…) and inline base64 payloads (``data:…;base64,``). Token-id
inputs (``prompt``/``input`` as integers) cannot be inspected and are refused.

All texts of a request are scanned in one call (joined by a blank line) and the findings mapped back to
their texts; a finding that would span two texts is split at the boundary.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from redline.engine import Finding, Scanner

JsonPath = tuple[str | int, ...]
SEP = "\n\n"
_SKIP_KEYS = frozenset({
    "model", "role", "type", "tool_call_id", "id", "encoding_format", "detail", "format", "voice",
    "reasoning_effort", "service_tier", "modalities", "object",
})
_MAX_DEPTH = 64


class InspectError(ValueError):
    """The request cannot be inspected (and so is not forwarded): a 400 for the client."""


@dataclass(frozen=True, slots=True)
class Segment:
    path: JsonPath
    text: str


def _is_inline_payload(s: str) -> bool:
    return s.startswith("data:") and ";base64," in s[:128]


def _walk(node: Any, path: JsonPath, out: list[Segment], depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise InspectError("the request body is nested too deeply to inspect")
    if isinstance(node, dict):
        for k, v in node.items():
            if isinstance(v, str):
                if k in _SKIP_KEYS or not v or _is_inline_payload(v):
                    continue
                out.append(Segment((*path, k), v))
            elif isinstance(v, dict | list):
                _walk(v, (*path, k), out, depth + 1)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            if isinstance(v, str):
                if v and not _is_inline_payload(v):
                    out.append(Segment((*path, i), v))
            elif isinstance(v, dict | list):
                _walk(v, (*path, i), out, depth + 1)


def _has_tokens(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    if isinstance(value, list):
        return any(_has_tokens(v) for v in value)
    return False


def request_segments(body: dict[str, Any]) -> list[Segment]:
    """Every upstream-visible text of a request body, in document order."""
    for key in ("prompt", "input"):
        if key in body and _has_tokens(body[key]):
            raise InspectError(f"`{key}` as token ids cannot be inspected by the gateway: send text")
    out: list[Segment] = []
    _walk(body, (), out, 0)
    return out


def scan_segments(scanner: Scanner, texts: Sequence[str]) -> list[tuple[int, Finding]]:
    """Scan all texts at once; findings come back as (text index, finding with offsets inside that text)."""
    if not texts:
        return []
    if len(texts) == 1:
        return [(0, f) for f in scanner.scan_text(texts[0])]
    starts: list[int] = []
    pos = 0
    for t in texts:
        starts.append(pos)
        pos += len(t) + len(SEP)
    joined = SEP.join(texts)
    out: list[tuple[int, Finding]] = []
    for f in scanner.scan_text(joined):
        i = bisect_right(starts, f.start) - 1
        while i < len(texts) and starts[i] < f.end:
            a, b = max(f.start, starts[i]), min(f.end, starts[i] + len(texts[i]))
            if a < b:
                out.append((i, Finding(f.kind, f.type, a - starts[i], b - starts[i], f.confidence,
                                       f.fingerprint, f.snippet)))
            i += 1
    return out


def replace_spans(text: str, spans: Sequence[tuple[int, int, str]]) -> str:
    """``text`` with each ``(start, end, replacement)`` applied; overlapping spans: the first one wins."""
    if not spans:
        return text
    parts: list[str] = []
    pos = 0
    for a, b, rep in sorted(spans, key=lambda s: (s[0], -s[1])):
        if a < pos:
            continue
        parts.append(text[pos:a])
        parts.append(rep)
        pos = b
    parts.append(text[pos:])
    return "".join(parts)


def set_path(body: Any, path: JsonPath, value: Any) -> None:
    node = body
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value


# ---------------------------------------------------------------------------------------------------------
# responses


@dataclass(frozen=True, slots=True)
class ResponseText:
    """A text of a response: ``json_escaped`` texts are JSON documents (tool-call arguments)."""

    path: JsonPath
    text: str
    json_escaped: bool = False


_MESSAGE_TEXT_KEYS = ("content", "reasoning_content", "refusal")


def message_texts(msg: Any, path: JsonPath) -> Iterator[ResponseText]:
    """Texts of a chat message or a streamed delta."""
    if not isinstance(msg, dict):
        return
    for key in _MESSAGE_TEXT_KEYS:
        v = msg.get(key)
        if isinstance(v, str) and v:
            yield ResponseText((*path, key), v)
        elif isinstance(v, list):
            for j, part in enumerate(v):
                if isinstance(part, dict) and isinstance(part.get("text"), str) and part["text"]:
                    yield ResponseText((*path, key, j, "text"), part["text"])
    calls = msg.get("tool_calls")
    if isinstance(calls, list):
        for j, call in enumerate(calls):
            fn = call.get("function") if isinstance(call, dict) else None
            if isinstance(fn, dict) and isinstance(fn.get("arguments"), str) and fn["arguments"]:
                yield ResponseText((*path, "tool_calls", j, "function", "arguments"), fn["arguments"], True)
    fc = msg.get("function_call")
    if isinstance(fc, dict) and isinstance(fc.get("arguments"), str) and fc["arguments"]:
        yield ResponseText((*path, "function_call", "arguments"), fc["arguments"], True)


def response_texts(body: Any) -> list[ResponseText]:
    """Texts of a non-streamed chat or text completion response."""
    out: list[ResponseText] = []
    choices = body.get("choices") if isinstance(body, dict) else None
    if not isinstance(choices, list):
        return out
    for i, ch in enumerate(choices):
        if not isinstance(ch, dict):
            continue
        if isinstance(ch.get("text"), str) and ch["text"]:
            out.append(ResponseText(("choices", i, "text"), ch["text"]))
        out.extend(message_texts(ch.get("message"), ("choices", i, "message")))
    return out


def json_escape(value: str) -> str:
    """``value`` as it must appear inside a JSON string."""
    return json.dumps(value, ensure_ascii=False)[1:-1]


Restore = Callable[[str], str]


def loads(data: bytes | str) -> Any:
    """Parse JSON (orjson: a few times faster than the standard library on the request path and per SSE chunk).

    Stricter than ``json.loads``: NaN/Infinity literals and lone surrogates are invalid JSON (ValueError).
    """
    return orjson.loads(data)


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON; the standard library only for what orjson cannot encode (integers beyond 64 bits)."""
    try:
        return orjson.dumps(obj)
    except TypeError:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
