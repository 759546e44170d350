from __future__ import annotations

import random

import pytest

from redline.engine import Scanner
from redline.synth import fake_secret

KEY = b"redline-tests-fingerprint-key"


@pytest.fixture(scope="session")
def scanner() -> Scanner:
    return Scanner(fingerprint_key=KEY)


@pytest.fixture(scope="session")
def keys() -> dict[str, str]:
    rng = random.Random(7)
    types = ("openai-project-key", "github-pat", "aws-access-key-id", "anthropic-api-key")
    return {t: fake_secret(t, rng) for t in types}
