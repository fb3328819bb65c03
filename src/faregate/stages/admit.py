"""admit: may this principal make this call now? Model access, RPM, TPM, parallel requests,
budgets and per-conversation guards — for the key, its user and its team (each must admit: the
tightest wins) — and on the way back, settle what admission reserved.

Order: model access (403) → conversation guards → RPM, TPM (prompt estimate + max output) and
parallel slots of every subject at once (`Limiter.admit`: all or none) → budget reservation (the
request's most expensive outcome). A refusal undoes what this request already took (TPM charges,
slots; a request counted by an RPM window stays counted: it was made). Nothing here reads the
database.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from dataclasses import dataclass, field
from decimal import Decimal

from faregate.access.budget import UNLIMITED, Budgets, next_period_in, period_of
from faregate.access.limiter import Grant, Limiter, LimitRefused, Window
from faregate.access.records import AccessPlan, Principal, Subject
from faregate.accounting.ledger import nano_usd, usd
from faregate.accounting.pricing import PriceBook, Tokens
from faregate.accounting.tokens import TokenCounter, call_estimate
from faregate.config.schema import LimitSettings
from faregate.core.call import Call
from faregate.core.errors import GatewayError
from faregate.routing.router import Router

log = logging.getLogger("faregate.access")


def state_errors(redis: object) -> tuple[type[BaseException], ...]:
    """What "shared state unreachable" looks like: OS-level connection errors, and with Redis
    its own errors (connection refused, timeouts, script errors)."""
    if redis is None:
        return (ConnectionError, TimeoutError)
    from redis.exceptions import RedisError

    return (RedisError, ConnectionError, TimeoutError)


@dataclass(slots=True)
class Admission:
    """What one call took at admission, to give back or settle after it."""

    grant: Grant | None = None  # what the RPM, TPM and parallel limits gave
    counters: list[str] = field(default_factory=list)  # budget counters reserved on
    reserved: int = 0  # nano-USD reserved on each counter
    key_counter: str | None = None  # the key's own budget counter, for x-faregate-key-spend


class Admit:
    name = "admit"

    def __init__(self, limiter: Limiter, budgets: Budgets, counter: TokenCounter, prices: PriceBook,
                 router: Router, settings: LimitSettings, max_request_seconds: float) -> None:
        self.limiter = limiter
        self.budgets = budgets
        self.counter = counter
        self.prices = prices
        self.router = router
        self.settings = settings
        self.max_request_seconds = max_request_seconds
        self._unavailable = state_errors(limiter.redis)
        self._max_costs: dict[tuple[str, int, int], int] = {}
        conv_cost = settings.conversation_max_cost_usd
        self._conv_default = (settings.conversation_max_requests,
                              nano_usd(conv_cost.quantize(Decimal("1e-9"))) if conv_cost is not None else None)

    async def before(self, call: Call) -> bool:
        try:
            return await self._admit(call)
        except self._unavailable as exc:
            call.admission = None
            if not self.settings.fail_open:
                raise GatewayError(503, "Rate limits and budgets cannot be checked right now (shared state unreachable).",
                                   type="api_error", code="limits_unavailable", headers={"retry-after": "1"}) from exc
            _warn_once(exc)
            return False

    async def _admit(self, call: Call) -> bool:
        p: Principal = call.principal  # type: ignore[assignment]
        plan = p.plan
        if plan.empty and self._conv_default == (None, None):
            return False  # master, anonymous: nothing to count
        conversation = call.headers.get("x-faregate-conversation-id")
        if plan.empty and conversation is None:
            return False
        if plan.models_restricted and not p.may_call(call.model):
            raise GatewayError(403, f"{_whose(p)} may not call model '{call.model}'. Ask an admin to add it to the "
                               "key's, user's or team's `models`.", type="permission_error",
                               code="model_not_allowed", param="model")
        adm = call.admission = Admission()
        conv_requests = _tightest(self._conv_default[0], plan.conversation_max_requests)
        conv_cost = _tightest(self._conv_default[1], plan.conversation_max_cost_nusd)
        conv_scope = f"conv:{p.id}:{conversation}" if conversation else None
        limiter = self.limiter
        try:
            if conv_scope and conv_requests is not None and not await limiter.hit_count(
                    conv_scope, conv_requests, self.settings.conversation_window_seconds):
                raise _refused(429, "conversation_requests_exceeded",
                               f"Conversation '{conversation}' reached its limit of {conv_requests} requests.",
                               retry_after=None)
            prompt = max_out = 0
            if plan.needs_tokens or (conv_scope and conv_cost is not None):
                prompt, max_out = await call_estimate(self.counter, call, self.settings.default_max_tokens)
            if plan.limited:
                try:
                    adm.grant = await limiter.admit(plan, prompt + max_out, call.request_id, self.max_request_seconds)
                except LimitRefused as r:
                    raise await self._refusal(r.subject, r.which) from None
            await self._reserve(call, adm, plan, conv_scope, conv_cost, max_out)
        except GatewayError:
            await self._release(call, adm, actual_tokens=0)
            call.admission = None
            raise
        return False

    async def after(self, call: Call) -> None:
        adm: Admission | None = call.admission
        if adm is None:
            return
        try:
            await self._settle(call, adm)
        except self._unavailable as exc:  # the reservation expires with its period; log, go on
            _warn_once(exc)

    async def _settle(self, call: Call, adm: Admission) -> None:
        tokens: Tokens | None = call.tokens
        actual = (tokens.input + tokens.output) if tokens else 0
        await self._release(call, adm, actual)
        if adm.counters:
            cost = nano_usd(call.cost.total_usd) if call.cost else 0
            spent = await self.budgets.settle(adm.counters, adm.reserved, cost)
            if adm.key_counter is not None:  # always first in the list
                call.key_spend_nusd = spent

    # -- budgets ------------------------------------------------------------------------------

    async def _reserve(self, call: Call, adm: Admission, plan: AccessPlan, conv_scope: str | None,
                       conv_cost: int | None, max_out: int) -> None:
        now = dt.datetime.now(dt.UTC)
        counters: list[tuple[str, int, int]] = []
        owners: list[Subject | None] = []
        for s in plan.spend:  # budgets, and the key (its spend is always kept)
            period, _, ttl = period_of(s.limits.budget_period, now)
            budget = s.limits.budget_nusd if s.limits.budget_nusd is not None else UNLIMITED
            counters.append((f"{s.scope}@{period}", budget, ttl))
            owners.append(s)
        conversation = conv_scope is not None and conv_cost is not None
        if conversation:
            window = self.settings.conversation_window_seconds
            counters.append((f"{conv_scope}@{int(time.time() // window)}", conv_cost, 2 * window))  # type: ignore[arg-type]
            owners.append(None)
        if not counters:
            return
        if owners[0] is not None and owners[0].kind == "key":
            adm.key_counter = counters[0][0]
        adm.counters = [c[0] for c in counters]
        if not (plan.budgeted or conversation):  # only the key's spend is kept: nothing to reserve
            return
        amount = self._max_cost(call, max_out)
        refused = await self.budgets.reserve(counters, amount)
        if refused is not None:
            owner = owners[refused]
            if owner is None:
                raise _refused(429, "conversation_budget_exceeded",
                               "This conversation reached its spending limit.", retry_after=None, kind="insufficient_quota")
            reset = next_period_in(owner.limits.budget_period, now)
            raise _refused(429, "budget_exceeded",
                           f"{_name(owner)} has no budget left for this request: its budget is "
                           f"${_usd(owner.limits.budget_nusd)} per {owner.limits.budget_period or 'lifetime'} and this "
                           f"request may cost up to ${_usd(amount)}. Lower max_tokens, or ask an admin to raise the budget.",
                           retry_after=reset, kind="insufficient_quota")
        adm.reserved = amount

    def _max_cost(self, call: Call, max_out: int) -> int:
        """The most this call can cost: prompt estimate and max output at the dearest price
        among the group's deployments (remembered per group and token counts)."""
        k = (call.model, call.prompt_estimate or 0, max_out)
        best = self._max_costs.get(k)
        if best is None:
            tokens = Tokens(input=k[1], output=max_out)
            best = max((nano_usd(self.prices.cost(d.id, tokens).total_usd) for d in self.router.deployments_of(call.model)),
                       default=0)
            if len(self._max_costs) > 10_000:
                self._max_costs.clear()
            self._max_costs[k] = best
        return best

    # -- helpers ------------------------------------------------------------------------------

    async def _release(self, call: Call, adm: Admission, actual_tokens: int) -> None:
        if adm.grant is not None:
            grant, adm.grant = adm.grant, None
            await self.limiter.release(grant, actual_tokens, call.request_id)

    async def _refusal(self, s: Subject, which: str) -> GatewayError:
        if which == "parallel":
            return _refused(429, f"{s.kind}_parallel_exceeded",
                            f"{_name(s)} already has {s.limits.max_parallel} requests in flight "
                            "(max_parallel). Retry when one finishes.", retry_after=1)
        lim = s.limits
        headers: dict[str, str] = {}
        refused: Window | None = None
        if lim.rpm:
            w = await self.limiter.requests_window(s.scope, lim.rpm)
            headers |= _window_headers("requests", w)
            refused = w if which == "rpm" else refused
        if lim.tpm:
            w = await self.limiter.tokens_window(s.scope, lim.tpm)
            headers |= _window_headers("tokens", w)
            refused = w if which == "tpm" else refused
        reset = refused.reset_seconds if refused else 1.0
        what = "requests per minute" if which == "rpm" else "tokens per minute"
        limit = lim.rpm if which == "rpm" else lim.tpm
        err = _refused(429, f"{s.kind}_{which}_exceeded",
                       f"{_name(s)} reached its limit of {limit} {what}. Retry after {math.ceil(reset)} s.",
                       retry_after=reset)
        err.headers.update(headers)
        return err


