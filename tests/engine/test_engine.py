"""Engine behaviour: offsets, JSON escapes, validators, suppression, overlaps, streaming, backend equality."""

from __future__ import annotations

import io
import json
import random
import re
from itertools import pairwise

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from redline.engine import Rule, RuleError, Scanner
from redline.engine.finding import Fingerprinter, redacted_snippet
from redline.engine.rules import parse_rules
from redline.engine.textview import TextView
from redline.engine.validators import card, crc32_base62, get_validator, jwt, not_placeholder, not_word

from ..conftest import BACKENDS, KEY

RULES_TOML = r'''
[[rules]]
id = "acme-key"
name = "Acme key"
kind = "secret"
confidence = "high"
pattern = '\bacme_(?P<value>[A-Za-z0-9]{24})\b'
keywords = ["acme_"]
validators = ["entropy:3.0"]
examples = ["k=acme_Q1w2E3r4T5y6U7i8O9p0A1s2"]
negative_examples = ["acme_aaaaaaaaaaaaaaaaaaaaaaaa"]

[[rules]]
id = "generic-secret"
name = "Generic secret"
kind = "secret"
confidence = "medium"
priority = -10
pattern = '(?i)secret[ \t]*[:=][ \t]*"?(?P<value>[^"\s,]{8,})'
keywords = ["secret"]
validators = ["not-word"]
examples = ["secret=Zx9!kL2@pQ"]
negative_examples = ["secret=${SECRET}"]

[[rules]]
id = "tel"
name = "Phone"
kind = "pii"
confidence = "medium"
priority = -5
pattern = '(?<![\w+])\+\d{1,3}[ -]?\d{2,4}(?:[ -]?\d{2,4}){2,3}(?!\d)'
validators = ["phone"]
examples = ["call +44 20 7946 0958 now"]

[[rules]]
id = "pem"
name = "PEM key"
kind = "secret"
confidence = "high"
multiline = true
pattern = '-----BEGIN RSA PRIVATE KEY-----\n[A-Za-z0-9+/=\n]{40,}\n-----END RSA PRIVATE KEY-----'
keywords = ["-----BEGIN RSA PRIVATE KEY-----"]
examples = [
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAuQ7s9dK2mZ0pLrT4vYw3xNc8HfJq1bGe\n-----END RSA PRIVATE KEY-----",
]
negative_examples = ["-----BEGIN RSA PRIVATE KEY-----\n...\n-----END RSA PRIVATE KEY-----"]
'''

ACME = "acme_Q1w2E3r4T5y6U7i8O9p0A1s2"


@pytest.fixture(scope="module")
def rules() -> list[Rule]:
    return parse_rules(RULES_TOML, "test.toml")


@pytest.fixture(scope="module", params=BACKENDS)
def scanner(request: pytest.FixtureRequest, rules: list[Rule]) -> Scanner:
    return Scanner(rules, backend=request.param, fingerprint_key=KEY)


def test_offsets_point_at_the_value(scanner: Scanner) -> None:
    text = f"2025-01-06 INFO config loaded key={ACME} from env\n"
    [f] = scanner.scan_text(text)
    assert (f.kind, f.type, f.confidence) == ("secret", "acme-key", "high")
    assert text[f.start:f.end] == ACME[5:]


def test_snippet_and_fingerprint_never_hold_the_value(scanner: Scanner) -> None:
    [f] = scanner.scan_text(f"x {ACME}")
    value = ACME[5:]
    assert value not in f.snippet and value not in f.fingerprint
    assert f.snippet.startswith(value[:4]) and f"({len(value)} chars)" in f.snippet
    assert f.fingerprint == Fingerprinter(KEY)(value)


def test_fingerprints_are_keyed() -> None:
    assert Fingerprinter(b"a")("v") != Fingerprinter(b"b")("v")
    assert Fingerprinter(b"a")("v") == Fingerprinter(b"a")("v")
    assert Fingerprinter(None).ephemeral or True


def test_json_escaped_content_is_matched_and_mapped_to_raw(scanner: Scanner) -> None:
    inner = json.dumps({"headers": {"x": f"tok {ACME}"}, "note": "line1\nline2", "emoji": "é"})
    raw = json.dumps({"ts": 1, "body": inner}) + "\n"
    assert '\\"' in raw
    [f] = scanner.scan_text(raw)
    assert raw[f.start:f.end] == ACME[5:]


