"""What a report says about each record: severity, where it is, and how to fix it.

Records come from three front ends and share ``kind``/``type``/``confidence``/``fingerprint``/``snippet``:

* files: ``path``, ``line``, ``column`` (plus ``start``/``end``)
* databases: ``table``, ``column``, ``row``
* probes: ``host``, ``port``, ``service``, ``verdict``

Severity (documented in docs/reports.md) is derived from the kind and the confidence, because the same confidence
means different harm: a likely live API key is worse than a likely e-mail address.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from redline.engine import Rule

SEVERITIES = ("critical", "high", "medium", "low", "info")
SEVERITY_RANK = {s: len(SEVERITIES) - i for i, s in enumerate(SEVERITIES)}  # critical=5 … info=1

# kind -> confidence -> severity
_SEVERITY: dict[str, dict[str, str]] = {
    "secret": {"high": "critical", "medium": "high", "low": "medium"},
    "chat": {"high": "high", "medium": "medium", "low": "low"},
    "pii": {"high": "high", "medium": "medium", "low": "low"},
}
_DEFAULT_SEVERITY = {"high": "medium", "medium": "low", "low": "info"}
# Probe verdicts: an exposed service that answers without authentication is the worst case.
_PROBE_SEVERITY = {
    "open": "high", "exposed": "critical", "unauthenticated": "critical", "no-auth": "critical",
    "weak-auth": "high", "default-credentials": "critical", "auth": "low", "auth-required": "low",
    "protected": "info", "closed": "info", "filtered": "info", "unknown": "low", "error": "info",
    "restricted": "low", "not-that-service": "info", "timeout": "info",
}

KIND_FIXES: dict[str, str] = {
    "secret": "Rotate the credential at its provider (revoke the old one, issue a new one), then purge it from the "
              "logs, files, tables and backups where it was found: a revoked key in a log still tells attackers "
              "where keys leak.",
    "pii": "Purge or minimise the personal data at the source (delete, mask or pseudonymise, e.g. with "
           "redline redact), shorten retention, and check whether the exposure must be reported.",
    "chat": "Stop logging prompt and response bodies (log metadata only, or log through redline redact), then purge "
            "the stored transcripts and their backups.",
    "probe": "Close the port to the internet (firewall, bind to localhost or a private network) or put "
             "authentication in front of the service.",
}
# Said after a rule's own fix, so a rule-specific "revoke at the provider" also reminds people to purge.
KIND_FOLLOW_UP: dict[str, str] = {
    "secret": "Then purge it from the logs, files and backups where it was found.",
    "pii": "Purge or mask the stored copies and shorten retention.",
    "chat": "Purge the stored transcripts and their backups.",
}

_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][\w+.-]*://[^/:@\s]*:)[^@/\s]*@")


def safe_text(text: str) -> str:
    """Hide a password inside a URL (``scheme://user:***@host``)."""
    return _URL_PASSWORD.sub(r"\g<head>***@", text)


def is_probe(rec: Mapping[str, Any]) -> bool:
    """A ``redline probe`` result (host/port/service/verdict/severity/evidence/fix), not a finding in data."""
    return "host" in rec and "path" not in rec and "table" not in rec


def kind_of(rec: Mapping[str, Any]) -> str:
    kind = rec.get("kind")
    if isinstance(kind, str) and kind:
        return kind
    return "probe" if is_probe(rec) else "unknown"


def type_of(rec: Mapping[str, Any]) -> str:
    for key in ("type", "service"):
        value = rec.get(key)
        if isinstance(value, str) and value:
            return value
    return "unknown-service" if is_probe(rec) else "unknown"


def severity(rec: Mapping[str, Any]) -> str:
    """critical/high/medium/low/info from the kind and the confidence (or a probe's verdict)."""
    if is_probe(rec) or kind_of(rec) == "probe":
        own = rec.get("severity")  # the probe grades its own results (open ClickHouse: high, ...)
        if own in SEVERITIES:
            return str(own)
        if own == "none":
            return "info"
        verdict = rec.get("verdict")
        return _PROBE_SEVERITY.get(verdict.lower(), "medium") if isinstance(verdict, str) else "medium"
    conf = str(rec.get("confidence", "medium"))
    return _SEVERITY.get(kind_of(rec), _DEFAULT_SEVERITY).get(conf, "medium")


def source_of(rec: Mapping[str, Any]) -> str:
    """The file, table or endpoint a record belongs to (findings are grouped by it)."""
    if "path" in rec:
        return safe_text(str(rec["path"]))
    if "table" in rec:
        return str(rec["table"])
    if "host" in rec:
        if isinstance(rec.get("endpoint"), str) and rec["endpoint"]:
            return str(rec["endpoint"])
        port = rec.get("port")
        return f"{rec['host']}:{port}" if port not in (None, "") else str(rec["host"])
    return "?"


def location_of(rec: Mapping[str, Any]) -> str:
    """Where inside the source: ``line:column``, ``column#row`` or the service."""
    if "path" in rec:
        line, col = rec.get("line"), rec.get("column")
        return f"{line}:{col}" if col is not None else str(line if line is not None else "")
    if "table" in rec:
        text = str(rec.get("column", ""))
        return text + (f" #{rec['row']}" if rec.get("row") not in (None, "") else "")
    if "host" in rec:
        return " ".join(str(rec[k]) for k in ("service", "verdict") if rec.get(k))
    return ""


def source_type(rec: Mapping[str, Any]) -> str:
    if "path" in rec:
        return "file"
    if "table" in rec:
        return "table"
    if "host" in rec:
        return "endpoint"
    return "other"


@dataclass(frozen=True)
class Fix:
    type: str
    kind: str
    name: str
    text: str
    follow_up: str
    references: tuple[str, ...] = ()


def fix_for(type_: str, kind: str, rules: Mapping[str, Rule], rec: Mapping[str, Any] | None = None) -> Fix:
    """The remediation for one finding type: the rule's own ``fix``, else the default for its kind."""
    own = rec.get("fix") if rec is not None and kind == "probe" else None
    if isinstance(own, str) and own:  # the probe's per-service fix (requirepass for Redis, pg_hba for PostgreSQL)
        return Fix(type_, kind, type_, own, "")
    rule = rules.get(type_)
    if rule is not None and rule.fix:
        return Fix(type_, kind, rule.name, rule.fix, KIND_FOLLOW_UP.get(kind, ""), rule.references)
    name = rule.name if rule is not None else type_.replace("-", " ")
    if kind == "probe" and rec is not None and severity(rec) in ("info", "low"):
        return Fix(type_, kind, name, "Nothing to close: the service is not reachable without authentication. "
                   "Keep it that way and keep it off the public internet.", "")
    text = KIND_FIXES.get(kind, "Review the finding and remove the data from where it was found.")
    if type_ == "column-name-hint":
        name = "column name hint"
        text = ("The column name suggests sensitive data: check what it holds; if it is real, encrypt, hash or "
                "drop it and purge old copies.")
    return Fix(type_, kind, name, text, "")


def rule_index(rules: Iterable[Rule]) -> dict[str, Rule]:
    return {r.id: r for r in rules}
