"""Routing: the strategies (routing/strategies.py), the router's candidates, tiers, overflow and
fallback plans (routing/router.py), and the passive stats they read (routing/stats.py)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from faregate.config.loader import parse_config
from faregate.core.call import Call
from faregate.routing.deployment import Deployment, build_deployments
from faregate.routing.router import Router
from faregate.routing.stats import ALPHA, DeploymentStats
from faregate.routing.strategies import (
    ALIASES,
    STRATEGIES,
    CostBased,
    LatencyBased,
    LeastBusy,
    Sticky,
    UsageBased,
    Weighted,
    build_strategy,
)

# ------------------------------------------------------------------------------------ helpers


def entry(group: str = "g", i: int = 0, **params: Any) -> dict[str, Any]:
    return {"model_name": group, "litellm_params": {"model": f"openai/m{i}", "api_base": "http://h/v1", **params}}


def deployments(*entries: dict[str, Any]) -> list[Deployment]:
    return build_deployments(parse_config({"model_list": list(entries)}))


def group(n: int, **params: Any) -> list[Deployment]:
    """n deployments of group "g" (ids g#0 .. g#n-1)."""
    return deployments(*(entry("g", i, **params) for i in range(n)))


def router(deps: list[Deployment], **kw: Any) -> Router:
    kw.setdefault("rng", random.Random(7))
    return Router(deps, **kw)


def call(stream: bool = False, user: str | None = None, headers: dict[str, str] | None = None) -> Call:
    body: dict[str, Any] = {"model": "g", "messages": [{"role": "user", "content": "hi"}]}
    if stream:
        body["stream"] = True
    if user is not None:
        body["user"] = user
    return Call(request_id="r", endpoint="chat", body=body, headers=headers or {})


def picks(pick: Any, n: int = 2000) -> Counter[str]:
    return Counter(pick().id for _ in range(n))


class FakeBreakers:
    """`allows` false for open ids; `acquire_probe` false for ids whose probe slot is taken."""

    def __init__(self, open_ids: set[str] = frozenset(), probe_taken: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.open_ids, self.probe_taken = set(open_ids), set(probe_taken)
        self.asked: list[str] = []
        self.not_closed = self.open_ids | self.probe_taken  # what the router asks `allows` about

    def watch(self, deployment_ids: list[str]) -> None:
        pass

    def allows(self, deployment_id: str) -> bool:
        return deployment_id not in self.open_ids

    def acquire_probe(self, deployment_id: str) -> bool:
        self.asked.append(deployment_id)
        return deployment_id not in self.probe_taken


class FakeEngines:
    def __init__(self, overloaded: set[str]) -> None:
        self.ids = set(overloaded)

    def overloaded(self, deployment_id: str) -> bool:
        return deployment_id in self.ids


# ----------------------------------------------------------------------------------- weighted


def test_weighted_distribution_follows_weights() -> None:
    deps = deployments(entry(i=0, weight=1), entry(i=1, weight=2), entry(i=2, weight=7))
    s = Weighted(random.Random(1))
    counts = picks(lambda: s.pick(deps, None), 20000)
    for dep_id, share in (("g#0", 0.1), ("g#1", 0.2), ("g#2", 0.7)):
        assert abs(counts[dep_id] / 20000 - share) < 0.02, counts


def test_weighted_all_zero_weights_is_uniform_and_single_candidate_is_returned() -> None:
    deps = group(4, weight=0)
    s = Weighted(random.Random(2))
    counts = picks(lambda: s.pick(deps, None), 8000)
    assert set(counts) == {d.id for d in deps}
    assert all(1700 < c < 2300 for c in counts.values()), counts
    assert s.pick(deps[:1], None) is deps[0]


def test_router_never_picks_weight_zero() -> None:
    r = router(deployments(entry(i=0, weight=0), entry(i=1, weight=1), entry(i=2, weight=3)))
    counts = picks(lambda: r.pick("g"), 4000)
    assert counts["g#0"] == 0
    assert 0.7 < counts["g#2"] / 4000 < 0.8


# --------------------------------------------------------------------------------- least-busy


def test_least_busy_picks_fewest_in_flight_ties_by_weight() -> None:
    deps = deployments(entry(i=0), entry(i=1, weight=1), entry(i=2, weight=3), entry(i=3))
    for d, n in zip(deps, (3, 1, 1, 5), strict=True):
        d.stats.in_flight = n
    s = LeastBusy(random.Random(3))
    counts = picks(lambda: s.pick(deps, None), 8000)
    assert set(counts) == {"g#1", "g#2"}
    assert 0.70 < counts["g#2"] / 8000 < 0.80  # weight 3 of 4
    deps[1].stats.in_flight = 0
    assert {s.pick(deps, None).id for _ in range(50)} == {"g#1"}


def test_least_busy_through_router_follows_stats() -> None:
    deps = group(3)
    r = router(deps, strategy="least-busy")
    for _ in range(9):  # each pick starts a request on what it picked: they spread out
        r.pick("g").stats.started()
    assert [d.stats.in_flight for d in deps] == [3, 3, 3]


# ------------------------------------------------------------------------------ latency-based


def measured(deps: list[Deployment], ttft: list[float | None], per_token: list[float | None],
             latency: list[float | None] | None = None) -> None:
    for i, d in enumerate(deps):
        d.stats.ewma_ttft = ttft[i]
        d.stats.ewma_latency_per_token = per_token[i]
        d.stats.ewma_latency = latency[i] if latency else None


def test_latency_based_unmeasured_go_first() -> None:
    deps = group(4)
    measured(deps, [0.1, None, 0.1, None], [0.01, 0.01, None, None])
    s = LatencyBased(random.Random(4))
    assert set(picks(lambda: s.pick(deps, call(stream=True)), 400)) == {"g#1", "g#3"}
    assert set(picks(lambda: s.pick(deps, call()), 400)) == {"g#2", "g#3"}


def test_latency_based_streams_use_ttft_ties_within_ten_percent() -> None:
    deps = group(4)
    # per-token latency ranks them the other way round: a stream must not look at it
    measured(deps, [0.50, 0.20, 0.215, 0.23], [0.001, 0.05, 0.05, 0.05])
    s = LatencyBased(random.Random(5))
    counts = picks(lambda: s.pick(deps, call(stream=True)), 4000)
    assert set(counts) == {"g#1", "g#2"}  # 0.215 <= 0.20 * 1.1 < 0.23
    assert 0.4 < counts["g#1"] / 4000 < 0.6


def test_latency_based_non_stream_uses_latency_per_output_token() -> None:
    deps = group(3)
    measured(deps, [0.01, 0.9, 0.9], [0.030, 0.010, 0.0105])
    s = LatencyBased(random.Random(6))
    assert set(picks(lambda: s.pick(deps, call()), 1000)) == {"g#1", "g#2"}
    assert set(picks(lambda: s.pick(deps, None), 1000)) == {"g#1", "g#2"}  # no call: not a stream


def test_latency_based_falls_back_to_request_latency_without_token_counts() -> None:
    deps = group(3)  # e.g. embeddings: no output tokens, so no per-token average
    measured(deps, [None] * 3, [None] * 3, latency=[0.3, 0.1, 0.5])
    s = LatencyBased(random.Random(6))
    assert set(picks(lambda: s.pick(deps, call()), 500)) == {"g#1"}


def test_latency_based_does_not_compare_request_latency_with_per_token_latency() -> None:
    deps = group(2)
    # g#0 only served streams so far: 1.2 s per request, no per-token average. g#1 served
    # non-stream calls at 40 ms per output token (1 s for a 25-token answer): g#0 has not
    # been measured for non-stream calls and should get some of them.
    measured(deps, [0.2, None], [None, 0.040], latency=[1.2, 1.0])
    s = LatencyBased(random.Random(8))
    assert "g#0" in picks(lambda: s.pick(deps, call()), 200)


# --------------------------------------------------------------------------------- cost-based


def test_cost_based_picks_cheapest_and_unpriced_last() -> None:
    deps = group(4)
    prices = {"g#0": 3e-6, "g#1": 1e-6, "g#2": None, "g#3": 1.05e-6}
    s = CostBased(lambda d: prices[d.id], random.Random(9))
    counts = picks(lambda: s.pick(deps, None), 2000)
    assert set(counts) == {"g#1", "g#3"}  # within 10 % of the cheapest
    only_unpriced_and_dear = [deps[0], deps[2]]
    assert {s.pick(only_unpriced_and_dear, None).id for _ in range(50)} == {"g#0"}
    unpriced = CostBased(lambda d: None, random.Random(9))
    assert set(picks(lambda: unpriced.pick(deps, None), 400)) == {d.id for d in deps}  # all equal


def test_cost_based_caches_prices_but_not_a_missing_one() -> None:
    deps = group(2)
    asked: Counter[str] = Counter()
    loaded = False

    def price_of(d: Deployment) -> float | None:
        asked[d.id] += 1
        if d.id == "g#1" and not loaded:
            return None  # prices not loaded yet
        return {"g#0": 2e-6, "g#1": 1e-6}[d.id]

    s = CostBased(price_of, random.Random(10))
    assert all(s.pick(deps, None).id == "g#0" for _ in range(20))
    assert asked["g#0"] == 1 and asked["g#1"] == 20  # a None is asked again next time
    loaded = True
    assert all(s.pick(deps, None).id == "g#1" for _ in range(20))
    assert asked["g#1"] == 21


def test_cost_based_through_router_with_price_function() -> None:
    deps = group(3)
    r = router(deps, strategy="cost-based-routing", price_of=lambda d: {"g#0": 5.0, "g#1": 2.0, "g#2": 9.0}[d.id])
    assert r.strategy_of("g") == "cost-based"
    assert set(picks(lambda: r.pick("g"), 200)) == {"g#1"}
    assert r.pick("g", {"g#1"}).id == "g#0"


# -------------------------------------------------------------------------------- usage-based


def use(d: Deployment, requests: int = 0, tokens: int = 0) -> None:
    for _ in range(requests):
        d.stats.started()
        d.stats.finished(True)
    if tokens:
        d.stats.started()
        d.stats.finished(True, tokens=tokens)


def test_usage_based_picks_most_headroom() -> None:
    deps = deployments(entry(i=0, rpm=100), entry(i=1, tpm=10_000), entry(i=2, rpm=100, tpm=1_000_000))
    use(deps[0], requests=50)  # 50 % left
    use(deps[1], tokens=1_000)  # 90 % of its tokens left (1 request, no rpm)
    use(deps[2], requests=5, tokens=900_000)  # 95 % of requests, but only 10 % of tokens left
    s = UsageBased(random.Random(11))
    assert set(picks(lambda: s.pick(deps, None), 500)) == {"g#1"}
    assert deps[1].stats.minute_usage() == (1, 1_000)


def test_usage_based_ties_and_deployments_without_limits() -> None:
    deps = deployments(entry(i=0, rpm=100), entry(i=1, rpm=100), entry(i=2, rpm=100))
    use(deps[0], requests=10)  # 0.90 left
    use(deps[1], requests=15)  # 0.85 left: a tie (within 0.10)
    use(deps[2], requests=30)  # 0.70 left
    s = UsageBased(random.Random(12))
    assert set(picks(lambda: s.pick(deps, None), 1000)) == {"g#0", "g#1"}
    unlimited = deployments(entry(i=0), entry(i=1, rpm=10))
    use(unlimited[0], requests=500)
    s = UsageBased(random.Random(13))
    assert set(picks(lambda: s.pick(unlimited, None), 200)) == {"g#0", "g#1"}  # both fully free
    use(unlimited[1], requests=5)
    assert set(picks(lambda: s.pick(unlimited, None), 200)) == {"g#0", "g#1"}  # headroom read < 0.25 s ago
    s._read_at -= UsageBased.REFRESH  # the next pick re-reads it
    assert set(picks(lambda: s.pick(unlimited, None), 200)) == {"g#0"}


# ------------------------------------------------------------------------------ build_strategy


@pytest.mark.parametrize(("name", "expected"), [
    ("weighted", "weighted"), ("simple-shuffle", "weighted"), ("least-busy", "least-busy"),
    ("latency-based", "latency-based"), ("latency-based-routing", "latency-based"),
    ("cost-based", "cost-based"), ("cost-based-routing", "cost-based"),
    ("usage-based", "usage-based"), ("usage-based-routing", "usage-based"), ("usage-based-routing-v2", "usage-based"),
])
def test_build_strategy_names_and_litellm_aliases(name: str, expected: str) -> None:
    assert build_strategy(name, lambda d: None).name == expected


def test_build_strategy_unknown_name_lists_valid_ones() -> None:
    with pytest.raises(ValueError) as exc:
        build_strategy("round-robin", lambda d: None)
    message = str(exc.value)
    assert "round-robin" in message
    assert all(name in message for name in (*STRATEGIES, *ALIASES))


def test_group_strategies_override_the_default() -> None:
    deps = deployments(entry("a", 0), entry("a", 1), entry("b", 2), entry("b", 3))
    r = router(deps, strategy="least-busy", group_strategies={"b": "latency-based-routing"})
    assert (r.strategy_of("a"), r.strategy_of("b"), r.strategy_of("missing")) == ("least-busy", "latency-based", "weighted")


# ------------------------------------------------------------------------------------- sticky

KEYS = [f"user-{i}" for i in range(1000)]


def sticky_picks(r: Router, exclude: tuple[str, ...] = ()) -> dict[str, str]:
    return {k: r.pick("g", exclude, call(user=k)).id for k in KEYS}


def test_sticky_same_key_same_deployment_across_routers() -> None:
    a, b = router(group(5), sticky_by="user", rng=random.Random(1)), router(group(5), sticky_by="user", rng=random.Random(2))
    first = sticky_picks(a)
    assert first == sticky_picks(a) == sticky_picks(b)
    assert len(set(first.values())) == 5  # the keys spread over every deployment


def test_sticky_is_stable_across_processes() -> None:
    script = ("import json\n"
              "from tests.test_strategies import KEYS, group, router\n"
              "from faregate.routing.strategies import Sticky\n"
              "deps = group(5)\n"
              "router(deps)\n"  # the router sets each deployment's hash seed
              "print(json.dumps({k: Sticky.pick(deps, k.encode()).id for k in KEYS[:100]}))\n")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}  # another str hash() than this process's: no matter
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60,
                         cwd=root, check=True)
    deps = group(5)
    router(deps)
    here = {k: Sticky.pick(deps, k.encode()).id for k in KEYS[:100]}
    assert json.loads(out.stdout) == here
    assert len(set(here.values())) > 1


