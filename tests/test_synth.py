"""Tests for the synthetic labelled-log generator (redline.synth)."""

from __future__ import annotations

import json
import random
import re
import zlib
from collections import Counter
from pathlib import Path

import phonenumbers
import pytest
from stdnum import iban, luhn
from stdnum.cn import ric
from stdnum.in_ import aadhaar
from stdnum.us import ssn

from redline import synth
from redline.synth import (
    PII_TYPES,
    SECRET_TYPES,
    LabelledLine,
    fake_pii,
    fake_secret,
    generate_lines,
    log_stream_rows,
    write_log,
)

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _lines(n: int = 3000, seed: int = 7, hit_rate: float = 0.2) -> list[LabelledLine]:
    return list(generate_lines(n, seed=seed, hit_rate=hit_rate))


def _crc_base62(body: str) -> str:
    n = zlib.crc32(body.encode())
    out = ""
    while n:
        n, r = divmod(n, 62)
        out = BASE62[r] + out
    return out.rjust(6, "0")


def test_deterministic() -> None:
    assert _lines(500, seed=3) == _lines(500, seed=3)
    assert _lines(500, seed=3) != _lines(500, seed=4)
    assert log_stream_rows(50, seed=1) == log_stream_rows(50, seed=1)
    rng_a, rng_b = random.Random(5), random.Random(5)
    assert [fake_secret(t, rng_a) for t in SECRET_TYPES] == [fake_secret(t, rng_b) for t in SECRET_TYPES]


def test_spans_slice_to_values() -> None:
    kinds: Counter[str] = Counter()
    types: Counter[str] = Counter()
    for line in _lines():
        for p in line.planted:
            assert 0 <= p.start < p.end <= len(line.text)
            assert line.text[p.start : p.end] == p.value
            assert p.kind in ("secret", "pii", "chat")
            kinds[p.kind] += 1
            types[p.type] += 1
    assert kinds["secret"] and kinds["pii"] and kinds["chat"]
    # every type shows up in a few thousand lines at a high hit rate
    assert set(SECRET_TYPES) <= set(types), set(SECRET_TYPES) - set(types)
    assert set(PII_TYPES) <= set(types), set(PII_TYPES) - set(types)


def test_hit_rate_is_respected() -> None:
    lines = _lines(6000, seed=11, hit_rate=0.05)
    hits = sum(1 for line in lines if any(p.kind != "chat" for p in line.planted))
    assert 0.035 < hits / len(lines) < 0.065
    none = list(generate_lines(2000, seed=11, hit_rate=0.0))
    assert not any(p.kind != "chat" for line in none for p in line.planted)


def test_secret_spans_are_only_the_secret() -> None:
    for line in _lines():
        for p in line.planted:
            if p.type in ("password-assignment", "db-url-password"):
                assert "=" not in p.value and "@" not in p.value and "://" not in p.value
                assert not p.value.lower().startswith("pass")
            if p.kind == "secret" and p.type != "private-key":
                assert " " not in p.value


def test_no_placeholder_words_in_values() -> None:
    rng = random.Random(1)
    for _ in range(200):
        for t in SECRET_TYPES:
            v = fake_secret(t, rng).lower()
            assert "example" not in v and "xxxx" not in v
        for t in PII_TYPES:
            v = fake_pii(t, rng).lower()
            assert "example" not in v and "xxxx" not in v
    for line in _lines():
        for p in line.planted:
            assert "example" not in p.value.lower() and "xxxx" not in p.value.lower()


