"""Token prices: the shipped table (``redline/data/prices.toml``), optionally overlaid by an operator's file.

    prices = load_prices()                       # shipped table
    prices = load_prices("my-prices.toml")       # shipped table, with my-prices.toml merged over it
    usd = prices.cost_usd("gpt-4o-2024-08-06", prompt_tokens=1200, completion_tokens=300)

Unknown models cost 0: ``prices.lookup(model)`` returns None for them, ``prices.unknown`` collects their
names (for a metric), and each is logged once.
"""

from __future__ import annotations

import logging
import os
import threading
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

log = logging.getLogger("redline.prices")

PER = 1_000_000
_BOUNDARY = "-:@."


class PriceError(ValueError):
    """A price file that cannot be read or has a bad entry (message names the file and the model)."""


@dataclass(frozen=True)
class Price:
    model: str  # the table entry that matched
    input: float  # USD per 1M prompt tokens
    output: float  # USD per 1M completion tokens
    cached_input: float | None = None  # USD per 1M cached prompt tokens (None: same as input)

    def cost(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> float:
        cached = max(0, min(cached_tokens, prompt_tokens))
        cached_rate = self.input if self.cached_input is None else self.cached_input
        return ((prompt_tokens - cached) * self.input + cached * cached_rate
                + completion_tokens * self.output) / PER


def _strip_provider(model: str) -> str:
    """``openai/gpt-4o`` -> ``gpt-4o``; ``anthropic.claude-3-5-haiku-20241022-v1:0`` -> ``claude-3-5-haiku…``."""
    m = model.strip().lower()
    if "/" in m:
        m = m.rsplit("/", 1)[1]
    for prefix in ("anthropic.", "openai.", "deepseek."):
        if m.startswith(prefix):
            m = m[len(prefix):]
    return m


class PriceTable:
    def __init__(self, prices: dict[str, Price], *, as_of: str | None = None, sources: list[str] | None = None):
        self.prices = {k.lower(): v for k, v in prices.items()}
        self.as_of = as_of
        self.sources = sources or []
        # Longest names first, so "gpt-4o-mini" wins over "gpt-4o".
        self._ordered = sorted(self.prices, key=len, reverse=True)
        self._cache: dict[str, Price | None] = {}
        self._lock = threading.Lock()
        self.unknown: set[str] = set()

    def lookup(self, model: str) -> Price | None:
        hit = self._cache.get(model, False)
        if hit is not False:
            return hit  # type: ignore[return-value]
        name = _strip_provider(model)
        found: Price | None = self.prices.get(name)
        if found is None:
            for entry in self._ordered:
                if name.startswith(entry) and name[len(entry)] in _BOUNDARY:
                    found = self.prices[entry]
                    break
        with self._lock:
            if len(self._cache) < 10_000:  # model names come from clients: bound the cache
                self._cache[model] = found
            if found is None and model not in self.unknown and len(self.unknown) < 1000:
                self.unknown.add(model)
                log.warning("no price for model %r: its cost is counted as 0 (add it to the price table)",
                            model[:100])
        return found

    def cost_usd(self, model: str, prompt_tokens: int, completion_tokens: int, *, cached_tokens: int = 0) -> float:
        """USD for one request; 0.0 for an unknown model (which is then listed in :attr:`unknown`)."""
        price = self.lookup(model)
        return 0.0 if price is None else price.cost(prompt_tokens, completion_tokens, cached_tokens)

    def is_known(self, model: str) -> bool:
        return self.lookup(model) is not None


def _parse(data: dict[str, Any], source: str) -> tuple[dict[str, Price], str | None]:
    models = data.get("models", {})
    if not isinstance(models, dict):
        raise PriceError(f"{source}: [models] must be a table of model names")
    out: dict[str, Price] = {}
    for name, entry in models.items():
        if not isinstance(entry, dict):
            raise PriceError(f"{source}: models.{name} must be a table with input and output")
        unknown = set(entry) - {"input", "output", "cached_input"}
        if unknown:
            raise PriceError(f"{source}: models.{name}: unknown field(s) {', '.join(sorted(unknown))}")
        vals: dict[str, float | None] = {}
        for f in ("input", "output", "cached_input"):
            v = entry.get(f)
            if v is None:
                if f != "cached_input":
                    raise PriceError(f"{source}: models.{name}: missing {f} (USD per 1M tokens)")
                vals[f] = None
                continue
            if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
                raise PriceError(f"{source}: models.{name}.{f} must be a number >= 0 (USD per 1M tokens)")
            vals[f] = float(v)
        inp, outp = vals["input"], vals["output"]
        assert inp is not None and outp is not None
        out[name.lower()] = Price(name.lower(), inp, outp, vals["cached_input"])
    as_of = data.get("as_of")
    return out, str(as_of) if as_of is not None else None


def _read(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise PriceError(f"cannot read price table {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise PriceError(f"{path}: not valid TOML: {exc}") from None


def load_prices(*overrides: str | os.PathLike[str] | None, builtin: bool = True) -> PriceTable:
    """The shipped table with each override file merged over it (per model: the later file wins).

    ``builtin=False`` uses only the given files."""
    prices: dict[str, Price] = {}
    as_of: str | None = None
    sources: list[str] = []
    if builtin:
        ref = resources.files("redline") / "data" / "prices.toml"
        data = tomllib.loads(ref.read_text(encoding="utf-8"))
        p, as_of = _parse(data, "redline/data/prices.toml")
        prices.update(p)
        sources.append("builtin")
    for path in overrides:
        if not path:
            continue
        p, file_as_of = _parse(_read(path), str(path))
        prices.update(p)
        as_of = file_as_of or as_of
        sources.append(str(Path(path)))
    return PriceTable(prices, as_of=as_of, sources=sources)


_default: PriceTable | None = None


def default_prices() -> PriceTable:
    global _default
    if _default is None:
        _default = load_prices()
    return _default


def cost_usd(model: str, prompt_tokens: int, completion_tokens: int, *, cached_tokens: int = 0) -> float:
    """Cost with the shipped table (the gateway uses its own :class:`PriceTable` when ``--prices`` is given)."""
    return default_prices().cost_usd(model, prompt_tokens, completion_tokens, cached_tokens=cached_tokens)
