"""RPM, TPM and max-parallel limits for any subject (key, user, team, deployment, conversation).

Built on the `limits` library: RPM by its moving window (exact; or its sliding-window counter,
cheaper on Redis), TPM by its sliding-window counter (a request's tokens are one increment, not
one entry each). Storage is Redis when configured — the library's own, whose Lua scripts make
every replica count against ONE window, so N replicas enforce a limit once, not N times — or
in-process, `memory_storage.LoopLocalStorage` (the library's in-memory storage costs ~100 µs
per limit per request under load; see that module).

TPM admits on an estimate and settles on the real usage: `settle_tokens` moves the current
window's counter by the difference. `limits` has no public call for that, so on Redis `_adjust`
does it on the storage's own key for the window (tests pin this to the library's behaviour).

Max-parallel is not a rate and `limits` has no semaphore: in-process it is a counter; on Redis
a sorted set of in-flight request ids scored by start time, with entries older than the longest
possible request dropped, so a replica that dies holding slots frees them by itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from faregate.access.records import AccessPlan, Subject

if TYPE_CHECKING:  # `limits` is imported by prepare(): off the start-up path
    from limits import RateLimitItem

_PARALLEL_ACQUIRE = """
redis.call('zremrangebyscore', KEYS[1], '-inf', ARGV[2])
if redis.call('zcard', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('zadd', KEYS[1], ARGV[1], ARGV[4])
redis.call('expire', KEYS[1], ARGV[5])
return 1
"""

# Move an existing window counter by ARGV[1], never below zero (a window that already expired
# is left alone: there is nothing left to settle against).
_ADJUST = """
local v = redis.call('get', KEYS[1])
if not v then return 0 end
local n = tonumber(v) + tonumber(ARGV[1])
if n < 0 then n = 0 end
redis.call('set', KEYS[1], n, 'KEEPTTL')
return n
"""


@dataclass(frozen=True, slots=True)
class Window:
    """Where a limit stands, for `x-ratelimit-*` headers."""

    limit: int
    remaining: int
    reset_seconds: float


@dataclass(slots=True)
class TokenHold:
    """Tokens charged to a TPM window at admission, to settle when usage is known."""

    item: RateLimitItem
    ident: str
    charged: int
    key: str = ""  # the window's storage key

@dataclass(slots=True)
class Grant:
    """What `Limiter.admit` took for one request, to settle and give back with `release`."""

    tpm_keys: tuple[str, ...]  # storage keys of the TPM windows charged
    charged: int  # tokens charged to each of them
    slots: tuple[str, ...]  # scopes holding a parallel slot


class LimitRefused(Exception):
    """A subject's limit refused the request (`which`: rpm, tpm or parallel); nothing was taken."""

    def __init__(self, subject: Subject, which: str) -> None:
        super().__init__(f"{subject.scope} {which}")
        self.subject, self.which = subject, which


@dataclass(frozen=True, slots=True)
class _Compiled:
    """A principal's limits as the storage names them, worked out once per AccessPlan."""

    plan: AccessPlan
    moving: tuple[tuple[str, int], ...]  # (window key, limit): RPM, moving-window strategy
    sliding: tuple[tuple[str, int], ...]  # RPM (sliding-window strategy), then TPM
    rpm_sliding: int  # how many of `sliding` are RPM windows (charged 1, not the tokens)
    refusers: tuple[tuple[Subject, str], ...]  # whose window, in moving + sliding order
    tpm_keys: tuple[str, ...]
    parallel: tuple[tuple[str, int], ...]  # (scope, limit)
    slots: tuple[str, ...]


class Limiter:
    def __init__(self, redis_url: str | None = None, redis: Any = None,
                 rpm_strategy: str = "auto") -> None:
        self.redis_url = redis_url
        self.redis = redis  # redis.asyncio client for the scripts below (None: in-process)
        self.rpm_strategy = "moving-window" if rpm_strategy == "auto" else rpm_strategy
        self.storage: Any = None
        self._items: dict[tuple[int, int], RateLimitItem] = {}
        self._keys: dict[tuple[str, str, int], str] = {}
        self._parallel: dict[str, int] = {}
        self._memory = not redis_url
        self._plans: dict[int, _Compiled] = {}
        if redis is not None:
            self._acquire = redis.register_script(_PARALLEL_ACQUIRE)
            self._adjust_script = redis.register_script(_ADJUST)

    def prepare(self) -> None:
        """Import `limits` and open its storage (the gateway does it in a thread at warm-up;
        otherwise the first limited request does)."""
        if self.storage is not None:
            return
        import limits
        from limits.aio.strategies import (
            FixedWindowRateLimiter,
            MovingWindowRateLimiter,
            SlidingWindowCounterRateLimiter,
        )
        from limits.storage import storage_from_string

        if self.redis_url:
            scheme, rest = self.redis_url.split("://", 1)
            storage = storage_from_string(f"async+{scheme}://{rest}", implementation="redispy")
        else:
            from faregate.access.memory_storage import LoopLocalStorage

            storage = LoopLocalStorage()
        rpm_cls = MovingWindowRateLimiter if self.rpm_strategy == "moving-window" else SlidingWindowCounterRateLimiter
        self._rpm = rpm_cls(storage)
        self._tpm = SlidingWindowCounterRateLimiter(storage)
        self._fixed = FixedWindowRateLimiter(storage)
        self._per_minute, self._per_second = limits.RateLimitItemPerMinute, limits.RateLimitItemPerSecond
        self.storage = storage

    def _item(self, amount: int, seconds: int = 60) -> RateLimitItem:
        item = self._items.get((amount, seconds))
        if item is None:
            self.prepare()
            item = self._per_minute(amount) if seconds == 60 else self._per_second(amount, seconds)
            self._items[(amount, seconds)] = item
        return item

    def _key(self, kind: str, scope: str, item: RateLimitItem) -> str:
        """`item.key_for(kind, scope)`, built once: the strategies' `hit` rebuilds it on every
        call (~15 µs of string work), so the hot calls go to the storage with the cached key —
        the same call `hit` makes."""
        k = (kind, scope, item.amount)
        key = self._keys.get(k)
        if key is None:
            if len(self._keys) > 100_000:
                self._keys.clear()
            key = self._keys[k] = item.key_for(kind, scope)
        return key

    # -- a principal's limits, all at once ----------------------------------------------------

    async def admit(self, plan: AccessPlan, tokens: int, request_id: str, max_seconds: float) -> Grant:
        """One request against the RPM, TPM (`tokens`, the estimate) and parallel limits of
        every subject of `plan`: all admit, or LimitRefused names the first that did not and
        nothing is taken. In-process this is one synchronous pass: every window is checked,
        then all are charged. On Redis one call per limit — parallel slots, RPM, TPM — and a
        refusal gives back the slots and tokens taken (an RPM window that already counted the
        request keeps it: the limits library has no way to take a hit back)."""
        cost = max(1, tokens)
        if self._memory:
            return self._admit_local(self._compile(plan), cost)
        tpm_keys: list[str] = []
        slots: list[str] = []
        try:
            for s in plan.parallel:
                if not await self.acquire_parallel(s.scope, s.limits.max_parallel, request_id, max_seconds):  # type: ignore[arg-type]
                    raise LimitRefused(s, "parallel")
                slots.append(s.scope)
            for s in plan.rpm:
                if not await self.hit_requests(s.scope, s.limits.rpm):  # type: ignore[arg-type]
                    raise LimitRefused(s, "rpm")
            for s in plan.tpm:
                hold = await self.hit_tokens(s.scope, s.limits.tpm, cost)  # type: ignore[arg-type]
                if hold is None:
                    raise LimitRefused(s, "tpm")
                tpm_keys.append(hold.key)
        except LimitRefused:
            await self.release(Grant(tuple(tpm_keys), cost, tuple(slots)), 0, request_id)
            raise
        return Grant(tuple(tpm_keys), cost, tuple(slots))

    def _admit_local(self, c: _Compiled, cost: int) -> Grant:
        parallel = self._parallel
        for i, (scope, limit) in enumerate(c.parallel):
            if parallel.get(scope, 0) >= limit:
                raise LimitRefused(c.plan.parallel[i], "parallel")
        amounts = [1] * c.rpm_sliding + [cost] * (len(c.sliding) - c.rpm_sliding)
        refused = self.storage.acquire_all(c.moving, c.sliding, amounts)
        if refused >= 0:
            raise LimitRefused(*c.refusers[refused])
        for scope in c.slots:
            parallel[scope] = parallel.get(scope, 0) + 1
        return Grant(c.tpm_keys, cost, c.slots)

    async def release(self, grant: Grant, actual_tokens: int, request_id: str) -> None:
        """Settle the TPM windows on the real token count and free the parallel slots."""
        delta = actual_tokens - grant.charged
        grant.charged = actual_tokens
        slots, grant.slots = grant.slots, ()
        if self._memory:
            if delta and grant.tpm_keys:
                self.storage.adjust_sliding_windows(grant.tpm_keys, 60, delta)
            for scope in slots:
                self._release_local(scope)
            return
        if delta:
            for key in grant.tpm_keys:
                await self._adjust(key, delta)
        for scope in slots:
            await self.release_parallel(scope, request_id)

    def _compile(self, plan: AccessPlan) -> _Compiled:
        c = self._plans.get(id(plan))
        if c is not None and c.plan is plan:
            return c
        self.prepare()
        rpm = tuple((self._key("rpm", s.scope, self._item(s.limits.rpm)), s.limits.rpm) for s in plan.rpm)  # type: ignore[arg-type]
        tpm = tuple((self._key("tpm", s.scope, self._item(s.limits.tpm)), s.limits.tpm) for s in plan.tpm)  # type: ignore[arg-type]
        moving = rpm if self.rpm_strategy == "moving-window" else ()
        sliding = tpm if moving else rpm + tpm
        refusers = tuple((s, "rpm") for s in plan.rpm) + tuple((s, "tpm") for s in plan.tpm)
        c = _Compiled(plan, moving, sliding, len(sliding) - len(tpm), refusers, tuple(k for k, _ in tpm),
                      tuple((s.scope, s.limits.max_parallel) for s in plan.parallel),  # type: ignore[misc]
                      tuple(s.scope for s in plan.parallel))
        if len(self._plans) > 10_000:
            self._plans.clear()
        self._plans[id(plan)] = c
        return c

    # -- requests per minute (and per any window, for conversation guards) --------------------

    async def hit_requests(self, scope: str, rpm: int) -> bool:
        item = self._item(rpm)  # first: it prepares the limiter on first use
        key = self._key("rpm", scope, item)
        if self.rpm_strategy == "moving-window":
            return await self.storage.acquire_entry(key, rpm, 60)
        return await self.storage.acquire_sliding_window_entry(key, rpm, 60)

    async def requests_window(self, scope: str, rpm: int) -> Window:
        item = self._item(rpm)
        stats = await self._rpm.get_window_stats(item, "rpm", scope)
        return Window(rpm, stats.remaining, max(0.0, stats.reset_time - time.time()))

    async def hit_count(self, scope: str, amount: int, seconds: int) -> bool:
        """A plain fixed-window count (e.g. requests per conversation per day)."""
        item = self._item(amount, seconds)
        return await self._fixed.hit(item, "count", scope)

    # -- tokens per minute --------------------------------------------------------------------

    async def hit_tokens(self, scope: str, tpm: int, tokens: int) -> TokenHold | None:
        """Charge `tokens` against the window, or None (refused; nothing charged)."""
        item = self._item(tpm)
        cost = max(1, tokens)
        key = self._key("tpm", scope, item)
        if cost > tpm or not await self.storage.acquire_sliding_window_entry(key, tpm, 60, cost):
            return None
        return TokenHold(item, scope, cost, key)

    async def settle_tokens(self, hold: TokenHold, actual: int) -> None:
        delta = actual - hold.charged
        if delta:
            await self._adjust(hold.key, delta, hold.item.get_expiry())
            hold.charged = actual

    async def tokens_window(self, scope: str, tpm: int) -> Window:
        item = self._item(tpm)
        stats = await self._tpm.get_window_stats(item, "tpm", scope)
        return Window(tpm, stats.remaining, max(0.0, stats.reset_time - time.time()))

    async def _adjust(self, key: str, delta: int, expiry: int = 60) -> None:
        """Move a TPM window's current counter (`key` as the storage names it) by `delta`."""
        storage = self.storage
        if self._memory:
            storage.adjust_sliding_window(key, expiry, delta)
        else:  # RedisStorage: the current window lives at "<prefix>:{key}"
            await self._adjust_script(keys=[storage.bridge.prefixed_key(f"{{{key}}}")], args=[delta])  # type: ignore[attr-defined]

    # -- parallel requests --------------------------------------------------------------------

    async def acquire_parallel(self, scope: str, limit: int, request_id: str, max_seconds: float) -> bool:
        if self.redis is None:
            n = self._parallel.get(scope, 0)
            if n >= limit:
                return False
            self._parallel[scope] = n + 1
            return True
        now = time.time()
        ok = await self._acquire(keys=[f"faregate:parallel:{scope}"],
                                 args=[now, now - max_seconds, limit, request_id, int(max_seconds) + 60])
        return bool(ok)

    async def release_parallel(self, scope: str, request_id: str) -> None:
        if self.redis is None:
            self._release_local(scope)
            return
        await self.redis.zrem(f"faregate:parallel:{scope}", request_id)

    def _release_local(self, scope: str) -> None:
        n = self._parallel.get(scope, 0) - 1
        if n > 0:
            self._parallel[scope] = n
        else:
            self._parallel.pop(scope, None)
