"""Active health probes: with `router_settings.health_check_interval`, every deployment gets a
cheap request (a one-token chat completion, or a one-word embedding) that often, and the
outcome feeds its circuit breaker and stats like real traffic — so a deployment nobody is
calling right now is known dead (or alive again) before a user finds out. Off by default:
on a paid API each probe is a billed request of a few tokens. The local model is not probed
(it is in the process)."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

from faregate.core.call import Call
from faregate.core.errors import GatewayError
from faregate.core.tasks import stop_task
from faregate.providers.base import Provider
from faregate.routing.deployment import Deployment
from faregate.routing.retries import HEALTH_FAILURES, classify

_ids = itertools.count(1)


class ActiveProbes:
    def __init__(self, deployments: list[Deployment], providers: dict[str, Provider], breakers: Any,
                 interval: float, timeout: float = 10.0) -> None:
        self.deployments = [d for d in deployments if d.provider != "local"]
        self.providers = providers
        self.breakers = breakers
        self.interval = interval
        self.timeout = min(timeout, interval)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._task is None and self.deployments:
            self._task = asyncio.create_task(self._run(), name="health-probes")

    async def close(self) -> None:
        task, self._task = self._task, None
        await stop_task(task)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await asyncio.gather(*(self.probe(d) for d in self.deployments))

    async def probe(self, d: Deployment) -> bool:
        embedding = d.model_info.get("mode") == "embedding"
        body: dict[str, Any] = ({"model": d.group, "input": "ping"} if embedding else
                                {"model": d.group, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1})
        call = Call(request_id=f"probe-{next(_ids)}", endpoint="embeddings" if embedding else "chat", body=body, headers={})
        call.timeout = self.timeout
        provider = self.providers[d.id]
        started = time.perf_counter()
        error: str | None = None
        try:
            await (provider.embeddings(call) if embedding else provider.chat(call))
            ok = True
        except GatewayError as exc:
            ok = classify(exc) not in HEALTH_FAILURES  # answered, just not to this request: alive
            error = None if ok else f"{exc.code}: {exc.message}"
        except Exception as exc:  # noqa: BLE001 - a probe never takes the loop down
            ok, error = False, f"{type(exc).__name__}"
        d.stats.probed(ok, time.perf_counter() - started, error)
        if self.breakers is not None:
            await self.breakers.record(d.id, ok)
        return ok
