"""The request pipeline, in one place (the order is set in gateway.py):

    authenticate -> account (after: ledger row) -> route (404) -> admit (limits, budgets;
    after: settle) -> cache (a hit short-circuits; after: store) -> invoke (retries, fallbacks;
    after: settle deployment TPM) -> meter (after: usage and cost)

On the way back the after-steps run innermost first: meter prices the usage, invoke and admit
settle what they reserved on those figures, and account records the row last — so every
request that got past authentication has one row, refused ones (404, 403, 429) included.
The cache stage is there only when the config caches something. (Later issues add guard input,
guard output and telemetry.)

A stage is an object with `name`, `async before(call) -> bool` and `async after(call)`.
`before` returning True short-circuits: the stage has set `call.response` or `call.stream`
itself (a cache hit) and no later stage runs. Raising `GatewayError` ends the call. `after`
runs on the way back, in reverse order, only for stages whose `before` ran — for a stream,
when the stream has ended (so usage and errors are known).

With `tracing` (telemetry/tracing.py) each stage is wrapped once, here, to run in its own span,
and the call's root span starts with `run` and ends after the last after-step; without it (the
default) the stages are the objects themselves and no tracing code runs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, Protocol

from faregate.core.call import Call
from faregate.core.errors import GatewayError, client_closed

if TYPE_CHECKING:
    from faregate.telemetry.tracing import Tracing


class Stage(Protocol):
    name: str

    async def before(self, call: Call) -> bool: ...

    async def after(self, call: Call) -> None: ...


class Pipeline:
    def __init__(self, stages: Sequence[Stage], tracing: Tracing | None = None) -> None:
        self.stages = tuple(stages)
        # Only stages that define a real after-step are unwound (skips a no-op await per stage).
        self._with_after = frozenset(s.name for s in self.stages if type(s).after is not _NoAfter.after)
        self.tracing = tracing
        if tracing is not None:
            self.stages = tuple(tracing.wrap(s) for s in self.stages)

    async def run(self, call: Call) -> None:
        """Run the call; on return exactly one of `call.response` / `call.stream` is set."""
        if self.tracing is not None:
            self.tracing.start(call)
        ran: list[Stage] = []
        try:
            for stage in self.stages:
                ran.append(stage)
                if await stage.before(call):
                    break
        except GatewayError as exc:
            call.error = exc
            call.finished_at = time.perf_counter()
            await self._unwind(call, ran)
            raise
        except asyncio.CancelledError:  # the client left (or shutdown ended it): settle, record
            call.error = call.error or client_closed()
            call.finished_at = time.perf_counter()
            await self._unwind(call, ran)
            raise
        if call.stream is not None:
            call.stream = self._close_after(call, call.stream, ran)
        else:
            call.finished_at = time.perf_counter()
            await self._unwind(call, ran)

    async def _close_after(self, call: Call, stream: AsyncGenerator[dict[str, Any], None], ran: list[Stage]) -> AsyncIterator[dict[str, Any]]:
        try:
            async with aclosing(stream):  # closing us closes the upstream at once
                async for chunk in stream:
                    yield chunk
        except GatewayError as exc:
            call.error = exc
            raise
        except GeneratorExit:  # closed before its end: the client left
            call.error = client_closed()
            raise
        finally:
            call.finished_at = time.perf_counter()
            await self._unwind(call, ran)

    async def _unwind(self, call: Call, ran: list[Stage]) -> None:
        try:
            for stage in reversed(ran):
                if stage.name in self._with_after:
                    await stage.after(call)
        finally:
            if self.tracing is not None:  # the call's spans end with its last after-step
                self.tracing.end(call)


class _NoAfter:
    """Base for stages without an after-step."""

    name = "noop"

    async def after(self, call: Call) -> None:
        return None


NoAfter = _NoAfter
