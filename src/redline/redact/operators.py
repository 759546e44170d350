"""Applying a policy to findings: replace, hash, pseudonymise or drop, never re-detecting.

Offsets are raw character offsets (the engine maps values found inside JSON string escapes back to the raw
text, on escape boundaries). Every replacement text is *neutral*: it holds no quote, backslash or control
character, so it can be put inside a JSON string at any escaping depth and the line stays valid JSON. The one
exception is the chat summary, which rewrites JSON structure and escapes what it writes for its depth.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from redline.engine.finding import Finding, Fingerprinter
from redline.redact.policy import Operator, Policy, PolicyError
from redline.redact.vault import PLACEHOLDER, Vault

# One raw "character": a JSON escape or any single character (a value never ends inside an escape).
_RAW_CHAR = re.compile(r"\\u[0-9a-fA-F]{4}|\\[\\\"/bfnrt]|.", re.DOTALL)
_STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"')
_OUTSIDE_STRINGS = re.compile(r'(?:[^"\n]++|"(?:[^"\\\n]|\\.)*+")*+')
_SPEAKER_LINE = re.compile(
    r"^[ \t]*(?:[-*>#]+[ \t]*)?[A-Za-z用户助手系统问答]{1,12}[ \t]*(?:\([^)\n]{0,40}\))?[ \t]*[:：]", re.MULTILINE)
_KEEP_ROLE_VALUES = frozenset({"user", "assistant", "system", "tool", "developer", "model", "human", "function"})


@dataclass(frozen=True, slots=True)
class Replacement:
    """What was replaced: raw offsets into the input, and how. Never the value."""

    start: int
    end: int
    kind: str
    type: str
    operator: Operator


@dataclass
class RedactResult:
    text: str
    replacements: list[Replacement] = field(default_factory=list)
    dropped: bool = False

    @property
    def changed(self) -> bool:
        return self.dropped or bool(self.replacements)


class Redactor:
    """A policy made ready to apply: the hash key is resolved once, templates are pre-split."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.markers = marker_regex(policy)
        self._fp: Fingerprinter | None = None
        if "hash" in policy.operators:
            self._fp = policy.fingerprinter()

    def fingerprint(self, value: str) -> str:
        if self._fp is None:
            self._fp = self.policy.fingerprinter()
        return self._fp(value)

    def redact(self, text: str, findings: Sequence[Finding], *, vault: Vault | None = None) -> RedactResult:
        """Redact one record. A ``drop`` finding drops all of it (``dropped``, empty text)."""
        plan = self.plan(self.unmarked(text, findings))
        if plan is None:
            return RedactResult("", [], True)
        if not plan:
            return RedactResult(text, [])
        pieces: list[str] = []
        done: list[Replacement] = []
        pos = 0
        for start, end, f, op in plan:
            if start < pos:
                continue
            pieces.append(text[pos:start])
            pieces.append(self.replacement(text, start, end, f, op, vault))
            done.append(Replacement(start, end, f.kind, f.type, op))
            pos = end
        pieces.append(text[pos:])
        return RedactResult("".join(pieces), done)

    def unmarked(self, text: str, findings: Sequence[Finding]) -> Sequence[Finding]:
        """Findings minus those lying inside one of our own markers, so redacting twice changes nothing
        (a rule may match part of ``https://[REDACTED:github-pat]@host``)."""
        if not findings:
            return findings
        out: list[Finding] = []
        search = self.markers.finditer
        for f in findings:
            inside = False
            for m in search(text, max(0, f.start - _MARKER_MAX), min(len(text), f.end + _MARKER_MAX)):
                if m.start() <= f.start and f.end <= m.end():
                    inside = True
                    break
                if m.start() > f.start:
                    break
            if not inside:
                out.append(f)
        return out

    def plan(self, findings: Sequence[Finding]) -> list[tuple[int, int, Finding, Operator]] | None:
        """Non-overlapping ``(start, end, finding, operator)`` in order; None when the record is dropped.

        Overlapping findings form one cluster replaced once: by the operator of a finding that covers the
        whole cluster, else by a plain mask of the union (never two edits of the same characters).
        """
        rule_for = self.policy.rule_for
        active: list[tuple[int, int, Finding, Operator]] = []
        for f in findings:
            op = rule_for(f.kind, f.type).operator
            if op == "keep" or f.end <= f.start:
                continue
            if op == "drop":
                return None
            if op == "summary" and f.kind != "chat":
                op = "mask"
            active.append((f.start, f.end, f, op))
        if len(active) < 2:
            return active
        active.sort(key=lambda a: (a[0], -a[1]))
        out: list[tuple[int, int, Finding, Operator]] = []
        cluster = [active[0]]
        cend = active[0][1]
        for item in active[1:]:
            if item[0] < cend:
                cluster.append(item)
                cend = max(cend, item[1])
            else:
                out.append(_merge(cluster, cend))
                cluster, cend = [item], item[1]
        out.append(_merge(cluster, cend))
        return out

    def replacement(self, text: str, start: int, end: int, f: Finding, op: Operator, vault: Vault | None) -> str:
        raw = text[start:end]
        newlines = raw.count("\n")
        rule = self.policy.rule_for(f.kind, f.type)
        if op == "summary":
            return chat_summary(text, start, end)
        if op == "pseudonym":
            if vault is None:
                vault = Vault()  # a scope of one record
            out = vault.placeholder(raw, f.type)
        elif op == "hash":
            out = f"[HASH:{f.type}:{self.fingerprint(_decoded(raw))}]"
        elif op == "partial":
            template = rule.template or self.policy.partial_template
            last = _raw_tail(raw, self.policy.partial_keep)
            out = template.format(type=f.type, kind=f.kind, last=last)
            if "{last}" not in template:
                out += last
        else:
            template = (rule.template if op == "mask" else None) or self.policy.mask_template
            out = template.format(type=f.type, kind=f.kind, last="")
        # A value over several lines (a PEM key) keeps its line count: the marker, then the line breaks.
        return out + "\n" * newlines if newlines else out


