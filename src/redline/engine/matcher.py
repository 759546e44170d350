"""Which rules may match which block of text: Hyperscan when available, plain string checks otherwise.

The matcher only narrows the work. Exact spans always come from Python's ``re`` on the same blocks, so the two
backends return identical findings as long as the Hyperscan side never misses a block a rule matches in.
Hyperscan compiles every pattern in prefilter mode (a superset of the real pattern) and reports one hit per
rule per block; it sees non-ASCII characters as one ``\\x1a`` byte each, so that byte lengths equal character
lengths and ASCII-mode patterns keep their meaning.
"""

from __future__ import annotations

import codecs
import logging
import os
import re
from collections.abc import Sequence
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
            expr = asciify_pattern(rule.pattern).encode("ascii")
            if self._compiles(expr, pattern_flags):
                exprs.append(expr)
                ids.append(i)
                flags.append(pattern_flags)
            else:
                # Still exact, only slower: the rule's regex runs on every block.
                log.debug("rule %s does not compile for Hyperscan; it runs on every block", rule.id)
                self._always.add(i)
        self._n = n
        self._db: Any = None
        if exprs:
            self._db = hs.Database(mode=hs.HS_MODE_BLOCK)
            self._db.compile(expressions=exprs, ids=ids, elements=len(exprs), flags=flags)
            self._scratch = hs.Scratch(self._db)

    def _compiles(self, expr: bytes, flags: int) -> bool:
        hs = self._hs
        db = hs.Database(mode=hs.HS_MODE_BLOCK)
        try:
            db.compile(expressions=[expr], ids=[0], elements=1, flags=[flags])
        except hs.error:
            return False
        return True

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
