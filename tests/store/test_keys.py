from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from redline.store import StoreError, open_key_store
from redline.store.sqlite import SqliteKeyStore, hash_secret, looks_like_secret


@pytest.fixture
def keys(tmp_path: Path) -> SqliteKeyStore:
    ks = open_key_store(str(tmp_path / "keys.db"))
    assert isinstance(ks, SqliteKeyStore)
    return ks


def test_create_and_authenticate(keys: SqliteKeyStore) -> None:
    rec, secret = keys.create("research", user="alice", name="laptop", budget_usd=25.0, rpm=30,
                              models=["gpt-4o*", "deepseek-chat"])
    assert secret.startswith("rl-") and len(secret) == 43 and looks_like_secret(secret)
    assert rec.key_id.startswith("rk_") and rec.key_id not in secret
    got = keys.authenticate(secret)
    assert got == rec
    assert got is not None and got.models == ["gpt-4o*", "deepseek-chat"] and got.budget_usd == 25.0
    assert keys.get(rec.key_id) == rec


def test_secrets_are_unique(keys: SqliteKeyStore) -> None:
    made = [keys.create("t") for _ in range(50)]
    assert len({s for _, s in made}) == 50 and len({r.key_id for r, _ in made}) == 50


@pytest.mark.parametrize("bad", ["", "rl-", "rl-short", "sk-" + "a" * 40, "rl-" + "a" * 41, "rl-" + "!" * 40])
def test_bad_secrets_are_refused(keys: SqliteKeyStore, bad: str) -> None:
    keys.create("t")
    assert keys.authenticate(bad) is None


def test_a_near_miss_is_refused(keys: SqliteKeyStore) -> None:
    _, secret = keys.create("t")
    flipped = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    assert keys.authenticate(flipped) is None
    assert keys.authenticate(None) is None  # type: ignore[arg-type]


def test_revoke(keys: SqliteKeyStore) -> None:
    rec, secret = keys.create("t", admin=True)
    other, other_secret = keys.create("t")
    assert keys.revoke(rec.key_id) is True
    assert keys.revoke(rec.key_id) is False
    assert keys.revoke("rk_unknown") is False
    assert keys.authenticate(secret) is None
    assert keys.authenticate(other_secret) == other
    listed = {r.key_id: r for r in keys.list()}
    assert listed[rec.key_id].revoked is not None and listed[rec.key_id].admin
    assert listed[other.key_id].revoked is None


def test_revocation_is_seen_by_another_connection(tmp_path: Path) -> None:
    a = open_key_store(str(tmp_path / "k.db"))
    b = open_key_store(str(tmp_path / "k.db"))
    rec, secret = a.create("t")
    assert b.authenticate(secret) is not None
    a.revoke(rec.key_id)
    assert b.authenticate(secret) is None


@pytest.mark.parametrize("kw", [{"budget_usd": -1.0}, {"rpm": 0}])
def test_validation(keys: SqliteKeyStore, kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        keys.create("t", **kw)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        keys.create(" ")


def test_only_the_hash_is_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "keys.db"
    ks = open_key_store(str(path))
    secrets = [ks.create(f"team{i}", user=f"user{i}")[1] for i in range(20)]
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())  # the database, -wal and -shm files
    ks.close()
    raw += path.read_bytes()  # after the checkpoint on close
    for s in secrets:
        assert s.encode() not in raw
        assert s[3:].encode() not in raw  # nor the body without its prefix
        assert s[3:23].encode() not in raw  # nor a large part of it
    assert hash_secret(secrets[0]).encode() in raw
    # and the table has no column that could hold a secret
    cols = [r[1] for r in sqlite3.connect(path).execute("PRAGMA table_info(api_keys)")]
    assert "secret" not in cols and "secret_hash" in cols


def test_not_a_database(tmp_path: Path) -> None:
    p = tmp_path / "notes.txt"
    p.write_text("hello, this is not sqlite\n" * 100)
    with pytest.raises(StoreError, match="redline store"):
        open_key_store(str(p))


def test_key_store_rejects_urls_it_cannot_serve(tmp_path: Path) -> None:
    with pytest.raises(StoreError):
        open_key_store("clickhouse://localhost:9000/db")
    with pytest.raises(StoreError, match="does not exist"):
        open_key_store(str(tmp_path / "missing-folder" / "k.db"))