def test_escape_decoding_reveals_secret_split_by_escapes(scanner: Scanner) -> None:
    # The value is only contiguous once "\u0051" is decoded; the raw span covers the escape.
    raw = '{"v":"acme_\\u00511w2E3r4T5y6U7i8O9p0A1s2"}'
    [f] = scanner.scan_text(raw)
    assert raw[f.start:f.end] == "\\u00511w2E3r4T5y6U7i8O9p0A1s2"


def test_textview_maps_every_offset() -> None:
    raw = 'a\\"b\\\\n\\u00e9\\nc\nplain\n\\t\\/x'
    view = TextView(raw)
    assert view.chunk.real(0, len(view.text)) == 'a"b\\né\nc\nplain\n\t/x'
    # The raw text is ASCII, so the view stays one byte per character: "é" is held aside.
    assert view.text == 'a"b\\n\x1a\nc\nplain\n\t/x'
    # Each view character maps to the raw escape that produced it.
    pieces = [raw[view.to_raw(i):view.to_raw(i + 1)] for i in range(len(view.text))]
    assert pieces == ["a", '\\"', "b", "\\\\", "n", "\\u00e9", "\\n", "c", "\n", "p", "l", "a", "i", "n", "\n",
                      "\\t", "\\/", "x"]


def test_placeholders_are_quiet(scanner: Scanner) -> None:
    for text in ("secret=${API_SECRET}", "secret: <YOUR_SECRET_HERE>", "secret=********", "secret=EXAMPLEKEY99",
                 "secret=xxxxxxxxxxxx", "secret=changeme"):
        assert scanner.scan_text(text) == [], text


def test_specific_rule_wins_over_generic_on_same_value(scanner: Scanner) -> None:
    findings = scanner.scan_text(f'secret="{ACME}"')
    assert [f.type for f in findings] == ["acme-key"]


def test_allow_marker_and_baseline(rules: list[Rule]) -> None:
    s = Scanner(rules, fingerprint_key=KEY)
    assert s.scan_text(f"{ACME}  # redline:allow\n") == []
    [f] = s.scan_text(ACME)
    quiet = Scanner(rules, fingerprint_key=KEY, baseline={f.fingerprint})
    assert quiet.scan_text(f"again {ACME}") == []


def test_multiline_rule_spans_lines(scanner: Scanner) -> None:
    body = "MIIEowIBAAKCAQEAuQ7s9dK2mZ0pLrT4vYw3xNc8HfJq1bGe\n" * 3
    text = f"log start\n-----BEGIN RSA PRIVATE KEY-----\n{body}-----END RSA PRIVATE KEY-----\nafter"
    [f] = scanner.scan_text(text)
    assert text[f.start:f.end].startswith("-----BEGIN") and text[f.start:f.end].endswith("KEY-----")


def test_pii_with_library_validator(scanner: Scanner) -> None:
    [f] = scanner.scan_text("call +44 20 7946 0958 now")
    assert f.type == "tel"
    assert scanner.scan_text("call +44 00 0000 0000 now") == []


def test_stream_matches_text_scan(rules: list[Rule]) -> None:
    s = Scanner(rules, fingerprint_key=KEY)
    lines = [f"line {i} acme_{i:04d}Q1w2E3r4T5y6U7i8O9p0" if i % 7 == 0 else f"line {i} nothing" for i in range(500)]
    text = "\n".join(lines) + "\n"
    whole = s.scan_text(text)
    streamed = list(s.scan_stream(io.BytesIO(text.encode()), chunk_chars=997))
    assert whole == streamed and len(whole) == 72


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="ab\n", max_size=200), st.lists(st.integers(0, 220), max_size=8), st.integers(0, 30))
def test_lines_near_anchors_cover_whole_lines(text: str, anchors: list[int], slack: int) -> None:
    from redline.engine.scanner import _lines_near

    anchors = [a for a in anchors if a <= len(text)]
    ranges = _lines_near(text, anchors, slack)
    assert all(b1 < a2 for (_, b1), (a2, _) in pairwise(ranges))  # sorted, merged, disjoint
    for a, b in ranges:
        assert a == 0 or text[a - 1] == "\n"
        assert b == len(text) or text[b - 1] == "\n"
    for p in anchors:
        for c in range(max(0, p - slack), min(len(text), max(p + slack, p + 1))):
            assert any(a <= c < b for a, b in ranges), (p, c)


