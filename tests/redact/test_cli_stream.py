from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import pytest
import zstandard

from redline.cli import main
from redline.engine import Finding, Scanner
from redline.redact import Policy, redact_string, redact_text
from redline.synth import generate_lines

# Planted types the engine has rules for; values of other types may legitimately be missed by detection.


def _corpus(n: int = 800, seed: int = 11) -> list[tuple[str, list[tuple[int, int, str, str, str]]]]:
    out = []
    for rec in generate_lines(n, seed=seed, hit_rate=0.3):
        out.append((rec.text, [(p.start, p.end, p.kind, p.type, p.value) for p in rec.planted]))
    return out


def test_planted_values_never_survive_redaction() -> None:
    """Redaction alone: findings made from the labels, every planted secret and PII value must be gone."""
    policy = Policy.from_dict({"kinds": {"chat": "summary"}})
    for text, planted in _corpus():
        findings = [Finding(k, t, s, e, "high", "", "") for s, e, k, t, _ in planted]  # type: ignore[arg-type]
        res = redact_text(text, sorted(findings, key=lambda f: f.start), policy)
        assert res.text.count("\n") == text.count("\n")
        for _, _, kind, _, value in planted:
            if kind != "chat":
                assert value not in res.text
        if text.startswith("{"):
            json.loads(res.text)


def test_corpus_end_to_end(tmp_path: Path, scanner: Scanner) -> None:
    corpus = _corpus()
    text = "".join(t + "\n" for t, _ in corpus)
    src = tmp_path / "app.log"
    src.write_text(text, encoding="utf-8")
    dst = tmp_path / "out.log"
    assert main(["redact", str(src), "-o", str(dst)]) == 0
    out = dst.read_text(encoding="utf-8")
    assert out.count("\n") == text.count("\n")
    # JSON lines stay JSON with the same keys.
    for a, b in zip(text.split("\n"), out.split("\n"), strict=True):
        try:
            da = json.loads(a)
        except ValueError:
            continue
        db = json.loads(b)
        assert isinstance(db, type(da))
        if isinstance(da, dict):
            assert list(da) == list(db)
    # Every planted value the engine detects is gone, and re-scanning finds nothing left to redact.
    detected = {text[f.start:f.end] for f in scanner.scan_text(text) if f.kind != "chat"}
    planted = {v for _, p in corpus for *_, kind, _, v in p if kind != "chat"}
    assert len(detected & planted) > 100
    for value in detected & planted:
        assert value not in out
    rescanned = [f for f in scanner.scan_text(out) if f.kind != "chat"]
    again = redact_string(out, scanner, Policy.default())
    assert again == out, rescanned[:3]


def test_gzip_and_zstd_round_trip(tmp_path: Path, keys: dict[str, str]) -> None:
    lines = [f"line {i} token={keys['github-pat']}" if i % 3 == 0 else f"line {i} ok" for i in range(50)]
    text = "\n".join(lines) + "\n"
    gz = tmp_path / "a.log.gz"
    gz.write_bytes(gzip.compress(text.encode()))
    out = tmp_path / "b.log.gz"
    assert main(["redact", str(gz), "--output", str(out)]) == 0
    got = gzip.decompress(out.read_bytes()).decode()
    assert got.count("\n") == 50 and keys["github-pat"] not in got and "[REDACTED:github-pat]" in got
    zs = tmp_path / "a.log.zst"
    zs.write_bytes(zstandard.ZstdCompressor().compress(text.encode()))
    out2 = tmp_path / "b.log.zst"
    assert main(["redact", str(zs), "--output", str(out2)]) == 0
    assert zstandard.ZstdDecompressor().stream_reader(out2.read_bytes()).read().decode() == got