_last_warning = 0.0


def _warn_once(exc: BaseException) -> None:
    """At most one warning every 10 s while shared state is unreachable."""
    global _last_warning
    now = time.monotonic()
    if now - _last_warning > 10:
        _last_warning = now
        log.warning("limits/budgets state unreachable (%s: %s): admitting without them", type(exc).__name__, exc)


def _tightest(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def _refused(status: int, code: str, message: str, *, retry_after: float | None,
             kind: str = "rate_limit_error") -> GatewayError:
    headers = {"retry-after": str(max(1, math.ceil(retry_after)))} if retry_after is not None else {}
    return GatewayError(status, message, type=kind, code=code, headers=headers)


def _window_headers(kind: str, w: Window) -> dict[str, str]:
    return {f"x-ratelimit-limit-{kind}": str(w.limit), f"x-ratelimit-remaining-{kind}": str(w.remaining),
            f"x-ratelimit-reset-{kind}": _duration(w.reset_seconds)}


def _duration(seconds: float) -> str:
    """OpenAI's reset format: '20ms', '1.5s', '6m0s'."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    if seconds < 60:
        return f"{seconds:.3g}s"
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes}m{rest}s"


def _name(s: Subject) -> str:
    return {"key": "API key", "user": "User", "team": "Team"}[s.kind] + f" '{s.id}'"


def _whose(p: Principal) -> str:
    return f"API key '{p.id}'"


def _usd(nusd: int | None) -> str:
    return str(usd(nusd or 0).normalize())
