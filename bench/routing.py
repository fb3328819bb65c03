"""Cost of choosing a deployment: `Router.pick(group, (), call)`, in-process.

    .venv/bin/python bench/routing.py [-n 2000] [--runs 7] [--sizes 1,10,100] [--target-us 50]

Builds a router over one model group of 1, 10 and 100 deployments (from a real config, with
in-process circuit breakers attached, as the gateway runs it) and times a pick for each routing
strategy — weighted, least-busy, latency-based (stats filled; a non-stream and a stream call),
cost-based (a price function), usage-based (rpm/tpm limits, usage filled) — for sticky routing
(`sticky_by: user`), and for the weighted strategy with 5 deployment ids excluded (already tried)
and with 10 breakers open. Prints µs per pick (median of --runs runs of -n picks) and a PASS/FAIL
line against the target (routing/strategies.py: < 50 µs for 100 deployments).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

from faregate.config.loader import parse_config
from faregate.core.call import Call
from faregate.routing.breaker import Breakers
from faregate.routing.deployment import Deployment, build_deployments
from faregate.routing.router import Router

GROUP = "m"
BODY = {"model": GROUP, "messages": [{"role": "user", "content": "hi"}], "user": "user-4242"}

# name -> (router kwargs, call is a stream, excluded ids, open breakers)
CASES: dict[str, tuple[dict[str, Any], bool, int, int]] = {
    "weighted": ({"strategy": "weighted"}, False, 0, 0),
    "least-busy": ({"strategy": "least-busy"}, False, 0, 0),
    "latency-based": ({"strategy": "latency-based"}, False, 0, 0),
    "latency-based (stream)": ({"strategy": "latency-based"}, True, 0, 0),
    "cost-based": ({"strategy": "cost-based"}, False, 0, 0),
    "usage-based": ({"strategy": "usage-based"}, False, 0, 0),
    "sticky_by=user": ({"strategy": "weighted", "sticky_by": "user"}, False, 0, 0),
    "weighted, 5 excluded ids": ({"strategy": "weighted"}, False, 5, 0),
    "weighted, 10 breakers open": ({"strategy": "weighted"}, False, 0, 10),
}


def build(n: int, rng: random.Random) -> list[Deployment]:
    config = parse_config({"model_list": [
        {"model_name": GROUP, "litellm_params": {
            "model": f"openai/model-{i}", "api_base": f"http://10.0.{i // 250}.{i % 250}:8000/v1",
            "weight": rng.choice((1, 1, 2, 3)), "rpm": 10_000, "tpm": 5_000_000}}
        for i in range(n)]})
    deps = build_deployments(config)
    for d in deps:  # what a busy replica has seen
        s = d.stats
        s.ewma_ttft = rng.uniform(0.15, 0.6)
        s.ewma_latency_per_token = rng.uniform(0.008, 0.03)
        s.ewma_latency = rng.uniform(0.5, 4.0)
        for _ in range(rng.randint(10, 60)):
            s.started()
            s.finished(True, tokens=rng.randint(200, 2000))
        s.in_flight = rng.randint(0, 6)
    return deps


def make_router(n: int, kwargs: dict[str, Any], open_breakers: int, seed: int) -> Router:
    rng = random.Random(seed)
    deps = build(n, rng)
    prices = {d.id: rng.choice((0.15e-6, 0.6e-6, 2.5e-6, 10e-6)) for d in deps}
    breakers = Breakers()

    async def trip() -> None:
        for d in deps[:open_breakers]:
            for _ in range(breakers.settings.failure_threshold):
                await breakers.record(d.id, False)

    asyncio.run(trip())
    assert sum(not breakers.allows(d.id) for d in deps) == open_breakers
    return Router(deps, price_of=lambda d: prices[d.id], breakers=breakers, rng=random.Random(seed), **kwargs)


def time_picks(pick: Callable[[], Deployment | None], n: int, runs: int) -> float:
    """Median µs per pick over `runs` runs of `n` picks."""
    for _ in range(min(n, 200)):  # warm up (price cache, circuits, …)
        pick()
    per_run = []
    for _ in range(runs):
        t0 = time.perf_counter()
        for _ in range(n):
            pick()
        per_run.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(per_run)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=2000, help="picks per run")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--sizes", default="1,10,100", help="deployments in the group, comma-separated")
    ap.add_argument("--target-us", type=float, default=50.0, help="budget per pick at the largest size")
    args = ap.parse_args()
    logging.getLogger("faregate.routing").setLevel(logging.ERROR)  # the breakers opened on purpose
    sizes = [int(s) for s in args.sizes.split(",")]
    largest = max(sizes)

    print(f"Router.pick(group, exclude, call), in-process breakers attached; median of {args.runs} runs "
          f"of {args.n} picks; µs per pick")
    print(f"  {'case':28s}" + "".join(f"{f'{n} deps':>12s}" for n in sizes))
    over: list[tuple[str, float]] = []
    for name, (kwargs, stream, excluded, open_breakers) in CASES.items():
        row = f"  {name:28s}"
        for n in sizes:
            if excluded + open_breakers >= n:  # nothing left to pick from
                row += f"{'-':>12s}"
                continue
            router = make_router(n, kwargs, open_breakers, seed=n)
            body = {**BODY, "stream": True} if stream else BODY
            call = Call(request_id="bench", endpoint="chat", body=body, headers={})
            exclude = frozenset(d.id for d in router.deployments_of(GROUP)[-excluded:]) if excluded else ()
            assert router.pick(GROUP, exclude, call) is not None

            def pick(router: Router = router, exclude: Any = exclude, call: Call = call) -> Deployment | None:
                return router.pick(GROUP, exclude, call)

            us = time_picks(pick, args.n, args.runs)
            row += f"{us:12.1f}"
            if n == largest and us >= args.target_us:
                over.append((name, us))
        print(row, flush=True)
    if over:
        worst = ", ".join(f"{name} {us:.1f} µs (+{us - args.target_us:.1f} µs, {us / args.target_us:.1f}x)"
                          for name, us in over)
        print(f"FAIL: at {largest} deployments, over the {args.target_us:g} µs target: {worst}")
    else:
        print(f"PASS: every case picks among {largest} deployments in < {args.target_us:g} µs")


if __name__ == "__main__":
    main()
