"""Which rules may match which block of text: Hyperscan when available, plain string checks otherwise.

The matcher only narrows the work. Exact spans always come from Python's ``re`` on the same blocks, so the two
backends return identical findings as long as the Hyperscan side never misses a block (or a line) a rule
matches in. Hyperscan compiles every pattern in prefilter mode (a superset of the real pattern) and reports,
per block, which rules may match and, for rules with common keywords, where (the end of each match's label
part); it sees non-ASCII characters as one ``\\x1a`` byte each, so that byte lengths equal character lengths
and ASCII-mode patterns keep their meaning.
"""

from __future__ import annotations

import codecs
import hashlib
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from redline.engine.rules import Rule

log = logging.getLogger("redline.engine")

BACKEND_ENV = "REDLINE_BACKEND"
_SUB = "\x1a"


def _sub_errors(exc: UnicodeError) -> tuple[str, int]:
    if isinstance(exc, UnicodeEncodeError):
        return _SUB * (exc.end - exc.start), exc.end
    raise exc


codecs.register_error("redline-sub", _sub_errors)


def ascii_bytes(text: str) -> bytes:
    """One byte per character: non-ASCII characters become 0x1a."""
    return text.encode("ascii", "redline-sub")


def asciify_pattern(pattern: str) -> str:
    return "".join(c if ord(c) < 128 else "\\x1a" for c in pattern)


def _context_expression(word: str) -> bytes:
    """Hyperscan's form of a context word, a superset of :attr:`Rule.context_regex` for that word.

    Hyperscan has no lookarounds: ``\\b`` or an underscore stands for "not after a letter or digit", an
    explicit lowercase letter for the camelCase start, a consumed non-lowercase character for the end.
    """
    if not word.isascii() or not word[:1].isalpha():
        return asciify_pattern(re.escape(word)).encode("ascii")
    first, rest = word[0], re.escape(word[1:])
    body = f"(?i:{re.escape(first)}){'(?i:' + rest + ')' if rest else ''}"
    camel = f"[a-z]{first.upper()}{'(?i:' + rest + ')' if rest else ''}"
    return f"(?:(?:\\b|_){body}|{camel})(?:[^a-z]|\\z)".encode("ascii")


def words_in(text: str, words: tuple[str, ...], rx: re.Pattern[str] | None) -> frozenset[str]:
    """Which of ``words`` occur in ``text``; ``rx`` is their alternation, longest first (see word_pattern).

    Every position where some word starts yields the longest word there, and the shorter words starting there
    are its prefixes; stepping one character past each start catches overlapping words.
    """
    if rx is None:
        return frozenset()
    found: set[str] = set()
    m = rx.search(text)
    while m is not None:
        found.add(m.group())
        m = rx.search(text, m.start() + 1)
    if not found:
        return frozenset()
    return frozenset(w for w in words if any(f.startswith(w) for f in found))


def word_pattern(words: Sequence[str]) -> tuple[tuple[str, ...], re.Pattern[str] | None]:
    ordered = tuple(sorted(set(words), key=len, reverse=True))
    return ordered, (re.compile("|".join(map(re.escape, ordered))) if ordered else None)


class Matcher(Protocol):
    name: str

    def scan(self, text: str, data: bytes, lo: int, hi: int) -> tuple[set[int], dict[int, list[int]]]:
        """Which rules may match in the block ``text[lo:hi]``, and where.

        ``text`` is the block widened on both sides by the largest context window (so a context word just
        outside the block still counts), ``data`` the same as :func:`ascii_bytes`. Returns the indices of
        line rules that may match in the block (and of multiline rules whose keywords occur), and for the
        rules listed in ``locatable``, end offsets (relative to ``lo``) such that every real match's line
        holds one of them.
        """
        ...

    @property
    def locatable(self) -> frozenset[int]:
        ...


def needs_context(rule: Rule) -> bool:
    return bool(rule.context) and rule.confidence_without_context is None


class ReMatcher:
    """Pure-Python candidate selection: a rule is a candidate wherever one of its keywords occurs."""

    name = "re"
    locatable: frozenset[int] = frozenset()

    def __init__(self, rules: Sequence[Rule]) -> None:
        self._gates = [
            (i, tuple(k.lower() for k in r.keywords), r.context if needs_context(r) else ())
            for i, r in enumerate(rules)
        ]

    def scan(self, text: str, data: bytes, lo: int, hi: int) -> tuple[set[int], dict[int, list[int]]]:
        low = text.lower()
        cands = {
            i for i, kws, ctx in self._gates
            if (not kws or any(k in low for k in kws)) and (not ctx or any(w in low for w in ctx))
        }
        return cands, {}


