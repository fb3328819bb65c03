"""`Gateway`: everything one process builds from a config — transport, providers, router and
the pipeline — with one start-up and one shutdown. The HTTP layer holds one of these."""

from __future__ import annotations

import asyncio
import logging
import time

from faregate.accounting.ledger import ledger_writer
from faregate.accounting.pricing import PriceBook
from faregate.config.schema import Config
from faregate.core.pipeline import Pipeline
from faregate.providers.base import Provider
from faregate.providers.registry import build_provider
from faregate.providers.transport import Transport
from faregate.routing.deployment import Deployment, build_deployments
from faregate.routing.router import Router
from faregate.sinks.batch import BatchSink
from faregate.stages.account import Account
from faregate.stages.authenticate import Authenticate
from faregate.stages.invoke import Invoke
from faregate.stages.route import Route
from faregate.storage.urls import database_url

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
        self.router = Router(self.deployments, config.router_settings.fallbacks)
        master = config.general_settings.master_key
        self.auth = Authenticate(master.get_secret_value() if master else None)
        rs = config.router_settings
        self.prices = PriceBook(self.deployments)
        self.ledger_writer = ledger_writer(database_url(config))
        # Small, frequent batches: each write holds the event loop for a few ms at most.
        self.ledger = BatchSink("ledger", self.ledger_writer, interval=0.25, max_batch=250)
        self.pipeline = Pipeline([
            self.auth,
            Account(self.prices, self.ledger),
            Route(self.router),
            Invoke(self.router, self.providers, num_retries=rs.num_retries, backoff=rs.retry_backoff_seconds),
        ])
        self._starting: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await self.transport.start()
        self.ledger.start()
        # Prices and the database driver load in the background: /health/live answers at once.
        self._starting.append(asyncio.create_task(self._warm_up()))
        # Providers that load something (the local model) do it in the background: the process
        # answers /health/live at once and /health/ready when every provider is ready.
        for provider in self.providers.values():
            self._starting.append(asyncio.create_task(self._start_provider(provider)))

    async def _warm_up(self) -> None:
        try:
            await asyncio.to_thread(self.prices.load)
            await self.ledger_writer.open()
        except Exception as exc:  # retried on first use; never fatal here
            log.error("warm-up failed: %s: %s", type(exc).__name__, exc)

    async def _start_provider(self, provider: Provider) -> None:
        try:
            await provider.start()
        except Exception as exc:  # a broken deployment must not take the others down
            log.error("deployment %s failed to start: %s", provider.deployment.id, exc)

    def ready(self) -> tuple[bool, dict[str, bool]]:
        states = {pid: p.ready() for pid, p in self.providers.items()}
        return all(states.values()), states

    async def close(self) -> None:
        for task in self._starting:
            task.cancel()
        for provider in self.providers.values():
            try:
                await provider.close()
            except Exception as exc:  # pragma: no cover - best effort at shutdown
                log.warning("deployment %s did not close cleanly: %s", provider.deployment.id, exc)
        await self.transport.close()
        await self.ledger.close()  # after providers: every finished call's row is in the sink
        await self.ledger_writer.close()
