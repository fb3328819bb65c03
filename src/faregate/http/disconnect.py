"""`ClientWatch`: cancel a request's task the moment its client disconnects.

One asyncio task waits on `receive()` (after the request body was read, the next message is
`http.disconnect`); when it comes, `on_gone` runs and the watched task is cancelled, so work
blocked on a slow upstream stops at once. Used while the pipeline runs (http/calls.py) and
while a stream is sent (http/sse_response.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from starlette.types import Receive


class ClientWatch:
    __slots__ = ("gone", "_watcher")

    def __init__(self, receive: Receive, task: asyncio.Task, on_gone: Callable[[], None] | None = None) -> None:
        self.gone = False  # the client disconnected (and the task was cancelled for it)
        self._watcher = asyncio.get_running_loop().create_task(self._watch(receive, task, on_gone))

    async def _watch(self, receive: Receive, task: asyncio.Task, on_gone: Callable[[], None] | None) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.gone = True
        if on_gone is not None:
            on_gone()
        task.cancel()

    def stop(self) -> None:
        self._watcher.cancel()
