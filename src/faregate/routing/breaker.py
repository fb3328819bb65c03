"""Circuit breakers per deployment: stop sending requests to a deployment that keeps failing.

A breaker opens after `failure_threshold` consecutive failures, or when failures reach
`error_rate` of a rolling window holding at least `min_requests` outcomes. After
`cooldown_seconds` it is half-open (not stored: "open, cooldown over"): up to
`half_open_probes` requests may go and the first verdict decides — a success closes it, a
failure reopens it for another cooldown. Every transition clears the window. `allows()` runs
for every candidate of every request, so it is synchronous and reads only a local `_Circuit`
(one dict lookup when closed). In-process, `record()` updates that circuit directly, with a
`RollingPair` ring of ten buckets as the window and the injectable (monotonic) `clock`.

With Redis, replicas share one breaker per deployment: a hash `faregate:breaker:<id>` with st
(closed|open), oa (opened at), cf (consecutive failures), ch (changed at) and ten window
buckets, fields e<slot> (bucket number), r<slot>, f<slot> (requests, failures). A `record()`
is ONE Lua script that counts the outcome and makes any transition atomically, returning the
new state for the local circuit to copy. A background task re-reads, in one script call, every
deployment this replica has asked about each `refresh_seconds`, so one opened by replica A is
skipped by replica B within that time. Times in Redis are Redis's own TIME (one clock for all
replicas; their monotonic clocks differ); a reply says "seconds of cooldown left", which each
replica adds to its own monotonic clock, and one older (by ch) than the last applied is
ignored. The hash expires after a day without outcomes.

Probe slots are optimistic and local, so `acquire_probe` stays synchronous: each replica lets
its own `half_open_probes` go (N replicas: up to N x as many probes, and no round trip), the
first verdict to reach Redis decides for all, and a success arriving while open (a late probe
after a reopen) changes nothing. A probe that never reports back frees its slot after a
cooldown. If Redis fails, circuits carry on with local decisions (a warning at most every
10 s) until it answers again; nothing raises to the caller, but for its own cancellation.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from faregate.core.tasks import stop_task
from faregate.routing.retry_budget import BUCKETS, RollingPair

log = logging.getLogger("faregate.routing")

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
KEY_PREFIX = "faregate:breaker:"
_TTL, _WARN_EVERY = 86400, 10.0

# ARGV: mode ('1' success, '0' failure: record on KEYS[1]; 'r': read every key), threshold,
# error rate, min requests, bucket width, buckets, cooldown, ttl. Per key it returns
# {open 0|1, cooldown left, consecutive failures, requests, failures, opened at, changed at}.
_SCRIPT = """
local t = redis.call('time')
local now_s = t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
local now = tonumber(now_s)
local threshold, rate, minreq = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local width, n, cooldown = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local idx = math.floor(now / width)
local fields = {}
for s = 0, n - 1 do fields[3 * s + 1], fields[3 * s + 2], fields[3 * s + 3] = 'e' .. s, 'r' .. s, 'f' .. s end

local function window(key)
  local v = redis.call('hmget', key, unpack(fields))
  local reqs, fails = 0, 0
  for s = 0, n - 1 do
    if v[3 * s + 1] and tonumber(v[3 * s + 1]) > idx - n then
      reqs = reqs + tonumber(v[3 * s + 2] or 0); fails = fails + tonumber(v[3 * s + 3] or 0)
    end
  end
  return reqs, fails
end

local function record(key, ok)
  local h = redis.call('hmget', key, 'st', 'oa', 'cf', 'ch')
  local st, oa, cf, ch = h[1] or 'closed', h[2] or '0', tonumber(h[3] or 0), h[4] or '0'
  local slot = idx % n
  if tonumber(redis.call('hget', key, 'e' .. slot)) ~= idx then
    redis.call('hset', key, 'e' .. slot, idx, 'r' .. slot, 0, 'f' .. slot, 0)
  end
  redis.call('hincrby', key, 'r' .. slot, 1)
  if not ok then redis.call('hincrby', key, 'f' .. slot, 1); cf = cf + 1 end
  local to
  if st == 'open' then
    if now >= tonumber(oa) + cooldown then to = ok and 'closed' or 'open' end
  elseif ok then
    cf = 0
  else
    local reqs, fails = window(key)
    if cf >= threshold or (reqs >= minreq and fails >= rate * reqs) then to = 'open' end
  end
  if to then
    redis.call('hdel', key, unpack(fields))
    st, ch = to, now_s
    if to == 'open' then oa = now_s else cf = 0 end
  end
  redis.call('hset', key, 'st', st, 'oa', oa, 'cf', cf, 'ch', ch)
  redis.call('expire', key, tonumber(ARGV[8]))
end

