"""Deployment choice: weights, exclusion, plans with fallbacks."""

from __future__ import annotations

from collections import Counter

from faregate.config import parse_config
from faregate.routing.deployment import build_deployments, split_model
from faregate.routing.router import Router


def router(weights: list[float], fallbacks=None) -> Router:
    config = parse_config({"model_list": [
        {"model_name": "g", "litellm_params": {"model": f"openai/m{i}", "api_base": "http://h/v1", "weight": w}}
        for i, w in enumerate(weights)
    ] + [{"model_name": "other", "litellm_params": {"model": "openai/o", "api_base": "http://h/v1"}}]})
    return Router(build_deployments(config), fallbacks)


def test_weighted_pick_follows_weights() -> None:
    r = router([1, 3, 0])
    counts = Counter(r.pick("g").id for _ in range(8000))
    assert counts["g#2"] == 0  # weight 0 is never picked
    assert 0.70 < counts["g#1"] / 8000 < 0.80


def test_pick_excludes_tried_deployments() -> None:
    r = router([1, 1])
    assert r.pick("g", {"g#0"}).id == "g#1"
    assert r.pick("g", {"g#0", "g#1"}) is None
    assert r.pick("missing") is None


def test_plan_lists_group_then_existing_fallbacks() -> None:
    r = router([1], fallbacks=[{"g": ["other", "ghost", "g"]}])
    assert r.plan("g") == ("g", "other")
    assert r.unknown_fallbacks() == ["g -> ghost"]


def test_litellm_model_strings() -> None:
    assert split_model("openai/gpt-4o") == ("openai", "gpt-4o")
    assert split_model("hosted_vllm/meta-llama/Llama-3") == ("hosted_vllm", "meta-llama/Llama-3")
    assert split_model("claude-3-5-sonnet") == ("anthropic", "claude-3-5-sonnet")
    assert split_model("gpt-4o") == ("openai", "gpt-4o")
    assert split_model("my-org/model") == ("openai", "my-org/model")
