"""The only ClickHouse queries the probe may send: a structural allow-list.

A query is allowed when it is one ``SELECT`` or ``SHOW`` statement whose every function call is in
``ALLOWED_FUNCTIONS``. String literals and quoted identifiers are removed before the check, so a table named
``file`` is fine while ``file(...)``, ``url(...)``, ``remote(...)``, ``s3(...)`` and every other function or table
function (which could touch the server's files or network) is refused, as are ``INTO OUTFILE``, ``SETTINGS``,
several statements and comments. Everything the probe and ``--inspect`` send to ClickHouse (HTTP and native)
passes through :func:`check`.
"""

from __future__ import annotations

import re
from typing import Any

ALLOWED_FUNCTIONS = frozenset({"version", "count"})
# Words that may precede "(" without being a function call.
_KEYWORDS = frozenset({"in", "and", "or", "not", "from", "where", "select", "as", "on", "by", "limit", "sample",
                       "having", "exists", "distinct", "all", "any", "union", "when", "then", "else", "case",
                       "using", "values", "is", "like", "ilike", "between"})
_FORBIDDEN_WORDS = ("outfile", "settings", "insert", "alter", "drop", "create", "truncate", "rename", "attach",
                    "detach", "optimize", "kill", "system", "grant", "revoke", "set", "use", "format")
_LITERAL = re.compile(r"'(?:[^'\\]|\\.)*'|`(?:[^`\\]|\\.)*`|\"(?:[^\"\\]|\\.)*\"", re.DOTALL)


class QueryRefused(ValueError):
    """A query outside the probe's allow-list (a bug in redline, never sent)."""


def _strip(query: str) -> str:
    return _LITERAL.sub(" ", query)


def check(query: str, *, allow_format: bool = False) -> str:
    """Return ``query`` when it is allowed, else raise :class:`QueryRefused`."""
    bare = _strip(query)
    if any(c in bare for c in ";'`\"") or "--" in bare or "/*" in bare or "#" in bare:
        raise QueryRefused(f"refused (several statements, comments or unbalanced quotes): {query[:80]!r}")
    words = re.findall(r"[A-Za-z_][A-Za-z0-9_]*", bare)
    if not words or words[0].lower() not in ("select", "show"):
        raise QueryRefused(f"refused (only SELECT and SHOW): {query[:80]!r}")
    # system.tables is fine: "system" as a qualifier, not the SYSTEM statement.
    dotted = {m.group(1).lower() for m in re.finditer(r"\b([A-Za-z_]\w*)\s*\.", bare)}
    for w in words[1:]:
        lw = w.lower()
        if lw in _FORBIDDEN_WORDS and not (lw == "system" and lw in dotted):
            if lw == "format" and allow_format:
                continue
            raise QueryRefused(f"refused ({w.upper()}): {query[:80]!r}")
    for m in re.finditer(r"([A-Za-z_][A-Za-z0-9_]*)\s*\(", bare):
        name = m.group(1).lower()
        if name in _KEYWORDS:
            continue
        if name not in ALLOWED_FUNCTIONS:
            raise QueryRefused(f"refused (function {m.group(1)}() is not allowed): {query[:80]!r}")
    if allow_format and re.search(r"(?i)\bformat\b", bare) and not re.search(r"(?i)\bformat\s+\w+\s*$", bare):
        raise QueryRefused(f"refused (FORMAT must end the query): {query[:80]!r}")
    return query


def quote_ident(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


class GuardedClient:
    """Wraps a ``clickhouse_driver.Client``: every query is checked before it is sent; no other method exists."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def execute(self, query: str, params: Any = None, **kwargs: Any) -> Any:
        return self._client.execute(check(query), params, **kwargs)

    def execute_iter(self, query: str, params: Any = None, **kwargs: Any) -> Any:
        return self._client.execute_iter(check(query), params, **kwargs)

    def disconnect(self) -> None:
        self._client.disconnect()
