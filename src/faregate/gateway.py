"""`Gateway`: everything one process builds from a config — transport, providers, router and
the pipeline — with one start-up and one shutdown. The HTTP layer holds one of these."""

from __future__ import annotations

import asyncio
import gc
import importlib
import logging
import time
from typing import Any

from faregate.access.budget import Budgets
from faregate.access.directory import Directory
from faregate.access.limiter import Limiter
from faregate.access.records import AccessPlan
from faregate.access.secrets import KeyHasher
from faregate.access.seeding import budget_statuses, seed_budgets
from faregate.accounting.ledger import ledger_writer
from faregate.accounting.pricing import PriceBook
from faregate.accounting.tokens import TokenCounter
from faregate.config.schema import Config
from faregate.core.pipeline import Pipeline
from faregate.logs.service import request_log
from faregate.providers.base import Provider
from faregate.providers.registry import build_provider
from faregate.providers.transport import Transport
from faregate.routing.build import build_routing
from faregate.routing.deployment import Deployment, build_deployments
from faregate.sinks.batch import BatchSink
from faregate.stages.account import Account
from faregate.stages.admit import Admit
from faregate.stages.authenticate import Authenticate
from faregate.stages.cache import Cache
from faregate.stages.invoke import Invoke
from faregate.stages.meter import Meter
from faregate.stages.observe import Observe
from faregate.stages.route import Route
from faregate.storage.urls import database_url, redis_url
from faregate.telemetry.genai_metrics import GenAIMetrics
from faregate.telemetry.metrics import metrics
from faregate.telemetry.tracing import Tracing

log = logging.getLogger("faregate")


