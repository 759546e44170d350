"""The scanner: runs rules over text and turns matches into findings.

The matcher reports, for the whole text at once, anchors near which each rule may match; only there do the
rules' regular expressions run. Matches are validated (checksums, entropy, placeholders), checked for
context words, extended for chat transcripts, then overlapping findings are resolved.
"""

from __future__ import annotations

import codecs
import json
import re
from bisect import bisect_left, insort
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO

from redline.engine.cache import memo
from redline.engine.finding import CONFIDENCE_RANK, Confidence, Finding, Fingerprinter, redacted_snippet
from redline.engine.matcher import Matcher, make_matcher
from redline.engine.rules import (
    Rule,
    RuleError,
    builtin_rules,
    check_unique,
    load_rule_paths,
    lookahead_reach,
    match_width,
    one_line,
    uniform,
)
from redline.engine.textview import Chunk, TextView

MAX_LINE_CHARS = 1024 * 1024
# Streams are scanned in chunks of about this size. Each chunk is walked by several passes (decoding, the
# escape view, two Hyperscan scans, the class mapping); a chunk that stays in a core's cache between them is
# scanned about 7 % faster than a 4 MB one, and costs no more in per-chunk work.
STREAM_CHUNK_CHARS = 512 * 1024
ALLOW_MARKER = "redline:allow"
_LOOKAHEAD = 64
_JSON_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)
_SPEAKER = re.compile(
    r"[ \t]*(?:[-*>#]+[ \t]*)?(?P<who>user|human|customer|me|you|assistant|ai|bot|model|system|chatgpt|claude|"
    r"deepseek|gpt|用户|助手|系统|问|答)[ \t]*(?:\([^)\n]{0,40}\))?[ \t]*[:：]",
    re.IGNORECASE,
)
_TIMESTAMP_LINE = re.compile(r"[ \t]*(?:\[?\d{4}-\d{2}-\d{2}|\d{2}:\d{2}:\d{2}|(?:INFO|WARN|ERROR|DEBUG)\b)")
_MAX_TRANSCRIPT_CHARS = 256 * 1024
# How far back from a chunk's end a construct that spans lines (a private key, a transcript, a conversation
# in pretty-printed JSON) may begin and still be carried into the next chunk when the end cuts through it.
MAX_CARRY_CHARS = _MAX_TRANSCRIPT_CHARS
# JSON whitespace is ASCII; in ASCII mode the pattern also reads text with stand-ins as it reads the real one.
_MESSAGE_TEXT = re.compile(r'"(?:content|text)"\s*:\s*"(?:[^"\\]|\\.)', re.ASCII)
# How far before a window rules may look behind (lookbehinds are short; this is a generous bound): a rule
# that runs on the real text of a part gets that much text before it.
_BEHIND = 1024


def _context_near(ctx: re.Pattern[str], chunk: Chunk, lo: int, hi: int) -> bool:
    """A context word starts in ``[lo, hi)``; its boundaries are judged on the whole text, not the window.
    Context words may be non-ASCII and match case-insensitively beyond ASCII: stand-ins are replaced first."""
    text = chunk.text
    end = min(len(text), hi + 80)
    if chunk.positions and chunk.has_stand_ins(max(0, lo - 1), end):
        base = max(0, lo - 8)
        m = ctx.search(chunk.real(base, end), lo - base)
        return m is not None and m.start() + base < hi
    m = ctx.search(text, lo, end)
    return m is not None and m.start() < hi


def _with_context(rule: Rule, chunk: Chunk, vs: int, ve: int) -> str | None:
    """The confidence of a match of ``rule`` at ``[vs, ve)``: its own when the rule has no context words or one
    lies within ``context_window`` before or after; else ``confidence_without_context``, or None when the rule
    needs a context word."""
    ctx = rule.context_regex
    if ctx is None:
        return rule.confidence
    w = rule.context_window
    if _context_near(ctx, chunk, max(0, vs - w), vs) or _context_near(ctx, chunk, ve, ve + w):
        return rule.confidence
    return rule.confidence_without_context


