"""Log hygiene: redact records before any handler sees them (standard ``logging`` and ``structlog``).

Three lines::

    import logging, redline.logging
    logging.basicConfig(filename="app.log", level=logging.INFO)
    redline.logging.install()   # every handler of the root logger now redacts

Fail closed: if detection or redaction raises, the record is replaced by a marker naming the error.
"""

from __future__ import annotations

import logging as _logging
import sys
import weakref
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

from redline.engine import Scanner
from redline.engine.finding import Finding
from redline.redact.operators import Redactor
from redline.redact.policy import Policy
from redline.redact.vault import Vault

__all__ = ["RedactingFilter", "RedactingProcessor", "install"]

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = frozenset(vars(_logging.LogRecord("", 0, "", 0, "", (), None)).keys()) | {"message", "asctime"}
_MAX_DEPTH = 6


def failure_marker(exc: BaseException) -> str:
    """What replaces a record that could not be redacted: the error's type, never its message (which may hold
    the very text that was being redacted)."""
    return f"[REDLINE: record withheld, redaction failed: {type(exc).__name__}]"


class _Core:
    """Detection plus redaction of strings and nested containers, shared by both integrations."""

    def __init__(self, policy: Policy | None, scanner: Scanner | None) -> None:
        self.policy = policy or Policy.default()
        if scanner is None:
            rules_scanner = Scanner()
            needed = self.policy.kinds_needed({r.id: r.kind for r in rules_scanner.all_rules})
            scanner = Scanner(kinds=sorted(needed)) if needed else rules_scanner
        self.scanner = scanner
        self.redactor = Redactor(self.policy)
        # Pseudonyms are stable for the life of the process (one scope), so log lines about the same
        # person correlate. The vault keeps values in memory only.
        self.vault = Vault()

    def text(self, value: str) -> tuple[str, bool]:
        """(redacted text, dropped)."""
        findings: list[Finding] = self.scanner.scan_text(value)
        if not findings:
            return value, False
        res = self.redactor.redact(value, findings, vault=self.vault)
        return res.text, res.dropped

    def value(self, value: Any, depth: int = 0) -> tuple[Any, bool]:
        """Redact strings inside ``value`` (str, bytes, numbers, lists, tuples, dicts); others by their str()."""
        if isinstance(value, str):
            return self.text(value)
        if value is None or isinstance(value, bool | float):
            return value, False
        if isinstance(value, int):
            s = str(value)
            if len(s) < 9:
                return value, False
            red, dropped = self.text(s)
            return (value if red == s else red), dropped
        if depth >= _MAX_DEPTH:
            return self.text(repr(value))
        if isinstance(value, bytes | bytearray):
            s = bytes(value).decode("utf-8", "replace")
            red, dropped = self.text(s)
            return (value if red == s else red), dropped
        if isinstance(value, Mapping):
            out: dict[Any, Any] = {}
            changed = False
            drop = False
            for k, v in value.items():
                nv, d = self.value(v, depth + 1)
                drop |= d
                changed |= nv is not v
                out[k] = nv
            return (out if changed else value), drop
        if isinstance(value, list | tuple | set | frozenset):
            items = []
            changed = False
            drop = False
            for v in value:
                nv, d = self.value(v, depth + 1)
                drop |= d
                changed |= nv is not v
                items.append(nv)
            if not changed:
                return value, drop
            return (tuple(items) if isinstance(value, tuple) else items), drop
        s = str(value)
        red, dropped = self.text(s)
        return (value if red == s else red), dropped


