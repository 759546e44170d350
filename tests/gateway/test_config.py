"""Configuration errors name the bad key, so an operator can fix the file without reading code."""

from __future__ import annotations

from pathlib import Path

import pytest

from redline.cli import main
from redline.gateway.config import ConfigError, parse_config

BASE = {
    "providers": [{"name": "cloud", "base_url": "https://api.example.invalid/v1", "api_key_env": "K"}],
    "models": [{"name": "m", "provider": "cloud"}],
}


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"providers": [{"name": "cloud", "base_url": "ftp://x"}]}, "providers[0].base_url"),
        ({"models": [{"name": "m", "provider": "nowhere"}]}, "nowhere"),
        ({"policy": {"default": {"request": {"secret": "blok"}}}}, "policy.default.request.secret"),
        ({"policy": {"default": {"request": {"pii": {"reroute": "zz"}}}}}, "zz"),
        ({"limits": {"max_body_bytes": -1}}, "limits.max_body_bytes"),
        ({"unknown_section": {}}, "unknown_section"),
    ],
)
def test_bad_config_names_the_key(patch: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config({**BASE, **patch})
    assert message in str(exc.value)


def test_cli_check_reports_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "redline.yaml"
    cfg.write_text("providers:\n  - name: a\n    base_url: ftp://x\nmodels: []\n")
    with pytest.raises(SystemExit) as exc:
        main(["gateway", "--config", str(cfg), "--check"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "providers[0].base_url" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