def _matches_at(regex: re.Pattern[str], text: str, starts: list[int], end: int) -> Iterator[re.Match[str]]:
    """What ``regex.finditer(text, starts[0], end)`` yields when matches can only begin at ``starts``."""
    after = -1
    for p in starts:
        if p >= after:
            m = regex.match(text, p, end)
            if m is not None:
                after = max(m.end(), p + 1)
                yield m


def _lines_near(text: str, anchors: list[int], slack: int) -> list[tuple[int, int]]:
    """Merged ``[start, end)`` ranges of the lines (newline included) touching ``[p - slack, p + slack)`` for
    some anchor ``p``."""
    out: list[tuple[int, int]] = []
    n = len(text)
    rfind, find = text.rfind, text.find
    for p in sorted(anchors):
        lo, hi = max(0, p - slack), min(n, max(p + slack, p + 1))
        if out and hi <= out[-1][1]:
            continue  # the lines already taken reach past this range
        ls = rfind("\n", 0, lo) + 1
        le = find("\n", max(hi - 1, ls))
        le = n if le == -1 else le + 1
        if out and ls <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], le))
        else:
            out.append((ls, le))
    return out


_JSON_DECODER = json.JSONDecoder(strict=False)


def _json_container_end(text: str, open_pos: int, limit: int) -> int:
    """Index just past the bracket that closes the one at ``open_pos``; -1 when it is not closed in time."""
    # The C scanner is several times faster than tokenizing in Python when the JSON is valid. It gets a
    # slice: a failure computes a line number by counting newlines from the start of what it was given.
    window = 8192
    while True:
        piece = text[open_pos:min(limit, open_pos + window)]
        try:
            _, end = _JSON_DECODER.raw_decode(piece)
            return open_pos + int(end)
        except ValueError:
            if open_pos + window >= limit or window >= 65536:
                break
            window *= 4
    depth = 0
    for m in _JSON_TOKEN.finditer(text, open_pos, limit):
        tok = m.group()
        if tok[0] == '"':
            continue
        if tok in "[{":
            depth += 1
        else:
            depth -= 1
            if depth == 0:
                return m.end()
    return -1


def _transcript_end(chunk: Chunk, start: int) -> tuple[int, int, int, bool]:
    """Extend a transcript from its first speaker line: (end, turns, distinct speakers, whether it ran into
    the end of the text, which may cut it short)."""
    text = chunk.text
    sparse = bool(chunk.positions)
    pos = start
    n = len(text)
    limit = min(n, start + _MAX_TRANSCRIPT_CHARS)
    end = start
    turns = 0
    speakers: set[str] = set()
    blank_run = 0
    while pos < limit:
        nl = text.find("\n", pos)
        line_end = n if nl == -1 else nl
        line = chunk.real(pos, line_end) if sparse else text[pos:line_end]
        m = _SPEAKER.match(line)
        if m:
            turns += 1
            speakers.add(m.group("who").lower())
            end = line_end
            blank_run = 0
        elif not line.strip():
            blank_run += 1
            if blank_run > 1:
                return end, turns, len(speakers), False
        elif turns and not _TIMESTAMP_LINE.match(line):
            end = line_end
            blank_run = 0
        else:
            return end, turns, len(speakers), False
        if nl == -1:
            break
        pos = nl + 1
    return end, turns, len(speakers), limit == n


