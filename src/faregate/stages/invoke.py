"""invoke: call a deployment, retrying and falling back on retryable upstream failures.

For each group in the route plan (the requested group, then its fallbacks) it tries up to
`num_retries + 1` deployments, never the same one twice in a group, with exponential backoff
and full jitter (or the upstream's `retry-after`, capped) between attempts. A stream may be
retried only until its first chunk arrived: `before` awaits that chunk, so once the client has
a byte, a failure ends the stream with an error event and is never retried or mixed.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from typing import Any

from faregate.access.limiter import Limiter, TokenHold
from faregate.accounting.tokens import TokenCounter, call_estimate
from faregate.core.call import Call
from faregate.core.errors import GatewayError, upstream_unavailable
from faregate.providers.base import Provider
from faregate.providers.transport import UpstreamError
from faregate.routing.deployment import Deployment
from faregate.routing.router import Router

_MAX_BACKOFF = 2.0


class Invoke:
    name = "invoke"

    def __init__(self, router: Router, providers: dict[str, Provider], *, num_retries: int, backoff: float,
                 limiter: Limiter | None = None, counter: TokenCounter | None = None,
                 default_max_tokens: int = 4096) -> None:
        self.router = router
        self.providers = providers
        self.num_retries = num_retries
        self.backoff = backoff
        self.limiter = limiter
        self.counter = counter
        self.default_max_tokens = default_max_tokens
        self._random = random.Random()

    async def before(self, call: Call) -> bool:
        last: GatewayError | None = None
        for group in self.router.plan(call.model):
            tried: set[str] = set()
            for attempt in range(self.num_retries + 1):
                dep = self.router.pick(group, tried)
                if dep is None:
                    break
                if (dep.rpm or dep.tpm) and self.limiter is not None:
                    refusal = await self._deployment_limit(call, dep)
                    if refusal is not None:  # at its own RPM/TPM: another deployment may have room
                        last = refusal
                        tried.add(dep.id)
                        continue
                if attempt:
                    await asyncio.sleep(self._delay(attempt, last))
                call.deployment = dep
                call.attempts += 1
                try:
                    await self._attempt(call, self.providers[dep.id])
                    return False
                except UpstreamError as exc:
                    last = exc
                    if not exc.retryable:
                        raise
                    tried.add(dep.id)
        raise last or upstream_unavailable(f"No deployment of '{call.model}' is available.")

    async def after(self, call: Call) -> None:
        hold: TokenHold | None = call.deployment_hold
        if hold is not None and self.limiter is not None:
            tokens = call.tokens
            served = call.deployment is not None and hold.ident == f"deployment:{call.deployment.id}"
            await self.limiter.settle_tokens(hold, (tokens.input + tokens.output) if tokens and served else 0)

    async def _deployment_limit(self, call: Call, dep: Deployment) -> GatewayError | None:
        """Count this attempt against the deployment's own rpm/tpm (litellm_params)."""
        assert self.limiter is not None
        scope = f"deployment:{dep.id}"
        if dep.rpm and not await self.limiter.hit_requests(scope, dep.rpm):
            return GatewayError(429, f"Every deployment of '{call.model}' is at its requests-per-minute limit.",
                                type="rate_limit_error", code="deployment_rpm_exceeded", headers={"retry-after": "1"})
        if dep.tpm and self.counter is not None:
            prompt, max_out = await call_estimate(self.counter, call, self.default_max_tokens)
            hold = await self.limiter.hit_tokens(scope, dep.tpm, prompt + max_out)
            if hold is None:
                return GatewayError(429, f"Every deployment of '{call.model}' is at its tokens-per-minute limit.",
                                    type="rate_limit_error", code="deployment_tpm_exceeded", headers={"retry-after": "1"})
            if call.deployment_hold is not None:  # an earlier attempt's charge: it did not run
                await self.limiter.settle_tokens(call.deployment_hold, 0)
            call.deployment_hold = hold
        return None

    def _delay(self, attempt: int, error: GatewayError | None) -> float:
        if isinstance(error, UpstreamError) and error.retry_after is not None:
            return min(error.retry_after, _MAX_BACKOFF)
        return self._random.uniform(0, min(_MAX_BACKOFF, self.backoff * (2 ** (attempt - 1))))

    async def _attempt(self, call: Call, provider: Provider) -> None:
        endpoint = call.endpoint
        if endpoint == "embeddings":
            call.response = await provider.embeddings(call)
        elif not call.streaming:
            call.response = await (provider.chat(call) if endpoint == "chat" else provider.completions(call))
        else:
            upstream = provider.chat_stream(call) if endpoint == "chat" else provider.completions_stream(call)
            try:
                first = await upstream.__anext__()
            except StopAsyncIteration:
                raise UpstreamError(502, f"Upstream '{provider.deployment.id}' ended the stream without any data.",
                                    kind="protocol", retryable=True, code="upstream_empty_stream") from None
            except BaseException:
                await upstream.aclose()
                raise
            call.first_token_at = time.perf_counter()
            call.stream = self._relay(call, first, upstream)
            return
        if call.response is not None:
            call.usage = call.response.get("usage")

    @staticmethod
    async def _relay(call: Call, first: dict[str, Any], upstream: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        """Pass chunks on; keep the usage; drop the usage-only chunk the client did not ask for.
        Keep the output text too, so usage can be counted if the upstream never reports it."""
        strip_usage = not call.client_wants_usage
        text = call.stream_text = []
        chunk = first
        try:
            while True:
                usage = chunk.get("usage")
                if usage:
                    call.usage = usage
                    if not (strip_usage and not chunk.get("choices")):
                        yield chunk
                else:
                    for choice in chunk.get("choices") or ():
                        delta = choice.get("delta")
                        piece = delta.get("content") if delta else choice.get("text")
                        if piece:
                            text.append(piece)
                    yield chunk
                chunk = await upstream.__anext__()
        except StopAsyncIteration:
            return
        finally:
            await upstream.aclose()  # type: ignore[attr-defined]