def test_secret_formats() -> None:
    rng = random.Random(2)
    for _ in range(100):
        gh = fake_secret("github-pat", rng)
        assert re.fullmatch(r"ghp_[0-9A-Za-z]{36}", gh)
        assert gh[-6:] == _crc_base62(gh[4:-6])
        assert re.fullmatch(r"sk-proj-[\w-]{74}T3BlbkFJ[\w-]{74}", fake_secret("openai-project-key", rng))
        assert re.fullmatch(r"sk-[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20}", fake_secret("openai-legacy-key", rng))
        assert re.fullmatch(r"sk-ant-api03-[\w-]{93}AA", fake_secret("anthropic-api-key", rng))
        assert re.fullmatch(r"sk-[0-9a-f]{32}", fake_secret("deepseek-api-key", rng))
        assert re.fullmatch(r"(AKIA|ASIA)[A-Z2-7]{16}", fake_secret("aws-access-key-id", rng))
        assert re.fullmatch(r"[A-Za-z0-9/+]{40}", fake_secret("aws-secret-access-key", rng))
        assert re.fullmatch(r"glpat-[\w-]{20}", fake_secret("gitlab-pat", rng))
        assert re.fullmatch(r"xoxb-\d{10,13}-\d{10,13}-[A-Za-z0-9]{24}", fake_secret("slack-bot-token", rng))
        assert re.fullmatch(r"sk_live_[A-Za-z0-9]{24,99}", fake_secret("stripe-secret-key", rng))
        assert re.fullmatch(r"AIza[\w-]{35}", fake_secret("google-api-key", rng))
        assert re.fullmatch(r"hf_[A-Za-z]{34}", fake_secret("huggingface-token", rng))
        assert re.fullmatch(r"SG\.[\w-]{22}\.[\w-]{43}", fake_secret("sendgrid-api-key", rng))
        assert re.fullmatch(r"\d{8,10}:AA[\w-]{33}", fake_secret("telegram-bot-token", rng))
        pem = fake_secret("private-key", rng)
        assert re.fullmatch(
            r"-----BEGIN ([A-Z]+ )?PRIVATE KEY-----\n[A-Za-z0-9+/=\n]+\n-----END \1?PRIVATE KEY-----", pem
        )


def test_jwt_decodes() -> None:
    import base64

    rng = random.Random(3)
    for _ in range(50):
        header, payload, sig = fake_secret("jwt", rng).split(".")
        for part in (header, payload):
            obj = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
            assert isinstance(obj, dict)
        assert "alg" in json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
        assert sig