def test_sticky_removing_a_deployment_moves_only_its_keys() -> None:
    r = router(group(6), sticky_by="user")
    before = sticky_picks(r)
    held = {k for k, d in before.items() if d == "g#2"}
    assert 60 < len(held) < 300
    after = sticky_picks(r, ("g#2",))  # tried (or its breaker open): it leaves the candidates
    assert all(after[k] == before[k] for k in KEYS if k not in held)
    assert all(after[k] != "g#2" for k in held)
    assert len({after[k] for k in held}) > 1  # its keys spread over the others
    r.breakers = FakeBreakers({"g#4"})
    held4 = {k for k, d in before.items() if d == "g#4"}
    now = sticky_picks(r)
    assert all(now[k] == before[k] for k in KEYS if k not in held4)
    r.breakers = None
    assert sticky_picks(r) == before  # back once healthy


def test_sticky_spreads_keys_evenly() -> None:
    r = router(group(10), sticky_by="user")
    counts = Counter(r.pick("g", (), call(user=f"user-{i}")).id for i in range(20000))
    assert all(1500 < c < 2500 for c in counts.values()), sorted(counts.values())  # fair: 2000 each


def test_sticky_keys_user_conversation_principal() -> None:
    from faregate.access.records import Principal

    assert Sticky("user").key_of(call(user="alice")) == b"alice"
    assert Sticky("user").key_of(call()) is None
    assert Sticky("user").key_of(None) is None
    c = call(headers={"x-faregate-conversation-id": "conv-1"})
    assert Sticky("conversation").key_of(c) == b"conv-1"
    assert Sticky("conversation").key_of(call()) is None
    c.principal = Principal(id="key-42")
    assert Sticky("key").key_of(c) == b"key-42"
    assert Sticky("key").key_of(call()) is None


