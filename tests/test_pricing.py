"""Cost per request: genai-prices' rates applied exactly, config prices win, Decimal to 1e-9 USD."""

from __future__ import annotations

from decimal import Decimal

import genai_prices
import pytest

from faregate.accounting.pricing import PriceBook, Tokens
from faregate.config import parse_config
from faregate.routing.deployment import build_deployments


def book(*entries: dict) -> PriceBook:
    config = parse_config({"model_list": [
        {"model_name": f"g{i}", "litellm_params": {"api_base": "http://h/v1", **e}} for i, e in enumerate(entries)]})
    return PriceBook(build_deployments(config))


@pytest.mark.parametrize(("model", "provider", "tokens"), [
    ("openai/gpt-4o-mini", "openai", Tokens(input=1234, cached_input=200, output=567)),
    ("openai/gpt-4o", "openai", Tokens(input=10_000, output=1)),
    ("anthropic/claude-haiku-4-5", "anthropic", Tokens(input=5000, cached_input=1000, cache_write=2000, output=300)),
    ("groq/llama-3.3-70b-versatile", "groq", Tokens(input=999, output=999)),
])
def test_cost_matches_genai_prices(model: str, provider: str, tokens: Tokens) -> None:
    got = book({"model": model}).cost("g0#0", tokens)
    expected = genai_prices.calc_price(
        genai_prices.Usage(input_tokens=tokens.input, cache_read_tokens=tokens.cached_input,
                           cache_write_tokens=tokens.cache_write, output_tokens=tokens.output),
        model.split("/", 1)[1], provider_id=provider)
    assert got.priced
    assert got.input_usd == expected.input_price.quantize(Decimal("1e-9"))
    assert got.output_usd == expected.output_price.quantize(Decimal("1e-9"))
    assert got.total_usd > 0


def test_config_prices_override_the_library() -> None:
    b = book({"model": "openai/gpt-4o-mini", "input_cost_per_token": "0.000001", "output_cost_per_token": "0.000002"})
    cost = b.cost("g0#0", Tokens(input=3, output=7))
    assert cost.input_usd == Decimal("0.000003000") and cost.output_usd == Decimal("0.000014000")


def test_money_is_rounded_to_a_nano_dollar() -> None:
    b = book({"model": "hosted_vllm/llama", "input_cost_per_token": "0.0000000004", "output_cost_per_token": "0"})
    assert b.cost("g0#0", Tokens(input=1)).input_usd == Decimal("0E-9")  # 0.4 n$ rounds half-even to 0
    assert b.cost("g0#0", Tokens(input=3)).input_usd == Decimal("1E-9")  # 1.2 n$ -> 1 n$


def test_unknown_model_is_unpriced_not_free() -> None:
    b = book({"model": "hosted_vllm/my-finetune"})
    cost = b.cost("g0#0", Tokens(input=100, output=100))
    assert not cost.priced and cost.total_usd == 0


def test_local_model_costs_nothing_unless_priced() -> None:
    b = book({"model": "local/smollm2"})
    cost = b.cost("g0#0", Tokens(input=100, output=100))
    assert cost.total_usd == 0 and cost.priced


def test_tokens_from_openai_and_translated_anthropic_usage() -> None:
    openai_usage = {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150,
                    "prompt_tokens_details": {"cached_tokens": 40}, "completion_tokens_details": {"reasoning_tokens": 20}}
    assert Tokens.from_usage(openai_usage) == Tokens(input=100, cached_input=40, output=50, reasoning=20)
    anthropic_canonical = {"prompt_tokens": 70, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 30},
                           "cache_creation_input_tokens": 25}
    assert Tokens.from_usage(anthropic_canonical) == Tokens(input=70, cached_input=30, cache_write=25, output=5)
    assert Tokens.from_usage(None) == Tokens()


async def test_prices_resolved_out_of_process_equal_the_in_process_ones() -> None:
    """The gateway resolves prices in a child process (genai-prices stays out of the worker);
    the answer must be the same, tiered prices included (costed through the library)."""
    entries = [{"model": "openai/gpt-4o-mini"}, {"model": "anthropic/claude-haiku-4-5"},
               {"model": "openai/gpt-5.4"},  # tiered in genai-prices
               {"model": "openai/not-a-model-xyz"}, {"model": "local/smollm2"},
               {"model": "openai/x", "input_cost_per_token": "0.000001", "output_cost_per_token": "0.000003"}]
    inproc, outproc = book(*entries), book(*entries)
    inproc.load()
    await outproc.load_out_of_process()
    assert outproc.loaded
    for i in range(len(entries)):
        for tokens in (Tokens(input=1234, cached_input=100, cache_write=50, output=77),
                       Tokens(input=300_000, output=10)):  # past a tier's threshold
            assert outproc.cost(f"g{i}#0", tokens) == inproc.cost(f"g{i}#0", tokens), entries[i]
