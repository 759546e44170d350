"""Targets (hosts, host:port, CIDR, files, limits), the ClickHouse query allow-list, CLI usage errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from redline.probe import chsql
from redline.probe.targets import DEFAULT_PORTS, Endpoint, TargetError, expand, parse_ports, read_target_file


def test_hosts_ports_and_cidr() -> None:
    eps = expand(["127.0.0.1:6379", "localhost", "[::1]:5432", "127.0.0.8/30"], ports=(9000,))
    assert eps[0] == Endpoint("127.0.0.1", 6379)
    assert eps[1] == Endpoint("localhost", 9000)
    assert eps[2] == Endpoint("::1", 5432) and eps[2].label == "[::1]:5432"
    assert [e.host for e in eps[3:]] == ["127.0.0.9", "127.0.0.10"]  # /30: hosts only
    assert expand(["127.0.0.1/32"], ports=(1,)) == [Endpoint("127.0.0.1", 1)]
    assert len(expand(["127.0.0.1"])) == len(DEFAULT_PORTS)
    assert expand(["127.0.0.1:1", "127.0.0.1:1"]) == [Endpoint("127.0.0.1", 1)]


def test_limits() -> None:
    assert len(expand(["127.0.0.0/24"], ports=(1,))) == 254
    with pytest.raises(TargetError, match="--max-hosts"):
        expand(["127.0.0.0/23"], ports=(1,))
    assert len(expand(["127.0.0.0/23"], ports=(1,), max_hosts=510)) == 510
    with pytest.raises(TargetError, match="raise --max-hosts"):
        expand(["127.0.0.0/22"], ports=(1,), max_hosts=600)
    with pytest.raises(TargetError, match="far too many"):
        expand(["10.0.0.0/8"], ports=(1,), max_hosts=1 << 30)


@pytest.mark.parametrize("bad", ["", "host:0", "host:70000", "a b", "10.0.0.0/33", "[::1", "h:x", "-rf"])
def test_bad_targets(bad: str) -> None:
    with pytest.raises(TargetError):
        expand([bad], ports=(1,))


def test_ports_and_files(tmp_path: Path) -> None:
    assert parse_ports("8123, 9000-9002") == (8123, 9000, 9001, 9002)
    with pytest.raises(TargetError):
        parse_ports("9002-9000")
    f = tmp_path / "t.txt"
    f.write_text("# mine\n127.0.0.1:6379  127.0.0.2  # two\n\n")
    assert read_target_file(str(f)) == ["127.0.0.1:6379", "127.0.0.2"]
    with pytest.raises(TargetError, match="cannot read"):
        read_target_file(str(tmp_path / "missing"))


@pytest.mark.parametrize("query", [
    "SELECT version()", "SHOW DATABASES", "SHOW TABLES FROM `default`", "SELECT count() FROM `d`.`file`",
    "SELECT name FROM system.columns WHERE database = 'system' AND table = 'tables'",
    "SELECT database, name FROM system.tables WHERE database IN %(dbs)s ORDER BY database, name",
    "SELECT `a`, `b` FROM `d`.`t` SAMPLE 0.00150000 LIMIT 1000", "SELECT `a` FROM `d`.`t` LIMIT 10, 1000",
    "SELECT x FROM t WHERE s = 'file(''/etc/passwd'')'",
])
def test_allowed_queries(query: str) -> None:
    assert chsql.check(query) == query


@pytest.mark.parametrize("query", [
    "SELECT * FROM file('/etc/passwd', 'TSV', 'x String')", "SELECT * FROM url('http://x/', CSV, 'a String')",
    "SELECT * FROM remote('10.0.0.1', system.one)", "SELECT * FROM remoteSecure('h', db.t)",
    "SELECT * FROM s3('http://b/k')", "SELECT * FROM mysql('h:3306', 'd', 't', 'u', 'p')",
    "SELECT * FROM  FILE ('/etc/passwd')", "select * from cluster('c', system.one)",
    "INSERT INTO t VALUES (1)", "DROP TABLE t", "ALTER TABLE t DELETE WHERE 1", "SYSTEM SHUTDOWN",
    "SELECT 1; DROP TABLE t", "SELECT 1 -- x", "SELECT 1 /* x */", "SELECT 1 INTO OUTFILE '/tmp/x'",
    "SELECT 1 SETTINGS readonly = 0", "SET readonly = 0", "SELECT 'unbalanced", "SELECT dictGet('d', 'a', 1)",
    "SELECT 1 FORMAT TSV", "CREATE TABLE t (a String) ENGINE = URL('http://x', CSV)", "",
])
def test_refused_queries(query: str) -> None:
    with pytest.raises(chsql.QueryRefused):
        chsql.check(query)


def test_format_only_when_asked_and_last() -> None:
    assert chsql.check("SHOW DATABASES FORMAT JSONCompact", allow_format=True)
    with pytest.raises(chsql.QueryRefused):
        chsql.check("SELECT 1 FORMAT TSV SETTINGS readonly=0", allow_format=True)


def test_guarded_client_never_sends_refused_queries() -> None:
    sent: list[str] = []

    class Fake:
        def execute(self, q: str, params: object = None, **kw: object) -> list[tuple[int]]:
            sent.append(q)
            return [(1,)]

    client = chsql.GuardedClient(Fake())
    client.execute("SELECT count() FROM `d`.`t`")
    with pytest.raises(chsql.QueryRefused):
        client.execute("SELECT * FROM file('x')")
    assert sent == ["SELECT count() FROM `d`.`t`"]


@pytest.mark.parametrize("argv", [["probe"], ["probe", "not a host"], ["probe", "127.0.0.0/23"],
                                  ["probe", "127.0.0.1", "--ports", "0"], ["probe", "127.0.0.1", "--timeout", "0"],
                                  ["probe", "--targets", "/nonexistent/targets.txt"]])
def test_usage_errors_exit_2_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from redline.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("redline: error: ") and "\n" not in err and "Traceback" not in err
