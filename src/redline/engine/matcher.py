"""Which rules may match which block of text: Hyperscan when available, plain string checks otherwise.

The matcher only narrows the work. Exact spans always come from Python's ``re`` on the same blocks, so the two
backends return identical findings as long as the Hyperscan side never misses a block a rule matches in.
Hyperscan compiles every pattern in prefilter mode (a superset of the real pattern) and reports one hit per
rule per block; it sees non-ASCII characters as one ``\\x1a`` byte each, so that byte lengths equal character
lengths and ASCII-mode patterns keep their meaning.
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


class Matcher(Protocol):
    name: str

    def candidates(self, block: str) -> set[int]:
        """Indices of line rules that may match in ``block``; multiline rules whose keywords occur in it.

        Rules that require context words are candidates only where one occurs: the caller passes the block
        widened by the largest context window, so a context word just outside the block still counts.
        """
        ...

    def positions(self, data: bytes, wanted: set[int]) -> dict[int, list[int]]:
        """End offsets, in ``data`` (a block as :func:`ascii_bytes`), where rules in ``wanted`` may match.

        Only rules for which the matcher can tell positions appear in the result (see ``locatable``); for
        them, every real match ends at or after a reported offset on the same line.
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

    def __init__(self, rules: Sequence[Rule]) -> None:
        self._gates = [
            (i, tuple(k.lower() for k in r.keywords), r.context if needs_context(r) else ())
            for i, r in enumerate(rules)
        ]

    locatable: frozenset[int] = frozenset()

    def positions(self, data: bytes, wanted: set[int]) -> dict[int, list[int]]:
        return {}

    def candidates(self, block: str) -> set[int]:
        low = block.lower()
        return {
            i for i, kws, ctx in self._gates
            if (not kws or any(k in low for k in kws)) and (not ctx or any(w in low for w in ctx))
        }


class HyperscanMatcher:
    name = "hyperscan"

    def __init__(self, rules: Sequence[Rule]) -> None:
        import hyperscan as hs

        self._hs = hs
        exprs: list[bytes] = []
        ids: list[int] = []
        flags: list[int] = []
        pattern_flags = hs.HS_FLAG_PREFILTER | hs.HS_FLAG_SINGLEMATCH | hs.HS_FLAG_MULTILINE
        literal_flags = hs.HS_FLAG_CASELESS | hs.HS_FLAG_SINGLEMATCH
        self._always: set[int] = set()
        # Expression ids below len(rules) are rule patterns (or multiline keywords); ids from len(rules) up are
        # context words, id - len(rules) being the rule they belong to.
        n = len(rules)
        self._needs_context = {i for i, r in enumerate(rules) if needs_context(r)}
        self._context_only: set[int] = set()
        for i, rule in enumerate(rules):
            if i in self._needs_context:
                for word in rule.context:
                    exprs.append(asciify_pattern(re.escape(word)).encode("ascii"))
                    ids.append(n + i)
                    flags.append(literal_flags)
                if not rule.keywords:
                    # Bare-value patterns (32 hex, 40 base64) are what slows Hyperscan down most; where a
                    # context word is required anyway, the word alone decides the block.
                    self._context_only.add(i)
                    continue
            if rule.multiline:
                for kw in rule.keywords:
                    exprs.append(asciify_pattern(re.escape(kw)).encode("ascii"))
                    ids.append(i)
                    flags.append(literal_flags)
                continue
            exprs.append(asciify_pattern(rule.pattern).encode("ascii"))
            ids.append(i)
            flags.append(pattern_flags)
        self._n = n
        self._db: Any = None
        if exprs:
            self._db = self._load_or_compile(exprs, ids, flags, rules)
            self._scratch = hs.Scratch(self._db)
        self._build_position_db(rules)

    def _build_position_db(self, rules: Sequence[Rule]) -> None:
        """A second database, without SINGLEMATCH, that tells where on a block a rule may match.

        Rules whose keywords are common words (``key``, ``token``, ``user``) would otherwise run their regex on
        every line holding such a word. A pattern with a ``value`` group is cut before it: the label part
        (``api_key =``) reports one offset per occurrence, where a value pattern like ``[A-Za-z0-9]{16,}``
        would report one per character. A match's line always holds the end of its label part.
        """
        hs = self._hs
        exprs: list[bytes] = []
        ids: list[int] = []
        for i, rule in enumerate(rules):
            if rule.multiline or i in self._context_only or i in self._always or not rule.pattern.isascii():
                continue
            cut = rule.pattern.find("(?P<value>")
            expr = rule.pattern[:cut] if cut > 0 else rule.pattern
            try:
                if re.compile(expr, re.ASCII | re.MULTILINE).match("") is not None:
                    expr = rule.pattern
            except re.error:
                expr = rule.pattern
            exprs.append(expr.encode("ascii"))
            ids.append(i)
        self._pos_db: Any = None
        self.locatable: frozenset[int] = frozenset()
        if not exprs:
            return
        flags = [hs.HS_FLAG_PREFILTER | hs.HS_FLAG_MULTILINE] * len(exprs)
        try:
            self._pos_db = self._load_or_compile(exprs, ids, flags, rules, probe_failures=False)
        except hs.error:
            log.debug("no position database; rules run on keyword lines")
            return
        self._pos_scratch = hs.Scratch(self._pos_db)
        self.locatable = frozenset(ids)

    def positions(self, data: bytes, wanted: set[int]) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {i: [] for i in wanted}

        def on_match(rule_index: int, _from: int, to: int, _flags: int, _ctx: object) -> None:
            ends = out.get(rule_index)
            if ends is not None:
                ends.append(to)

        self._pos_db.scan(data, match_event_handler=on_match, scratch=self._pos_scratch)
        return out

    def _load_or_compile(
        self, exprs: list[bytes], ids: list[int], flags: list[int], rules: Sequence[Rule], *,
        probe_failures: bool = True,
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
            if not probe_failures:
                raise
            # Find the patterns Hyperscan rejects; their rules then run on every block (still exact, slower).
            keep = []
            for k, (e, f) in enumerate(zip(exprs, flags, strict=True)):
                probe = hs.Database(mode=hs.HS_MODE_BLOCK)
                try:
                    probe.compile(expressions=[e], ids=[0], elements=1, flags=[f])
                    keep.append(k)
                except hs.error:
                    if ids[k] < self._n:
                        log.debug("rule %s does not compile for Hyperscan; it runs on every block",
                                  rules[ids[k]].id)
                        self._always.add(ids[k])
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

    def candidates(self, block: str) -> set[int]:
        hits = set(self._always)
        if self._db is not None:
            data = block.encode("ascii") if block.isascii() else ascii_bytes(block)

            def on_match(expr_id: int, _from: int, _to: int, _flags: int, _ctx: object) -> None:
                hits.add(expr_id)

            self._db.scan(data, match_event_handler=on_match, scratch=self._scratch)
        n = self._n
        ctx = self._needs_context
        out = {i for i in hits if i < n and (i not in ctx or n + i in hits)}
        out.update(i - n for i in hits if i - n in self._context_only)
        return out


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
