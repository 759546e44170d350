"""Every rule proves itself: its examples must be found, its negative examples must not, on both backends."""

from __future__ import annotations

import pytest

from redline.engine import Rule, builtin_rules
from redline.engine.textview import TextView, ascii_bytes

RULES = builtin_rules()


def _cases(attr: str) -> list[tuple[Rule, int]]:
    return [(r, i) for r in RULES for i in range(len(getattr(r, attr)))]


def _id(case: tuple[Rule, int]) -> str:
    return f"{case[0].id}[{case[1]}]"


@pytest.mark.parametrize("case", _cases("examples"), ids=_id)
def test_example_is_found(case: tuple[Rule, int], scanners) -> None:  # type: ignore[no-untyped-def]
    rule, i = case
    ex = rule.examples[i]
    for backend, scanner in scanners.items():
        hits = [f for f in scanner.scan_text(ex.text) if f.type == rule.id]
        assert hits, f"{rule.source}: {rule.id} example {i} not found ({backend})"
        if ex.value is not None:
            values = [ex.text[f.start:f.end] for f in hits]
            assert ex.value in values, f"{rule.source}: {rule.id} example {i}: found {len(values)} other span(s)"


@pytest.mark.parametrize("case", _cases("negative_examples"), ids=_id)
def test_negative_example_is_quiet(case: tuple[Rule, int], scanners) -> None:  # type: ignore[no-untyped-def]
    rule, i = case
    text = rule.negative_examples[i]
    for backend, scanner in scanners.items():
        hits = [f for f in scanner.scan_text(text) if f.type == rule.id]
        assert not hits, f"{rule.source}: {rule.id} negative example {i} matched ({backend}): {hits[0].snippet}"


@pytest.mark.parametrize("case", _cases("examples"), ids=_id)
def test_matches_contain_a_keyword(case: tuple[Rule, int]) -> None:
    """The pure-re backend looks for matches around keyword occurrences only: every match must hold one."""
    rule, i = case
    if not rule.keywords:
        return
    text = TextView(rule.examples[i].text).text
    keywords = [ascii_bytes(k).lower() for k in rule.keywords]
    for m in rule.regex.finditer(text):
        low = ascii_bytes(m.group()).lower()
        assert any(k in low for k in keywords), f"{rule.source}: {rule.id} match lacks keywords"


@pytest.mark.parametrize("case", _cases("examples"), ids=_id)
def test_matches_contain_the_anchor(case: tuple[Rule, int]) -> None:
    """Hyperscan locates a rule that has an anchor by the anchor's matches: one must lie inside each match."""
    import re

    from redline.engine.rules import PATTERN_FLAGS

    rule, i = case
    if rule.anchor is None:
        return
    anchor = re.compile(rule.anchor, PATTERN_FLAGS)
    text = TextView(rule.examples[i].text).text
    for m in rule.regex.finditer(text):
        assert anchor.search(m.group()), f"{rule.source}: {rule.id} match {m.group()!r} lacks the anchor"


def test_rule_ids_unique_and_coverage() -> None:
    ids = [r.id for r in RULES]
    assert len(ids) == len(set(ids))
    kinds = {k: sum(1 for r in RULES if r.kind == k) for k in ("secret", "pii", "chat")}
    assert kinds["chat"] >= 3
    assert kinds["secret"] >= 1


def test_line_rules_never_match_a_newline() -> None:
    for rule in RULES:
        if rule.multiline:
            continue
        for ex in rule.examples:
            for m in rule.regex.finditer(TextView(ex.text).text):
                assert "\n" not in m.group(), f"{rule.source}: {rule.id} matched across a newline"