def test_sticky_without_a_key_uses_the_strategy() -> None:
    deps = group(3)
    for d, n in zip(deps, (2, 0, 2), strict=True):
        d.stats.in_flight = n
    r = router(deps, strategy="least-busy", sticky_by="conversation")
    assert {r.pick("g", (), call()).id for _ in range(30)} == {"g#1"}


# ------------------------------------------------------------------------- router: candidates


def test_candidates_exclude_tried_ids() -> None:
    r = router(group(4))
    assert set(picks(lambda: r.pick("g", {"g#0", "g#2"}), 200)) == {"g#1", "g#3"}
    assert r.pick("g", ["g#0", "g#1", "g#2", "g#3"]) is None
    assert r.pick("nope") is None


def test_candidates_skip_breaker_disallowed_and_taken_probes() -> None:
    r = router(group(3), breakers=FakeBreakers({"g#0"}))
    assert set(picks(lambda: r.pick("g"), 200)) == {"g#1", "g#2"}
    # g#1 half-open with its probe slot taken: the router asks it, then picks another
    r.breakers = FakeBreakers({"g#0"}, probe_taken={"g#1"})
    assert all(r.pick("g").id == "g#2" for _ in range(50))
    r.breakers = FakeBreakers({"g#0", "g#2"}, probe_taken={"g#1"})
    assert r.pick("g") is None
    assert r.breakers.asked == ["g#1"]


