"""Streams are scanned in chunks cut at newlines; a construct that spans lines (a private key, a transcript, a
conversation in pretty-printed JSON) and runs into a chunk's end is carried into the next chunk, so a stream
gives the findings of the whole text at any chunk size larger than its constructs."""

from __future__ import annotations

import io
import json
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from redline import synth
from redline.engine import Chunk, Scanner
from redline.engine.finding import Finding

from ..conftest import BACKENDS, KEY

PEM = synth._pem(random.Random(7))
TRANSCRIPT = ("User: my card is about to expire, can you help?\nAssistant: Of course. Which card is it?\n"
              "User: the one ending in 4242\nAssistant: Thanks, I have found it.\n")
PRETTY_CHAT = json.dumps({"model": "deepseek-chat", "messages": [
    {"role": "user", "content": "Summarise our refund policy in two lines"},
    {"role": "assistant", "content": "Refunds within 30 days; store credit afterwards."}]}, indent=2) + "\n"
# Log lines start with a timestamp, which also ends a transcript (a transcript takes in the lines after it).
FILLER = ["2025-01-06 00:00:01 GET /healthz 200 0.003s\n", "2025-01-06 00:00:02 worker 3 idle\n",
          "2025-01-06 00:00:03 用户 ok 中文 line\n", "2025-01-06 00:00:04 deploy finished é\n"]
TICK = "2025-01-06 00:00:05 INFO tick\n"
CONSTRUCTS = [PEM + "\n", TRANSCRIPT, PRETTY_CHAT,
              "token " + synth.fake_secret("github-pat", random.Random(3)) + "\n"]


def whole_and_streamed(
    scanner: Scanner, text: str, size: int, *, as_bytes: bool = True
) -> tuple[list[Finding], list[Finding]]:
    stream: io.BytesIO | io.StringIO = io.BytesIO(text.encode()) if as_bytes else io.StringIO(text)
    return scanner.scan_text(text), list(scanner.scan_stream(stream, chunk_chars=size))


@pytest.fixture(scope="module", params=BACKENDS)
def scanner(request: pytest.FixtureRequest) -> Scanner:
    return Scanner(fingerprint_key=KEY, backend=request.param)


@pytest.mark.parametrize("construct", CONSTRUCTS[:3], ids=["private-key", "transcript", "pretty-json-chat"])
def test_a_construct_cut_by_a_chunk_end_is_found_whole(scanner: Scanner, construct: str) -> None:
    head = "".join(FILLER) * 3
    text = head + construct + "".join(FILLER)
    whole = scanner.scan_text(text)
    assert any(f.start in (len(head), text.find('"messages"')) and f.end >= len(head + construct) - 5
               for f in whole)
    # Every cut through the construct, at a line end inside it (chunks are cut after newlines).
    inside = [i + 1 for i, c in enumerate(construct) if c == "\n"][:-1]
    for cut in inside:
        size = len((head + construct[:cut]).encode())
        for as_bytes in (True, False):
            got = whole_and_streamed(scanner, text, size, as_bytes=as_bytes)
            assert got[1] == got[0], (cut, as_bytes)


def test_carried_text_keeps_offsets_and_line_numbers_after_non_ascii(scanner: Scanner) -> None:
    from redline.scan.files import scan_stream_records

    text = "用户 ok 中文\n" * 50 + PEM + "\nafter é\n" + "x 😀\n" * 40
    cut = len(("用户 ok 中文\n" * 50 + PEM.split("\n", 3)[0]).encode()) + 1  # the chunk ends after the BEGIN line
    whole, streamed = whole_and_streamed(scanner, text, cut)
    assert streamed == whole and [f.type for f in whole] == ["ec-private-key"]
    records = list(scan_stream_records(scanner, io.BytesIO(text.encode()), "x.log"))  # type: ignore[arg-type]
    assert [(r["line"], r["start"], r.get("end_line")) for r in records] == [(51, 0, 51 + PEM.count("\n"))]


def test_a_construct_longer_than_a_chunk_is_still_reported_and_the_stream_ends(scanner: Scanner) -> None:
    body = "".join(f"line {i} of a long paste\n" for i in range(200))
    text = "start\nUser: please look at this\n" + body + "Assistant: done\n"
    findings = list(scanner.scan_stream(io.BytesIO(text.encode()), chunk_chars=256))
    assert all(0 <= f.start < f.end <= len(text) for f in findings)


def test_only_the_last_piece_is_final() -> None:
    from redline.engine.scanner import _Reader

    reader = _Reader(io.BytesIO(b"a\nb\nc\nd"), 2)
    seen = []
    for piece in reader:
        seen.append((piece, reader.last))
        if piece == b"a\n":
            reader.hold(b"a\n")  # given back: it comes first in the next piece
    assert seen == [(b"a\n", False), (b"a\nb\n", False), (b"c\n", False), (b"d", True)]
    with pytest.raises(ValueError):
        reader.hold(b"d")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(FILLER + CONSTRUCTS), min_size=1, max_size=30), st.integers(0, 400),
       st.booleans())
def test_streams_equal_the_whole_text_at_any_chunk_size_above_the_constructs(
    scanner: Scanner, parts: list[str], extra: int, as_bytes: bool
) -> None:
    text = "".join(part + TICK for part in parts)
    size = max(len((c + TICK).encode()) for c in CONSTRUCTS) + 1 + extra
    whole, streamed = whole_and_streamed(scanner, text, size, as_bytes=as_bytes)
    assert streamed == whole


@given(st.text(alphabet="aé中😀\n\udcff", max_size=80), st.integers(0, 80))
def test_utf8_offsets_of_a_chunk(text: str, i: int) -> None:
    data = text.encode("utf-8", "surrogateescape")
    i = min(i, len(text))
    for chunk in (Chunk.from_bytes(data), Chunk.from_bytes(data, max_share=1.0), Chunk(text)):
        offset = chunk.utf8_offset(i)
        assert data[offset:].decode("utf-8", "surrogateescape") == text[i:]


def test_pretty_json_chat_is_one_finding(scanner: Scanner) -> None:
    text = "request body:\n" + PRETTY_CHAT
    chats = [f for f in scanner.scan_text(text) if f.kind == "chat"]
    assert len(chats) == 1 and synth is not None
