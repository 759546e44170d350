"""Audit store backends the shared contract suite (``test_audit_store_contract.py``) runs against.

Another backend joins by adding a factory here: a callable taking pytest's ``tmp_path`` and the fixture
``request`` (to ask for a server fixture) and returning an open, empty store. A factory may call
``pytest.skip`` when its server is not available.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from redline.store import open_audit_store
from redline.store.base import AuditStore


def _sqlite(tmp_path: Path, request: pytest.FixtureRequest) -> AuditStore:
    return open_audit_store(str(tmp_path / "audit.db"))


def _sqlite_url(tmp_path: Path, request: pytest.FixtureRequest) -> AuditStore:
    return open_audit_store(f"sqlite:///{tmp_path / 'audit-url.db'}")


def _clickhouse(tmp_path: Path, request: pytest.FixtureRequest) -> AuditStore:
    # A real ClickHouse (Debian's clickhouse-server) on loopback, random port, throwaway data directory, user
    # ``redline`` with a password; one table per test.
    server = request.getfixturevalue("clickhouse_server")
    return open_audit_store(server.url() + f"?table=audit_{uuid.uuid4().hex[:12]}")


AUDIT_STORE_FACTORIES: dict[str, Callable[[Path, pytest.FixtureRequest], AuditStore]] = {
    "sqlite": _sqlite,
    "sqlite-url": _sqlite_url,
    "clickhouse": _clickhouse,
}
