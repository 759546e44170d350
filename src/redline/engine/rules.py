"""Rules are data: this module loads and checks rule files (TOML), it holds no detection logic of its own."""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import InitVar, dataclass, field
from pathlib import Path
from typing import Any

from redline.engine.cache import memo
from redline.engine.finding import CONFIDENCES, KINDS, Confidence, Kind
from redline.engine.validators import Validator, get_validator, not_placeholder

PATTERN_FLAGS = re.ASCII | re.MULTILINE


@functools.lru_cache(maxsize=4096)
def parse_pattern(pattern: str) -> Any:
    """The syntax tree of a rule pattern (the ``re`` module's private parser), shared by everything that
    derives facts from patterns (literal prefix, width, Hyperscan forms); None when it cannot be had."""
    parser = getattr(re, "_parser", None)
    if parser is None:
        return None
    try:
        return parser.parse(pattern, PATTERN_FLAGS)
    except Exception:
        return None


EXTENDS = ("json-container", "transcript")


WINDOW_MAX = 1024


def match_width(rule: Rule) -> int | None:
    """The longest text a rule's pattern can match, if at most WINDOW_MAX characters; else None (also for
    multiline rules and rules whose matches are extended)."""
    if rule.multiline or rule.extend is not None:
        return None
    return memo().get("width", rule.pattern, _pattern_width, rule.pattern)


def _pattern_width(pattern: str) -> int | None:
    parsed = parse_pattern(pattern)
    if parsed is None:  # private API: without it, rules simply run on whole lines
        return None
    _, hi = parsed.getwidth()
    return int(hi) if hi <= WINDOW_MAX else None


def lookahead_reach(pattern: str) -> int | None:
    """How far past the end of a match the regex engine may look: the widest lookahead (a ``\\b`` or ``$``
    looks at one character), plus one; None when a lookahead has no bounded width."""
    parsed = parse_pattern(pattern)
    if parsed is None:
        return None
    c = re._constants  # type: ignore[attr-defined]
    reach = 1
    stack = [parsed.data]
    while stack:
        for op, av in stack.pop():
            if op in (c.ASSERT, c.ASSERT_NOT) and av[0] == 1:
                hi = av[1].getwidth()[1]
                if hi >= c.MAXREPEAT:
                    return None
                reach = max(reach, int(hi) + 1)
            stack.extend(_children(op, av))
    return reach


def _children(op: Any, av: Any) -> list[Any]:
    """The item lists nested in one parsed item (groups, repeats, lookarounds, branches); none for others."""
    c = re._constants  # type: ignore[attr-defined]
    if op is c.SUBPATTERN:
        return [av[3].data]
    if op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT):
        return [av[2].data]
    if op in (c.ASSERT, c.ASSERT_NOT):
        return [av[1].data]
    if op is c.ATOMIC_GROUP:
        return [av.data]
    if op is c.BRANCH:
        return [b.data for b in av[1]]
    if op is c.GROUPREF_EXISTS:
        return [b.data for b in av[1:] if b is not None]
    return []


@functools.lru_cache(maxsize=4096)
def uniform(pattern: str) -> bool:
    """Whether the pattern cannot tell the stand-in ``\\x1a`` from any non-ASCII character, so that it finds
    the same matches in a text where every non-ASCII character is replaced by it (see ``Chunk``).

    Patterns compile in ASCII mode: classes, ``\\w``, ``\\b`` and case folding then treat every non-ASCII
    character alike, and like ``\\x1a``. What breaks that is naming one of them (a literal or range with
    non-ASCII characters or ``\\x1a``) or a back-reference (two different characters would compare equal).
    """
    parsed = parse_pattern(pattern)
    return parsed is not None and _uniform_ops(parsed.data)


def _uniform_ops(ops: Any) -> bool:
    c = re._constants  # type: ignore[attr-defined]
    for op, av in ops:
        if op in (c.LITERAL, c.NOT_LITERAL):
            if not _plain(av):
                return False
        elif op is c.IN:
            for item_op, item in av:
                if item_op is c.LITERAL and not _plain(item):
                    return False
                if item_op is c.RANGE and (item[1] >= 0x80 or item[0] <= 0x1A <= item[1]):
                    return False
                if item_op not in (c.LITERAL, c.RANGE, c.CATEGORY, c.NEGATE):
                    return False
        elif subs := _children(op, av):
            if not all(_uniform_ops(sub) for sub in subs):
                return False
        elif op not in (c.ANY, c.AT):
            return False
    return True