class HyperscanMatcher:
    """One Hyperscan database per rule set, scanned once per block.

    Expression ids: ``i`` for rule ``i``'s pattern (SINGLEMATCH: only "somewhere in this block" matters) or,
    for a locatable rule, its label part without SINGLEMATCH (every end offset is a position); ``n + i`` for
    rule ``i``'s context words; multiline rules are represented by their keywords.
    """

    name = "hyperscan"

    def __init__(self, rules: Sequence[Rule]) -> None:
        import hyperscan as hs

        self._hs = hs
        n = self._n = len(rules)
        pattern_flags = hs.HS_FLAG_PREFILTER | hs.HS_FLAG_SINGLEMATCH | hs.HS_FLAG_MULTILINE
        position_flags = hs.HS_FLAG_PREFILTER | hs.HS_FLAG_MULTILINE
        literal_flags = hs.HS_FLAG_CASELESS | hs.HS_FLAG_SINGLEMATCH
        context_flags = hs.HS_FLAG_SINGLEMATCH
        exprs: list[bytes] = []
        ids: list[int] = []
        flags: list[int] = []
        self._always: set[int] = set()
        self._needs_context = {i for i, r in enumerate(rules) if needs_context(r)}
        # Bare-value rules gated by context alone (32 hex digits, an 11-digit number): their patterns are
        # what slows Hyperscan down most, so the context words alone decide the block.
        self._context_only = {i for i in self._needs_context if not rules[i].keywords}
        # Non-ASCII context words: Hyperscan sees such characters as one stand-in byte each, so they are
        # looked for in the text itself.
        self._text_context: dict[int, list[str]] = {}
        located: set[int] = set()
        for i, rule in enumerate(rules):
            if i in self._needs_context:
                for word in rule.context:
                    if word.isascii():
                        exprs.append(_context_expression(word))
                        ids.append(n + i)
                        flags.append(context_flags)
                    else:
                        self._text_context.setdefault(i, []).append(word)
            if i in self._context_only:
                continue
            if rule.multiline:
                for kw in rule.keywords:
                    exprs.append(asciify_pattern(re.escape(kw)).encode("ascii"))
                    ids.append(i)
                    flags.append(literal_flags)
                continue
            position = _position_expression(rule)
            if position is not None:
                exprs.append(position)
                flags.append(position_flags)
                located.add(i)
            else:
                exprs.append(asciify_pattern(rule.pattern).encode("ascii"))
                flags.append(pattern_flags)
            ids.append(i)
        self._text_words, self._text_words_rx = word_pattern([w for ws in self._text_context.values() for w in ws])
        self._db: Any = None
        if exprs:
            self._db = self._load_or_compile(exprs, ids, flags, rules)
            self._scratch = hs.Scratch(self._db)
        self.locatable: frozenset[int] = frozenset(located - self._always)

    def scan(self, text: str, data: bytes, lo: int, hi: int) -> tuple[set[int], dict[int, list[int]]]:
        hits = set(self._always)
        ends: dict[int, list[int]] = {}
        if self._db is not None:
            locatable = self.locatable
            n = self._n

            def on_match(expr_id: int, _from: int, to: int, _flags: int, _ctx: object) -> None:
                hits.add(expr_id)
                if expr_id < n and expr_id in locatable and lo < to <= hi:
                    ends.setdefault(expr_id, []).append(to - lo)

            self._db.scan(data, match_event_handler=on_match, scratch=self._scratch)
        n = self._n
        if self._text_context and not text.isascii():
            present = words_in(text, self._text_words, self._text_words_rx)
            if present:
                hits.update(n + i for i, words in self._text_context.items() if not present.isdisjoint(words))
        ctx = self._needs_context
        out = {i for i in hits if i < n and (i not in ctx or n + i in hits)}
        out.update(i - n for i in hits if i - n in self._context_only)
        for i in out & self.locatable:
            ends.setdefault(i, [])
        return out, ends

    def _load_or_compile(
        self, exprs: list[bytes], ids: list[int], flags: list[int], rules: Sequence[Rule]
    ) -> Any:
        """Compiling a few hundred patterns takes seconds; the compiled database is cached on disk, keyed by
        everything that went into it, so only the first run after a rule change pays."""
        hs = self._hs
        digest = hashlib.sha256(repr((exprs, ids, flags, getattr(hs, "__version__", ""))).encode()).hexdigest()
        cache_dir = _cache_dir()
        cache = cache_dir / f"hs-{digest[:32]}.db" if cache_dir else None
        if cache is not None and cache.is_file():
            try:
                return hs.loadb(cache.read_bytes(), hs.HS_MODE_BLOCK)
            except Exception:  # a stale or damaged cache file is simply rebuilt
                log.debug("ignoring unreadable Hyperscan cache %s", cache)
        db = hs.Database(mode=hs.HS_MODE_BLOCK)
        try:
            db.compile(expressions=exprs, ids=ids, elements=len(exprs), flags=flags)
        except hs.error:
            # Find the expressions Hyperscan rejects; their rules then run on every block (exact, slower).
            keep = []
            for k, (e, f) in enumerate(zip(exprs, flags, strict=True)):
                probe = hs.Database(mode=hs.HS_MODE_BLOCK)
                try:
                    probe.compile(expressions=[e], ids=[0], elements=1, flags=[f])
                    keep.append(k)
                except hs.error:
                    rule_index = ids[k] % self._n
                    log.debug("rule %s does not compile for Hyperscan; it runs on every block",
                              rules[rule_index].id)
                    self._always.add(rule_index)
            db = hs.Database(mode=hs.HS_MODE_BLOCK)
            db.compile(expressions=[exprs[k] for k in keep], ids=[ids[k] for k in keep], elements=len(keep),
                       flags=[flags[k] for k in keep])
            return db  # not cached: the fallback set depends on this Hyperscan build
        if cache is not None:
            try:
                cache.parent.mkdir(parents=True, exist_ok=True)
                tmp = cache.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_bytes(hs.dumpb(db))
                tmp.replace(cache)
            except OSError:
                log.debug("cannot write Hyperscan cache %s", cache)
        return db