_MARKER_MAX = 200


def marker_regex(policy: Policy) -> re.Pattern[str]:
    """What this policy writes: mask, partial and hash markers, placeholders and chat summaries."""
    alts = [PLACEHOLDER.pattern, r"\[HASH:[A-Za-z0-9_.-]+:[0-9a-f]{8,64}\]", r"\[CHAT: \d+ turns?, \d+ chars\]"]
    templates = {policy.mask_template, policy.partial_template}
    templates.update(r.template for r in (*policy.kinds.values(), *policy.types.values()) if r.template)
    for t in sorted(templates):
        parts = re.split(r"(\{type\}|\{kind\}|\{last\})", t)
        rx = "".join(
            r"[A-Za-z0-9_.-]{1,80}" if p in ("{type}", "{kind}") else r"[^\n]{0,60}?" if p == "{last}" else re.escape(p)
            for p in parts)
        alts.append(rx)
    return re.compile("|".join(f"(?:{a})" for a in alts))


def _merge(cluster: list[tuple[int, int, Finding, Operator]], cend: int) -> tuple[int, int, Finding, Operator]:
    if len(cluster) == 1:
        return cluster[0]
    start = cluster[0][0]
    covering = [c for c in cluster if c[0] == start and c[1] == cend]
    if covering:
        # Prefer the most destructive operator among findings spanning the whole cluster.
        rank = {"summary": 5, "mask": 4, "hash": 3, "pseudonym": 2, "partial": 1}
        best = max(covering, key=lambda c: rank.get(c[3], 0))
        if best[3] != "partial":
            return best
        return (start, cend, best[2], "mask")
    widest = max(cluster, key=lambda c: c[1] - c[0])
    op: Operator = "summary" if widest[3] == "summary" else "mask"
    return (start, cend, widest[2], op)


def _decoded(raw: str) -> str:
    """The value as the engine saw it (one level of JSON escapes undone), so hashes match across contexts."""
    if "\\" not in raw:
        return raw
    try:
        out: str = json.loads('"' + raw + '"')
        return out
    except ValueError:
        return raw