def _plain(code: int) -> bool:
    return code < 0x80 and code != 0x1A


def one_line(pattern: str) -> bool:
    """Whether no match of the pattern can hold a newline: every character it consumes comes from a set
    without one. Such a pattern's matches lie on one line, and its windows can be cut to their lines."""
    parsed = parse_pattern(pattern)
    return parsed is not None and _one_line_ops(parsed.data, bool(parsed.state.flags & re.DOTALL))


# Character categories (``\s``, ``\D``, ...) that hold a newline.
_NEWLINE_CATEGORIES = ("CATEGORY_SPACE", "CATEGORY_NOT_DIGIT", "CATEGORY_NOT_WORD", "CATEGORY_LINEBREAK",
                       "CATEGORY_UNI_SPACE", "CATEGORY_UNI_NOT_DIGIT", "CATEGORY_UNI_NOT_WORD",
                       "CATEGORY_UNI_LINEBREAK")
_SAFE_CATEGORIES = ("CATEGORY_NOT_SPACE", "CATEGORY_DIGIT", "CATEGORY_WORD", "CATEGORY_NOT_LINEBREAK",
                    "CATEGORY_UNI_NOT_SPACE", "CATEGORY_UNI_DIGIT", "CATEGORY_UNI_WORD", "CATEGORY_UNI_NOT_LINEBREAK")


def _holds_newline(items: Any) -> bool | None:
    """Whether a character set (the items of ``[...]``) holds a newline; None when not sure."""
    c = re._constants  # type: ignore[attr-defined]
    negate = False
    listed = False
    for op, av in items:
        if op is c.NEGATE:
            negate = True
        elif op is c.LITERAL:
            listed = listed or av == 10
        elif op is c.RANGE:
            listed = listed or av[0] <= 10 <= av[1]
        elif op is c.CATEGORY and str(av) in _NEWLINE_CATEGORIES:
            listed = True
        elif not (op is c.CATEGORY and str(av) in _SAFE_CATEGORIES):
            return None
    return listed != negate


def _one_line_ops(ops: Any, dotall: bool) -> bool:
    c = re._constants  # type: ignore[attr-defined]
    for op, av in ops:
        if op is c.LITERAL:
            if av == 10:
                return False
        elif op is c.NOT_LITERAL:
            if av != 10:
                return False
        elif op is c.ANY:
            if dotall:
                return False
        elif op is c.IN or op is c.CATEGORY:
            if _holds_newline(av if op is c.IN else [(op, av)]) is not False:
                return False
        elif op in (c.ASSERT, c.ASSERT_NOT, c.AT):
            continue  # consumes nothing
        elif op is c.SUBPATTERN:
            _group, add, remove, inner = av
            if not _one_line_ops(inner.data, (dotall or bool(add & re.DOTALL)) and not remove & re.DOTALL):
                return False
        elif subs := _children(op, av):
            if not all(_one_line_ops(sub, dotall) for sub in subs):
                return False
        else:
            return False  # a back-reference, or something not known here
    return True


def literal_prefix(pattern: str) -> str | None:
    """The fixed string every match begins with, if at least three characters long (case-sensitive)."""
    parsed = parse_pattern(pattern)
    if parsed is None or parsed.state.flags & re.IGNORECASE:
        return None
    ops = parsed.data
    literal = re._constants.LITERAL  # type: ignore[attr-defined]
    subpattern = re._constants.SUBPATTERN  # type: ignore[attr-defined]
    while ops and ops[0][0] is subpattern:
        _group, add_flags, _del_flags, inner = ops[0][1]
        if add_flags & re.IGNORECASE:
            return None
        ops = inner.data
    chars: list[str] = []
    for op, av in ops:
        if op is not literal:
            break
        chars.append(chr(av))
    return "".join(chars) if len(chars) >= 3 else None


class RuleError(ValueError):
    """A rule file is wrong. The message names the file, the line and what to change."""


@dataclass(frozen=True)
class Example:
    text: str
    value: str | None = None