class Scanner:
    """Finds secrets, personal data and chat transcripts in text.

    ``rules``: the rule set (built-in rules when None). ``extra_rule_paths``: rule files or folders to add;
    a rule there with a built-in rule's id replaces it. ``disabled`` / ``enabled``: rule ids to turn off /
    on (rules with ``enabled = false`` run only when named here). ``backend``: ``auto``, ``hyperscan`` or
    ``re``. ``fingerprint_key``: HMAC key for fingerprints (else REDLINE_FINGERPRINT_KEY, else random).
    ``baseline``: fingerprints to drop. ``decode_json``: also match inside JSON string escapes.
    """

    def __init__(
        self,
        rules: Sequence[Rule] | None = None,
        *,
        extra_rule_paths: Iterable[str | Path] = (),
        disabled: Iterable[str] = (),
        enabled: Iterable[str] = (),
        kinds: Iterable[str] | None = None,
        backend: str | None = None,
        fingerprint_key: bytes | str | None = None,
        baseline: Iterable[str] = (),
        decode_json: bool = True,
        allow_marker: bool = True,
    ) -> None:
        base = list(builtin_rules() if rules is None else rules)
        check_unique(base)
        extra = load_rule_paths(extra_rule_paths)
        check_unique(extra)
        by_id = {r.id: r for r in base}
        for r in extra:
            by_id[r.id] = r
        all_rules = list(by_id.values())
        known = set(by_id)
        disabled = set(disabled)
        enabled = set(enabled)
        unknown = (disabled | enabled) - known
        if unknown:
            raise RuleError(f"unknown rule id(s): {', '.join(sorted(unknown))}")
        kind_set = set(kinds) if kinds is not None else None
        self.all_rules: tuple[Rule, ...] = tuple(all_rules)
        self.rules: tuple[Rule, ...] = tuple(
            r for r in all_rules
            if r.id not in disabled
            and (r.enabled or r.id in enabled)
            and (kind_set is None or r.kind in kind_set)
        )
        # Longest possible match of each rule, when short enough: its regex then runs only in windows around
        # the anchors the matcher reports, instead of over whole (possibly very long) lines.
        self._width = [match_width(r) for r in self.rules]
        facts = memo()
        # How far past a window's last start the regex needs the text: a match starting there is at most its
        # width long and its lookaheads look at most this far past it. Within that the window is exact; a
        # shorter tail than _LOOKAHEAD also spares the regex engine trying starts that cannot match.
        ahead = [facts.get("lookahead", r.pattern, lookahead_reach, r.pattern) for r in self.rules]
        self._tail = [min(_LOOKAHEAD, w + la) if w is not None and la is not None else _LOOKAHEAD
                      for w, la in zip(self._width, ahead, strict=True)]
        # How far past a match's end its lookaheads look: all a window needs past a line end.
        self._ahead = [min(_LOOKAHEAD, la) if la is not None else _LOOKAHEAD for la in ahead]
        # Rules that run on text with stand-ins for non-ASCII characters as on the real text.
        self._uniform = [facts.get("uniform", r.pattern, uniform, r.pattern) for r in self.rules]
        # Rules whose matches never hold a newline: their windows are cut to the lines a match can be on.
        self._one_line = [not r.multiline and facts.get("one-line", r.pattern, one_line, r.pattern)
                          for r in self.rules]
        self.matcher: Matcher = make_matcher(self.rules, backend)
        self.fingerprint = Fingerprinter(fingerprint_key)
        self.baseline = frozenset(baseline)
        self.decode_json = decode_json
        self.allow_marker = allow_marker

    @property
    def backend(self) -> str:
        return self.matcher.name

    def rule(self, rule_id: str) -> Rule:
        for r in self.all_rules:
            if r.id == rule_id:
                return r
        raise KeyError(rule_id)

    # -- public scanning API ------------------------------------------------------------------------------

    def scan_text(self, text: str) -> list[Finding]:
        """Findings in ``text``, sorted by start; offsets are character offsets into ``text``."""
        return self.scan_chunk(Chunk(text))

    def scan_bytes(self, data: bytes) -> list[Finding]:
        """Scan UTF-8 bytes; invalid bytes count as one character each (offsets are into the decoded text)."""
        return self.scan_chunk(Chunk.from_bytes(data))

    def scan_chunk(self, chunk: Chunk) -> list[Finding]:
        """Findings in ``chunk`` (see :meth:`Chunk.from_bytes`); offsets are character offsets into its text."""
        return self._scan(chunk, final=True)[0]

    def scan_chunks(
        self, stream: IO[str] | IO[bytes], chunk_chars: int = STREAM_CHUNK_CHARS
    ) -> Iterator[tuple[Chunk, list[Finding], int]]:
        """Scan a stream chunk by chunk, with bounded memory. Yields each chunk, its findings (offsets into the
        chunk's text) and how many of its characters they cover: all of them, unless the chunk's end cuts
        through a construct that spans lines (a private key, a transcript, a conversation in pretty-printed
        JSON). The text from that construct's line on is then left out and comes again at the start of the
        next chunk, so the construct is found whole."""
        reader = _Reader(stream, chunk_chars)
        for piece in reader:
            chunk = _as_chunk(piece)
            findings, length = self._scan(chunk, final=reader.last)
            if length < len(chunk):
                reader.hold(piece[chunk.utf8_offset(length):] if isinstance(piece, bytes) else piece[length:])
            yield chunk, findings, length

    def _scan(self, chunk: Chunk, *, final: bool) -> tuple[list[Finding], int]:
        """The findings of ``chunk`` and how much of it they cover (see :meth:`scan_chunks`); ``final``: no text
        follows the chunk, so nothing is left for the next one."""
        if not chunk.text:
            return [], 0
        view = TextView(chunk, decode_json=self.decode_json)
        vchunk = view.chunk
        vtext = vchunk.text
        located = self.matcher.locate(vtext, vchunk.ascii_bytes(), vchunk.real if vchunk.positions else None)
        widths, n = self._width, len(vtext)
        found = _Found(None if final else max(0, n - MAX_CARRY_CHARS))
        # Every match lies within its rule's width (plus slack) of an anchor, so the regex runs only there:
        # in merged windows for rules of bounded width, else on the lines around the anchors.
        for i, anchors in located.anchors.items():
            width = widths[i]
            if width is not None:
                self._extract_windows(i, vchunk, anchors, width, located.slack[i], i in located.at_end, found)
            else:
                self._extract(i, vchunk, [(ls, le, None) for ls, le in _lines_near(vtext, anchors, located.slack[i])],
                              found)
        for i in sorted(located.whole):
            # Where the rule's matches must begin (its literal prefix), when known: the regex is tried there
            # only, not searched through the rest of the text (private keys are few, their keywords frequent).
            starts = located.starts.get(i)
            if starts is None:
                self._extract(i, vchunk, [(0, n, None)], found)
            elif starts:
                self._extract(i, vchunk, [(starts[0], n, None)], found, starts=starts)
        findings = self._finish(found, view) if found else []
        if found.open_from is None:
            return findings, len(chunk)
        length = view.to_raw(found.open_from)
        return [f for f in findings if f.start < length], length

    def scan_stream(self, stream: IO[str] | IO[bytes], chunk_chars: int = STREAM_CHUNK_CHARS) -> Iterator[Finding]:
        """Scan a stream in chunks cut at newlines, with bounded memory; offsets are absolute."""
        base = 0
        for _, findings, length in self.scan_chunks(stream, chunk_chars):
            for f in findings:
                yield f.shifted(base)
            base += length

    # -- internals ------------------------------------------------------------------------------------------

    def _extract_windows(
        self, i: int, chunk: Chunk, anchors: list[int], width: int, slack: int, at_end: bool, out: _Found,
    ) -> None:
        """Run the rule's regex only within ``width`` (its longest match) plus ``slack`` characters before an
        anchor and as many after it (``slack`` when ``at_end``: the anchors are where matches end).

        A match lies within that of an anchor, so it lies inside a window; windows that touch are merged,
        so no match runs across the start of a window, and the regex sees enough characters past a window's
        end (its width and lookahead reach, at most ``_LOOKAHEAD``) that lookaheads behave as on the whole
        text. The findings are therefore exactly those of running over the whole text.

        A match also touches the ``slack`` characters around its anchor (or the character before them); for
        a rule whose matches hold no newline, the window is cut to the lines those characters are on. Wide
        rules (a generic ``api_key=`` with a value of up to 256 characters) then search a log line, not
        several.
        """
        text = chunk.text
        n = len(text)
        # [first start, last start + 1, end of the text the regex sees]
        windows: list[list[int]] = []
        ahead = self._ahead[i]
        reach = width + slack
        # Short windows are not worth the two searches for their lines.
        one_line = self._one_line[i] and reach > _LOOKAHEAD
        after = slack if at_end else reach
        # Past the last start, the text a match starting there may need (a match that ends at its anchor
        # needs only what its lookaheads look at).
        tail = ahead if at_end else self._tail[i]
        rfind, find = text.rfind, text.find
        for p in sorted(anchors):
            lo, hi = max(0, p - reach), min(n, p + after)
            end = hi + tail
            if one_line:
                lo = max(lo, rfind("\n", lo, max(lo, p - slack - 1)) + 1)
                nl = find("\n", min(hi, p + slack), hi)
                if nl != -1:
                    # No match runs past the newline; the regex sees past it only as far as it looks ahead.
                    hi, end = nl, nl + ahead
            if windows and lo <= windows[-1][1]:
                last = windows[-1]
                last[1], last[2] = max(last[1], hi), max(last[2], end)
            else:
                windows.append([lo, hi, end])
        self._extract(i, chunk, [(lo, min(n, end), hi) for lo, hi, end in windows], out)

    def _extract(
        self, i: int, chunk: Chunk, spans: list[tuple[int, int, int | None]], out: _Found,
        starts: list[int] | None = None,
    ) -> None:
        """Run rule ``i`` over each ``(a, b, stop)`` of ``spans``: its matches in ``[a, b)`` (starting before
        ``stop`` if given; only at ``starts`` when given, the places where every match of the rule must begin)
        become candidates in ``out``. One call per rule and text: the setup is paid once, not per window."""
        rule = self.rules[i]
        regex = rule.regex
        group = rule.value_group
        extend = rule.extend
        text = chunk.text
        sparse = bool(chunk.positions)
        patch = sparse and not self._uniform[i]
        reached = -1  # where the last match ends
        for a, b, stop in spans:
            # A rule that tells non-ASCII characters apart runs on the real text of the part, with room behind
            # it for lookbehinds; offsets in it are shifted by ``base``.
            subject, base = text, 0
            if patch and chunk.has_stand_ins(max(0, a - _BEHIND), b):
                base = max(0, a - _BEHIND)
                subject = chunk.real(base, b)
            matches = (regex.finditer(subject, a - base, b - base) if starts is None
                       else _matches_at(regex, subject, [p - base for p in starts], b - base))
            for m in matches:
                start, end = m.start() + base, m.end() + base
                if stop is not None and start >= stop:
                    break
                reached = end
                if extend is not None and start < out.covered.get(rule.id, -1):
                    # Inside a conversation this rule already extended over (the next speaker line of a
                    # transcript): extending again would only find a part of it, at a cost that grows with
                    # the length of the conversation for every turn in it.
                    continue
                vs, ve = m.span(group)
                if vs < 0 or vs == ve:
                    continue
                vs, ve = vs + base, ve + base
                value = chunk.real(vs, ve) if sparse else text[vs:ve]
                if extend is None:
                    # Context before the validators: a context word is found by one small search, a validator
                    # such as phone number parsing costs far more, and a required word missing ends it either way.
                    confidence = _with_context(rule, chunk, vs, ve)
                    if confidence is None or not rule.accepts(value):
                        continue
                else:
                    if not rule.accepts(value):
                        continue
                    ext = self._extend(rule, chunk, start, end, out)
                    if ext is None:
                        continue
                    vs, ve = start, ext
                    out.covered[rule.id] = ext
                    # An extended match (a whole conversation) has its context words around all of it.
                    confidence = _with_context(rule, chunk, vs, ve)
                    if confidence is None:
                        continue
                out.append((rule, vs, ve, confidence))
        if starts and out.open_limit is not None:
            # A place where a match would begin, after the last match, that does not match: the end of the
            # text may cut it short (a private key whose END line comes in the next chunk).
            width = self._width[i]
            after = max(out.open_limit, reached)
            for p in starts:
                if p >= after and (width is None or p + width > len(text)):
                    out.cut_short(text, p)
                    break

    @staticmethod
    def _extend(rule: Rule, chunk: Chunk, start: int, end: int, found: _Found) -> int | None:
        text = chunk.text
        if rule.extend == "json-container":
            brackets = [p for p in (text.find("[", start, end), text.find("{", start, end)) if p != -1]
            if not brackets:
                return None
            open_pos = min(brackets)
            # "messages": [ and [{"role": open the same array: its end is found once per scan.
            close = found.containers.get(open_pos)
            if close is None:
                limit = min(len(text), open_pos + _MAX_TRANSCRIPT_CHARS)
                close = _json_container_end(text, open_pos, limit)
                found.containers[open_pos] = close
                if close == -1 and limit == len(text):
                    found.cut_short(text, start)
            if close == -1:
                nl = text.find("\n", end)
                close = len(text) if nl == -1 else nl
            span = text[start:close]
            if span.count('"role"') < rule.min_turns or not _MESSAGE_TEXT.search(span):
                return None
            return close
        if rule.extend == "transcript":
            # The first turn may follow a log prefix on its line; the next turns start their own lines.
            t_end, turns, speakers, cut_short = _transcript_end(chunk, start)
            if cut_short:
                found.cut_short(text, start)
            if turns < rule.min_turns or speakers < min(2, rule.min_turns):
                return None
            return t_end
        return None

    def _finish(self, found: list[tuple[Rule, int, int, str]], view: TextView) -> list[Finding]:
        """Resolve overlaps first, then build findings (raw offsets, fingerprint, snippet) only for the ones kept.

        Overlaps are resolved on the decoded view: mapping to raw offsets keeps order and never merges two
        characters, so spans overlap in one exactly when they overlap in the other.
        """
        vchunk = view.chunk
        sparse = bool(vchunk.positions)
        raw = view.raw
        candidates: list[_Candidate] = [
            ((rule.priority, ve - vs, CONFIDENCE_RANK[confidence]), vs, ve, rule, confidence)
            for rule, vs, ve, confidence in found
        ]
        # The marker is looked for on the lines of kept findings only: searching the whole text would cost
        # more than everything else in a quiet chunk.
        allow_marker = self.allow_marker
        findings: list[Finding] = []
        # The line of the previous finding and whether it holds the marker: findings come in text order, so
        # each line is searched once, however many findings share it (a megabyte-long line may hold 100,000).
        line_start, line_end, allowed = 0, -1, False
        for _, vs, ve, rule, confidence in _resolve_overlaps(candidates):
            rs, re_ = view.span_to_raw(vs, ve)
            if allow_marker:
                if not line_start <= rs < line_end:
                    line_start = raw.rfind("\n", 0, rs) + 1
                    line_end = _line_end(raw, rs)
                    allowed = raw.find(ALLOW_MARKER, line_start, line_end) != -1
                if allowed:
                    continue
            value = vchunk.real(vs, ve) if sparse else vchunk.text[vs:ve]
            fp = self.fingerprint(value)
            if fp in self.baseline:
                continue
            conf: Confidence = confidence  # type: ignore[assignment]
            findings.append(Finding(rule.kind, rule.id, rs, re_, conf, fp, redacted_snippet(value, rule.kind)))
        return findings