def _raw_tail(raw: str, keep: int) -> str:
    """The last ``keep`` characters as raw text, never cutting an escape; fewer for short values."""
    chars = _RAW_CHAR.findall(raw)
    keep = min(keep, len(chars) // 3)
    if keep <= 0:
        return ""
    return "".join(chars[-keep:])


# -- chat summary ----------------------------------------------------------------------------------------


def chat_summary(text: str, start: int, end: int) -> str:
    """Replacement for a chat span: the conversation's text becomes ``[CHAT: N turns, M chars]``.

    JSON structure and keys around and inside the span are kept, so a JSON line stays valid JSON with the same
    keys; the first message container (or value) holds the summary, other values become empty strings.
    """
    line_start = text.rfind("\n", 0, start) + 1
    line_end = text.find("\n", end)
    if line_end == -1:
        line_end = len(text)
    line = text[line_start:line_end]
    if end > line_end or not line.lstrip().startswith(("{", "[")):
        return _plain_summary(text[start:end])
    out, cut = _summarize_json(line, start - line_start, end - line_start)
    # Text between the end of what the JSON rewrite consumed and the span end is kept verbatim (it is JSON
    # structure past the end of the enclosing string, e.g. a greedy transcript match that ran into `"}`).
    return out + line[cut:end - line_start]


def _summary_text(value: str) -> str:
    turns = value.count('"role"') or len(_SPEAKER_LINE.findall(value)) or 1
    return f"[CHAT: {turns} turn{'s' if turns != 1 else ''}, {len(value)} chars]"


def _plain_summary(raw: str) -> str:
    return _summary_text(raw) + "\n" * raw.count("\n")


def _summarize_json(doc: str, s: int, e: int) -> tuple[str, int]:
    """Rewrite ``doc[s:e]`` (a JSON document or a decoded JSON string); returns (text, raw end consumed)."""
    # Whole strings and the text between them, up to s, in one regex match: it stops at the opening quote of
    # the string that holds s, if one does.
    q = _OUTSIDE_STRINGS.match(doc, 0, s).end()  # type: ignore[union-attr]
    m = _STRING.match(doc, q) if q < s else None
    if m is not None:
        a, b = m.span()
        if a < s < b:
            # The span starts inside a string: summarise within its content, one escaping level down.
            ce = min(e, b - 1)
            content = doc[a + 1:b - 1]
            try:
                decoded = json.loads(doc[a:b])
                ds = len(json.loads('"' + doc[a + 1:s] + '"'))
                de = len(json.loads('"' + doc[a + 1:ce] + '"'))
            except ValueError:
                return _summary_text(content[s - a - 1:ce - a - 1]), ce
            if decoded.lstrip().startswith(("{", "[")) and "\n" not in decoded:
                inner, icut = _summarize_json(decoded, ds, de)
                inner += decoded[icut:de]
            else:
                inner = _summary_text(decoded[ds:de])
            return json.dumps(inner, ensure_ascii=False)[1:-1], ce
    return _rewrite_structure(doc, s, e), e


def _rewrite_structure(doc: str, s: int, e: int) -> str:
    """``doc[s:e]`` starts outside strings: keep keys and punctuation, replace values."""
    span = doc[s:e]
    summary = _summary_text(span)
    out: list[str] = []
    pos = 0
    used = False
    n = len(span)
    prev_key: str | None = None
    # Token by token (a string, an opening bracket, or a run of anything else), not character by character.
    while pos < n:
        m = _STRUCTURE_TOKEN.match(span, pos)
        if m is None:  # the span ends inside a string: blank the covered part of its content
            out.append('"')
            break
        tok = m.group()
        c = tok[0]
        if c == '"':
            after = span[m.end():m.end() + 40].lstrip()
            if after.startswith(":"):
                out.append(tok)
                prev_key = tok
            elif prev_key == '"role"' and tok[1:-1] in _KEEP_ROLE_VALUES:
                out.append(tok)
            elif not used:
                out.append(json.dumps(summary))
                used = True
            else:
                out.append('""')
            pos = m.end()
            continue
        if c in "[{" and not used:
            close = _container_end(span, pos)
            if close != -1:
                out.append(json.dumps(summary))
                used = True
                pos = close
                continue
        out.append(tok)
        pos = m.end()
    return "".join(out)


_STRUCTURE_TOKEN = re.compile(r'"(?:[^"\\\n]|\\.)*"|[\[{]|[^"\[{]+')
_JSON = json.JSONDecoder(strict=False)


def _container_end(text: str, pos: int) -> int:
    """Index just past the bracket closing the one at ``pos``, or -1. The C decoder handles valid JSON; the
    token walk the rest (a span cut short, JSON with a stray character)."""
    try:
        return int(_JSON.raw_decode(text, pos)[1])
    except ValueError:
        pass
    depth = 0
    i = pos
    n = len(text)
    while i < n:
        c = text[i]
        if c == '"':
            m = _STRING.match(text, i)
            if m is None:
                return -1
            i = m.end()
            continue
        if c in "[{":
            depth += 1
        elif c in "]}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return -1


_DEFAULT_REDACTORS: dict[int, tuple[Policy, Redactor]] = {}


def redactor_for(policy: Policy) -> Redactor:
    """A cached :class:`Redactor` per policy object."""
    hit = _DEFAULT_REDACTORS.get(id(policy))
    if hit is not None and hit[0] is policy:
        return hit[1]
    r = Redactor(policy)
    if len(_DEFAULT_REDACTORS) > 64:
        _DEFAULT_REDACTORS.clear()
    _DEFAULT_REDACTORS[id(policy)] = (policy, r)
    return r


def redact_text(text: str, findings: Sequence[Finding], policy: Policy, *, vault: Vault | None = None) -> RedactResult:
    """Apply ``policy`` to ``findings`` (from the engine, offsets into ``text``); never re-detects.

    ``vault`` is the pseudonymisation scope; without one, each call is its own scope.
    """
    return redactor_for(policy).redact(text, findings, vault=vault)


__all__ = ["PolicyError", "RedactResult", "Redactor", "Replacement", "chat_summary", "redact_text", "redactor_for"]