@dataclass(frozen=True)
class Rule:
    id: str
    name: str
    kind: Kind
    confidence: Confidence
    pattern: str
    # What ``regex`` is compiled from: ``pattern`` itself or fast_regex's reordering of it.
    regex_pattern: str = field(repr=False, compare=False)
    keywords: tuple[str, ...] = ()
    anchor: str | None = None
    validator_names: tuple[str, ...] = ()
    validators: tuple[Validator, ...] = field(default=(), repr=False, compare=False)
    context: tuple[str, ...] = ()
    context_window: int = 64
    confidence_without_context: Confidence | None = None
    priority: int = 0
    multiline: bool = False
    enabled: bool = True
    extend: str | None = None
    min_turns: int = 2
    fix: str = ""
    references: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    examples: tuple[Example, ...] = ()
    negative_examples: tuple[str, ...] = ()
    source: str = ""
    # The compiled regex when the caller has it at hand; else it is compiled at first use.
    compiled: InitVar[re.Pattern[str] | None] = None

    def __post_init__(self, compiled: re.Pattern[str] | None) -> None:
        if compiled is not None:
            self.__dict__["regex"] = compiled  # where the cached property keeps its value

    @functools.cached_property
    def regex(self) -> re.Pattern[str]:
        """Compiled at first use: compiling every built-in pattern is a good part of start-up, and a scan
        usually needs only some of them. Rules are checked when loaded, so this does not fail."""
        return re.compile(self.regex_pattern, PATTERN_FLAGS)

    @functools.cached_property
    def context_regex(self) -> re.Pattern[str] | None:
        """Context words as whole words: ``tin`` counts in ``TIN:`` or ``user_tin`` but not in ``setting``.

        A word starts after a non-alphanumeric character or at a lower-to-upper case change (``userSsn``) and
        must not run on into lowercase letters (``tel`` is not in ``telemetry``).
        """
        if not self.context:
            return None
        words = "|".join(re.escape(w) for w in sorted(self.context, key=len, reverse=True))
        return re.compile(rf"(?:(?<![A-Za-z0-9])|(?<=[a-z])(?=[A-Z]))(?i:{words})(?![a-z])")

    @functools.cached_property
    def value_group(self) -> int | str:
        return "value" if "value" in self.regex.groupindex else 0

    def accepts(self, value: str) -> bool:
        return all(v(value) for v in self.validators)


# A boundary assertion, an optional value group, then a literal: the shape of most token rules.
_LEADING_LITERAL = re.compile(r"^(\\b|\(\?<!\[[^\]\\]*\]\))(\(\?P<value>)?([A-Za-z0-9_]+(?:-[A-Za-z0-9_]+)*-?)")


def fast_regex(pattern: str, compiled: re.Pattern[str]) -> re.Pattern[str]:
    """The same pattern reordered so that Python's engine can search for its literal prefix.

    ``\\bsk-proj-…`` makes the engine try every position, because an assertion comes first;
    ``sk-proj-(?<=\\bsk-proj-)…`` matches exactly the same text (the boundary is checked behind the consumed
    literal) but lets the engine jump from one ``sk-proj-`` to the next. Other shapes are returned as they are.
    """
    m = _LEADING_LITERAL.match(pattern)
    if not m or len(m.group(3)) < 3:
        return compiled
    assertion, value, literal = m.group(1), m.group(2) or "", m.group(3)
    end = m.end()
    if pattern[end:end + 1] in ("?", "*", "+", "{"):
        # The quantifier belongs to the literal's last character, which must stay behind the assertion.
        literal, end = literal[:-1], end - 1
        if len(literal) < 3:
            return compiled
    rewritten = f"{value}{literal}(?<={assertion}{literal}){pattern[end:]}"
    try:
        fast = re.compile(rewritten, PATTERN_FLAGS)
    except re.error:
        return compiled
    return fast if fast.groupindex == compiled.groupindex and fast.groups == compiled.groups else compiled


_FIELDS = {
    "id", "name", "kind", "confidence", "pattern", "anchor", "keywords", "validators", "context", "context_window",
    "confidence_without_context", "priority", "multiline", "enabled", "extend", "min_turns", "fix",
    "references", "tags", "examples", "negative_examples",
}
_ID = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*\Z")


_ID_LINE = re.compile(r"""^[ \t]*id[ \t]*=[ \t]*["']([^"'\n]*)["']""", re.MULTILINE)
_RULES_LINE = re.compile(r"^[ \t]*\[\[rules\]\]", re.MULTILINE)


