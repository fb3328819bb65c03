"""`RequestLog`: everything the request log needs in one gateway process — the pipeline stage,
its batching sink and writer, the redactor, and the retention task — built from the config's
`request_log:` section with one call, started and closed with the gateway.

Cheap to build: no SQLAlchemy, no Presidio. Presidio loads in a worker thread once the gateway
serves (only when bodies are redacted); SQLAlchemy with the retention task, in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from faregate.logs.redact import Redactor
from faregate.logs.settings import RequestLogSettings
from faregate.logs.writer import LogWriter
from faregate.sinks.batch import BatchSink
from faregate.stages.log import Log

log = logging.getLogger("faregate.logs")

_MAX_WAITING = 10_000

class RequestLog:
    def __init__(self, settings: RequestLogSettings, database_url: str,
                 secrets: Iterable[str | None] = ()) -> None:
        self.settings = settings
        self.redactor = Redactor(settings.entities, min_score=settings.min_score, secrets=secrets,
                                 presidio=settings.needs_presidio)
        self.writer = LogWriter(database_url, self.redactor, settings.max_body_chars)
        # As the ledger's: small, frequent batches (each write holds the event loop briefly). An
        # entry waiting holds its call's bodies: while the database is unreachable, at most
        # `_MAX_WAITING` wait (the oldest are dropped), not the ledger's million.
        self.sink = BatchSink("request_log", self.writer, interval=0.25, max_batch=250,
                              max_buffer=_MAX_WAITING)
        self.stage = Log(self.sink, bodies=settings.bodies, sample_rate=settings.sample_rate)
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, db: Callable[[], Awaitable[Any]]) -> None:
        """Start the sink, then in the background: open the writer (and load Presidio), and
        run retention on the admin engine `db()`."""
        self.sink.start()
        self._tasks.append(asyncio.create_task(self._open()))
        self._tasks.append(asyncio.create_task(self._retain(db)))

    async def _open(self) -> None:
        try:
            await self.writer.open()
        except Exception as exc:  # retried at the first write; never fatal here
            log.error("request log: opening failed: %s: %s", type(exc).__name__, exc)

    async def _retain(self, db: Callable[[], Awaitable[Any]]) -> None:
        retention = await asyncio.to_thread(importlib.import_module, "faregate.logs.retention")
        await retention.retain(db, self.settings.retention_days, self.settings.retention_interval_seconds)

    async def close(self) -> None:
        """After the providers closed: every finished call's entry is in the sink."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.sink.close()
        await self.writer.close()


def request_log(config: Any, database_url: str, deployments: Iterable[Any] = ()) -> RequestLog | None:
    """The request log for this config, or None when `request_log.mode` is off. The secrets it
    always removes from stored bodies: the master key, the virtual-key secret and every
    deployment's upstream API key."""
    settings = getattr(config, "request_log", None)
    if settings is None or isinstance(settings, dict):  # before the section is in the schema
        settings = RequestLogSettings.model_validate(settings or {})
    if settings.mode == "off":
        return None
    gs = config.general_settings
    secrets = [s.get_secret_value() for s in (gs.master_key, getattr(gs, "secret_key", None)) if s is not None]
    secrets.append(os.environ.get("FAREGATE_SECRET_KEY"))
    secrets += [d.api_key for d in deployments]
    return RequestLog(settings, database_url, secrets)
