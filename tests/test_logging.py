from __future__ import annotations

import io
import json
import logging
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

import redline.logging as rl
from redline.engine import Scanner
from redline.redact import Policy
from redline.synth import fake_secret

KEY = fake_secret("github-pat", random.Random(3))
KEY2 = fake_secret("openai-project-key", random.Random(4))


@pytest.fixture
def logger(tmp_path: Path) -> Iterator[tuple[logging.Logger, Path, io.StringIO]]:
    log = logging.getLogger(f"redline-test-{random.random()}")
    log.setLevel(logging.DEBUG)
    log.propagate = False
    path = tmp_path / "app.log"
    fh = logging.FileHandler(path, encoding="utf-8")
    fh.setFormatter(logging.Formatter("%(levelname)s %(message)s %(user)s"))
    stream = io.StringIO()
    sh = logging.StreamHandler(stream)
    sh.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(fh)
    log.addHandler(sh)
    yield log, path, stream
    for h in list(log.handlers):
        h.close()
        log.removeHandler(h)


def test_filter_redacts_message_args_extra_and_exception(logger: tuple[logging.Logger, Path, io.StringIO]) -> None:
    log, path, stream = logger
    rl.install(log)
    log.info("deploy with token %s", KEY, extra={"user": {"name": "ann", "token": KEY2}})
    try:
        raise RuntimeError(f"upstream rejected {KEY2}")
    except RuntimeError:
        log.exception("call failed", extra={"user": "bob"})
    log.info("nothing to see", extra={"user": "carol"})
    written = path.read_text(encoding="utf-8")
    both = written + stream.getvalue()
    assert KEY not in both and KEY2 not in both
    assert "deploy with token [REDACTED:github-pat]" in written
    assert "[REDACTED:openai-project-key]" in written
    assert "RuntimeError: upstream rejected [REDACTED:openai-project-key]" in written
    assert "Traceback" in written and "nothing to see carol" in written
    assert stream.getvalue().count("\n") >= 3


def test_fail_closed(logger: tuple[logging.Logger, Path, io.StringIO]) -> None:
    log, path, _ = logger
    class Broken(Scanner):
        def scan_text(self, text: str) -> list:  # type: ignore[override, type-arg]
            raise ValueError(text)
    for h in log.handlers:
        h.addFilter(rl.RedactingFilter(scanner=Broken()))
    log.warning("key %s", KEY, extra={"user": KEY})
    written = path.read_text(encoding="utf-8")
    assert KEY not in written
    assert "record withheld, redaction failed: ValueError" in written


def test_drop_policy_drops_the_record(logger: tuple[logging.Logger, Path, io.StringIO]) -> None:
    log, path, _ = logger
    rl.install(log, policy=Policy.from_dict({"kinds": {"secret": "drop"}}))
    log.info("a", extra={"user": "u"})
    log.info("b %s", KEY, extra={"user": "u"})
    log.info("c", extra={"user": "u"})
    assert path.read_text(encoding="utf-8") == "INFO a u\nINFO c u\n"


def test_install_needs_handlers() -> None:
    with pytest.raises(ValueError, match="no handlers"):
        rl.install(logging.getLogger("redline-test-empty"))


def test_structlog_pipeline(tmp_path: Path) -> None:
    path = tmp_path / "s.log"
    with path.open("w", encoding="utf-8") as fh:
        structlog.configure(
            processors=[structlog.processors.add_log_level, rl.RedactingProcessor(),
                        structlog.processors.JSONRenderer()],
            logger_factory=structlog.WriteLoggerFactory(file=fh),
            cache_logger_on_first_use=False,
        )
        try:
            log = structlog.get_logger()
            log.info("login", token=KEY, nested={"k": [KEY2, 5]}, n=3)
            try:
                raise KeyError(KEY)
            except KeyError:
                log.error("failed", exc_info=True)
            log.info("plain", n=1)
        finally:
            structlog.reset_defaults()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3
    recs = [json.loads(x) for x in lines]
    assert KEY not in "".join(lines) and KEY2 not in "".join(lines)
    assert recs[0]["token"] == "[REDACTED:github-pat]" and recs[0]["nested"]["k"][1] == 5
    assert "KeyError" in recs[1]["exception"] and "[REDACTED:github-pat]" in recs[1]["exception"]
    assert recs[2] == {"event": "plain", "n": 1, "level": "info"}


def test_structlog_drop(tmp_path: Path) -> None:
    out = io.StringIO()
    structlog.configure(processors=[rl.RedactingProcessor(Policy.from_dict({"kinds": {"secret": "drop"}})),
                                    structlog.processors.JSONRenderer()],
                        logger_factory=structlog.PrintLoggerFactory(file=out), cache_logger_on_first_use=False)
    try:
        structlog.get_logger().info("x", token=KEY)
        structlog.get_logger().info("y")
    finally:
        structlog.reset_defaults()
    assert out.getvalue() == '{"event": "y"}\n'