def test_stdin_to_stdout(monkeypatch: pytest.MonkeyPatch, capfdbinary: pytest.CaptureFixture[bytes],
                         keys: dict[str, str], tmp_path: Path) -> None:
    data = f'{{"msg":"auth","key":"{keys["openai-project-key"]}"}}\nplain\n'.encode()
    src = tmp_path / "in"
    src.write_bytes(data)
    with src.open("rb") as fh:
        monkeypatch.setattr("sys.stdin", type("S", (), {"buffer": fh})())
        assert main(["redact"]) == 0
    out = capfdbinary.readouterr().out.decode()
    assert out == '{"msg":"auth","key":"[REDACTED:openai-project-key]"}\nplain\n'


def test_check_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str], keys: dict[str, str]) -> None:
    clean = tmp_path / "clean.log"
    clean.write_text("all good\n")
    assert main(["redact", "--check", str(clean)]) == 0
    dirty = tmp_path / "dirty.log"
    dirty.write_text(f"ok\nkey={keys['aws-access-key-id']}\n")
    assert main(["redact", "--check", str(dirty)]) == 1
    out = capsys.readouterr()
    assert f"{dirty}:2: secret aws-" in out.out and "-> mask" in out.out
    assert keys["aws-access-key-id"] not in out.out + out.err
    assert not (tmp_path / "dirty.log.out").exists()


def test_drop_policy_and_policy_file(tmp_path: Path, keys: dict[str, str]) -> None:
    src = tmp_path / "a.log"
    src.write_text(f"one\ntwo {keys['github-pat']}\nthree\n")
    pol = tmp_path / "p.toml"
    pol.write_text('[types]\ngithub-pat = "drop"\n')
    out = tmp_path / "o.log"
    assert main(["redact", str(src), "--policy", str(pol), "-o", str(out)]) == 0
    assert out.read_text() == "one\nthree\n"


@pytest.mark.parametrize("args", [
    ["redact", "/nonexistent/file.log"],
    ["redact", "--policy", "/nonexistent/policy.toml", "-"],
    ["redact", "--disable", "no-such-rule", "-"],
])
def test_bad_input_is_one_line_exit_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("redline: error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_bad_policy_and_hash_without_key(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDLINE_FINGERPRINT_KEY", raising=False)
    src = tmp_path / "a.log"
    src.write_text("x\n")
    for body, needle in (('[kinds]\nsecret = "nope"\n', "kinds.secret"), ('[kinds]\nsecret = "hash"\n', "needs a key")):
        pol = tmp_path / "p.toml"
        pol.write_text(body)
        with pytest.raises(SystemExit):
            main(["redact", str(src), "--policy", str(pol)])
        assert needle in capsys.readouterr().err


def test_truncated_gzip_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gz = tmp_path / "t.gz"
    gz.write_bytes(gzip.compress(b"hello\n" * 1000)[:40])
    with pytest.raises(SystemExit) as info:
        main(["redact", str(gz), "-o", str(tmp_path / "o.gz")])
    assert info.value.code == 2 and "read failed" in capsys.readouterr().err


@pytest.mark.parametrize("cut_line", [1, 2, 3])
def test_a_private_key_cut_by_a_chunk_boundary_is_redacted(tmp_path: Path, scanner: Scanner, cut_line: int) -> None:
    """The file is read in chunks; a key whose lines fall in two of them must still be found and replaced."""
    import random

    from redline import synth
    from redline.redact.stream import StreamRedactor, redact_source

    pem = synth._pem(random.Random(3))
    head = "".join(f"2025-01-06 00:00:{i % 60:02d} INFO worker idle\n" for i in range(80))  # longer than the key
    text = head + pem + "\n2025-01-06 00:01:00 INFO done\n"
    src = tmp_path / "app.log"
    src.write_text(text)
    size = len(head) + sum(len(line) + 1 for line in pem.split("\n")[:cut_line])  # a chunk ends inside the key
    out = io.StringIO()

    class Sink:
        def write(self, s: str) -> None:
            out.write(s)

    redact_source(StreamRedactor(scanner, Policy.default()), str(src), Sink(), chunk_chars=size)  # type: ignore[arg-type]
    for line in pem.split("\n")[1:-1]:  # the key's base64 lines
        assert line not in out.getvalue()
    assert out.getvalue() == redact_string(text, scanner, Policy.default())  # as if read whole