local function read(key)
  local h = redis.call('hmget', key, 'st', 'oa', 'cf', 'ch')
  local reqs, fails = window(key)
  local open = h[1] == 'open'
  local left = open and math.max(0, tonumber(h[2]) + cooldown - now) or 0
  return {open and 1 or 0, string.format('%.6f', left), tonumber(h[3] or 0), reqs, fails,
          h[2] or '0', h[4] or '0'}
end

local out = {}
for i, key in ipairs(KEYS) do
  if ARGV[1] ~= 'r' then record(key, ARGV[1] == '1') end
  out[i] = read(key)
end
return out
"""


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    failure_threshold: int = 5  # consecutive failures that open the breaker
    error_rate: float = 0.5  # ...or this share of failures in the window,
    min_requests: int = 10  # ...once the window holds this many outcomes
    window_seconds: float = 30.0
    cooldown_seconds: float = 30.0  # open -> half-open after this (LiteLLM's cooldown_time)
    half_open_probes: int = 1  # requests let through while half-open


@dataclass(slots=True)
class _Circuit:
    """One deployment's breaker as this replica sees it."""

    window: RollingPair  # in-process outcomes (a: requests, b: failures)
    state: str = CLOSED  # CLOSED or OPEN; half-open is OPEN with `until` passed
    until: float = 0.0  # clock time the cooldown ends
    consecutive: int = 0
    probes: int = 0  # probe slots taken in this half-open period
    probe_at: float = 0.0  # clock time of the last probe taken
    requests: int = 0  # outcomes in the window (as of the last record or refresh)
    failures: int = 0
    opened_at: float | None = None  # wall time (Redis's with Redis)
    changed_at: float | None = None
    seen: float = 0.0  # `ch` of the last reply applied from Redis


