"""Prices per deployment, and the exact cost of one request's usage.

Prices come from `genai-prices` (its bundled snapshot; nothing is fetched at run time) or from
`input_cost_per_token` / `output_cost_per_token` in the config, which win. A deployment's price
is resolved once at start-up: `genai_prices.calc_price` costs ~140 µs a call, too much for every
request, so flat per-token prices are kept as `Decimal`s and applied with four multiplications
(~2 µs). Tiered prices (a higher rate past a context size) keep the library's own calculation.
Money is `Decimal`, rounded half-even to 1e-9 USD.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from faregate.routing.deployment import Deployment

log = logging.getLogger("faregate.pricing")

NANO = Decimal("0.000000001")
ZERO = Decimal(0)
_PER_MTOK = Decimal(1_000_000)

# LiteLLM provider prefix -> genai-prices provider id (prefixes not listed have no public price:
# self-hosted engines are priced by the config, e.g. from GPU $/hour; see docs/pricing.md).
_PROVIDER_IDS = {
    "openai": "openai", "text-completion-openai": "openai", "azure": "azure", "anthropic": "anthropic",
    "groq": "groq", "mistral": "mistral", "deepseek": "deepseek", "together_ai": "together",
    "openrouter": "openrouter", "fireworks_ai": "fireworks", "xai": "x-ai", "cerebras": "cerebras",
    "perplexity": "perplexity",
}


@dataclass(frozen=True, slots=True)
class Tokens:
    """Billable token counts, in the canonical usage's terms."""

    input: int = 0  # every prompt token, cached ones included
    cached_input: int = 0  # read from a prompt cache (billed at the cache-read rate)
    cache_write: int = 0  # written to a prompt cache (Anthropic)
    output: int = 0  # every completion token, reasoning included
    reasoning: int = 0  # the reasoning part of `output` (reported, billed as output)

    @classmethod
    def from_usage(cls, usage: Mapping[str, Any] | None) -> Tokens:
        if not usage:
            return cls()
        prompt = usage.get("prompt_tokens") or usage.get("input_tokens") or 0
        details = usage.get("prompt_tokens_details") or {}
        out_details = usage.get("completion_tokens_details") or {}
        return cls(
            input=int(prompt),
            cached_input=int(details.get("cached_tokens") or 0),
            cache_write=int(usage.get("cache_creation_input_tokens") or 0),
            output=int(usage.get("completion_tokens") or usage.get("output_tokens") or 0),
            reasoning=int(out_details.get("reasoning_tokens") or 0),
        )

    def input_split(self) -> tuple[int, int, int]:
        """(fresh, cache-read, cache-write) input tokens, never more in all than `input`."""
        cached = min(self.cached_input, self.input)
        writes = min(self.cache_write, self.input - cached)
        return self.input - cached - writes, cached, writes


@dataclass(frozen=True, slots=True)
class Cost:
    input_usd: Decimal
    output_usd: Decimal
    priced: bool  # False: no price is known for this deployment, the cost is 0 and says so

    @property
    def total_usd(self) -> Decimal:
        return self.input_usd + self.output_usd


UNPRICED = Cost(ZERO, ZERO, priced=False)


@dataclass(frozen=True, slots=True)
class FlatPrice:
    """USD per token."""

    input: Decimal
    output: Decimal
    cached_input: Decimal | None = None  # None: same as input
    cache_write: Decimal | None = None

    def cost(self, t: Tokens) -> Cost:
        fresh, cached, writes = t.input_split()
        cached_rate = self.input if self.cached_input is None else self.cached_input
        write_rate = self.input if self.cache_write is None else self.cache_write
        inp = fresh * self.input + cached * cached_rate + writes * write_rate
        return Cost(_round(inp), _round(t.output * self.output), priced=True)


class _LibraryPrice:
    """A genai-prices ModelPrice with tiers: its own calculation, off the common path."""

    __slots__ = ("model_price",)

    def __init__(self, model_price: Any) -> None:
        self.model_price = model_price

    def cost(self, t: Tokens) -> Cost:
        from genai_prices import Usage

        _, cached, writes = t.input_split()
        r = self.model_price.calc_price(Usage(input_tokens=t.input, cache_read_tokens=cached,
                                              cache_write_tokens=writes, output_tokens=t.output))
        return Cost(_round(r["input_price"]), _round(r["output_price"]), priced=True)


def _round(value: Decimal) -> Decimal:
    return value.quantize(NANO, rounding=ROUND_HALF_EVEN)