class _Found(list[tuple[Rule, int, int, str]]):
    """The matches of one scan; where the JSON containers met so far end (keyed by opening bracket); per
    extending rule, where its last extended match ends; and where the earliest construct that the end of the
    text may have cut short begins its line (``open_from``), when the text is not the last of its stream."""

    __slots__ = ("containers", "covered", "open_from", "open_limit")

    def __init__(self, open_limit: int | None = None) -> None:
        super().__init__()
        self.containers: dict[int, int] = {}
        self.covered: dict[str, int] = {}
        # Constructs that begin before this are not carried (None: the text is whole, nothing is carried).
        self.open_limit = open_limit
        self.open_from: int | None = None

    def cut_short(self, text: str, pos: int) -> None:
        """A construct beginning at ``pos`` runs into the end of ``text``."""
        if self.open_limit is None or pos < self.open_limit:
            return
        line_start = text.rfind("\n", 0, pos) + 1
        # A construct that starts the text is not carried: the next chunk would begin with it again.
        if line_start and (self.open_from is None or line_start < self.open_from):
            self.open_from = line_start


def _line_end(text: str, pos: int) -> int:
    nl = text.find("\n", pos)
    return len(text) if nl == -1 else nl


# (strength: priority, length, confidence rank), start, end, rule, confidence
_Candidate = tuple[tuple[int, int, int], int, int, Rule, str]


