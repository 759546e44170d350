"""Audit store backends the shared contract suite (``test_audit_store_contract.py``) runs against.

Another backend joins by adding a factory here: a callable taking pytest's ``tmp_path`` and returning an
open, empty store; it may call ``pytest.skip`` when its server is not reachable. For example::

    def _clickhouse(tmp_path):
        url = os.environ.get("REDLINE_TEST_CLICKHOUSE") or pytest.skip("set REDLINE_TEST_CLICKHOUSE")
        from redline.store.clickhouse import open_store
        return open_store(url + f"?table=audit_{uuid.uuid4().hex[:8]}")

    AUDIT_STORE_FACTORIES["clickhouse"] = _clickhouse
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from redline.store import open_audit_store
from redline.store.base import AuditStore


def _sqlite(tmp_path: Path) -> AuditStore:
    return open_audit_store(str(tmp_path / "audit.db"))


def _sqlite_url(tmp_path: Path) -> AuditStore:
    return open_audit_store(f"sqlite:///{tmp_path / 'audit-url.db'}")


AUDIT_STORE_FACTORIES: dict[str, Callable[[Path], AuditStore]] = {
    "sqlite": _sqlite,
    "sqlite-url": _sqlite_url,
}