def test_backends_are_identical_on_a_mixed_corpus(all_rules: list[Rule]) -> None:
    pytest.importorskip("hyperscan")
    from redline import synth

    text = "\n".join(line.text for line in synth.generate_lines(4000, seed=7, hit_rate=0.2)) + "\n"
    enable = {r.id for r in all_rules if not r.enabled}
    a = Scanner(all_rules, enabled=enable, backend="hyperscan", fingerprint_key=KEY).scan_text(text)
    b = Scanner(all_rules, enabled=enable, backend="re", fingerprint_key=KEY).scan_text(text)
    assert len(a) > 100
    assert a == b


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=3000))
def test_arbitrary_text_never_crashes(scanners: dict[str, Scanner], text: str) -> None:
    results = [s.scan_text(text) for s in scanners.values()]
    for findings in results:
        for f in findings:
            assert 0 <= f.start < f.end <= len(text)
    assert all(r == results[0] for r in results)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=3000))
def test_arbitrary_bytes_never_crash(scanners: dict[str, Scanner], data: bytes) -> None:
    for s in scanners.values():
        text = data.decode("utf-8", "surrogateescape")
        for f in s.scan_bytes(data):
            assert 0 <= f.start < f.end <= len(text)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(["\\n", '\\"', "\\\\", "\\u00e9", "\\ud83d", "a", "\n", "x\\", "\\q", "\x00", "é"]),
                max_size=60))
def test_textview_offsets_are_monotonic_and_in_range(parts: list[str]) -> None:
    raw = "".join(parts)
    view = TextView(raw)
    mapped = [view.to_raw(i) for i in range(len(view.text) + 1)]
    assert mapped[0] == 0 and mapped[-1] == len(raw)
    assert all(a < b for a, b in pairwise(mapped))


def test_huge_line_and_nul_bytes(scanner: Scanner) -> None:
    text = "\x00" * 10 + "a" * 2_500_000 + f" {ACME} " + "\x00b" * 1000
    [f] = scanner.scan_text(text)
    assert text[f.start:f.end] == ACME[5:]


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[[rules]]\nid = 'x'\n", "missing or empty field 'name'"),
        ("[[rules]]\nid='a'\nname='a'\nkind='secret'\nconfidence='high'\npattern='('\nexamples=['a']\n",
         "pattern does not compile"),
        ("[[rules]]\nid='a'\nname='a'\nkind='secret'\nconfidence='high'\npattern='a'\nvalidators=['nope']\n"
         "examples=['a']\nnegative_examples=['b']\n", "unknown validator 'nope'"),
        ("[[rules]]\nid='a'\nname='a'\nkind='oops'\nconfidence='high'\npattern='a'\nexamples=['a']\n",
         "kind must be one of"),
        ("[[rules]\nid='a'\n", "not valid TOML"),
        ("\n\n[[rules]]\nid='B'\n", "test.toml:4: rule 'B'"),
        ("[[rules]]\nid='a'\nname='a'\nkind='secret'\nconfidence='high'\npattern='a*'\nexamples=['a']\n",
         "matches the empty string"),
    ],
)
def test_rule_errors_name_file_line_and_problem(toml: str, message: str) -> None:
    with pytest.raises(RuleError) as exc:
        parse_rules(toml, "test.toml")
    assert message in str(exc.value)
    assert str(exc.value).startswith("test.toml")


def test_unknown_rule_ids_are_refused(rules: list[Rule]) -> None:
    with pytest.raises(RuleError, match="unknown rule id"):
        Scanner(rules, disabled={"no-such-rule"})


def test_validators() -> None:
    assert card("4532 0151 1283 0366") and not card("4532 0151 1283 0367")
    assert not card("4111 1111 1111 1111")  # well-known test number: a placeholder, not a leak
    assert not card("1700000000000000")
    token = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5"
    import zlib

    crc = zlib.crc32(token[4:].encode())
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    digits = ""
    while crc:
        crc, r = divmod(crc, 62)
        digits = alphabet[r] + digits
    assert crc32_base62(token + digits.rjust(6, "0"))
    assert not crc32_base62(token + "000000")
    assert jwt("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln")
    assert not jwt("eyJhbGciOiJIUzI1NiJ9.bm9wZQ.c2ln")
    assert not not_word("userPassword") and not not_word("changeme") and not_word("hunter2!x")
    assert not not_placeholder("AKIAIOSFODNN7EXAMPLE") and not not_placeholder("sk-xxxxxxxxxxxxxxxx")
    assert not_placeholder("sk-Zq3Vb8Lm2Rt6Yp1Ws9Xc")
    assert get_validator("stdnum:cn.ric")("11010519491231002X")
    assert get_validator("iban")("GB82 WEST 1234 5698 7654 32")
    assert get_validator("phone")("+86 138 0013 8000")
    with pytest.raises(ValueError, match="no python-stdnum module"):
        get_validator("stdnum:xx.nothing")