def _resolve_overlaps(items: list[_Candidate]) -> list[_Candidate]:
    """Where candidates overlap, keep the strongest (priority, then length, then confidence); chat competes only
    with chat. A longer match usually is the more specific one: a whole provider token beats a generic
    32-hex rule that matched its tail. Identical duplicates (same rule, same span) collapse to one.
    Returns the kept candidates in text order.

    Candidates are first cut into groups that overlap one another (connected runs in text order); the
    strongest-first choice only ever looks within a group, so a text with half a million findings that do
    not overlap costs a sort, not a quadratic insertion.
    """
    kept: list[_Candidate] = []
    for chat in (False, True):
        group: list[_Candidate] = []
        reach = -1
        for it in sorted((it for it in items if (it[3].kind == "chat") is chat), key=lambda it: (it[1], it[2])):
            if group and it[1] >= reach:
                kept.extend(group if len(group) == 1 else _strongest_first(group))
                group = []
            group.append(it)
            reach = max(reach, it[2]) if len(group) > 1 else it[2]
        if group:
            kept.extend(group if len(group) == 1 else _strongest_first(group))
    kept.sort(key=lambda it: (it[1], it[2], it[3].id))
    return kept


def _strongest_first(items: list[_Candidate]) -> list[_Candidate]:
    items.sort(key=lambda it: (it[0], -it[1], it[3].id), reverse=True)
    kept: list[_Candidate] = []
    spans: list[tuple[int, int]] = []
    for it in items:
        start, end = it[1], it[2]
        j = bisect_left(spans, (start, end))
        if (j > 0 and spans[j - 1][1] > start) or (j < len(spans) and spans[j][0] < end):
            continue
        insort(spans, (start, end))
        kept.append(it)
    return kept