class _Lines:
    """Best-effort line numbers of the rules inside one file (tomllib keeps none for semantic errors), found in
    one pass over the file."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.ids: dict[str, int] = {}
        for m in _ID_LINE.finditer(text):
            self.ids.setdefault(m.group(1), m.start())
        self.starts = [m.start() for m in _RULES_LINE.finditer(text)]

    def of(self, rule_id: str | None, index: int) -> int:
        pos = self.ids.get(rule_id) if rule_id else None
        if pos is None:
            pos = self.starts[index] if index < len(self.starts) else 0
        return self.text.count("\n", 0, pos) + 1


def _str_list(raw: Any, what: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if isinstance(raw, str) or not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise ValueError(f"{what} must be a list of strings")
    return tuple(raw)


def _parse_rule(raw: dict[str, Any], where: str) -> Rule:
    unknown = set(raw) - _FIELDS
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(sorted(unknown))}")
    for key in ("id", "name", "kind", "confidence", "pattern"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise ValueError(f"missing or empty field {key!r}")
    rule_id: str = raw["id"]
    if not _ID.match(rule_id):
        raise ValueError(f"id {rule_id!r} must be kebab-case (a-z, 0-9, dashes)")
    kind = raw["kind"]
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    confidence = raw["confidence"]
    if confidence not in CONFIDENCES:
        raise ValueError(f"confidence must be one of {', '.join(CONFIDENCES)}, not {confidence!r}")
    cwc = raw.get("confidence_without_context")
    if cwc is not None and cwc not in CONFIDENCES:
        raise ValueError(f"confidence_without_context must be one of {', '.join(CONFIDENCES)}")
    # A pattern (and anchor) checked by an earlier run of the same engine code is not compiled again here.
    checked: list[re.Pattern[str]] = []
    regex_pattern = memo().get("pattern", raw["pattern"], _check_pattern, raw["pattern"], checked)
    anchor = raw.get("anchor")
    if anchor is not None:
        if not isinstance(anchor, str) or not anchor.isascii():
            raise ValueError("anchor must be a string of ASCII characters")
        memo().get("anchor", anchor, _check_anchor, anchor)
    keywords = _str_list(raw.get("keywords"), "keywords")
    if any(not k for k in keywords):
        raise ValueError("keywords must not be empty strings")
    multiline = bool(raw.get("multiline", False))
    if multiline and not keywords:
        raise ValueError("multiline rules need keywords")
    names = _str_list(raw.get("validators"), "validators")
    validators = [get_validator(n) for n in names]
    if kind == "secret":
        validators.append(not_placeholder)
    extend = raw.get("extend")
    if extend is not None and extend not in EXTENDS:
        raise ValueError(f"extend must be one of {', '.join(EXTENDS)}")
    examples = []
    for ex in raw.get("examples") or []:
        if isinstance(ex, str):
            examples.append(Example(ex))
        elif isinstance(ex, dict) and isinstance(ex.get("text"), str):
            value = ex.get("value")
            if value is not None and not isinstance(value, str):
                raise ValueError("example value must be a string")
            examples.append(Example(ex["text"], value))
        else:
            raise ValueError("each example is a string or a table with text (and value)")
    if not examples:
        raise ValueError("a rule needs at least one example")
    negatives = _str_list(raw.get("negative_examples"), "negative_examples")
    if kind == "secret" and not negatives:
        raise ValueError("secret rules need negative_examples")
    for key in ("context_window", "priority", "min_turns"):
        if key in raw and (not isinstance(raw[key], int) or isinstance(raw[key], bool)):
            raise ValueError(f"{key} must be an integer")
    return Rule(
        id=rule_id,
        name=raw["name"],
        kind=kind,
        confidence=confidence,
        pattern=raw["pattern"],
        regex_pattern=regex_pattern,
        keywords=keywords,
        anchor=anchor,
        validator_names=names,
        validators=tuple(validators),
        context=tuple(w.lower() for w in _str_list(raw.get("context"), "context")),
        context_window=raw.get("context_window", 64),
        confidence_without_context=cwc,
        priority=raw.get("priority", 0),
        multiline=multiline,
        enabled=bool(raw.get("enabled", True)),
        extend=extend,
        min_turns=raw.get("min_turns", 2),
        fix=str(raw.get("fix", "")),
        references=_str_list(raw.get("references"), "references"),
        tags=_str_list(raw.get("tags"), "tags"),
        examples=tuple(examples),
        negative_examples=negatives,
        source=where,
        compiled=checked[0] if checked else None,
    )


def _check_pattern(pattern: str, compiled: list[re.Pattern[str]]) -> str:
    """The text of the regex a rule runs (see fast_regex); raises ValueError when the pattern is unusable.
    The regex itself is appended to ``compiled``."""
    try:
        regex = re.compile(pattern, PATTERN_FLAGS)
    except re.error as exc:
        raise ValueError(f"pattern does not compile: {exc}") from exc
    regex = fast_regex(pattern, regex)
    if regex.match(""):
        raise ValueError("pattern matches the empty string")
    compiled.append(regex)
    return regex.pattern


def _check_anchor(anchor: str) -> bool:
    try:
        empty = re.compile(anchor, PATTERN_FLAGS).match("") is not None
    except re.error as exc:
        raise ValueError(f"anchor does not compile: {exc}") from exc
    if empty:
        raise ValueError("anchor matches the empty string")
    return True


def _entry_id(raw: Any) -> str | None:
    rid = raw.get("id") if isinstance(raw, dict) else None
    return rid if isinstance(rid, str) else None


def _load_toml(text: str, source: str) -> tuple[dict[str, Any], list[int]]:
    """A rule file's data, and the line of each of its ``[[rules]]`` entries."""
    import tomllib  # here: with the memo, most runs need no TOML parser

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RuleError(f"{source}: not valid TOML: {exc}") from None
    entries = data.get("rules")
    lines = _Lines(text)
    return data, [lines.of(_entry_id(raw), i) for i, raw in enumerate(entries)] if isinstance(entries, list) else []


