"""Where each rule may match in a text: Hyperscan when available, plain string searches otherwise.

The matcher only narrows the work. Exact spans always come from Python's ``re`` around the anchors it
reports, so the two backends return identical findings as long as no real match lies away from every anchor.
Hyperscan scans the text once with every rule's expression in prefilter mode (a superset of the real pattern,
trimmed so that it ends once per match) and once more in a character-class view for bare values; it sees
non-ASCII characters as one ``\\x1a`` byte each, so that byte offsets equal character offsets and ASCII-mode
patterns keep their meaning. The pure-``re`` backend anchors rules at their keywords.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from bisect import bisect_left
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

from redline.engine.cache import HS_CACHE_KEEP, cache_dir, memo, prune, touch
from redline.engine.rules import PATTERN_FLAGS, Rule, literal_prefix, match_width, parse_pattern

log = logging.getLogger("redline.engine")
# The real text of ``[lo, hi)`` of a text that holds stand-ins (``Chunk.real``).
Real = Callable[[int, int], str]

BACKEND_ENV = "REDLINE_BACKEND"
# The regular expression parser is private API; without it, class expressions are simply not used.
_C: Any = getattr(re, "_constants", None)


def asciify_pattern(pattern: str) -> str:
    if pattern.isascii():
        return pattern
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


class Located(NamedTuple):
    """Where rules may match in a text: every match of rule ``i`` lies within ``width + slack[i]`` characters
    of one of ``anchors[i]`` (on the same line, for rules without a bounded width); rules in ``whole`` run
    over the whole text."""

    anchors: dict[int, list[int]]
    slack: dict[int, int]
    whole: set[int]
    # For multiline rules in ``whole`` whose matches all begin with a literal prefix: where it occurs (the
    # rule is tried there only).
    starts: dict[int, list[int]]
    # Rules whose matches end within ``slack`` of an anchor (not only somewhere within width + slack of it).
    at_end: frozenset[int] = frozenset()


class Matcher(Protocol):
    name: str

    def locate(self, text: str, data: bytes, real: Real | None = None) -> Located:
        """Where rules may match in ``text`` (``data`` is the same as :func:`ascii_bytes`). ``real`` gives the
        real text of a part when ``text`` holds stand-ins for non-ASCII characters (see ``Chunk``)."""
        ...


def needs_context(rule: Rule) -> bool:
    return bool(rule.context) and rule.confidence_without_context is None


class ReMatcher:
    """Pure-Python candidate selection: every match holds one of its rule's keywords, so keyword occurrences
    are the anchors; a rule that needs context words runs only where the text holds one."""

    name = "re"

    def __init__(self, rules: Sequence[Rule]) -> None:
        self._rules = rules
        self._context = {i: _split_words(r.context) for i, r in enumerate(rules) if needs_context(r)}
        self._keywords = {i: _split_words(tuple(k.lower() for k in r.keywords)) for i, r in enumerate(rules)
                          if r.keywords}
        self._finder = _WordFinder([w for ws in (*self._context.values(), *self._keywords.values())
                                    for w in ws[1]])
        self._prefix = _multiline_prefixes(rules)

    def locate(self, text: str, data: bytes, real: Real | None = None) -> Located:
        low = data.lower()
        found: dict[bytes, list[int]] = {}
        other = self._finder.find(text, data, real)

        def at(word: bytes | str) -> list[int]:
            if isinstance(word, str):
                return other.get(word, [])
            hit = found.get(word)
            if hit is None:
                hit = found[word] = _occurrences(low, word)
            return hit

        located = Located({}, {}, set(), {})
        for i, rule in enumerate(self._rules):
            ctx = self._context.get(i)
            if ctx is not None and not any(at(w) for group in ctx for w in group):
                continue
            kws = self._keywords.get(i)
            if rule.multiline:
                if kws is None or any(at(w) for group in kws for w in group):
                    located.whole.add(i)
                    starts = _prefix_starts(self._prefix.get(i), text, real)
                    if starts is not None:
                        located.starts[i] = starts
                continue
            if kws is not None:
                anchors = [p for group in kws for w in group for p in at(w)]
                if anchors:
                    located.anchors[i] = anchors
                    located.slack[i] = max(len(w) for group in kws for w in group)
            elif ctx is not None:
                located.anchors[i] = [p for group in ctx for w in group for p in at(w)]
                located.slack[i] = rule.context_window + max(len(w) for group in ctx for w in group)
            else:
                located.whole.add(i)
        return located


class _WordFinder:
    """Finds non-ASCII words (lowercase, as rules store them) in text, case-insensitively."""

    def __init__(self, words: Sequence[str]) -> None:
        ordered = sorted(set(words), key=len, reverse=True)
        self.words = ordered
        self.rx = re.compile("|".join(map(re.escape, ordered)) or "(?!)", re.IGNORECASE)
        self.prefixes = {w: [v for v in ordered if w.startswith(v)] for w in ordered}

    def find(self, text: str, data: bytes, real: Real | None = None) -> dict[str, list[int]]:
        if not self.words or (real is None and text.isascii()):
            return {}
        return _non_ascii_words(text, data, self.rx, self.prefixes, real)


def _non_ascii_words(
    text: str, data: bytes, rx: re.Pattern[str], prefixes: dict[str, list[str]], real: Real | None = None
) -> dict[str, list[int]]:
    """Start offsets of each non-ASCII word, overlapping ones included: ``rx`` is their alternation, longest
    first, so where it finds a word the shorter words starting there are its ``prefixes`` (looked up in
    lowercase: ``rx`` may ignore case). Only the lines that hold a non-ASCII character (a 0x1a in ``data``)
    are searched: in long text with wide characters, any search over everything costs more than the rest
    of the scan."""
    out: dict[str, list[int]] = {}
    n = len(data)
    find, rfind = data.find, data.rfind
    pos = find(b"\x1a")
    while pos != -1:
        ls = rfind(b"\n", 0, pos) + 1
        le = find(b"\n", pos)
        le = n if le == -1 else le
        line, base = (real(ls, le), ls) if real is not None else (text, 0)
        m = rx.search(line, ls - base, le - base)
        while m is not None:
            for word in prefixes.get(m.group().lower(), ()):
                out.setdefault(word, []).append(m.start() + base)
            m = rx.search(line, m.start() + 1, le - base)
        pos = find(b"\x1a", le)
    return out


def _near(positions: list[int], others: list[int], reach: int) -> list[int]:
    """The positions within ``reach`` of one of ``others``."""
    others = sorted(others)
    last = len(others) - 1
    out = []
    for p in positions:
        k = bisect_left(others, p - reach)
        if k <= last and others[k] <= p + reach:
            out.append(p)
    return out


def _split_words(words: Sequence[str]) -> tuple[tuple[bytes, ...], tuple[str, ...]]:
    """ASCII words as lowercase bytes (searched in the lowercased byte view), others as text."""
    return (tuple({w.lower().encode("ascii") for w in words if w.isascii()}),
            tuple(w for w in words if not w.isascii()))


def _multiline_prefixes(rules: Sequence[Rule]) -> dict[int, str]:
    """The literal prefix of each multiline rule that has one (see ``rules.literal_prefix``)."""
    facts = memo()
    out = {}
    for i, rule in enumerate(rules):
        if rule.multiline:
            prefix = facts.get("literal-prefix", rule.regex_pattern, literal_prefix, rule.regex_pattern)
            if prefix is not None:
                out[i] = prefix
    return out


def _prefix_starts(prefix: str | None, text: str, real: Real | None) -> list[int] | None:
    """Where ``prefix`` occurs in ``text``; None when there is no prefix, or it cannot be seen in a text
    that holds stand-ins (a non-ASCII prefix)."""
    if prefix is None or (real is not None and not prefix.isascii()):
        return None
    return _occurrences(text, prefix)


def _occurrences(hay: bytes | str, word: bytes | str) -> list[int]:
    out: list[int] = []
    find = hay.find
    pos = find(word)  # type: ignore[arg-type]
    while pos != -1:
        out.append(pos)
        pos = find(word, pos + 1)  # type: ignore[arg-type]
    return out


class HyperscanMatcher:
    """Two Hyperscan databases per rule set, each scanned once over the whole text.

    Expression ids: ``i`` for rule ``i``'s pattern, or the label part of it (see ``_position_expression``),
    or its ``anchor``, or its class form (second database, see ``class_expression``); every end offset
    Hyperscan reports is an anchor, and every real match holds one (or ends one character before it).
    ``n + i`` for rule ``i``'s context words: reported once when they only gate the rule, at every occurrence
    when they anchor it (bare values such as 32 hex digits, whose own pattern would slow the scan down most)
    or when the rule's own anchors must lie within reach of one. Multiline rules are represented by their
    keywords and run over the whole text when one occurs.
    """

    name = "hyperscan"

    def __init__(self, rules: Sequence[Rule]) -> None:
        import hyperscan as hs

        self._hs = hs
        n = self._n = len(rules)
        position_flags = hs.HS_FLAG_PREFILTER | hs.HS_FLAG_MULTILINE
        literal_flags = hs.HS_FLAG_CASELESS | hs.HS_FLAG_SINGLEMATCH
        exprs: list[bytes] = []
        ids: list[int] = []
        flags: list[int] = []
        self._always: set[int] = set()
        self._prefix = _multiline_prefixes(rules)
        self._found_prefix: set[int] = set()  # multiline rules whose prefix Hyperscan reports
        # Rules whose anchors are where their matches end (or one character after): the whole pattern, or its
        # class form. Their windows need not reach past the anchor.
        self._at_end: set[int] = set()
        self._needs_context = {i for i, r in enumerate(rules) if needs_context(r)}
        # Bare-value rules gated by context alone (32 hex digits, an 11-digit number): their patterns are
        # what slows Hyperscan down most, so their context words anchor them.
        self._context_only = {i for i in self._needs_context if not rules[i].keywords}
        # Non-ASCII context words: Hyperscan sees such characters as one stand-in byte each, so they are
        # looked for in the text itself.
        self._text_context: dict[int, list[str]] = {}
        self._text_keywords: dict[int, tuple[str, ...]] = {}
        # Bare-value rules (no keywords: card numbers, national ids) go to a second database that scans the
        # text mapped to character classes, where their patterns become runs of literals (see class_expression).
        # The expressions are memoized on disk (see redline.engine.cache): deriving them takes longer than
        # loading the compiled databases.
        facts = memo()
        classed = {
            i: form for i, rule in enumerate(rules)
            if not rule.multiline and not rule.keywords
            and (form := facts.get("class-anchor", (rule.pattern, i in self._context_only), class_anchor,
                                   rule.pattern, sharp=i in self._context_only)) is not None
        }
        self._class_db: Any = None
        if classed:
            try:
                self._class_db = self._load_or_compile(
                    [expr for expr, _ in classed.values()], list(classed), [position_flags] * len(classed), rules)
                self._class_scratch = hs.Scratch(self._class_db)
            except hs.error:
                log.debug("class-space database does not compile; its rules use their own patterns")
                classed = {}
        self._classed = frozenset(classed)
        self._context_only -= self._classed
        self._multiline = frozenset(i for i, r in enumerate(rules) if r.multiline)
        # A context word ends at most context_window characters (plus its own length, plus the character its
        # expression consumes) away from the match.
        self._context_slack = {
            i: rules[i].context_window + max(len(w) for w in rules[i].context) + 1 for i in self._context_only
        }
        # A bare-value rule (class form) that needs a context word: an anchor (the match's end, or one past it)
        # lies within this distance of a context word's end, else the match cannot have the word near it. Any
        # run of nine digits is such an anchor, so the words are reported everywhere and anchors kept only
        # near one. Rules with keywords have few anchors; their words only open the gate (a model name such
        # as "deepseek" fills AI logs) and the scanner checks the words around each match.
        self._context_reach = {
            i: width + rules[i].context_window + max(len(w) for w in rules[i].context) + 2
            for i in self._needs_context & self._classed
            if (width := match_width(rules[i])) is not None
        }
        for i, rule in enumerate(rules):
            if i in self._needs_context:
                for word in rule.context:
                    if word.isascii():
                        exprs.append(_context_expression(word))
                        ids.append(n + i)
                        flags.append(0 if i in self._context_only or i in self._context_reach
                                     else hs.HS_FLAG_SINGLEMATCH)
                    else:
                        self._text_context.setdefault(i, []).append(word)
            if i in self._context_only or i in classed:
                continue
            if rule.keywords and not rule.multiline and not any(k.isascii() or k.lower() != k.upper()
                                                                 for k in rule.keywords):
                # Keywords the byte view cannot see (用户): every run of non-ASCII text would look like one,
                # so the keywords are found in the text and anchor the rule.
                self._text_keywords[i] = rule.keywords
                continue
            if rule.multiline:
                for kw in rule.keywords:
                    exprs.append(asciify_pattern(re.escape(kw)).encode("ascii"))
                    ids.append(i)
                    flags.append(literal_flags)
                prefix = self._prefix.get(i)
                if prefix is not None and prefix.isascii():
                    # Every occurrence, not just one: the rule is tried at each (a search of the text for
                    # the prefix would cost more than Hyperscan finding it in passing).
                    exprs.append(re.escape(prefix).encode("ascii"))
                    ids.append(2 * n + i)
                    flags.append(0)
                    self._found_prefix.add(i)
                continue
            expr = facts.get("position", (rule.pattern, rule.anchor, rule.keywords), _position_expression, rule)
            if expr == asciify_pattern(rule.pattern).encode("ascii"):
                self._at_end.add(i)  # the whole pattern: its ends are the matches' ends
            exprs.append(expr)
            flags.append(position_flags)
            ids.append(i)
        self._text_finder = _WordFinder([w for ws in (*self._text_context.values(), *self._text_keywords.values())
                                         for w in ws])
        self._db: Any = None
        if exprs:
            self._db = self._load_or_compile(exprs, ids, flags, rules)
            self._scratch = hs.Scratch(self._db)
        self._at_end_all = frozenset(self._at_end | {i for i, (_, at_end) in classed.items() if at_end})

    def locate(self, text: str, data: bytes, real: Real | None = None) -> Located:
        n = self._n
        ends: dict[int, list[int]] = {}

        def on_match(expr_id: int, _from: int, to: int, _flags: int, _ctx: object) -> None:
            hit = ends.get(expr_id)
            if hit is None:
                ends[expr_id] = [to]
            else:
                hit.append(to)

        if self._db is not None:
            self._db.scan(data, match_event_handler=on_match, scratch=self._scratch)
        if self._class_db is not None:
            # A class expression may consume the character after a match (its negative lookahead), so its
            # ends are the match's end or one past it: slack 1 covers both.
            self._class_db.scan(data.translate(_CLASS_TABLE), match_event_handler=on_match,
                                scratch=self._class_scratch)
        located = Located({}, {}, set(self._always), {}, self._at_end_all)
        if (self._text_context or self._text_keywords) and (real is not None or not text.isascii()):
            at = self._text_finder.find(text, data, real)
            for i, words in self._text_context.items():
                hits = [p + len(w) for w in words for p in at.get(w, ())]
                if hits:
                    ends.setdefault(n + i, []).extend(hits)
            for i, keywords in self._text_keywords.items():
                starts = [p for w in keywords for p in at.get(w, ())]
                if starts and (i not in self._needs_context or n + i in ends):
                    located.anchors[i] = starts
                    located.slack[i] = max(map(len, keywords))
        needs_context, multiline, reach = self._needs_context, self._multiline, self._context_reach
        for i, positions in ends.items():
            if i >= n or (i in needs_context and n + i not in ends):
                continue
            if i in multiline:
                located.whole.add(i)
                if i in self._found_prefix:
                    length = len(self._prefix[i])
                    located.starts[i] = [e - length for e in ends.get(2 * n + i, ())]
                elif (at_prefix := _prefix_starts(self._prefix.get(i), text, real)) is not None:
                    located.starts[i] = at_prefix
                continue
            if i in reach:
                positions = _near(positions, ends[n + i], reach[i])
                if not positions:
                    continue
            located.anchors[i] = positions
            located.slack[i] = 1
        for i, slack in self._context_slack.items():
            words_at = ends.get(n + i)
            if words_at:
                located.anchors[i] = words_at
                located.slack[i] = slack
        return located

    def _load_or_compile(
        self, exprs: list[bytes], ids: list[int], flags: list[int], rules: Sequence[Rule]
    ) -> Any:
        """Compiling a few hundred patterns takes seconds; the compiled database is cached on disk, keyed by
        everything that went into it, so only the first run after a rule change pays."""
        hs = self._hs
        digest = hashlib.sha256(repr((exprs, ids, flags, getattr(hs, "__version__", ""))).encode()).hexdigest()
        folder = cache_dir()
        cache = folder / f"hs-{digest[:32]}.db" if folder else None
        if cache is not None and cache.is_file():
            try:
                db = hs.loadb(cache.read_bytes(), hs.HS_MODE_BLOCK)
                touch(cache)
                return db
            except Exception:  # a stale or damaged cache file is simply rebuilt
                log.debug("ignoring unreadable Hyperscan cache %s", cache)
        db = hs.Database(mode=hs.HS_MODE_BLOCK)
        try:
            db.compile(expressions=exprs, ids=ids, elements=len(exprs), flags=flags)
        except hs.error:
            # Find the expressions Hyperscan rejects; their rules then run over the whole text (exact, slower).
            keep = []
            for k, (e, f) in enumerate(zip(exprs, flags, strict=True)):
                probe = hs.Database(mode=hs.HS_MODE_BLOCK)
                try:
                    probe.compile(expressions=[e], ids=[0], elements=1, flags=[f])
                    keep.append(k)
                except hs.error:
                    rule_index = ids[k] % self._n
                    log.debug("rule %s does not compile for Hyperscan; it runs over the whole text",
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
                prune(cache.parent, "hs-*.db", HS_CACHE_KEEP)
            except OSError:
                log.debug("cannot write Hyperscan cache %s", cache)
        return db


def _position_expression(rule: Rule) -> bytes:
    """The expression whose match ends anchor a (line) rule: the end of every real match, or a point inside
    it, is among its ends.

    A rule's own ``anchor`` comes first. Rules whose keywords are words like ``key``, ``token`` or ``user``
    report the end of their label part:
    a pattern with a ``value`` group is cut before it, so ``api_key =`` reports one offset per occurrence
    where a value pattern such as ``[A-Za-z0-9]{16,}`` would report one per character. Other rules use their
    whole pattern. Either is cut before an open run (``[^\n]{8,}``, ``.*``), which would also report an end
    for every character it covers.

    Only the rule's ``pattern``, ``anchor`` and ``keywords`` are read: they are its key in the memo.
    """
    if rule.anchor is not None:
        return rule.anchor.encode("ascii")
    expr = asciify_pattern(rule.pattern)
    if rule.pattern.isascii() and (not rule.keywords or any(len(k) <= 6 and k.isalpha() for k in rule.keywords)):
        cut = rule.pattern.find("(?P<value>")
        if cut > 0 and _top_level_prefix(rule.pattern, cut):
            expr = rule.pattern[:cut]
    run = _OPEN_RUN.search(expr)
    if run is not None and _top_level_prefix(expr, run.start()):
        expr = expr[:run.start()]
    return _trim_tail(expr).encode("ascii")


_QUANTIFIER = re.compile(r"(?:\*|\+|\?|\{(\d*)(,?)(\d*)\})[?+]?")
_ZERO_WIDTH = ("(?=", "(?!", "(?<=", "(?<!", "\\b", "\\B", "$", "^", "\\A", "\\Z")


class _Atom(NamedTuple):
    start: int  # where the item starts
    end: int  # where it ends, before its quantifier
    minimum: int  # least count its quantifier allows (1 without one)
    varies: bool  # whether the count may vary


def _class_end(pattern: str, i: int) -> int:
    """Index just past the ``]`` closing the character class that opens at ``pattern[i]``."""
    i += 1
    if pattern.startswith("^", i):
        i += 1
    if pattern.startswith("]", i):
        i += 1
    while i < len(pattern) and pattern[i] != "]":
        i += 2 if pattern[i] == "\\" else 1
    return i + 1


def _top_level_atoms(pattern: str) -> list[_Atom] | None:
    """The top-level items of a pattern; None when it has a top-level alternation or cannot be read."""
    atoms: list[_Atom] = []
    i, n = 0, len(pattern)
    while i < n:
        start = i
        c = pattern[i]
        if c == "|":
            return None
        if c == "\\":
            i += 2
        elif c == "[":
            i = _class_end(pattern, i)
        elif c == "(":
            depth = 0
            while i < n:
                ch = pattern[i]
                if ch == "\\":
                    i += 2
                    continue
                if ch == "[":  # a class may hold parentheses
                    i = _class_end(pattern, i)
                    continue
                if ch == "(":
                    depth += 1
                elif ch == ")":
                    depth -= 1
                    if depth == 0:
                        break
                i += 1
            i += 1
        else:
            i += 1
        if i > n:
            return None
        end = i
        minimum, varies = 1, False
        q = _QUANTIFIER.match(pattern, i)
        if q is not None and q.group()[0] == "{" and not q.group(1) and not q.group(3):
            q = None  # "{" that is no quantifier: a literal brace
        if q is not None:
            token = q.group()
            if token[0] == "{":
                minimum = int(q.group(1) or 0)
                varies = bool(q.group(2))  # {m} is fixed; {m,}, {,n} and {m,n} vary
            else:
                minimum, varies = (1 if token[0] == "+" else 0), True
            i = q.end()
        atoms.append(_Atom(start, end, minimum, varies))
    return atoms


def _trim_tail(expr: str) -> str:
    """``expr`` without the variable repeats and zero-width assertions it ends with, the last repeat kept at
    its minimum count: an expression ending in ``[A-Za-z0-9_-]{74,180}`` would report an end at every length
    from 74 to 180, where its trimmed form reports one per match, still inside it. A last group without a
    quantifier (the value group) is opened up, as long as it holds no alternation."""
    original = expr
    while True:
        atoms = _top_level_atoms(expr)
        if not atoms:
            break
        last = atoms[-1]
        if expr.startswith(_ZERO_WIDTH, last.start):
            expr = expr[:last.start]
            continue
        opening = next((o for o in ("(?P<value>", "(?:") if expr.startswith(o, last.start)), None)
        inner = expr[last.start + len(opening):last.end - 1] if opening is not None else ""
        if opening is not None and not last.varies and last.minimum == 1 and _top_level_atoms(inner):
            expr = expr[:last.start] + inner
            continue
        if last.varies:
            atom = expr[last.start:last.end]
            expr = expr[:last.start] + (f"(?:{atom}){{{last.minimum}}}" if last.minimum else "")
            if not last.minimum:
                continue
        break
    try:
        if not expr or re.compile(expr, PATTERN_FLAGS).match("") is not None:
            return original
    except re.error:
        return original
    return expr


def _top_level_prefix(pattern: str, cut: int) -> bool:
    """Whether ``pattern[:cut]`` is the first items of ``pattern`` as a sequence (not a piece of a group or
    of one branch), and matches no empty string: then every match of the whole holds a match of it."""
    whole, head = parse_pattern(pattern), parse_pattern(pattern[:cut])
    if whole is None or head is None or not head.data:
        return False
    items = list(whole.data)
    # Parsed items hold sub-patterns without equality; their repr is structural.
    if (len(items) == 1 and items[0][0] is _C.BRANCH) or repr(list(head.data)) != repr(items[:len(head.data)]):
        return False
    try:
        return re.compile(pattern[:cut], PATTERN_FLAGS).match("") is None
    except re.error:
        return False


def _char_class(c: int) -> int:
    if 48 <= c <= 57:
        return 48  # "0"
    if 65 <= c <= 90:
        return 65  # "A"
    if 97 <= c <= 122:
        return 97  # "a"
    return c


# Digits, upper- and lowercase letters each become one byte; everything else (punctuation, the 0x1a that stands
# for non-ASCII) stays itself.
_CLASS_TABLE = bytes(_char_class(c) for c in range(256))
_ANY = "[\\x00-\\xff]"


def _byte_set(items: list[tuple[Any, Any]], ignorecase: bool) -> set[int] | None:
    """The bytes a character set matches (``[...]``, a literal or ``\\d``), or None when not sure."""
    chars: set[int] = set()
    negate = False
    for op, av in items:
        if op is _C.NEGATE:
            negate = True
        elif op is _C.LITERAL:
            chars.add(av)
        elif op is _C.RANGE:
            chars.update(range(av[0], min(av[1], 255) + 1))
        elif op is _C.CATEGORY and av is _C.CATEGORY_DIGIT:
            chars.update(range(48, 58))
        elif op is _C.CATEGORY and av is _C.CATEGORY_WORD:
            chars.update((*range(48, 58), *range(65, 91), *range(97, 123), 95))
        elif op is _C.CATEGORY and av is _C.CATEGORY_SPACE:
            chars.update(b" \t\n\r\f\v")
        else:
            return None
    if ignorecase:
        chars |= {c ^ 32 for c in chars if 65 <= c <= 90 or 97 <= c <= 122}
    if any(c > 127 for c in chars):
        chars.update(range(128, 256))
    return set(range(256)) - chars if negate else chars


def _class_set(classes: set[int]) -> str:
    if len(classes) == 1:
        return f"\\x{next(iter(classes)):02x}"
    return "[" + "".join(f"\\x{c:02x}" for c in sorted(classes)) + "]"


def _single_char(item: Any, ignorecase: bool) -> set[int] | None:
    ops = list(item)
    if len(ops) != 1:
        return None
    op, av = ops[0]
    if op is _C.LITERAL:
        return _byte_set([(op, av)], ignorecase)
    if op is _C.IN:
        return _byte_set(av, ignorecase)
    return None


def _banned_chars(item: Any, ignorecase: bool) -> set[int] | None:
    """The characters a negative lookaround rules out on its own: a single character set, or the union of
    the single-character branches of an alternation (``(?![\\w]|-[0-9])`` rules out every ``\\w``)."""
    ops = list(item)
    if len(ops) == 1 and ops[0][0] is _C.BRANCH:
        banned: set[int] = set()
        for branch in ops[0][1][1]:
            chars = _single_char(branch, ignorecase)
            if chars is not None:
                banned |= chars
        return banned or None
    return _single_char(item, ignorecase)


def _class_form(items: Any, ignorecase: bool, blurred: list[bool], top: bool = False, ahead: bool = True) -> str:
    """``blurred`` gets an entry for every set that keeps more than one of digit, upper, lower apart.
    ``ahead``: a trailing "not before" becomes a consumed character (else it is dropped)."""
    ops = list(items)
    out: list[str] = []
    consumed_behind = False
    for k, (op, av) in enumerate(ops):
        if op in (_C.LITERAL, _C.IN, _C.CATEGORY):
            chars = _byte_set(av if op is _C.IN else [(op, av)], ignorecase)
            if chars is None:
                blurred.append(True)
                out.append(_ANY)
                continue
            classes = {_char_class(c) for c in chars}
            if len(classes & {48, 65, 97}) > 1:
                blurred.append(True)
            out.append(_class_set(classes))
        elif op in (_C.NOT_LITERAL, _C.ANY):
            blurred.append(True)
            out.append(_ANY)
        elif op in (_C.MAX_REPEAT, _C.MIN_REPEAT, _C.POSSESSIVE_REPEAT):
            lo, hi, item = av
            out.append(f"(?:{_class_form(item, ignorecase, blurred)}){{{lo},{'' if hi is _C.MAXREPEAT else hi}}}")
        elif op is _C.SUBPATTERN:
            _group, add, remove, item = av
            inner_case = (ignorecase or bool(add & re.IGNORECASE)) and not remove & re.IGNORECASE
            out.append(f"(?:{_class_form(item, inner_case, blurred)})")
        elif op is _C.ATOMIC_GROUP:
            out.append(f"(?:{_class_form(av, ignorecase, blurred)})")
        elif op is _C.BRANCH:
            out.append("(?:" + "|".join(_class_form(b, ignorecase, blurred) for b in av[1]) + ")")
        elif op is _C.ASSERT_NOT and top:
            # A leading "not after X" becomes "after the start or a character not in X", a trailing
            # "not before X" becomes "before a character not in X or the end": the character is consumed,
            # which makes the expression far more selective (a run of digits matches once, not per digit).
            direction, inner = av
            banned = _banned_chars(inner, ignorecase)
            if banned is None:
                continue
            allowed = {_char_class(c) for c in range(128) if c not in banned}
            if direction < 0 and not consumed_behind and all(o in (_C.ASSERT, _C.ASSERT_NOT) for o, _ in ops[:k]):
                consumed_behind = True
                out.append(f"(?:\\A|{_class_set(allowed)})")
            elif direction > 0 and k == len(ops) - 1 and ahead:
                out.append(f"(?:{_class_set(allowed)}|\\Z)")
        elif op in (_C.ASSERT, _C.ASSERT_NOT, _C.AT):
            continue  # dropping an assertion only lets more through
        else:
            raise ValueError(f"no class form for {op}")
    return "".join(out)


def class_expression(pattern: str, *, sharp: bool = False, ahead: bool = True) -> bytes | None:
    """A pattern for the text mapped through ``_CLASS_TABLE`` that matches wherever ``pattern`` matches the
    text, ending at the match's end or one character after it; None when there is no such form.

    Digits become ``0`` and letters ``A`` or ``a``, so ``[2-6][0-9]{12,18}`` becomes a run of one literal:
    Hyperscan finds those with its literal matchers, where the original character classes make it step an
    automaton over every byte. Lookarounds other than single characters at the edges are dropped and
    backreferences refuse the conversion, so the result is always a superset. ``sharp``: only when every
    character set of the pattern falls in one class (digits, or uppercase, or lowercase letters), which is
    when the class form is selective on its own (``[a-f0-9]{32}`` is not: any long word or number fits).
    ``ahead=False``: without the character consumed for a trailing "not before", so the form ends where the
    match does.
    """
    parsed = parse_pattern(pattern) if pattern.isascii() and _C is not None else None
    if parsed is None:
        return None
    try:
        blurred: list[bool] = []
        expr = _class_form(parsed, bool(parsed.state.flags & re.IGNORECASE), blurred, top=True, ahead=ahead)
        if sharp and blurred:
            return None
        if re.compile(expr.encode("ascii"), re.DOTALL).fullmatch(b"") is not None:
            return None  # Hyperscan refuses expressions that match nothing
    except (ValueError, re.error, RecursionError):
        return None
    return expr.encode("ascii")


def class_anchor(pattern: str, *, sharp: bool = False) -> tuple[bytes, bool] | None:
    """The class-space expression that anchors a bare-value rule, and whether its ends are the ends of the
    matches (or one past them); None when the pattern has no class form (see :func:`class_expression`).

    A pattern whose value ends in a variable repeat of a group (an IBAN's optional blocks of four) anchors
    at its head instead: the form is cut after the repeat's least count and loses its trailing boundary, so
    its ends lie inside the matches. The whole form made Hyperscan scan the class view of these logs about
    1.7 times slower (2.3 against 1.4 ms per MB, all bare-value rules together), though it is cheap alone.
    """
    whole = class_expression(pattern, sharp=sharp)
    parsed = parse_pattern(pattern)
    if whole is None or parsed is None or not _ends_in_group_repeat(parsed.data):
        return (whole, True) if whole is not None else None
    form = class_expression(pattern, sharp=sharp, ahead=False)
    if form is None:
        return whole, True
    head = _trim_tail(form.decode("ascii"))
    return (head.encode("ascii"), False) if head != form.decode("ascii") else (whole, True)


def _ends_in_group_repeat(items: Any) -> bool:
    """Whether the last thing a pattern consumes (inside its groups) is a repeat, of variable count, of
    more than one item: ``(?:[ ]?[A-Z0-9]{4}){2,7}``, not ``[A-Z0-9]{8,12}``."""
    ops = [(op, av) for op, av in items if op not in (_C.ASSERT, _C.ASSERT_NOT, _C.AT)]
    if not ops:
        return False
    op, av = ops[-1]
    if op is _C.SUBPATTERN:
        return _ends_in_group_repeat(av[3].data)
    if op in (_C.MAX_REPEAT, _C.MIN_REPEAT, _C.POSSESSIVE_REPEAT):
        lo, hi, item = av
        return bool(lo != hi and len(item.data) > 1)
    return False


_OPEN_RUN = re.compile(r"\[\^[^\]]*\](?:\*|\+|\{\d+,\})|(?<!\\)\.(?:\*|\+|\{\d+,\})")


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
        matcher: Matcher = ReMatcher(rules)
    elif not hyperscan_available():
        raise ValueError("backend 'hyperscan' was asked for but the hyperscan package is not installed")
    else:
        matcher = HyperscanMatcher(rules)
    memo().save()  # the facts derived for the scanner being built (widths, expressions)
    return matcher