def test_redacted_snippet_shapes() -> None:
    assert redacted_snippet("sk-proj-abcdefgh", "secret") == "sk-p…(16 chars)"
    assert redacted_snippet("a@b.co", "pii") == "a…(6 chars)"
    assert "chars" in redacted_snippet("User: hi", "chat")


def test_fast_regex_finds_exactly_what_the_pattern_finds(all_rules: list[Rule]) -> None:
    """Rules reordered for Python's literal search match the same spans as written (examples and a corpus)."""
    import re as _re

    from redline import synth
    from redline.engine.rules import PATTERN_FLAGS

    lines = [line.text for line in synth.generate_lines(3000, seed=11, hit_rate=0.5)]
    rewritten = [r for r in all_rules if r.regex.pattern != r.pattern]
    assert len(rewritten) > 50
    for rule in rewritten:
        plain = _re.compile(rule.pattern, PATTERN_FLAGS)
        texts = [ex.text for ex in rule.examples] + list(rule.negative_examples) + lines
        for text in texts:
            assert [m.span() for m in plain.finditer(text)] == [m.span() for m in rule.regex.finditer(text)], rule.id
            assert [m.groupdict() for m in plain.finditer(text)] == [m.groupdict() for m in rule.regex.finditer(text)]


_CLASS_FORMS: list[tuple[Rule, re.Pattern[bytes]]] = []


def _class_forms(all_rules: list[Rule]) -> list[tuple[Rule, re.Pattern[bytes]]]:
    from redline.engine.matcher import class_expression

    if _CLASS_FORMS:
        return _CLASS_FORMS
    out = _CLASS_FORMS
    for rule in all_rules:
        expr = class_expression(rule.pattern)
        if expr is not None and not rule.keywords and not rule.multiline:
            out.append((rule, re.compile(expr, re.DOTALL)))
    return out


def _class_form_covers(rule: Rule, rx: re.Pattern[bytes], text: str) -> None:
    """Every real match has a class-space match starting at it or one before, ending at it or one after."""
    from redline.engine.matcher import _CLASS_TABLE
    from redline.engine.textview import ascii_bytes

    data = ascii_bytes(text).translate(_CLASS_TABLE)
    n = len(data)
    for m in rule.regex.finditer(text):
        s, t = m.span()
        assert any(
            rx.fullmatch(data, s2, e) for s2 in {max(s - 1, 0), s} for e in {t, min(t + 1, n)}
        ), (rule.id, text, m.span())


def test_class_forms_cover_every_example(all_rules: list[Rule]) -> None:
    forms = _class_forms(all_rules)
    assert {"payment-card-number", "iban", "cn-resident-id"} <= {r.id for r, _ in forms}
    for rule, rx in forms:
        for ex in rule.examples:
            _class_form_covers(rule, rx, ex.text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet="0123456789 -.+()/:ABLXZabx\n", max_size=80))
def test_class_forms_cover_arbitrary_digit_text(all_rules: list[Rule], text: str) -> None:
    for rule, rx in _class_forms(all_rules):
        _class_form_covers(rule, rx, text)


def _head_anchors(all_rules: list[Rule]) -> list[tuple[Rule, re.Pattern[bytes]]]:
    from redline.engine.matcher import class_anchor

    out = []
    for rule in all_rules:
        form = None if rule.keywords or rule.multiline else class_anchor(rule.pattern)
        if form is not None and not form[1]:
            out.append((rule, re.compile(form[0], re.DOTALL)))
    return out