def test_cooling_deployment_skipped_unless_ignore_cooling() -> None:
    r = router(group(2))
    r.cool_down("g#0", 30)
    assert 29 < r.cooling("g#0") <= 30 and r.cooling("g#1") is None
    assert set(picks(lambda: r.pick("g"), 100)) == {"g#1"}
    assert r.pick("g", {"g#1"}) is None
    assert r.pick("g", {"g#1"}, ignore_cooling=True).id == "g#0"
    r.cool_down("g#0", 0)  # over at once: forgotten on the next pick
    assert set(picks(lambda: r.pick("g"), 200)) == {"g#0", "g#1"}
    assert r.cooling("g#0") is None and not r._cooling


def test_order_tiers_lower_first() -> None:
    r = router(deployments(entry(i=0, order=1), entry(i=1, order=1), entry(i=2, order=2), entry(i=3, order=3)))
    assert set(picks(lambda: r.pick("g"), 300)) == {"g#0", "g#1"}
    assert r.pick("g", {"g#0", "g#1"}).id == "g#2"
    assert r.pick("g", {"g#0", "g#1", "g#2"}).id == "g#3"
    r.breakers = FakeBreakers({"g#0", "g#1"})
    assert all(r.pick("g").id == "g#2" for _ in range(20))
    r.cool_down("g#2", 60)
    assert r.pick("g").id == "g#3"


