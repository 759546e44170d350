from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from redline.store import SqliteAuditStore, StoreError, open_audit_store, sqlite_path
from redline.store.sqlite import SCHEMA_VERSION


def test_paths_and_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert sqlite_path("sqlite:///rel/a.db") == "rel/a.db"
    assert sqlite_path("sqlite:////abs/a.db") == "/abs/a.db"
    assert sqlite_path("/x/y.db") == "/x/y.db"
    assert sqlite_path("clickhouse://h/db") is None
    s = open_audit_store(f"sqlite:///{tmp_path}/a.db")
    assert isinstance(s, SqliteAuditStore) and Path(s.path) == tmp_path / "a.db"
    s.close()
    monkeypatch.setenv("REDLINE_STORE", str(tmp_path / "env.db"))
    s = open_audit_store()
    assert isinstance(s, SqliteAuditStore) and Path(s.path) == tmp_path / "env.db"
    s.close()


def test_clickhouse_url_is_checked_before_connecting() -> None:
    # No server on this port: the security check must refuse first, and never echo the password.
    with pytest.raises(StoreError, match="default") as exc:
        open_audit_store("clickhouse://localhost:1/redline")
    assert "pw" not in str(exc.value)


def test_unknown_scheme() -> None:
    with pytest.raises(StoreError, match="unsupported"):
        open_audit_store("postgres://localhost/db")


def test_schema_version_and_wal(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    open_audit_store(str(path)).close()
    con = sqlite3.connect(path)
    assert con.execute("SELECT version FROM redline_schema WHERE component='audit'").fetchone() == (SCHEMA_VERSION,)
    assert con.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    indexes = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {"audit_ts", "audit_team_ts", "audit_model_ts", "audit_provider_ts", "audit_key_ts"} <= indexes
    con.execute("UPDATE redline_schema SET version = ? WHERE component='audit'", (SCHEMA_VERSION + 1,))
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="newer"):
        open_audit_store(str(path))


def test_keys_and_audit_can_share_a_file(tmp_path: Path) -> None:
    from redline.store import open_key_store

    path = str(tmp_path / "both.db")
    a = open_audit_store(path)
    k = open_key_store(path)
    _, secret = k.create("t")
    assert k.authenticate(secret) is not None
    a.write([])
    a.close()
    k.close()