def _position_expression(rule: Rule) -> bytes | None:
    """The label part of a rule whose keywords are common words, for reporting match positions.

    Rules whose keywords are words like ``key``, ``token`` or ``user`` would otherwise run their regex on every
    line holding such a word. A pattern with a ``value`` group is cut before it: the label part
    (``api_key =``) reports one offset per occurrence, where a value pattern such as ``[A-Za-z0-9]{16,}``
    would report one per character; a match's line always holds the end of its label part. Rules with
    distinctive keywords (``sk-proj-``, ``ghp_``) already pick few lines and are left alone.
    """
    if not rule.pattern.isascii() or (rule.keywords and not any(len(k) <= 6 and k.isalpha() for k in rule.keywords)):
        return None
    cut = rule.pattern.find("(?P<value>")
    expr = rule.pattern[:cut] if cut > 0 else rule.pattern
    try:
        if re.compile(expr, re.ASCII | re.MULTILINE).match("") is not None:
            expr = rule.pattern
    except re.error:
        expr = rule.pattern
    if _OPEN_RUN.search(expr):
        # "[^\n]{8,}" or ".*" would report a position for every character of the rest of the line.
        return None
    return expr.encode("ascii")


_OPEN_RUN = re.compile(r"\[\^[^\]]*\](?:\*|\+|\{\d+,\})|(?<!\\)\.(?:\*|\+|\{\d+,\})")


def _cache_dir() -> Path | None:
    """``$REDLINE_CACHE_DIR``, else ``$XDG_CACHE_HOME/redline``, else ``~/.cache/redline``; empty disables."""
    env = os.environ.get("REDLINE_CACHE_DIR")
    if env is not None:
        return Path(env) if env else None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "redline"


def hyperscan_available() -> bool:
    try:
        import hyperscan  # noqa: F401
    except ImportError:
        return False
    return True


def make_matcher(rules: Sequence[Rule], backend: str | None = None) -> Matcher:
    """``backend``: ``"hyperscan"``, ``"re"`` or ``"auto"`` (default, or the REDLINE_BACKEND variable)."""
    choice = (backend or os.environ.get(BACKEND_ENV) or "auto").lower()
    if choice not in ("auto", "hyperscan", "re"):
        raise ValueError(f"unknown backend {choice!r}: use auto, hyperscan or re")
    if choice == "re" or (choice == "auto" and not hyperscan_available()):
        return ReMatcher(rules)
    if not hyperscan_available():
        raise ValueError("backend 'hyperscan' was asked for but the hyperscan package is not installed")
    return HyperscanMatcher(rules)
