"""Sparse chunks: text that is ASCII but for a few characters is scanned with stand-ins for them, and must give
exactly the findings of the real text (offsets, values, fingerprints)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from redline import synth
from redline.engine import Chunk, Rule, Scanner
from redline.engine.rules import uniform
from redline.engine.textview import TextView, ascii_bytes

NON_ASCII = ["é", "中文", "用户：", "助手:", "SÉCURITÉ SOCIALE", "numéro", "手机号", "😀", "\u3000", "\xa0", "ſ", "K"]
ESCAPES = ["\\u4e2d", "\\u00e9", "\\n", '\\"', "\\\\", "\\ud83d"]


def sparse(text: str) -> Chunk:
    chunk = Chunk.from_bytes(text.encode("utf-8", "surrogateescape"), max_share=1.0)
    assert chunk.text.isascii()
    return chunk


def test_sparse_chunk_holds_the_real_text() -> None:
    text = "plain line\nnamé: 中文 ok\x1a\n" + "x" * 20000 + "\n"
    chunk = Chunk.from_bytes(text.encode())
    assert chunk.sparse and len(chunk) == len(text)
    assert chunk.text.isascii() and chunk.text.count("\x1a") == 4  # three stand-ins and one real \x1a
    assert chunk.real(0, len(text)) == text
    assert chunk.real(15, 21) == text[15:21]
    assert chunk.has_stand_ins(0, 15) is True and chunk.has_stand_ins(0, 14) is False
    assert not chunk.has_stand_ins(text.index("\x1a"), text.index("\x1a") + 1)  # a real \x1a is no stand-in
    # Too many non-ASCII characters: wide.
    assert not Chunk.from_bytes(("中" * 100 + "\n").encode()).sparse
    # Bytes that are not UTF-8 are one character each, as in a whole decode.
    data = b"x" * 5000 + b"\n\x80\xe4\xb8\n" + "é".encode()
    chunk = Chunk.from_bytes(data)
    assert chunk.sparse and chunk.real(0, len(chunk)) == data.decode("utf-8", "surrogateescape")


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", " ", "\n", '"', "\x1a", *NON_ASCII, *ESCAPES]), max_size=40),
       st.lists(st.integers(0, 255), max_size=3))
def test_sparse_chunk_and_view_equal_the_decoded_text(parts: list[str], stray: list[int]) -> None:
    data = "".join(parts).encode("utf-8", "surrogateescape")
    for b in stray:
        data = data[: b % (len(data) + 1)] + bytes([b]) + data[b % (len(data) + 1):]
    text = data.decode("utf-8", "surrogateescape")
    chunk = Chunk.from_bytes(data, max_share=1.0)
    assert len(chunk) == len(text)
    assert chunk.real(0, len(text)) == text
    for lo in range(0, len(text) + 1, 3):
        assert chunk.real(lo, len(text)) == text[lo:]
    wide, narrow = TextView(text, narrow=False), TextView(chunk)
    assert narrow.chunk.real(0, len(narrow.text)) == wide.text
    assert narrow.chunk.ascii_bytes() == ascii_bytes(narrow.text)  # the byte view built alongside
    assert [narrow.to_raw(i) for i in range(len(wide.text) + 1)] == [wide.to_raw(i) for i in range(len(wide.text) + 1)]


def test_uniform_patterns() -> None:
    assert uniform(r"(?<![\w.])sk-[A-Za-z0-9]{20}\b") and uniform(r"[^\s\"]+") and uniform(r"(?i)key\s*[:=]")
    assert not uniform(r"用户\s*:")  # names a non-ASCII character
    assert not uniform(r"[\x00-\x1f]")  # holds the stand-in but no other non-ASCII character
    assert not uniform(r"(\w+)=\1")  # a back-reference would take two stand-ins for the same character


def _variants(text: str) -> list[str]:
    return [text, "é " + text, text.replace(" ", " 中 ", 1), "用户: " + text + "\n助手: 好的", text + " SÉCURITÉ"]


def test_sparse_scan_equals_wide_scan_on_every_rule_example(scanners: dict[str, Scanner],
                                                           all_rules: list[Rule]) -> None:
    texts = [v for r in all_rules for t in [*(e.text for e in r.examples), *r.negative_examples]
             for v in _variants(t)]
    for scanner in scanners.values():
        compared = 0
        for text in texts:
            chunk = sparse(text)
            compared += chunk.sparse
            assert scanner.scan_chunk(chunk) == scanner.scan_text(text), text
        assert compared > len(texts) // 2


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(["\n", " ", '"', '{"content":"', '"}', *NON_ASCII, *ESCAPES,
                                 "acme_Q1w2E3r4T5y6U7i8O9p0A1s2", "sk-proj-T3BlbkFJq8Z2mX7vR4pL9nK6wY1cD5eH0",
                                 "+86 138 1234 5678", "tel 13812345678", "ssn 602-60-9499", "dob 1984-03-12",
                                 "bob@example.org", "User: hi\nAssistant: hello\nUser: thanks",
                                 '{"role":"user","content":"hi"},{"role":"assistant","content":"ok"}']),
                max_size=30))
def test_sparse_scan_equals_wide_scan_on_mixed_text(scanners: dict[str, Scanner], parts: list[str]) -> None:
    text = "".join(parts)
    for scanner in scanners.values():
        assert scanner.scan_chunk(sparse(text)) == scanner.scan_text(text)


@pytest.mark.parametrize("backend", ["hyperscan", "re"])
def test_sparse_scan_equals_wide_scan_on_a_generated_log(all_rules: list[Rule], backend: str) -> None:
    if backend == "hyperscan":
        pytest.importorskip("hyperscan")
    scanner = Scanner(all_rules, backend=backend, fingerprint_key=b"k")
    lines = [line.text for line in synth.generate_lines(3000, seed=11, hit_rate=0.2)]
    # A few non-ASCII lines among ASCII ones, as in most real logs.
    text = "\n".join(line if i % 97 else line + " — 用户：张伟 SÉCURITÉ" for i, line in enumerate(lines)) + "\n"
    chunk = sparse(text)
    assert len(chunk.positions) > 100
    found = scanner.scan_chunk(chunk)
    assert len(found) > 100
    assert found == scanner.scan_text(text)
