"""Prometheus metrics. The names are a contract: deploy/grafana/faregate.json and
deploy/prometheus/alerts.yml read them. Labels are bounded — model group, deployment, provider,
status, error type, cache outcome — never a key, a user id or free text (a request for an
unknown model is counted under model "unknown").

Per call everything is recorded once, by the observe stage's after-step (stages/observe.py),
from the finished `Call`: no metric work happens while the call runs. Gauges of state (requests
in flight per deployment, queue depth, breaker state, team budgets left) are sampled once a
second by `Sampler`, not updated per request.

Several workers: `faregate serve --workers N` sets PROMETHEUS_MULTIPROC_DIR for them
(prometheus-client's multiprocess mode), so /metrics on any worker answers for all of them and
counters survive a worker's restart. One replica per host: scrape every replica; Prometheus
sums. Counters agree with the ledger: the same calls, the same tokens, the same cost (the
ledger to the nano-dollar, the counter as a float).
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

if TYPE_CHECKING:
    from faregate.core.call import Call

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
OVERHEAD = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
ITL = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0)
ERROR_TYPES = frozenset({"invalid_request_error", "authentication_error", "permission_error", "not_found_error",
                         "rate_limit_error", "insufficient_quota", "api_error", "overloaded_error", "timeout_error"})
LIMIT_SCOPES = ("key", "user", "team", "deployment", "conversation")
BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}


def model_label(call: Call) -> str:
    """The model group, or "unknown" for a request naming none that exists (bounded labels)."""
    err = call.error
    return "unknown" if err is not None and err.code == "model_not_found" else call.model


def error_type(err: Any) -> str:
    """The error's OpenAI type, or "other" for a type an upstream made up (bounded labels)."""
    return err.type if err.type in ERROR_TYPES else "other"


class Metrics:
    def __init__(self) -> None:
        self.requests = Counter("faregate_requests", "Requests by model group, deployment, provider, HTTP status, error type and cache outcome.",
                                ["model", "deployment", "provider", "status", "error_type", "cache"])
        self.duration = Histogram("faregate_request_duration_seconds", "End-to-end request time (a stream: to its end).",
                                  ["model", "deployment"], buckets=LATENCY)
        self.overhead = Histogram("faregate_overhead_seconds", "Gateway time per request, excluding the wait on upstreams.",
                                  buckets=OVERHEAD)
        self.upstream = Histogram("faregate_upstream_duration_seconds", "Time spent waiting on the upstream per request.",
                                  ["deployment", "provider"], buckets=LATENCY)
        self.ttft = Histogram("faregate_time_to_first_token_seconds", "Streams: time to the first chunk.",
                              ["model", "deployment"], buckets=LATENCY)
        self.itl = Histogram("faregate_inter_token_latency_seconds",
                             "Streams: mean time between output tokens, (end - first token) / (output tokens - 1).",
                             ["model", "deployment"], buckets=ITL)
        self.tokens = Counter("faregate_tokens", "Tokens billed by upstreams, by type.", ["model", "type"])
        self.cost = Counter("faregate_cost_usd", "Cost of upstream calls, USD.", ["model", "deployment"])
        self.saved = Counter("faregate_saved_usd", "What cache hits would have cost upstream, USD.", ["model", "cache"])
        self.cache = Counter("faregate_cache_requests", "Cache lookups by layer and outcome (bypass: not looked up).",
                             ["layer", "outcome"])
        self.rejections = Counter("faregate_ratelimit_rejections", "Requests refused by a rate limit, by whose limit.",
                                  ["scope"])
        self.in_flight = Gauge("faregate_in_flight", "Requests in flight per deployment.", ["deployment"],
                               multiprocess_mode="livesum")
        self.queue_depth = Gauge("faregate_queue_depth", "Requests waiting in the gateway's fair queues.",
                                 multiprocess_mode="livesum")
        self.breaker = Gauge("faregate_breaker_state", "Circuit breaker per deployment: 0 closed, 1 half-open, 2 open.",
                             ["deployment"], multiprocess_mode="max")
        self.budget = Gauge("faregate_budget_remaining_usd", "Team budget left in its current period, USD.", ["team"],
                            multiprocess_mode="mostrecent")
        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: Any, labels: tuple[str, ...]) -> Any:
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def observe(self, call: Call) -> None:
        """Everything one finished call contributes."""
        err, dep, child = call.error, call.deployment, self._child
        model = model_label(call)
        dep_id, provider = (dep.id, dep.provider) if dep is not None else ("", "")
        etype = "" if err is None else error_type(err)
        child(self.requests, (model, dep_id, provider, str(call.status), etype, call.cache or "")).inc()
        end = call.finished_at or time.perf_counter()
        child(self.duration, (model, dep_id)).observe(end - call.started)
        self.overhead.observe(call.overhead_seconds(end))
        if dep is not None:
            child(self.upstream, (dep_id, provider)).observe(call.upstream_wait)
        tokens = call.tokens
        if call.first_token_at is not None and call.streaming:
            child(self.ttft, (model, dep_id)).observe(call.first_token_at - call.started)
            if tokens is not None and tokens.output > 1 and dep is not None:
                child(self.itl, (model, dep_id)).observe((end - call.first_token_at) / (tokens.output - 1))
        if tokens is not None:
            for kind, n in (("input", tokens.input), ("cached_input", tokens.cached_input),
                            ("output", tokens.output), ("reasoning", tokens.reasoning)):
                if n:
                    child(self.tokens, (model, kind)).inc(n)
        if call.cost is not None and call.cost.priced:
            child(self.cost, (model, dep_id)).inc(float(call.cost.total_usd))
        if call.saved_nusd:
            child(self.saved, (model, call.cache or "")).inc(call.saved_nusd / 1e9)
        if err is not None and err.status == 429 and err.code and err.code.endswith("_exceeded"):
            scope = err.code.split("_", 1)[0]
            if scope in LIMIT_SCOPES:
                child(self.rejections, (scope,)).inc()

    def sample(self, routing: Any, budgets: list[Any] | None = None) -> None:
        """Set the state gauges from the router (and team budgets, when given)."""
        breakers = routing.breakers
        for deps in routing.router.groups.values():
            for d in deps:
                self._child(self.in_flight, (d.id,)).set(d.stats.in_flight)
                self._child(self.breaker, (d.id,)).set(BREAKER_STATES.get(breakers.state(d.id), 0))
        queues = [routing.queue, *routing.deployment_queues.values()]
        self.queue_depth.set(sum(q.snapshot()["waiting"] for q in queues if q is not None))
        for b in budgets or ():
            if b.scope.startswith("team:"):
                self._child(self.budget, (b.scope[5:],)).set(max(0, b.budget_nusd - b.spent_nusd) / 1e9)


_METRICS: list[Metrics] = []


def metrics() -> Metrics:
    """This process's metrics (created on first use)."""
    if not _METRICS:
        _METRICS.append(Metrics())
    return _METRICS[0]


def exposition() -> bytes:
    """/metrics: this process's registry, or every worker's in multiprocess mode."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)