class Breakers:
    def __init__(self, settings: BreakerSettings | None = None, redis: Any = None,
                 clock: Callable[[], float] = time.monotonic, refresh_seconds: float = 0.5) -> None:
        self.settings = s = settings or BreakerSettings()
        self.redis = redis  # redis.asyncio client shared by replicas (None: in-process)
        self._clock = clock
        self._refresh_seconds = refresh_seconds
        self._circuits: dict[str, _Circuit] = {}
        self.not_closed: set[str] = set()  # ids whose breaker is open or half-open (the router's fast path)
        self._task: asyncio.Task | None = None
        self._warned_at = float("-inf")
        self._script = redis.register_script(_SCRIPT) if redis is not None else None
        self._args = (s.failure_threshold, s.error_rate, s.min_requests,
                      s.window_seconds / BUCKETS, BUCKETS, s.cooldown_seconds, _TTL)

    def _circuit(self, deployment_id: str) -> _Circuit:
        c = self._circuits.get(deployment_id)
        if c is None:
            c = self._circuits[deployment_id] = _Circuit(RollingPair(self.settings.window_seconds))
        return c

    def watch(self, deployment_ids: list[str]) -> None:
        """Follow these deployments from the start (with Redis, the refresh reads their state
        even before this replica sends them anything)."""
        for d in deployment_ids:
            self._circuit(d)

    def _track(self, deployment_id: str, c: _Circuit) -> None:
        if c.state == CLOSED:
            self.not_closed.discard(deployment_id)
        else:
            self.not_closed.add(deployment_id)

    def allows(self, deployment_id: str, now: float | None = None) -> bool:
        """True if closed, or half-open with a probe slot free (not taken: `acquire_probe`)."""
        c = self._circuits.get(deployment_id)
        if c is None:
            if self.redis is not None:
                self._circuit(deployment_id)  # known from now on: the refresh follows it
            return True
        if c.state == CLOSED:
            return True
        now = self._clock() if now is None else now
        if now < c.until:
            return False
        return (c.probes < self.settings.half_open_probes
                or now - c.probe_at >= self.settings.cooldown_seconds)

    def acquire_probe(self, deployment_id: str, now: float | None = None) -> bool:
        """Take a probe slot of a half-open deployment (True, doing nothing, when closed)."""
        c = self._circuits.get(deployment_id)
        if c is None or c.state == CLOSED:
            return True
        now = self._clock() if now is None else now
        if now < c.until:
            return False
        s = self.settings
        if c.probes >= s.half_open_probes:
            if now - c.probe_at < s.cooldown_seconds:
                return False
            c.probes = 0  # those probes never reported back: let new ones go
        c.probes += 1
        c.probe_at = now
        return True

    def state(self, deployment_id: str, now: float | None = None) -> str:
        """"closed", "open" or "half_open"."""
        c = self._circuits.get(deployment_id)
        return CLOSED if c is None else self._state_of(c, self._clock() if now is None else now)

    @staticmethod
    def _state_of(c: _Circuit, now: float) -> str:
        if c.state == CLOSED:
            return CLOSED
        return OPEN if now < c.until else HALF_OPEN

    async def record(self, deployment_id: str, ok: bool) -> None:
        """The outcome of a real request (the caller decides which errors count as failures)."""
        c = self._circuit(deployment_id)
        before = c.state
        if self._script is not None:
            try:
                replies = await self._script(keys=[KEY_PREFIX + deployment_id],
                                             args=["1" if ok else "0", *self._args])
                self._apply(c, replies[0])
            except Exception as exc:  # Redis down or slow: decide locally
                self._warn("record", exc)
                self._record_local(c, ok)
                _reraise_cancel(exc)
        else:
            self._record_local(c, ok)
        self._track(deployment_id, c)
        if c.state == OPEN != before:
            log.warning("circuit breaker for %s opened (%d consecutive failures)",
                        deployment_id, c.consecutive)
        elif c.state == CLOSED != before:
            log.info("circuit breaker for %s closed", deployment_id)

    def _record_local(self, c: _Circuit, ok: bool) -> None:
        s = self.settings
        now = self._clock()
        c.window.add(now, 1, 0 if ok else 1)
        c.consecutive = 0 if ok and c.state == CLOSED else c.consecutive + (not ok)
        c.requests, c.failures = c.window.totals(now)
        if c.state == OPEN:
            if now >= c.until:  # half-open: a probe's verdict
                self._transition(c, OPEN if not ok else CLOSED, now)
        elif not ok and (c.consecutive >= s.failure_threshold or (
                c.requests >= s.min_requests and c.failures >= s.error_rate * c.requests)):
            self._transition(c, OPEN, now)

    def _transition(self, c: _Circuit, to: str, now: float) -> None:
        c.state, c.probes, c.requests, c.failures = to, 0, 0, 0
        c.window.clear()
        c.changed_at = time.time()
        if to == OPEN:
            c.until, c.opened_at = now + self.settings.cooldown_seconds, c.changed_at
        else:
            c.consecutive = 0

    def _apply(self, c: _Circuit, reply: list) -> None:
        """Copy a script reply (see `_SCRIPT`) into the local circuit, unless it is stale."""
        is_open, left, consecutive, requests, failures, opened_at, changed_at = reply
        changed = float(changed_at)
        if changed < c.seen:
            return  # read before a transition this replica already knows of
        state = OPEN if is_open else CLOSED
        if state != c.state or changed != c.seen:
            c.probes = 0  # a new period: its own probe slots
        c.state, c.seen = state, changed
        c.until = self._clock() + float(left) if is_open else 0.0
        c.consecutive, c.requests, c.failures = int(consecutive), int(requests), int(failures)
        c.opened_at, c.changed_at = float(opened_at) or None, changed or None

    async def refresh(self) -> None:
        """Re-read every known deployment's shared state from Redis (one script call)."""
        if self._script is None or not self._circuits:
            return
        ids = list(self._circuits)
        try:
            replies = await self._script(keys=[KEY_PREFIX + d for d in ids], args=["r", *self._args])
        except Exception as exc:
            _reraise_cancel(exc)
            self._warn("refresh", exc)
            return
        for dep, reply in zip(ids, replies, strict=True):
            c = self._circuits[dep]
            self._apply(c, reply)
            self._track(dep, c)

    def snapshot(self) -> dict[str, dict]:
        """Every known deployment's breaker, for a health endpoint or a gauge."""
        now = self._clock()
        out = {}
        for dep, c in self._circuits.items():
            if self.redis is None:
                c.requests, c.failures = c.window.totals(now)
            out[dep] = {"state": self._state_of(c, now), "failures": c.failures,
                        "requests": c.requests, "consecutive_failures": c.consecutive,
                        "opened_at": c.opened_at, "changed_at": c.changed_at,
                        "cooldown_left": max(0.0, c.until - now) if c.state == OPEN else 0.0}
        return out

    async def start(self) -> None:
        """Start the background refresh (with Redis; nothing to do in-process)."""
        if self._script is not None and self._task is None:
            self._task = asyncio.create_task(self._refresh_loop(), name="breaker-refresh")

    async def close(self) -> None:
        """Stop the background refresh."""
        task, self._task = self._task, None
        await stop_task(task)

    async def _refresh_loop(self) -> None:
        while self._task is asyncio.current_task():  # close() clears it
            await asyncio.sleep(self._refresh_seconds)
            await self.refresh()

    def _warn(self, what: str, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY:
            self._warned_at = now
            log.warning("circuit breakers: Redis %s failed (%r); deciding locally", what, exc)


def _reraise_cancel(exc: Exception) -> None:
    """redis-py can turn a cancellation into a ConnectionError: don't let it swallow one."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from exc
