"""Look-alikes that people see in every log must not produce secret or personal-data findings."""

from __future__ import annotations

import base64
import random

import pytest

from redline.engine import Scanner

RNG = random.Random(7)
PNG = base64.b64encode(bytes(RNG.randrange(256) for _ in range(600))).decode()

LOOKALIKES = [
    "aws_access_key_id = AKIAIOSFODNN7EXAMPLE",
    "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "OPENAI_API_KEY=sk-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    "api_key: <YOUR_API_KEY>",
    "token = ${GITHUB_TOKEN}",
    "password=********",
    "password: {{ vault_db_password }}",
    "trace_id=4bf92f3577b34da6a3ce929d0e0e4736 span_id=00f067aa0ba902b7",
    "request_id=3f1c2a9e-8b7d-4c6e-9f0a-1b2c3d4e5f60",
    "commit 9fceb02d0ae598e95dc970b74767f19372d61af8",
    "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    f'<img src="data:image/png;base64,{PNG}">',
    "ts=1736121681 ts_ms=1736121681123",
    "version=1.2.3.4 build=20250106.1 python 3.11.7",
    "order 4111111111111112 shipped",
    "pip install requests==2.32.3 urllib3@2.2.1",
    "icon@2x.png",
]


@pytest.mark.parametrize("line", LOOKALIKES)
def test_lookalike_is_quiet(scanners: dict[str, Scanner], line: str) -> None:
    for backend, scanner in scanners.items():
        hits = [f for f in scanner.scan_text(line) if f.kind in ("secret", "pii") and f.type not in ("ipv4", "ipv6")]
        assert not hits, f"{backend}: {[(f.type, line[f.start:f.end]) for f in hits]}"