def parse_rules(text: str, source: str) -> list[Rule]:
    # Keyed by the text's digest: parsing TOML was a quarter of loading the built-in rules.
    data, lines = memo().get("toml", hashlib.sha256(text.encode()).digest(), _load_toml, text, source)
    entries = data.get("rules")
    if not isinstance(entries, list) or not entries:
        raise RuleError(f"{source}:1: no [[rules]] entries")
    rules = []
    for i, raw in enumerate(entries):
        rid = _entry_id(raw)
        line = lines[i]
        try:
            rules.append(_parse_rule(raw, f"{source}:{line}"))
        except ValueError as exc:
            label = f"rule {rid!r}" if rid is not None else f"rule #{i + 1}"
            raise RuleError(f"{source}:{line}: {label}: {exc}") from None
    return rules


def load_rule_file(path: Path) -> list[Rule]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RuleError(f"{path}: cannot read rule file: {exc}") from None
    return parse_rules(text, str(path))


def load_rule_paths(paths: Iterable[str | Path]) -> list[Rule]:
    rules: list[Rule] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            files = sorted(path.rglob("*.toml"))
            if not files:
                raise RuleError(f"{path}: no .toml rule files in this folder")
            for f in files:
                rules.extend(load_rule_file(f))
        elif path.is_file():
            rules.extend(load_rule_file(path))
        else:
            raise RuleError(f"{path}: no such rule file or folder")
    memo().save()
    return rules


def builtin_rules() -> list[Rule]:
    root: Any = Path(__file__).resolve().parent.parent / "rules"
    if not root.is_dir():  # installed as a zip or similar: importlib.resources (slow to import) finds them
        from importlib import resources

        root = resources.files("redline") / "rules"
    rules: list[Rule] = []

    def walk(node: Any, rel: str) -> None:
        for child in sorted(node.iterdir(), key=lambda c: c.name):
            name = f"{rel}/{child.name}" if rel else child.name
            if child.is_dir():
                walk(child, name)
            elif child.name.endswith(".toml"):
                rules.extend(parse_rules(child.read_text(encoding="utf-8"), f"rules/{name}"))

    walk(root, "")
    memo().save()
    return rules


def check_unique(rules: Sequence[Rule]) -> None:
    seen: dict[str, str] = {}
    for r in rules:
        if r.id in seen:
            raise RuleError(f"{r.source}: rule id {r.id!r} is already defined at {seen[r.id]}")
        seen[r.id] = r.source
