"""Redaction: apply a policy to the engine's findings (mask, partial, hash, pseudonym, drop, chat summary).

The public API::

    from redline.engine import Scanner
    from redline.redact import Policy, Vault, redact_text

    findings = Scanner().scan_text(text)
    result = redact_text(text, findings, Policy.default(), vault=Vault())
    result.text, result.replacements, result.dropped
"""

from redline.redact.operators import Redactor, RedactResult, Replacement, chat_summary, redact_text
from redline.redact.policy import OPERATORS, Operator, Policy, PolicyError, Rule
from redline.redact.stream import RedactStats, StreamRedactor, redact_string
from redline.redact.vault import PLACEHOLDER, StreamRestorer, Vault

__all__ = [
    "OPERATORS",
    "PLACEHOLDER",
    "Operator",
    "Policy",
    "PolicyError",
    "RedactResult",
    "RedactStats",
    "Redactor",
    "Replacement",
    "Rule",
    "StreamRedactor",
    "StreamRestorer",
    "Vault",
    "chat_summary",
    "redact_string",
    "redact_text",
]
