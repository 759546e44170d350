"""Where the gateway keeps what it must remember: audit events and virtual API keys.

``open_audit_store("sqlite:///var/lib/redline/audit.db")`` (or a plain path) gives the embedded SQLite store;
``clickhouse://…`` gives the ClickHouse store once ``redline.store.clickhouse`` is installed.
"""

from __future__ import annotations

import importlib
import os
from typing import Any, cast

from redline.store.base import AuditEvent, AuditStore, GroupBy, KeyRecord, KeyStore, UsageRow
from redline.store.sqlite import SqliteAuditStore, SqliteKeyStore, StoreError


class StoreSecurityError(StoreError):
    """The store connection would be insecure (``default`` user without a password, plain text over a
    network); ``--allow-insecure-store`` overrides."""


__all__ = [
    "DEFAULT_KEYS",
    "DEFAULT_STORE",
    "AuditEvent",
    "AuditStore",
    "GroupBy",
    "KeyRecord",
    "KeyStore",
    "SqliteAuditStore",
    "SqliteKeyStore",
    "StoreError",
    "StoreSecurityError",
    "UsageRow",
    "check_audit_store",
    "open_audit_store",
    "open_key_store",
    "sqlite_path",
]

DEFAULT_STORE = "./redline-audit.db"
DEFAULT_KEYS = "./redline-keys.db"
STORE_ENV = "REDLINE_STORE"
INSECURE_ENV = "REDLINE_ALLOW_INSECURE_STORE"  # "1": same as --allow-insecure-store
KEYS_ENV = "REDLINE_KEYS"


def sqlite_path(url_or_path: str) -> str | None:
    """The file path of a ``sqlite://`` URL or plain path; None for other URL schemes."""
    s = str(url_or_path)
    low = s.lower()
    if low.startswith("sqlite:///"):  # sqlite:///relative.db, sqlite:////abs/path.db (SQLAlchemy style)
        return os.path.expanduser(s[len("sqlite:///"):])
    if low.startswith("sqlite://"):
        return os.path.expanduser(s[len("sqlite://"):])
    if "://" in s:
        return None
    return os.path.expanduser(s)


def allow_insecure_from_env() -> bool:
    return os.environ.get(INSECURE_ENV, "").strip().lower() in ("1", "true", "yes")


def check_audit_store(url_or_path: str | os.PathLike[str] | None = None, *, allow_insecure: bool = False) -> None:
    """Apply the secure-default checks to a store URL without connecting (for early, one-line CLI errors):
    raises :class:`StoreError` (``StoreSecurityError`` for an insecure ClickHouse connection)."""
    target = str(url_or_path or os.environ.get(STORE_ENV) or DEFAULT_STORE)
    if target.split("://", 1)[0].lower().startswith("clickhouse") and "://" in target:
        from redline.store.clickhouse import check_url

        check_url(target, allow_insecure=allow_insecure or allow_insecure_from_env())


def open_audit_store(url_or_path: str | os.PathLike[str] | None = None, *,
                     allow_insecure: bool = False) -> AuditStore:
    """Open (creating when needed) the audit store named by a URL or path; default ``$REDLINE_STORE`` or
    ``./redline-audit.db``. Raises :class:`StoreError` with a one-line message on bad input.

    ClickHouse connections are refused when insecure (``default`` user without a password, plain text to a
    host other than loopback) unless ``allow_insecure`` or ``$REDLINE_ALLOW_INSECURE_STORE=1``."""
    target = str(url_or_path or os.environ.get(STORE_ENV) or DEFAULT_STORE)
    path = sqlite_path(target)
    if path is not None:
        if not path:
            raise StoreError(f"no file path in {target!r}")
        return SqliteAuditStore(path)
    scheme = target.split("://", 1)[0].lower()
    if scheme.startswith("clickhouse"):
        try:
            mod = importlib.import_module("redline.store.clickhouse")
        except ModuleNotFoundError as exc:
            if exc.name and "redline.store.clickhouse".startswith(exc.name):
                raise StoreError("ClickHouse store not available yet in this installation "
                                 f"({target.split('@')[-1]}); use a SQLite path") from None
            raise StoreError(f"ClickHouse store needs a missing package: {exc.name}") from None
        # Contract for the ClickHouse module: ``open_store(url, allow_insecure=...) -> AuditStore``.
        return cast(AuditStore, mod.open_store(target, allow_insecure=allow_insecure or allow_insecure_from_env()))
    raise StoreError(f"unsupported audit store {target.split('@')[-1]!r}: use a file path, sqlite:///PATH "
                     "or clickhouse://…")


def open_key_store(path: str | os.PathLike[str] | None = None) -> KeyStore:
    """Open (creating when needed) the key store; default ``$REDLINE_KEYS`` or ``./redline-keys.db``."""
    target = str(path or os.environ.get(KEYS_ENV) or DEFAULT_KEYS)
    p = sqlite_path(target)
    if p is None:
        raise StoreError(f"the key store must be a SQLite file path, not {target.split('@')[-1]!r}")
    if not p:
        raise StoreError(f"no file path in {target!r}")
    store: Any = SqliteKeyStore(p)
    return cast(KeyStore, store)