def _head_anchor_inside(rule: Rule, rx: re.Pattern[bytes], text: str) -> None:
    """Every real match holds a match of the head form that starts at it or one before and ends inside it."""
    from redline.engine.matcher import _CLASS_TABLE
    from redline.engine.textview import ascii_bytes

    data = ascii_bytes(text).translate(_CLASS_TABLE)
    for m in rule.regex.finditer(text):
        s, t = m.span()
        assert any(rx.match(data, s2, t) for s2 in {max(s - 1, 0), s}), (rule.id, text, m.span())


def test_head_anchors_lie_inside_every_example(all_rules: list[Rule]) -> None:
    heads = _head_anchors(all_rules)
    assert {r.id for r, _ in heads} == {"iban"}  # the one pattern ending in a variable repeat of a group
    for rule, rx in heads:
        for ex in rule.examples:
            _head_anchor_inside(rule, rx, ex.text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(["GB82", "DE", "44", "WEST", "1234", "5698", "76", " ", "7", "AB", "-", "x", "\n"]),
                max_size=24).map("".join))
def test_head_anchors_lie_inside_iban_like_text(all_rules: list[Rule], text: str) -> None:
    for rule, rx in _head_anchors(all_rules):
        _head_anchor_inside(rule, rx, text)


def test_class_expression_shapes() -> None:
    from redline.engine.matcher import class_expression

    card = class_expression(r"(?<![\w.])(?P<value>[2-6][0-9]{12,18})(?![\w])")
    assert card is not None and b"\\x30" in card and b"\\x41" not in card.split(b")(?:")[1]
    assert class_expression(r"(?P<v>[a-f0-9]{32})", sharp=True) is None  # no class of its own: not selective
    assert class_expression(r"(?P<v>[a-f0-9]{32})") is not None
    assert class_expression(r"(a)\1") is None  # backreferences have no class form
    assert class_expression(r"x?") is None  # matches the empty string: Hyperscan refuses it
    assert class_expression("用户") is None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.text(alphabet="aé手😀\n \udcff", max_size=120).map(
    lambda t: t.encode("utf-8", "surrogateescape")), st.integers(1, 40), st.sampled_from([1, 3, 64]))
@example(data=b"\x00\x00\x00\xc2\x80\x80\x80\x80", size=2, max_line=1)  # a character, then stray continuation bytes
def test_byte_chunks_decode_as_the_whole(data: bytes, size: int, max_line: int) -> None:
    """Chunks cut in the bytes (at newlines, or before a character's first byte) decode exactly as the whole."""
    import redline.engine.scanner as scanner_module
    from redline.engine.scanner import iter_text_chunks

    saved = scanner_module.MAX_LINE_CHARS
    scanner_module.MAX_LINE_CHARS = max_line
    try:
        chunks = list(iter_text_chunks(io.BytesIO(data), size))
    finally:
        scanner_module.MAX_LINE_CHARS = saved
    assert "".join(chunks) == data.decode("utf-8", "surrogateescape")
    assert all(c for c in chunks)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="手机号用户问答电话ab\n", max_size=60))
def test_non_ascii_words_are_found_everywhere_even_overlapping(text: str) -> None:
    import re as _re

    from redline.engine.matcher import _non_ascii_words
    from redline.engine.textview import ascii_bytes

    words = sorted(["手机", "手机号", "机号", "用户", "户问", "问", "电话"], key=len, reverse=True)
    rx = _re.compile("|".join(words))
    prefixes = {w: [v for v in words if w.startswith(v)] for w in words}
    found = _non_ascii_words(text, ascii_bytes(text), rx, prefixes)
    for w in words:
        assert sorted(found.get(w, [])) == [m.start() for m in _re.finditer(f"(?={w})", text)], w


def test_position_expressions_are_cut_only_at_the_top_level() -> None:
    from redline.engine.matcher import _top_level_prefix

    assert _top_level_prefix("(?:User|Human):[ \\t]*[^\\n]{8,}", 21)
    assert not _top_level_prefix("a|b[^\\n]+", 3)  # one branch is not a prefix of every match
    assert not _top_level_prefix("(?:ab[^\\n]+)", 5)  # inside a group
    assert not _top_level_prefix("x?[^\\n]+", 2)  # matches the empty string


