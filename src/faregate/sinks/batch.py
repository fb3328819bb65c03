"""`BatchSink`: collect rows on the request path (a list append), write them in the background.

Rows are written at least every `interval` seconds, sooner when `max_batch` rows wait, and all
of them on `close()` (the gateway's shutdown, which SIGTERM reaches after in-flight requests
drained). A failed write keeps its rows and is retried with backoff, so an unreachable
database delays rows instead of losing them; past `max_buffer` waiting rows the oldest are
dropped with an error log (memory is the limit). What `kill -9` loses: the rows of at most the
last `interval` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("faregate.sinks")

Row = dict[str, Any]
Writer = Callable[[list[Row]], Awaitable[None]]


class BatchSink:
    def __init__(self, name: str, write: Writer, *, interval: float = 1.0, max_batch: int = 1000,
                 max_buffer: int = 1_000_000) -> None:
        self.name = name
        self._write = write
        self.interval = interval
        self.max_batch = max_batch
        self.max_buffer = max_buffer
        self._rows: list[Row] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.written = 0
        self.dropped = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"sink:{self.name}")

    def put(self, row: Row) -> None:
        self._rows.append(row)
        if len(self._rows) >= self.max_batch:
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._rows)

    async def _run(self) -> None:
        failures = 0
        while not self._closing:
            wait = self.interval if not failures else min(30.0, self.interval * 2 ** failures)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait)
            self._wake.clear()
            failures = 0 if await self._flush() else failures + 1

    async def _flush(self) -> bool:
        """Write what waits; True on success (or nothing to do)."""
        while self._rows:
            batch, self._rows = self._rows[: self.max_batch], self._rows[self.max_batch:]
            try:
                await self._write(batch)
            except Exception as exc:
                self._rows[:0] = batch  # keep order; retried on the next round
                overflow = len(self._rows) - self.max_buffer
                if overflow > 0:
                    del self._rows[:overflow]
                    self.dropped += overflow
                    log.error("sink %s: dropped the %d oldest rows: the buffer is full", self.name, overflow)
                log.error("sink %s: writing %d rows failed (%s); %d rows wait", self.name, len(batch),
                          type(exc).__name__, len(self._rows))
                return False
            self.written += len(batch)
        return True

    async def close(self, attempts: int = 5) -> None:
        """Stop the loop and write everything that waits (retrying a few times)."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        for attempt in range(attempts):
            if await self._flush():
                return
            await asyncio.sleep(0.2 * 2 ** attempt)
        log.error("sink %s: %d rows could not be written at shutdown", self.name, len(self._rows))
