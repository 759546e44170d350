from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from redline.store.base import AuditEvent, AuditStore

from .factories import AUDIT_STORE_FACTORIES

T0 = datetime(2025, 3, 10, 12, 0, 0, tzinfo=UTC)


@pytest.fixture(params=sorted(AUDIT_STORE_FACTORIES))
def audit_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AuditStore]:
    store = AUDIT_STORE_FACTORIES[request.param](tmp_path, request)
    try:
        yield store
    finally:
        store.close()


def event(i: int = 0, *, ts: datetime | None = None, **kw: Any) -> AuditEvent:
    base: dict[str, Any] = {
        "ts": ts or T0 + timedelta(seconds=i), "request_id": f"req-{i}", "key_id": "rk_aaaaaaaaaaaa",
        "team": "research", "user": "alice", "provider": "openai", "model": "gpt-4o",
        "endpoint": "chat.completions", "action": "allow", "status": 200,
    }
    base.update(kw)
    return AuditEvent(**base)
