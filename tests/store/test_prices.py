from __future__ import annotations

from pathlib import Path

import pytest

from redline.gateway.prices import PriceError, cost_usd, load_prices


@pytest.mark.parametrize(("model", "entry"), [
    ("gpt-4o", "gpt-4o"),
    ("gpt-4o-2024-08-06", "gpt-4o"),
    ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
    ("gpt-4.1-mini-2025-04-14", "gpt-4.1-mini"),
    ("openai/gpt-4.1", "gpt-4.1"),
    ("o3-mini-2025-01-31", "o3-mini"),
    ("claude-3-5-sonnet-20241022", "claude-3-5-sonnet"),
    ("claude-3-5-haiku-latest", "claude-3-5-haiku"),
    ("anthropic.claude-3-5-haiku-20241022-v1:0", "claude-3-5-haiku"),
    ("claude-sonnet-4-20250514", "claude-sonnet-4"),
    ("deepseek-chat", "deepseek-chat"),
    ("deepseek-reasoner", "deepseek-reasoner"),
    ("text-embedding-3-small", "text-embedding-3-small"),
    ("text-embedding-3-large", "text-embedding-3-large"),
])
def test_shipped_table_matches(model: str, entry: str) -> None:
    price = load_prices().lookup(model)
    assert price is not None and price.model == entry


def test_cost() -> None:
    table = load_prices()
    assert table.as_of
    assert table.cost_usd("gpt-4o", 1_000_000, 1_000_000) == pytest.approx(12.5)
    assert table.cost_usd("gpt-4o-mini", 2000, 1000) == pytest.approx((2000 * 0.15 + 1000 * 0.60) / 1e6)
    # cached prompt tokens at the cached price
    assert table.cost_usd("deepseek-chat", 1_000_000, 0, cached_tokens=1_000_000) == pytest.approx(0.028)
    assert cost_usd("gpt-4o", 1000, 0) == pytest.approx(0.0025)


def test_unknown_model_costs_zero_and_is_flagged(caplog: pytest.LogCaptureFixture) -> None:
    table = load_prices()
    assert table.cost_usd("my-local-llama", 1000, 1000) == 0.0
    assert "my-local-llama" in table.unknown and not table.is_known("my-local-llama")
    assert "no price for model" in caplog.text
    assert not table.is_known("gpt-4oo")  # no boundary, no match


def test_override_file_merges(tmp_path: Path) -> None:
    f = tmp_path / "p.toml"
    f.write_text('as_of = "2030-01-01"\n[models.gpt-4o]\ninput = 1.0\noutput = 2.0\n'
                 '[models.my-llama]\ninput = 0.0\noutput = 0.0\n')
    table = load_prices(f)
    assert table.cost_usd("gpt-4o", 1_000_000, 0) == pytest.approx(1.0)
    assert table.is_known("my-llama") and table.is_known("gpt-4o-mini") and table.as_of == "2030-01-01"
    only = load_prices(f, builtin=False)
    assert not only.is_known("claude-3-5-haiku")


@pytest.mark.parametrize("text", [
    "[models.x]\ninput = 1.0\n",
    "[models.x]\ninput = -1\noutput = 1\n",
    "[models.x]\ninput = 'a'\noutput = 1\n",
    "[models.x]\ninput = 1\noutput = 1\nprice = 3\n",
    "models = 3\n",
    "not toml [",
])
def test_bad_price_files(tmp_path: Path, text: str) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(PriceError, match=r"bad\.toml"):
        load_prices(f)


def test_missing_price_file(tmp_path: Path) -> None:
    with pytest.raises(PriceError, match="cannot read"):
        load_prices(tmp_path / "nope.toml")