def test_overloaded_engines_skipped_while_another_can_serve() -> None:
    r = router(group(3), engines=FakeEngines({"g#0"}))
    assert set(picks(lambda: r.pick("g"), 300)) == {"g#1", "g#2"}
    r.engines = FakeEngines({"g#0", "g#1", "g#2"})  # all overloaded: still served
    assert set(picks(lambda: r.pick("g"), 300)) == {"g#0", "g#1", "g#2"}
    assert r.pick("g", {"g#1", "g#2"}).id == "g#0"


def test_overloaded_engines_overflow_to_next_tier() -> None:
    deps = deployments(entry(i=0, order=1), entry(i=1, order=1), entry(i=2, order=2))
    r = router(deps, engines=FakeEngines({"g#0"}))
    assert set(picks(lambda: r.pick("g"), 300)) == {"g#1"}
    r.engines = FakeEngines({"g#0", "g#1"})  # self-hosted tier full: the managed tier takes it
    assert set(picks(lambda: r.pick("g"), 300)) == {"g#2"}
    r.engines = FakeEngines({"g#0", "g#1", "g#2"})  # everything overloaded: back to tier 1
    assert set(picks(lambda: r.pick("g"), 300)) == {"g#0", "g#1"}


# ------------------------------------------------------------------------------ router: plans