class RedactingFilter(_logging.Filter):
    """A ``logging.Filter`` that redacts the formatted message, ``args``, ``extra`` fields, exception and stack
    text of each record in place. Attach it to handlers (``handler.addFilter``): logger filters do not see
    records propagated from child loggers. ``drop`` in the policy drops the whole record.
    """

    def __init__(self, policy: Policy | None = None, *, scanner: Scanner | None = None, name: str = "") -> None:
        super().__init__(name)
        self._core = _Core(policy, scanner)
        self._done: weakref.WeakSet[_logging.LogRecord] = weakref.WeakSet()
        self._formatter = _logging.Formatter()

    def filter(self, record: _logging.LogRecord) -> bool:
        if record in self._done:  # the same filter on several handlers: redact once
            return True
        try:
            keep = self._redact(record)
        except Exception as exc:  # fail closed
            self._withhold(record, exc)
            keep = True
        self._done.add(record)
        return keep

    def _redact(self, record: _logging.LogRecord) -> bool:
        core = self._core
        message = record.getMessage()
        red, drop = core.text(message)
        if drop:
            return False
        if red is not message or record.args:
            # The message is stored formatted: raw args must not reach a handler that re-reads them.
            record.msg = red
            record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            red_exc, drop = core.text(record.exc_text)
            if drop:
                return False
            if red_exc != record.exc_text:
                record.exc_text = red_exc
                record.exc_info = None  # handlers reading the exception object would see raw text
        if record.stack_info:
            red_stack, drop = core.text(record.stack_info)
            if drop:
                return False
            record.stack_info = red_stack
        attrs = record.__dict__
        for key in [k for k in attrs if k not in _STANDARD]:
            value = attrs[key]
            nv, drop = core.value(value)
            if drop:
                return False
            if nv is not value:
                attrs[key] = nv
        return True

    @staticmethod
    def _withhold(record: _logging.LogRecord, exc: BaseException) -> None:
        record.msg = failure_marker(exc)
        record.args = None
        record.exc_info = None
        record.exc_text = None
        record.stack_info = None
        for key in [k for k in record.__dict__ if k not in _STANDARD]:
            record.__dict__[key] = "[REDLINE: withheld]"


def install(logger: _logging.Logger | str | None = None, *, policy: Policy | None = None,
            scanner: Scanner | None = None) -> RedactingFilter:
    """Add one :class:`RedactingFilter` to every handler of ``logger`` (the root logger by default)."""
    target = logger if isinstance(logger, _logging.Logger) else _logging.getLogger(logger)
    flt = RedactingFilter(policy, scanner=scanner)
    if not target.handlers:
        raise ValueError(f"logger {target.name!r} has no handlers yet: configure logging first, then install()")
    for h in target.handlers:
        h.addFilter(flt)
    return flt


class RedactingProcessor:
    """A structlog processor: redacts every value of the event dict (nested too) and the exception.

    Put it last before the renderer (after ``format_exc_info`` if you use it; with ``exc_info`` still in the
    event it renders and redacts the exception itself). ``drop`` in the policy raises ``DropEvent``.
    """

    def __init__(self, policy: Policy | None = None, *, scanner: Scanner | None = None) -> None:
        self._core = _Core(policy, scanner)
        self._formatter = _logging.Formatter()

    def __call__(self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> Any:
        try:
            out, drop = self._redact(event_dict)
        except Exception as exc:  # fail closed
            return {"event": failure_marker(exc), **({"level": event_dict["level"]} if isinstance(
                event_dict.get("level"), str) else {})}
        if drop:
            import structlog

            raise structlog.DropEvent
        return out

    def _redact(self, event_dict: MutableMapping[str, Any]) -> tuple[MutableMapping[str, Any], bool]:
        exc_info = event_dict.pop("exc_info", None)
        if exc_info:
            if exc_info is True:
                exc_info = sys.exc_info()
            elif isinstance(exc_info, BaseException):
                exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
            if isinstance(exc_info, tuple) and exc_info[0] is not None:
                event_dict["exception"] = self._formatter.formatException(exc_info)
        for key in list(event_dict):
            value = event_dict[key]
            nv, drop = self._core.value(value)
            if drop:
                return event_dict, True
            if nv is not value:
                event_dict[key] = nv
        return event_dict, False


def processor(policy: Policy | None = None) -> Callable[[Any, str, MutableMapping[str, Any]], Any]:
    """Shorthand for ``RedactingProcessor(policy)``."""
    return RedactingProcessor(policy)
