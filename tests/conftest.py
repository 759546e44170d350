from __future__ import annotations

import pytest

from redline.engine import Scanner, builtin_rules
from redline.engine.matcher import hyperscan_available

# Throwaway ClickHouse / PostgreSQL / Redis servers (session-scoped fixtures).
pytest_plugins = ["tests.servers"]

BACKENDS = ["re", *(["hyperscan"] if hyperscan_available() else [])]
KEY = b"redline-tests-fingerprint-key"


@pytest.fixture(scope="session")
def all_rules():  # type: ignore[no-untyped-def]
    return builtin_rules()


@pytest.fixture(scope="session")
def scanners(all_rules):  # type: ignore[no-untyped-def]
    """One scanner per backend with every built-in rule on (including those off by default)."""
    enable = {r.id for r in all_rules if not r.enabled}
    return {b: Scanner(all_rules, enabled=enable, backend=b, fingerprint_key=KEY) for b in BACKENDS}
