"""redline's detection engine: rules as data, Hyperscan prefilter, exact extraction with ``re``."""

from redline.engine.finding import Confidence, Finding, Fingerprinter, Kind, redacted_snippet
from redline.engine.rules import Rule, RuleError, builtin_rules, load_rule_paths
from redline.engine.scanner import (
    Scanner,
    default_scanner,
    iter_chunks,
    iter_text_chunks,
    scan_bytes,
    scan_stream,
    scan_text,
)
from redline.engine.textview import Chunk

__all__ = [
    "Chunk",
    "Confidence",
    "Finding",
    "Fingerprinter",
    "Kind",
    "Rule",
    "RuleError",
    "Scanner",
    "builtin_rules",
    "default_scanner",
    "iter_chunks",
    "iter_text_chunks",
    "load_rule_paths",
    "redacted_snippet",
    "scan_bytes",
    "scan_stream",
    "scan_text",
]
