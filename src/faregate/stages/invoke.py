"""invoke: call a deployment; retry, fall back, and keep score of every deployment's health.

For each group of the route plan (the requested group, then its fallbacks) it asks the router
for a usable deployment and tries it. A failure is classified (routing/retries.py): its class
sets how many retries the group gets; a retry goes to a deployment not tried yet when there is
one, after a jittered backoff (or the upstream's retry-after, for the same deployment). When the
group's retries are used up the next group is tried; a prompt too long for the model (found
before sending when the model's `max_input_tokens` is known, or from the upstream's answer)
goes to `context_window_fallbacks`, a content refusal to `content_policy_fallbacks`. Every
attempt after the first spends from the retry budget, so an outage never turns into a storm.

Each attempt's outcome feeds the deployment's stats and its circuit breaker. A stream may be
retried only until its first chunk arrived: `before` awaits that chunk, so once the client has
a byte, a failure ends the stream with an error event and is never retried or mixed.

With `max_in_flight` (per replica) or a deployment's `max_parallel_requests`, calls beyond the
limit wait in a fair queue (routing/fair_queue.py) and get 429 when it is full or too slow.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from faregate.access.limiter import Limiter, TokenHold
from faregate.accounting.tokens import TokenCounter, call_estimate
from faregate.core.call import Call
from faregate.core.errors import GatewayError, upstream_unavailable
from faregate.providers.base import Provider
from faregate.providers.transport import UpstreamError
from faregate.routing.deployment import Deployment
from faregate.routing.fair_queue import FairQueue, QueueFull
from faregate.routing.retries import HEALTH_FAILURES, RetryPolicy, classify
from faregate.routing.retry_budget import RetryBudget
from faregate.routing.router import FallbackReason, Router

if TYPE_CHECKING:
    from faregate.telemetry.tracing import Tracing


class Invoke:
    name = "invoke"

    def __init__(self, router: Router, providers: dict[str, Provider], policy: RetryPolicy, *,
                 budget: RetryBudget | None = None, breakers: Any = None, limiter: Limiter | None = None,
                 counter: TokenCounter | None = None, default_max_tokens: int = 4096,
                 queue: FairQueue | None = None, deployment_queues: dict[str, FairQueue] | None = None,
                 tracing: Tracing | None = None) -> None:
        self.router = router
        self.providers = providers
        self.policy = policy
        self.budget = budget
        self.breakers = breakers
        self.limiter = limiter
        self.counter = counter
        self.default_max_tokens = default_max_tokens
        self.queue = queue
        self.deployment_queues = deployment_queues or {}
        self.tracing = tracing  # each attempt in its own CLIENT span, when tracing is on

    async def before(self, call: Call) -> bool:
        if self.queue is not None:
            call.queue_slot = await _enter(self.queue, call)
        if self.budget is not None:
            self.budget.record_request()
        groups = deque(self.router.plan(call.model))
        seen = set(groups)
        last: GatewayError | None = None
        last_dep: str | None = None
        while groups:
            group = groups.popleft()
            if await self._too_long(call, group):
                last = _context_error(call, group)
                _extend(groups, seen, self.router.fallbacks_for(call.model, "context_window"))
                continue
            tried: set[str] = set()
            limited: set[str] = set()  # at their own rpm/tpm: not for this call
            retries = 0
            while True:
                dep = self.router.pick(group, tried | limited if limited else tried, call)
                if dep is None and tried:  # every deployment was tried: retry one again
                    dep = self.router.pick(group, limited, call, ignore_cooling=True)
                if dep is None:
                    break
                if (dep.rpm or dep.tpm) and self.limiter is not None:
                    refusal = await self._deployment_limit(call, dep)
                    if refusal is not None:  # another deployment may have room
                        last = refusal
                        limited.add(dep.id)
                        continue
                if call.attempts:  # a retry or a fallback
                    if self.budget is not None and not self.budget.try_spend():
                        raise _budget_spent(last)
                    delay = self.policy.delay(max(retries, 1), last, same_deployment=dep.id == last_dep)
                    if delay > 0:
                        await asyncio.sleep(delay)
                dq = self.deployment_queues.get(dep.id)
                if dq is not None:
                    try:
                        call.deployment_slot = await _enter(dq, call)
                    except GatewayError as full:  # its queue is full: another deployment may have room
                        last = full
                        limited.add(dep.id)
                        continue
                try:
                    if self.tracing is None:
                        await self._attempt(call, dep)
                    else:
                        with self.tracing.attempt(call, dep):
                            await self._attempt(call, dep)
                    return False
                except UpstreamError as exc:
                    last, last_dep = exc, dep.id
                    cls = classify(exc)
                    if cls in ("context_window", "content_policy"):
                        reason: FallbackReason = cls  # type: ignore[assignment]
                        more = self.router.fallbacks_for(call.model, reason)
                        if not more:
                            raise
                        _extend(groups, seen, more)
                        break
                    if not exc.retryable:
                        raise
                    tried.add(dep.id)
                    if exc.retry_after:
                        if len(self.router.deployments_of(group)) > 1:
                            self.router.cool_down(dep.id, exc.retry_after)  # others serve meanwhile
                        if exc.retry_after > self.policy.max_retry_after:
                            limited.add(dep.id)  # not this call's to wait for: elsewhere, or fall back
                    if retries >= self.policy.retries_for(cls):
                        break
                    retries += 1
        raise last or self._unavailable(call)

    def _unavailable(self, call: Call) -> GatewayError:
        waits = [w for d in self.router.deployments_of(call.model) if (w := self.router.cooling(d.id))]
        if waits:
            wait = min(waits)
            return GatewayError(429, f"Every deployment of '{call.model}' is cooling down after upstream rate limits. "
                                f"Retry after {wait:.0f} s.", type="rate_limit_error", code="upstream_rate_limited",
                                headers={"retry-after": str(max(1, round(wait)))})
        return upstream_unavailable(f"No deployment of '{call.model}' is available (circuit breakers open or "
                                    "engines overloaded); GET /health/deployments shows why.")

    async def after(self, call: Call) -> None:
        dep = call.deployment
        if dep is not None and call.attempt_started is not None:  # the attempt that served
            err = call.error
            ok = err is None or classify(err) not in HEALTH_FAILURES
            await self._finished(call, dep, ok, err)
        if call.queue_slot is not None:
            self.queue.release(call.queue_slot)  # type: ignore[union-attr]
            call.queue_slot = None
        hold: TokenHold | None = call.deployment_hold
        if hold is not None and self.limiter is not None:
            tokens = call.tokens
            served = dep is not None and hold.ident == f"deployment:{dep.id}"
            await self.limiter.settle_tokens(hold, (tokens.input + tokens.output) if tokens and served else 0)

    async def _attempt(self, call: Call, dep: Deployment) -> None:
        call.deployment = dep
        call.attempts += 1
        call.attempt_started = time.perf_counter()
        dep.stats.started()
        try:
            await self._call(call, self.providers[dep.id])
        except UpstreamError as exc:
            await self._finished(call, dep, classify(exc) not in HEALTH_FAILURES, exc)
            raise
        except BaseException:  # cancelled (the client left): no verdict on the deployment
            call.attempt_started = None
            dep.stats.abandoned()
            self._free_slot(call, dep)
            raise

    async def _finished(self, call: Call, dep: Deployment, ok: bool, err: GatewayError | None) -> None:
        started, call.attempt_started = call.attempt_started, None
        now = time.perf_counter()
        tokens = call.tokens
        ttft = call.first_token_at - started if (call.first_token_at and started and call.streaming) else None
        # `ok`: the deployment did its job (a 400 for a too-long prompt is not its failure)
        dep.stats.finished(ok, latency=now - started if started and err is None else None, ttft=ttft,
                           output_tokens=tokens.output if tokens else 0,
                           tokens=(tokens.input + tokens.output) if tokens else 0,
                           error=f"{err.code}: {err.message}" if err is not None and not ok else None)
        self._free_slot(call, dep)
        if self.breakers is not None:
            await self.breakers.record(dep.id, ok)

    def _free_slot(self, call: Call, dep: Deployment) -> None:
        if call.deployment_slot is not None:
            self.deployment_queues[dep.id].release(call.deployment_slot)
            call.deployment_slot = None

    async def _too_long(self, call: Call, group: str) -> bool:
        """The prompt is longer than every deployment of the group accepts (all declare it)."""
        deps = self.router.deployments_of(group)
        if self.counter is None or not deps or any(d.max_input_tokens is None for d in deps):
            return False
        prompt, _ = await call_estimate(self.counter, call, 0)
        return prompt > max(d.max_input_tokens for d in deps)  # type: ignore[type-var]

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

    async def _call(self, call: Call, provider: Provider) -> None:
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
            call.stream = _relay(call, first, upstream)
            return
        if call.response is not None:
            call.usage = call.response.get("usage")


async def _relay(call: Call, first: dict[str, Any], upstream: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    """Pass chunks on; keep the usage; drop the usage-only chunk the client did not ask for.
    Keep the output text too, so usage can be counted if the upstream never reports it, and
    every chunk when the cache stage asked for them (`call.chunks`)."""
    strip_usage = not call.client_wants_usage
    text = call.stream_text = []
    keep = call.chunks  # the cache stage wants the whole stream
    chunk = first
    try:
        while True:
            if keep is not None:
                keep.append(chunk)
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


async def _enter(queue: FairQueue, call: Call) -> Any:
    principal = call.principal
    tenant = principal.id if principal is not None else "anonymous"
    priority = call.headers.get("x-faregate-priority") or "interactive"
    if priority not in queue.settings.priorities:
        priority = "interactive"
    try:
        return await queue.acquire(tenant, priority)
    except QueueFull as full:
        what = "queue is full" if full.reason == "queue_full" else "request waited too long in the queue"
        raise GatewayError(429, f"The gateway is at capacity ({full.queue}: {what}). Retry after {full.retry_after:g} s.",
                           type="rate_limit_error", code=full.reason,
                           headers={"retry-after": str(max(1, round(full.retry_after)))}) from None


def _extend(groups: deque[str], seen: set[str], more: tuple[str, ...]) -> None:
    for g in more:
        if g not in seen:
            seen.add(g)
            groups.append(g)


def _context_error(call: Call, group: str) -> GatewayError:
    return GatewayError(400, f"The prompt ({call.prompt_estimate} tokens) is longer than model '{group}' accepts. "
                        "Shorten the messages, or configure context_window_fallbacks for a model with a larger window.",
                        type="invalid_request_error", code="context_length_exceeded", param="messages")


def _budget_spent(last: GatewayError | None) -> GatewayError:
    if last is not None:
        return last
    return upstream_unavailable("Retries are paused: the retry budget is spent (too many failures lately).")
