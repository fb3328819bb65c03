"""Everything routing needs, built from the config in one place: the router and its strategies,
circuit breakers (shared through Redis when configured), the retry policy and budget, the
self-hosted engines' load monitor, and the fair queues of `max_in_flight` /
`max_parallel_requests`. The gateway starts and closes what runs in the background."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from faregate.accounting.pricing import PriceBook, Tokens
from faregate.config.schema import Config
from faregate.routing.breaker import Breakers, BreakerSettings
from faregate.routing.deployment import Deployment
from faregate.routing.engine_load import EngineMonitor, EngineThresholds
from faregate.routing.fair_queue import FairQueue, QueueSettings
from faregate.routing.probes import ActiveProbes
from faregate.routing.retries import RetryPolicy
from faregate.routing.retry_budget import RetryBudget
from faregate.routing.router import Router

_MILLION = Tokens(input=1_000_000, output=1_000_000)


@dataclass
class Routing:
    router: Router
    breakers: Breakers
    policy: RetryPolicy
    budget: RetryBudget
    engines: EngineMonitor | None = None
    queue: FairQueue | None = None
    deployment_queues: dict[str, FairQueue] = field(default_factory=dict)
    probes: ActiveProbes | None = None

    def probe_with(self, providers: dict[str, Any], interval: float | None) -> None:
        if interval:
            deps = [d for ds in self.router.groups.values() for d in ds]
            self.probes = ActiveProbes(deps, providers, self.breakers, interval)

    async def start(self) -> None:
        await self.breakers.start()
        if self.engines is not None:
            await self.engines.start()
        if self.probes is not None:
            await self.probes.start()

    async def close(self) -> None:
        if self.probes is not None:
            await self.probes.close()
        await self.breakers.close()
        if self.engines is not None:
            await self.engines.close()

    def health(self) -> dict[str, Any]:
        """Per deployment: breaker, passive stats, engine load (`GET /health/deployments`)."""
        breakers = self.breakers.snapshot()
        engines = self.engines.snapshot() if self.engines is not None else {}
        out: dict[str, Any] = {}
        for group, deps in self.router.groups.items():
            for d in deps:
                out[d.id] = {
                    "group": group, "provider": d.provider, "model": d.upstream_model, "order": d.order,
                    "strategy": self.router.strategy_of(group),
                    "breaker": breakers.get(d.id, {"state": self.breakers.state(d.id)}),
                    "cooling_down": self.router.cooling(d.id),
                    **d.stats.snapshot(),
                    **({"engine": engines[d.id]} if d.id in engines else {}),
                    **({"queue": self.deployment_queues[d.id].snapshot()} if d.id in self.deployment_queues else {}),
                }
        return out


def build_routing(config: Config, deployments: list[Deployment], prices: PriceBook, redis: Any = None) -> Routing:
    rs = config.router_settings
    breakers = Breakers(BreakerSettings(failure_threshold=rs.allowed_fails, error_rate=rs.breaker.error_rate,
                                        min_requests=rs.breaker.min_requests, window_seconds=rs.breaker.window_seconds,
                                        cooldown_seconds=rs.cooldown_time, half_open_probes=rs.breaker.half_open_probes),
                        redis=redis)
    engines = _engines(deployments)

    def price_of(d: Deployment) -> float | None:
        cost = prices.cost(d.id, _MILLION)
        return float(cost.total_usd / Decimal(2_000_000)) if cost.priced else None

    router = Router(deployments, rs.fallbacks, context_window_fallbacks=rs.context_window_fallbacks,
                    content_policy_fallbacks=rs.content_policy_fallbacks, default_fallbacks=rs.default_fallbacks,
                    strategy=rs.routing_strategy, group_strategies=rs.group_strategies, sticky_by=rs.sticky_by,
                    price_of=price_of, breakers=breakers, engines=engines)
    policy = RetryPolicy(rs.num_retries, rs.retry_policy, backoff=rs.retry_backoff_seconds,
                         max_retry_after=rs.max_retry_after_seconds)
    budget = RetryBudget(rs.retry_budget.ratio, rs.retry_budget.min_per_second, rs.retry_budget.window_seconds)
    queue = None
    if rs.max_in_flight:
        queue = FairQueue(QueueSettings(max_in_flight=rs.max_in_flight, max_queue=rs.max_queue,
                                        max_wait_seconds=rs.max_queue_wait_seconds), name="gateway")
    dq = {d.id: FairQueue(QueueSettings(max_in_flight=d.max_parallel, max_queue=rs.max_queue,
                                        max_wait_seconds=rs.max_queue_wait_seconds), name=f"deployment {d.id}")
          for d in deployments if d.max_parallel}
    return Routing(router, breakers, policy, budget, engines, queue, dq)


def _engines(deployments: list[Deployment]) -> EngineMonitor | None:
    targets: dict[str, tuple[str, EngineThresholds | None]] = {}
    for d in deployments:
        p = d.entry.litellm_params if d.entry is not None else None
        if p is None or not p.metrics_url:
            continue
        o = p.overload
        th = EngineThresholds() if o is None else EngineThresholds(
            max_waiting=o.max_waiting, max_kv_usage=o.max_kv_usage, recover_waiting=o.recover_waiting,
            recover_kv_usage=o.recover_kv_usage, scrape_interval=o.scrape_interval,
            stale_after=max(10.0, 5 * o.scrape_interval), flavor=o.engine)
        targets[d.id] = (p.metrics_url, th)
    return EngineMonitor(targets) if targets else None