def _from_library(model: str, provider: str) -> FlatPrice | _LibraryPrice | None:
    import genai_prices
    from genai_prices.types import TieredPrices

    provider_id = _PROVIDER_IDS.get(provider)
    if provider_id is None:
        return None
    try:
        calc = genai_prices.calc_price(genai_prices.Usage(input_tokens=0, output_tokens=0), model, provider_id=provider_id)
    except LookupError:
        return None
    mp = calc.model_price
    rates = {k: getattr(mp, k, None) for k in ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok")}
    if any(isinstance(v, TieredPrices) for v in rates.values()) or rates["input_mtok"] is None or rates["output_mtok"] is None:
        return _LibraryPrice(mp)

    def per_token(v: Decimal | None) -> Decimal | None:
        return None if v is None else Decimal(v) / _PER_MTOK

    return FlatPrice(input=per_token(rates["input_mtok"]), output=per_token(rates["output_mtok"]),  # type: ignore[arg-type]
                     cached_input=per_token(rates["cache_read_mtok"]), cache_write=per_token(rates["cache_write_mtok"]))


class _LazyLibraryPrice:
    """A tiered price, found by a resolver process: genai-prices is imported into this process
    only when such a deployment is first costed."""

    __slots__ = ("model", "provider", "_price")

    def __init__(self, model: str, provider: str) -> None:
        self.model, self.provider, self._price = model, provider, None

    def cost(self, t: Tokens) -> Cost:
        if self._price is None:
            self._price = _from_library(self.model, self.provider)
        return UNPRICED if self._price is None else self._price.cost(t)


class PriceBook:
    """Deployment id -> price, resolved once. genai-prices takes ~0.3 s to import and index and
    keeps ~5 MB: the gateway resolves its prices in a short-lived child process once serving
    (`load_out_of_process`, see accounting/price_resolver.py), so a worker holds only the
    figures; `load()` does it in-process (tests, and a cost asked before the child answered)."""

    def __init__(self, deployments: Iterable[Deployment]) -> None:
        self._deployments = list(deployments)
        self._prices: dict[str, FlatPrice | _LibraryPrice | _LazyLibraryPrice | None] = {}
        self._lock = threading.Lock()
        self.loaded = False

    def load(self) -> None:
        with self._lock:
            if not self.loaded:
                self._prices = {dep.id: resolve(dep_spec(dep)) for dep in self._deployments}
                self.loaded = True

    async def load_out_of_process(self) -> None:
        """Resolve in a child process; fall back to `load()` in a thread if that fails."""
        import asyncio
        import json
        import sys

        request = json.dumps([dep_spec(d) for d in self._deployments]).encode()
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "faregate.accounting.price_resolver", stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await proc.communicate(request)
            if proc.returncode != 0:
                raise RuntimeError(err.decode(errors="replace")[-500:])
            resolved = {k: price_from_json(v) for k, v in json.loads(out).items()}
        except Exception as exc:  # never fatal: the in-process path gives the same answer
            log.warning("price resolver process failed (%s); resolving in-process", exc)
            await asyncio.to_thread(self.load)
            return
        with self._lock:
            if not self.loaded:
                self._prices = resolved
                self.loaded = True

    def cost(self, deployment_id: str, tokens: Tokens) -> Cost:
        if not self.loaded:
            self.load()
        price = self._prices.get(deployment_id)
        return UNPRICED if price is None else price.cost(tokens)


# -- resolution, shared by PriceBook.load() and the resolver process -------------------------

def dep_spec(dep: Deployment) -> dict[str, Any]:
    """What resolving a deployment's price needs, as JSON."""
    return {"id": dep.id, "provider": dep.provider, "litellm_provider": dep.litellm_provider,
            "upstream_model": dep.upstream_model,
            "input_cost_per_token": None if dep.input_cost_per_token is None else str(dep.input_cost_per_token),
            "output_cost_per_token": None if dep.output_cost_per_token is None else str(dep.output_cost_per_token)}


def resolve(spec: Mapping[str, Any]) -> FlatPrice | _LibraryPrice | None:
    inp, out = spec["input_cost_per_token"], spec["output_cost_per_token"]
    if inp is not None or out is not None:
        return FlatPrice(input=Decimal(inp or 0), output=Decimal(out or 0))
    if spec["provider"] == "local":
        return FlatPrice(input=ZERO, output=ZERO)  # runs in-process: no bill (set a price to charge GPU time)
    price = _from_library(spec["upstream_model"], spec["litellm_provider"])
    if price is None:
        log.info("no price known for deployment %s (%s/%s): its requests are recorded as unpriced; "
                 "set input_cost_per_token/output_cost_per_token", spec["id"], spec["litellm_provider"],
                 spec["upstream_model"])
    return price


def price_to_json(price: FlatPrice | _LibraryPrice | None, spec: Mapping[str, Any]) -> Any:
    if price is None:
        return None
    if isinstance(price, FlatPrice):
        return {k: None if v is None else str(v) for k, v in
                (("input", price.input), ("output", price.output), ("cached_input", price.cached_input),
                 ("cache_write", price.cache_write))}
    return {"library": [spec["upstream_model"], spec["litellm_provider"]]}


def price_from_json(data: Any) -> FlatPrice | _LazyLibraryPrice | None:
    if data is None:
        return None
    if "library" in data:
        return _LazyLibraryPrice(*data["library"])
    return FlatPrice(**{k: None if v is None else Decimal(v) for k, v in data.items()})  # type: ignore[arg-type]