@pytest.mark.parametrize("seed", range(5))
def test_pii_checksums_validate(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(60):
        phone = fake_pii("phone", rng)
        assert phone.startswith(("+86", "+44", "+1"))
        assert phonenumbers.is_valid_number(phonenumbers.parse(phone, None)), phone
        card = fake_pii("credit-card", rng)
        assert luhn.is_valid(card.replace(" ", "").replace("-", "")), card
        assert len(card.replace(" ", "").replace("-", "")) in (15, 16)
        assert iban.is_valid(fake_pii("iban", rng))
        assert ssn.is_valid(fake_pii("us-ssn", rng))
        assert ric.is_valid(fake_pii("cn-ric", rng))
        assert aadhaar.is_valid(fake_pii("in-aadhaar", rng))
        assert synth.nino_valid(fake_pii("uk-nino", rng))
        assert re.fullmatch(r"[\w.]+@[\w.-]+\.[a-z]{2,}", fake_pii("email", rng))


def test_planted_checksums_validate_in_lines() -> None:
    for line in _lines(4000, seed=9, hit_rate=0.3):
        for p in line.planted:
            v = p.value
            if p.type == "github-pat":
                assert v[-6:] == _crc_base62(v[4:-6])
            elif p.type == "credit-card":
                assert luhn.is_valid(re.sub(r"[ -]", "", v))
            elif p.type == "iban":
                assert iban.is_valid(v)
            elif p.type == "cn-ric":
                assert ric.is_valid(v)
            elif p.type == "in-aadhaar":
                assert aadhaar.is_valid(v)
            elif p.type == "us-ssn":
                assert ssn.is_valid(v)
            elif p.type == "phone":
                assert phonenumbers.is_valid_number(phonenumbers.parse(v, None))


def test_nino_rules() -> None:
    assert synth.nino_valid("AB123456C")
    assert not synth.nino_valid("QQ123456C")  # the documentation number
    assert not synth.nino_valid("DA123456A")
    assert not synth.nino_valid("GB123456A")
    assert not synth.nino_valid("AB123456E")


def test_chat_spans_are_message_arrays_or_transcripts() -> None:
    seen = Counter[str]()
    for line in _lines(2000, seed=5, hit_rate=0.0):
        for p in line.planted:
            assert p.kind == "chat"
            seen[p.type] += 1
            if p.type == "chat-messages":
                raw = p.value
                while raw.startswith('[{\\"'):  # nested JSON string: unescape one level
                    raw = json.loads('"' + raw + '"')
                msgs = json.loads(raw)
                assert len(msgs) >= 2 and all({"role", "content"} <= set(m) for m in msgs)
            elif p.type == "chat-response":
                assert p.value.startswith("[{") and p.value.endswith("}]")
                assert isinstance(json.loads(p.value), list)
            else:
                assert p.type == "chat-transcript"
                assert p.value.startswith("User: ") and "Assistant: " in p.value
    assert set(seen) == set(synth.CHAT_TYPES)


def test_json_lines_parse_and_nested_bodies() -> None:
    nested = 0
    for line in _lines(2000, seed=6, hit_rate=0.2):
        if line.text.startswith("{"):
            obj = json.loads(line.text)
            if "body" in obj:
                body = json.loads(obj["body"])
                assert "model" in body
                nested += 1
    assert nested > 50


def test_json_escaped_pem_has_literal_backslash_n() -> None:
    escaped = raw = 0
    for line in _lines(6000, seed=8, hit_rate=0.5):
        for p in line.planted:
            if p.type == "private-key":
                if "\n" in p.value:
                    raw += 1
                else:
                    assert "\\n" in p.value
                    escaped += 1
    assert escaped and raw


HARD_NEGATIVE_MARKERS = (
    "AKIAIOSFODNN7EXAMPLE",
    "sk-xxxxxxxx",
    "<YOUR_API_KEY>",
    "${OPENAI_API_KEY}",
    "password=********",
    "password_reset_url=",
    "token_count=",
    "data:image/png;base64,",
    "icon@2x.png",
    "order_id=",
    "trace_id=",
    "latency_ns=",
)


def test_hard_negatives_carry_no_planted_values() -> None:
    found = Counter[str]()
    for line in _lines(6000, seed=12, hit_rate=0.0):
        for marker in HARD_NEGATIVE_MARKERS:
            if marker in line.text:
                found[marker] += 1
                assert line.planted == (), line.text
    assert set(found) == set(HARD_NEGATIVE_MARKERS), set(HARD_NEGATIVE_MARKERS) - set(found)


def test_hard_negative_lookalikes_are_invalid() -> None:
    for line in _lines(6000, seed=13, hit_rate=0.0):
        m = re.search(r"order_id=(\d{16})", line.text)
        if m:
            assert not luhn.is_valid(m.group(1))


def test_write_log(tmp_path: Path) -> None:
    out = tmp_path / "big.log"
    n = write_log(out, 2_000_000, seed=1, hit_rate=0.01)
    data = out.read_bytes()
    assert n == len(data) >= 2_000_000
    assert b"\x00" not in data
    text = data.decode("utf-8")
    assert len(text.splitlines()) > 5000
    assert write_log(tmp_path / "again.log", 2_000_000, seed=1, hit_rate=0.01) == n
    assert (tmp_path / "again.log").read_bytes() == data


def test_log_stream_rows_shape() -> None:
    rows = log_stream_rows(300, seed=1)
    keys = {
        "timestamp",
        "span_name",
        "string.names",
        "string.values",
        "number.names",
        "number.values",
        "_service",
        "_host",
        "_source",
    }
    values = []
    for row in rows:
        assert set(row) == keys
        names, vals = row["string.names"], row["string.values"]
        assert isinstance(names, list) and isinstance(vals, list) and len(names) == len(vals)
        assert all(isinstance(v, str) for v in vals)
        nn, nv = row["number.names"], row["number.values"]
        assert isinstance(nn, list) and isinstance(nv, list) and len(nn) == len(nv)
        values += vals
    joined = "\n".join(values)
    assert '"role": "user"' in joined
    assert re.search(r"Bearer sk-[0-9a-f]{32}", joined)
    assert re.search(r"clickhouse://default:[^@]+@", joined)
    assert ".internal" in joined


def test_bundled_sample_matches_generator() -> None:
    sample = Path(synth.__file__).parent / "samples" / "log_stream.jsonl"
    lines = sample.read_text(encoding="utf-8").splitlines()
    assert len(lines) == synth.SAMPLE_ROWS
    expected = log_stream_rows(synth.SAMPLE_ROWS, seed=synth.SAMPLE_SEED)
    assert [json.loads(x) for x in lines] == expected


def test_quiet_mix_carries_conversations_only_on_hit_lines(tmp_path: Path) -> None:
    from redline.engine import scan_text

    counts = {}
    for mix in ("app", "quiet"):
        out = tmp_path / f"{mix}.log"
        write_log(out, 1_000_000, seed=3, hit_rate=0.002, mix=mix)
        text = out.read_text(encoding="utf-8")
        lines = len(text.splitlines())
        counts[mix] = sum(1 for f in scan_text(text) if f.kind == "chat") / lines
    # app: about one line in 15 carries an LLM body; quiet: conversations are as rare as the planted hits
    assert counts["app"] > 0.02
    assert counts["quiet"] < 0.002
