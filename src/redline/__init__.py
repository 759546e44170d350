"""redline keeps secrets and personal data from leaking through AI.

>>> from redline import scan_text
>>> [f.type for f in scan_text("token ghp_...")]  # doctest: +SKIP
"""

from redline.engine import Finding, Rule, RuleError, Scanner, scan_bytes, scan_stream, scan_text

__version__ = "0.1.0"
__all__ = ["Finding", "Rule", "RuleError", "Scanner", "__version__", "scan_bytes", "scan_stream", "scan_text"]