def plan_router() -> Router:
    deps = deployments(*(entry(g, i) for i, g in enumerate(("a", "b", "c", "big", "safe", "d"))))
    return router(deps, fallbacks=[{"a": ["b", "ghost", "a"]}, {"a": ["c"]}],
                  context_window_fallbacks=[{"a": ["big"]}], content_policy_fallbacks=[{"a": ["safe"]}],
                  default_fallbacks=["d", "nowhere"])


def test_plan_with_fallbacks_and_defaults() -> None:
    r = plan_router()
    assert r.plan("a") == ("a", "b", "c")  # own rules merged, unknown and self dropped
    assert r.plan("b") == ("b", "d")  # no own rule: default_fallbacks
    assert r.plan("d") == ("d",)
    assert r.plan("a", "context_window") == ("a", "big")
    assert r.plan("a", "content_policy") == ("a", "safe")
    assert r.plan("b", "context_window") == ("b",)  # default_fallbacks are for errors only
    assert r.fallbacks_for("a", "error") == ("b", "c")
    assert r.plan("ghost") == ()
    assert r.plan("a") is r.plan("a")  # computed once


def test_unknown_fallbacks() -> None:
    deps = deployments(entry("a", 0), entry("b", 1))
    r = router(deps, fallbacks=[{"a": ["b", "ghost"]}, {"phantom": ["a"]}],
               context_window_fallbacks=[{"a": ["huge"]}], default_fallbacks=["b", "nowhere"])
    assert sorted(r.unknown_fallbacks()) == sorted(
        ["a -> ghost", "phantom (no such model group)", "a -> huge", "default_fallbacks -> nowhere"])
    assert router(deps, fallbacks=[{"a": ["b"]}]).unknown_fallbacks() == []


# ------------------------------------------------------------------------------------- stats


def test_stats_ewma() -> None:
    s = DeploymentStats()
    s.started()
    s.finished(True, latency=1.0, output_tokens=10)
    assert (s.ewma_latency, s.ewma_latency_per_token, s.ewma_ttft) == (1.0, 0.1, None)
    s.started()
    s.finished(True, latency=2.0, output_tokens=10)
    assert s.ewma_latency == pytest.approx(1.0 + ALPHA * (2.0 - 1.0))
    assert s.ewma_latency_per_token == pytest.approx(0.1 + ALPHA * (0.2 - 0.1))
    s.started()
    s.finished(True, latency=3.0, ttft=0.5, output_tokens=10)  # a stream: TTFT, not per token
    assert s.ewma_ttft == 0.5
    assert s.ewma_latency_per_token == pytest.approx(0.12)
    s.started()
    s.finished(False, latency=60.0, error="upstream_timeout")  # failures do not move the averages
    assert s.ewma_latency == pytest.approx(1.2 + ALPHA * (3.0 - 1.2))
    assert (s.requests, s.failures, s.last_error) == (4, 1, "upstream_timeout")
    snap = s.snapshot()
    assert snap["ewma_ttft_ms"] == 500.0 and snap["failures"] == 1


def test_stats_in_flight_accounting() -> None:
    s = DeploymentStats()
    for _ in range(3):
        s.started()
    s.finished(True)
    s.finished(False)
    assert (s.in_flight, s.requests) == (1, 3)
    s.abandoned()
    s.abandoned()  # never below zero
    s.finished(True)
    assert s.in_flight == 0


def test_stats_minute_usage_buckets() -> None:
    s = DeploymentStats()
    for _ in range(3):
        s.started(now=1000.0)
    for _ in range(2):
        s.started(now=1015.0)
    assert s.minute_usage(now=1015.0) == (5, 0)
    assert s.minute_usage(now=1059.9) == (5, 0)  # slot 100 is five slots back: still in
    assert s.minute_usage(now=1060.0) == (2, 0)  # six back: out
    assert s.minute_usage(now=1075.0) == (0, 0)
    s.started(now=1060.0)  # reuses slot 100's bucket: starts it over
    assert s.minute_usage(now=1060.0) == (3, 0)
    t = DeploymentStats()
    t.started()
    t.finished(True, tokens=700)
    t.started()
    t.finished(False, tokens=300)  # tokens count whatever the verdict
    assert t.minute_usage() == (2, 1000)
    assert t.snapshot()["tokens_last_minute"] == 1000