def test_position_expressions_end_once_per_match() -> None:
    from redline.engine.matcher import _trim_tail

    assert _trim_tail(r"\bsk_live_[A-Za-z0-9]{24,99}(?![A-Za-z0-9])") == r"\bsk_live_(?:[A-Za-z0-9]){24}"
    assert _trim_tail(r"(?<!\w)(?P<value>eyJ[\w-]{8,}\.[\w-]{16,})") == r"(?<!\w)eyJ[\w-]{8,}\.(?:[\w-]){16}"
    assert _trim_tail(r"key[ \t]*[:=][ \t]*") == r"key[ \t]*[:=]"
    assert _trim_tail(r"(?P<value>a|bc+)") == r"(?P<value>a|bc+)"  # an alternation is left as it is
    assert _trim_tail(r"x?y*") == r"x?y*"  # nothing would be left


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_ascii_context_words_ignore_case(backend: str) -> None:
    rules = parse_rules(
        "[[rules]]\nid = 'secu'\nname = 'x'\nkind = 'pii'\nconfidence = 'high'\n"
        "pattern = '(?<![0-9])[12][0-9]{12}(?![0-9])'\ncontext = ['sécurité', 'numéro']\n"
        "examples = ['sécurité 1850578006084']\n", "t.toml")
    s = Scanner(rules, backend=backend, fingerprint_key=KEY)
    assert [f.type for f in s.scan_text("N° SÉCURITÉ SOCIALE : 1850578006084\n")] == ["secu"]
    assert [f.type for f in s.scan_text("Numéro: 1850578006084\n")] == ["secu"]
    assert s.scan_text("reference 1850578006084\n") == []


def _greedy_reference(items: list) -> list:  # type: ignore[type-arg]
    """The plain strongest-first choice over all candidates at once (what _resolve_overlaps must equal)."""
    from bisect import bisect_left, insort

    items = sorted(items, key=lambda it: (it[0], -it[1], it[3].id), reverse=True)
    kept, taken = [], {True: [], False: []}  # type: ignore[var-annotated]
    for it in items:
        spans = taken[it[3].kind == "chat"]
        j = bisect_left(spans, (it[1], it[2]))
        if (j > 0 and spans[j - 1][1] > it[1]) or (j < len(spans) and spans[j][0] < it[2]):
            continue
        insort(spans, (it[1], it[2]))
        kept.append(it)
    return sorted(kept, key=lambda it: (it[1], it[2], it[3].id))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 60), st.integers(1, 12), st.integers(0, 3), st.integers(-2, 2)),
                max_size=40))
def test_overlap_resolution_equals_the_plain_greedy_choice(all_rules: list[Rule], spans: list) -> None:  # type: ignore[type-arg]
    from redline.engine.scanner import _resolve_overlaps

    pool = [all_rules[0], all_rules[1], next(r for r in all_rules if r.kind == "chat"),
            next(r for r in all_rules if r.kind == "pii")]
    items = [((pool[k].priority + prio, length, 1), start, start + length, pool[k], "high")
             for start, length, k, prio in spans]
    assert _resolve_overlaps(list(items)) == _greedy_reference(items)


def test_a_line_with_200000_findings_reports_them_all() -> None:
    """One line holding 200,000 addresses (each finding used to search the rest of its line: minutes; now
    about a second, which the suite's duration shows rather than a timed assertion)."""
    s = Scanner(fingerprint_key=KEY)
    findings = s.scan_text("a@b.cc " * 200_000)
    assert len(findings) == 200_000
    assert findings[-1].start == 7 * 199_999


def test_one_line_patterns_are_told_from_those_that_may_hold_a_newline() -> None:
    from redline.engine.rules import one_line

    assert one_line(r"\bsk-[A-Za-z0-9]{20}") and one_line(r"[^\s\"']+") and one_line(r"a.b") and one_line(r"[\S]")
    assert one_line(r"(?<=\s)key(?=\n)")  # lookarounds consume nothing
    for pattern in (r"a\nb", r"a\sb", r"a[^x]b", r"(?s:a.b)", r"\D", r"[^\S]", r"(a)\1", r"x|[\n]"):
        assert not one_line(pattern), pattern


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_wide_rule_finds_its_value_between_long_lines(backend: str) -> None:
    s = Scanner(backend=backend, fingerprint_key=KEY)
    filler = "x" * 700
    rng = random.Random(5)
    line = "config api_key=" + "".join(rng.choice("ABCDEFGHJKabcdefghjk0123456789") for _ in range(200))
    text = f"{filler}\n{line}\n{filler}"
    [f] = [f for f in s.scan_text(text) if f.type == "generic-api-key"]
    assert text[f.start:f.end] == line.split("=", 1)[1]
