"""The gateway's own log lines pass through redline's redacting filter."""

from __future__ import annotations

import logging
import random

import pytest

from redline import synth
from redline.gateway.app import _redacted_logs


def test_gateway_log_lines_are_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    key = synth.fake_secret("github-pat", random.Random(3))
    logger = logging.getLogger("redline")
    before = list(logger.handlers)
    try:
        _redacted_logs()
        _redacted_logs()  # idempotent: one handler
        assert len(logger.handlers) == len(before) + 1
        try:
            raise ValueError(f"cannot parse body near {key!r}")
        except ValueError:
            logging.getLogger("redline.gateway.app").exception("request r-1 failed inside the gateway")
        err = capsys.readouterr().err
        assert "request r-1 failed" in err and "ValueError" in err
        assert key not in err and "[REDACTED:github-pat]" in err
    finally:
        for h in logger.handlers[len(before):]:
            logger.removeHandler(h)
        logger.propagate = True