class Gateway:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.created = int(time.time())
        self.transport = Transport(connect_timeout=config.server.connect_timeout,
                                   max_per_host=config.server.max_connections_per_host)
        self.deployments: list[Deployment] = build_deployments(config)
        self.providers: dict[str, Provider] = {
            d.id: build_provider(d, self.transport, config.local_model) for d in self.deployments
        }
        rs = config.router_settings
        self.prices = PriceBook(self.deployments)
        self.tokens = TokenCounter()
        self.database_url = database_url(config)
        self.redis_url = redis_url(config)
        self.redis: Any = None
        if self.redis_url:  # connects lazily, on first use
            import redis.asyncio as aioredis

            self.redis = aioredis.from_url(self.redis_url)
        self._engine: Any = None
        self.directory = Directory(KeyHasher.from_config(config))
        master = config.general_settings.master_key
        self.auth = Authenticate(master.get_secret_value() if master else None, self.directory)
        self.routing = build_routing(config, self.deployments, self.prices, self.redis)
        self.routing.probe_with(self.providers, rs.health_check_interval)
        self.router = self.routing.router
        self.limiter = Limiter(self.redis_url, self.redis, config.limits.rpm_strategy)
        self.budgets = Budgets(self.redis)
        self.ledger_writer = ledger_writer(self.database_url)
        # Small, frequent batches: each write holds the event loop for a few ms at most.
        self.ledger = BatchSink("ledger", self.ledger_writer, interval=0.25, max_batch=250)
        self.request_log = request_log(config, self.database_url, self.deployments)  # None: mode off
        longest = max([config.server.default_timeout, *(d.timeout for d in self.deployments)])
        self.cache = _response_cache(config, self.redis, lambda call: self.pipeline.run(call))
        self.metrics = metrics()
        self.genai_metrics = GenAIMetrics.from_settings(config)  # None unless OTLP is configured
        self.tracing = Tracing.from_settings(config)  # None unless OTLP is configured
        self.pipeline = Pipeline([
            self.auth,
            Observe(self.metrics, self.genai_metrics),
            Account(self.ledger),
            *([self.request_log.stage] if self.request_log is not None else []),
            Route(self.router),
            Admit(self.limiter, self.budgets, self.tokens, self.prices, self.router, config.limits,
                  max_request_seconds=longest * (rs.num_retries + 1)),
            *([Cache(self.cache, self.prices)] if self.cache is not None else []),
            Invoke(self.router, self.providers, self.routing.policy, budget=self.routing.budget,
                   breakers=self.routing.breakers, limiter=self.limiter, counter=self.tokens,
                   default_max_tokens=config.limits.default_max_tokens, queue=self.routing.queue,
                   deployment_queues=self.routing.deployment_queues, tracing=self.tracing),
            Meter(self.prices, self.tokens),
        ], tracing=self.tracing)
        self._starting: list[asyncio.Task[None]] = []
        self.alerts: Any = None
        self._leader_lock: Any = None

    async def db(self) -> Any:
        """The SQLAlchemy async engine (admin API, directory, alerts); never used per request."""
        if self._engine is None:
            from faregate.storage.db import create_engine

            self._engine = create_engine(self.database_url)
        return self._engine

    async def start(self) -> None:
        await self.transport.start()
        await self.routing.start()
        self.directory.on_change.append(lambda d: seed_budgets(d, self.budgets, self._engine))
        self.directory.on_change.append(self._prepare_access)
        self.ledger.start()
        if self.request_log is not None:
            self.request_log.start(self.db)
        if self.cache is not None:  # the embedder loads in the background: semantic misses until then
            self._starting.append(asyncio.create_task(self.cache.start()))
        self._starting.append(asyncio.create_task(self._sample_gauges()))
        # Prices and the database driver load in the background: /health/live answers at once.
        self._starting.append(asyncio.create_task(self._warm_up()))
        # Providers that load something (the local model) do it in the background: the process
        # answers /health/live at once and /health/ready when every provider is ready.
        for provider in self.providers.values():
            self._starting.append(asyncio.create_task(self._start_provider(provider)))

    async def _warm_up(self) -> None:
        try:
            engine = await self.db()
            self._starting.append(asyncio.create_task(
                self.directory.run(engine, self.config.limits.key_refresh_seconds, self.redis)))
            await self.prices.load_out_of_process()
            await self.ledger_writer.open()
            if self.config.alerts.enabled and self._alerts_leader():
                from faregate.accounting.alerts import AlertMonitor

                self.alerts = AlertMonitor(self.config.alerts, engine, redis=self.redis, slo=self.config.slo,
                                           budget_status=lambda: budget_statuses(self.directory, self.budgets))
                self._starting.append(asyncio.create_task(self.alerts.run()))
            await self.directory.wait_loaded()
        except Exception as exc:  # retried on first use; never fatal here
            log.error("warm-up failed: %s: %s", type(exc).__name__, exc)
        _freeze_heap()

    async def _prepare_access(self, directory: Directory) -> None:
        """Load the rate limiter and the tokenizer (~50 MB) only once some key, user, team or
        deployment has a limit that needs them — off the request path, in a thread."""
        every = AccessPlan.of(tuple(directory.live_subjects()))  # what all of them together need
        cfg = self.config.limits
        deps = self.deployments
        if self.limiter.storage is None and (
                cfg.conversation_max_requests or any(d.rpm or d.tpm for d in deps)
                or every.rpm or every.tpm or every.parallel or every.conversation_max_requests):
            await asyncio.to_thread(importlib.import_module, "limits.aio.strategies")
            self.limiter.prepare()
        if not self.tokens.loaded and (
                cfg.conversation_max_cost_usd is not None or any(d.tpm for d in deps) or every.needs_tokens):
            self._starting.append(asyncio.create_task(self._load_tokens()))

    async def _sample_gauges(self, interval: float = 1.0) -> None:
        """State gauges (in flight, queues, breakers each second; team budgets every 5 s)."""
        tick = 0
        while True:
            try:
                budgets = None
                if tick % 5 == 0 and self.directory.loaded:
                    budgets = await budget_statuses(self.directory, self.budgets, "team")
                self.metrics.sample(self.routing, budgets)
            except Exception as exc:  # never fatal; try again next tick
                log.debug("gauge sampling failed: %s", exc)
            tick += 1
            await asyncio.sleep(interval)

    async def _load_tokens(self) -> None:
        await self.tokens.ready()
        _freeze_heap()

    def _alerts_leader(self) -> bool:
        """One worker per host runs the alert checks (an exclusive lock in data_dir); across
        hosts, Redis makes each alert go out once."""
        import fcntl

        path = self.config.server.data_dir.expanduser()
        path.mkdir(parents=True, exist_ok=True)
        self._leader_lock = open(path / "alerts.lock", "w")  # noqa: SIM115 - held for the process's life
        try:
            fcntl.flock(self._leader_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:
            return False

    async def _start_provider(self, provider: Provider) -> None:
        try:
            await provider.start()
        except Exception as exc:  # a broken deployment must not take the others down
            log.error("deployment %s failed to start: %s", provider.deployment.id, exc)

    def ready(self) -> tuple[bool, dict[str, bool]]:
        states = {pid: p.ready() for pid, p in self.providers.items()}
        return all(states.values()) and self.directory.loaded, states

    async def close(self) -> None:
        for task in self._starting:
            task.cancel()
        for provider in self.providers.values():
            try:
                await provider.close()
            except Exception as exc:  # pragma: no cover - best effort at shutdown
                log.warning("deployment %s did not close cleanly: %s", provider.deployment.id, exc)
        await self.transport.close()
        await self.routing.close()
        if self.cache is not None:
            await self.cache.close()
        if self.alerts is not None:
            await self.alerts.close()
        await self.ledger.close()  # after providers: every finished call's row is in the sink
        await self.ledger_writer.close()
        if self.request_log is not None:
            await self.request_log.close()
        if self._engine is not None:
            await self._engine.dispose()
        if self.redis is not None:
            await self.redis.aclose()
        if self.tracing is not None:  # last: every finished call's spans are exported
            await self.tracing.close()
        if self.genai_metrics is not None:
            await self.genai_metrics.close()


def _response_cache(config: Config, redis: Any, run: Any) -> Any:
    """The response cache when some model group caches (imported only then); its embedder is
    the bundled model or, with `cache.embedder: <group>`, that model group through `run`."""
    from faregate.cache.policy import CachePolicy

    if not CachePolicy(config.cache).enabled:
        return None
    from faregate.cache.layers import ResponseCache

    group = config.cache.embedder
    if group == "local":
        return ResponseCache(config.cache, redis)
    def load(loop: Any) -> Any:
        from faregate.cache.remote_embedder import GroupEmbedder

        return GroupEmbedder(group, run, loop)

    return ResponseCache(config.cache, redis, load_embedder=load)


def _freeze_heap() -> None:
    """What warm-up loaded (database driver, prices, tokenizer) lives as long as the process:
    move it out of the garbage collector's view, as the app does at start (see http/app.py)."""
    gc.collect()
    gc.freeze()
