"""Budgets by reservation: spend per subject and period, in nano-USD, shared by every replica.

Each counter ("key:abc@2026-11-23", "team:ml@2026-11", "conv:key_1:c42@20412") holds what was
spent (settled) and what is reserved by requests still running. Admission reserves a request's
most expensive outcome on every counter that applies, all or none, and only if each stays
within its budget; completion releases the reservation and adds the real cost. So concurrent
requests can never spend past a budget together — at most one request's excess over its own
reservation (it was larger than estimated, e.g. no max_tokens and a long answer).

In-process the counters are a dict (one event loop: every step is atomic). With Redis each is a
hash {s: spent, r: reserved} and a Lua script checks and reserves all of a request's counters in
one atomic step, so replicas share one budget.

A period's spend starts from the ledger when a replica starts (`seed`: only where no replica has
a counter yet), and at zero when a new period begins — no database read on the request path.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Sequence
from typing import Any

from faregate.access.records import BudgetPeriod

_RESERVE = """
local amount = tonumber(ARGV[1])
for i, k in ipairs(KEYS) do
  local s = tonumber(redis.call('hget', k, 's') or '0')
  local r = tonumber(redis.call('hget', k, 'r') or '0')
  if s + r + amount > tonumber(ARGV[i + 1]) then return i end
end
for i, k in ipairs(KEYS) do
  redis.call('hincrby', k, 'r', ARGV[1])  -- the string: Lua numbers print with 14 digits
  local ttl = tonumber(ARGV[#KEYS + 1 + i])
  if ttl > 0 then redis.call('expire', k, ttl) end
end
return 0
"""

_SETTLE = """
local first = 0
for i, k in ipairs(KEYS) do
  local r = redis.call('hincrby', k, 'r', ARGV[1])
  if r < 0 then redis.call('hset', k, 'r', 0) end
  local s = redis.call('hincrby', k, 's', ARGV[2])
  if i == 1 then first = s end
end
return first
"""

UNLIMITED = 1 << 62  # the budget of a counter kept only to know a key's spend

_DAY = 86400


def period_of(period: BudgetPeriod | None, now: dt.datetime) -> tuple[str, dt.datetime | None, int]:
    """(id, start, ttl seconds) of the budget period containing `now` (UTC calendar periods)."""
    return _period_of(period, now.date())


@functools.lru_cache(maxsize=64)
def _period_of(period: BudgetPeriod | None, date: dt.date) -> tuple[str, dt.datetime | None, int]:
    day = dt.datetime(date.year, date.month, date.day, tzinfo=dt.UTC)
    if period == "day":
        return day.strftime("%Y-%m-%d"), day, 3 * _DAY
    if period == "week":
        start = day - dt.timedelta(days=day.weekday())
        year, week, _ = start.isocalendar()
        return f"{year}-W{week:02d}", start, 15 * _DAY
    if period == "month":
        return day.strftime("%Y-%m"), day.replace(day=1), 63 * _DAY
    return "lifetime", None, 0


def next_period_in(period: BudgetPeriod | None, now: dt.datetime) -> float | None:
    """Seconds until the period resets (None for a lifetime budget)."""
    _, start, _ = period_of(period, now)
    if start is None:
        return None
    if period == "day":
        end = start + dt.timedelta(days=1)
    elif period == "week":
        end = start + dt.timedelta(days=7)
    else:
        end = (start + dt.timedelta(days=32)).replace(day=1)
    return (end - now).total_seconds()


class Budgets:
    def __init__(self, redis: Any = None) -> None:
        self.redis = redis
        self._mem: dict[str, list[int]] = {}  # counter -> [spent, reserved]
        self.seeded: set[str] = set()  # counters this process started from the ledger
        if redis is not None:
            self._reserve = redis.register_script(_RESERVE)
            self._settle = redis.register_script(_SETTLE)

    @staticmethod
    def _rkey(counter: str) -> str:
        return f"faregate:budget:{counter}"

    async def reserve(self, counters: Sequence[tuple[str, int, int]], amount: int) -> int | None:
        """Reserve `amount` on every (counter, budget, ttl), all or none. Returns the index of
        the first counter that would go over its budget (nothing reserved), else None."""
        if self.redis is None:
            mem = self._mem
            for i, (name, budget, _) in enumerate(counters):
                s, r = mem.get(name, (0, 0))
                if s + r + amount > budget:
                    return i
            for name, _, _ in counters:
                entry = mem.get(name)
                if entry is None:
                    mem[name] = [0, amount]
                else:
                    entry[1] += amount
            return None
        keys = [self._rkey(c[0]) for c in counters]
        args = [amount, *(c[1] for c in counters), *(c[2] for c in counters)]
        refused = int(await self._reserve(keys=keys, args=args))
        return refused - 1 if refused else None

    async def settle(self, counters: Sequence[str], reserved: int, actual: int) -> int:
        """Release the reservation, add the real cost; returns the first counter's spend."""
        if self.redis is None:
            for name in counters:
                entry = self._mem.setdefault(name, [0, 0])
                entry[0] += actual
                entry[1] = max(0, entry[1] - reserved)
            return self._mem[counters[0]][0]
        return int(await self._settle(keys=[self._rkey(c) for c in counters], args=[-reserved, actual]))

    async def spent(self, counter: str) -> int:
        if self.redis is None:
            return self._mem.get(counter, (0, 0))[0]
        value = await self.redis.hget(self._rkey(counter), "s")
        return int(value or 0)

    async def seed(self, counter: str, spent: int, ttl: int) -> None:
        """Start a counter from the ledger's figure unless it already exists (set by this or
        another replica, which then knows better: it includes rows not yet flushed)."""
        if self.redis is None:
            self._mem.setdefault(counter, [spent, 0])
            return
        key = self._rkey(counter)
        if await self.redis.hsetnx(key, "s", spent) and ttl > 0:
            await self.redis.expire(key, ttl)


async def ledger_spend(engine: Any, column: str, ids: Sequence[str], since: dt.datetime | None) -> dict[str, int]:
    """Spend in the ledger per `column` value (key_id, user_id or team_id) since `since`."""
    from sqlalchemy import func, select

    from faregate.storage.tables import requests

    col = requests.c[column]
    query = select(col, func.sum(requests.c.cost_nusd)).where(col.in_(list(ids))).group_by(col)
    if since is not None:
        query = query.where(requests.c.created_at >= since)
    async with engine.connect() as conn:
        return {row[0]: int(row[1] or 0) for row in await conn.execute(query)}