def iter_text_chunks(stream: IO[str] | IO[bytes], chunk_chars: int = STREAM_CHUNK_CHARS) -> Iterator[str]:
    """Yield text chunks that end at a newline (except the last), each about ``chunk_chars`` long."""
    for chunk in _Reader(stream, chunk_chars):
        yield chunk if isinstance(chunk, str) else str(chunk, "utf-8", "surrogateescape")


def iter_chunks(stream: IO[str] | IO[bytes], chunk_chars: int = STREAM_CHUNK_CHARS) -> Iterator[Chunk]:
    """Like :func:`iter_text_chunks`, as :class:`Chunk` s: bytes that are ASCII but for a few characters are
    held sparse (see ``Chunk.from_bytes``), which is how the scanner reads them fastest."""
    for chunk in _Reader(stream, chunk_chars):
        yield _as_chunk(chunk)


def _as_chunk(piece: str | bytes) -> Chunk:
    return Chunk(piece) if isinstance(piece, str) else Chunk.from_bytes(piece)


class _Reader:
    """The pieces of a stream (bytes or text), cut after newlines, each about ``size`` long.

    ``last`` tells whether the piece just yielded is the stream's last; :meth:`hold` gives back the end of
    that piece, to come first in the next one. Bytes are cut at newlines, so that each piece decodes on its
    own (a newline byte never sits inside a UTF-8 sequence, so the pieces decode exactly as the whole would);
    each is copied once (held text, the part of a line left over from the previous read, and this read's
    complete lines joined).
    """

    def __init__(self, stream: IO[str] | IO[bytes], size: int) -> None:
        self.stream = stream
        self.size = size
        self.last = False
        self._held: str | bytes = b""

    def hold(self, rest: str | bytes) -> None:
        if self.last:
            raise ValueError("nothing follows the last piece")
        self._held = rest

    def _take_text(self) -> str:
        held, self._held = self._held, ""
        assert isinstance(held, str)
        return held

    def _take_bytes(self) -> bytes:
        held, self._held = self._held, b""
        assert isinstance(held, bytes)
        return held

    def __iter__(self) -> Iterator[str | bytes]:
        first = self.stream.read(self.size)
        if isinstance(first, bytes):
            self._held = b""
            return self._bytes(first)
        self._held = ""
        return self._text(first)

    def _text(self, data: str) -> Iterator[str]:
        pending = ""
        read = self.stream.read
        while data:
            pending += data
            data = read(self.size)  # type: ignore[assignment]
            cut = pending.rfind("\n")
            if cut == -1:
                if len(pending) < MAX_LINE_CHARS * 4:
                    continue
                cut = len(pending) - 1
            piece, pending = self._take_text() + pending[: cut + 1], pending[cut + 1:]
            self.last = not data and not pending
            yield piece
        rest = self._take_text() + pending
        if rest:
            self.last = True
            yield rest

    def _bytes(self, data: bytes) -> Iterator[bytes]:
        tail = b""
        read = self.stream.read
        while data:
            cut = data.rfind(b"\n")
            if cut == -1:
                buf = tail + data
                data = read(self.size)  # type: ignore[assignment]
                if len(buf) < MAX_LINE_CHARS * 4:
                    tail = buf
                    continue
                # No newline for a long stretch: cut where a decoder fed all of it stands between two
                # characters (bytes that are not UTF-8 make walking back over continuation bytes unreliable).
                decoder = codecs.getincrementaldecoder("utf-8")("surrogateescape")
                decoder.decode(buf, final=False)
                cut = len(buf) - len(decoder.getstate()[0]) - 1
                if cut < 0:
                    tail = buf
                    continue
                piece = b"".join((self._take_bytes(), memoryview(buf)[: cut + 1]))
                tail = buf[cut + 1:]
            else:
                held = self._take_bytes()
                piece = (b"".join((held, tail, memoryview(data)[: cut + 1]))
                         if held or tail or cut + 1 < len(data) else data)
                tail = data[cut + 1:]
                data = read(self.size)  # type: ignore[assignment]
            self.last = not data and not tail
            yield piece
        rest = self._take_bytes() + tail
        if rest:
            self.last = True
            yield rest


_DEFAULT: Scanner | None = None


def default_scanner() -> Scanner:
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Scanner()
    return _DEFAULT


def scan_text(text: str) -> list[Finding]:
    """Scan ``text`` with the built-in rules."""
    return default_scanner().scan_text(text)


def scan_bytes(data: bytes) -> list[Finding]:
    return default_scanner().scan_bytes(data)


def scan_stream(stream: IO[str] | IO[bytes]) -> Iterator[Finding]:
    return default_scanner().scan_stream(stream)
