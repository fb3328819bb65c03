"""Admission with backpressure: at most N requests in flight, the rest wait in a fair queue.

One `FairQueue` guards one thing — the whole gateway, or one deployment — and the caller holds
a slot of each for the life of a request. While fewer than `max_in_flight` slots are taken and
nobody waits, `acquire` just counts (no Future, no timer: acquire + release < 1 µs). Beyond
that a request waits, and the queue decides who goes next when a slot frees:

- priority classes first, strictly in `priorities` order (interactive before batch). A batch
  request can starve while interactive ones keep coming; its wait bound refuses it in time.
- within a class, round-robin over tenants (key or user): each tenant has its own FIFO of
  waiters, and a slot goes to the next tenant in the ring, then that tenant's oldest waiter.
  A tenant with 50 waiters gets one turn per round, like a tenant with one. The tenant just
  served goes back into the ring only at the next turn, so a tenant that starts waiting now is
  placed before it: a light tenant behind a heavy one waits for the next free slot, not for a
  whole round — the cost of one queue slot (mean hold time / max_in_flight) at most.
- a freed slot is handed to that waiter directly (the count stays the same): no thundering
  herd, and no request arriving meanwhile can take it on the fast path.

Refusals (`QueueFull`): at once when `max_queue` requests already wait ("queue_full"), or after
`max_wait_seconds` of waiting ("wait_timeout"). Each carries a retry-after estimated from the
observed service rate: with every slot busy one frees every `mean_hold / max_in_flight`
seconds, so the queue ahead of a request drains in `(waiting + 1) / max_in_flight * mean_hold`,
where `mean_hold` is an EWMA of how long slots were held (1 s before any was released). It is
rounded up to whole seconds, at least 1.

Cancellation: a waiter that is cancelled (client gone) leaves the queue; if the slot was handed
to it in the same loop turn, it passes the slot on. The wait bound is a timer of the queue's
own that removes the waiter and refuses it in one step, so a slot and a timeout never both
reach the same waiter.

State lives in this process (one event loop, no locks needed): with several worker processes
each enforces its own limits, so the gateway-wide bound is workers x max_in_flight.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

_ALPHA = 0.2  # weight of the newest hold time in the mean
_DEFAULT_HOLD = 1.0  # seconds assumed per slot before any slot was released


@dataclass(frozen=True, slots=True)
class QueueSettings:
    max_in_flight: int | None = None  # None: unlimited, nothing ever waits
    max_queue: int = 1000  # waiting requests beyond this are refused at once
    max_wait_seconds: float = 10.0  # a request waiting longer is refused
    priorities: tuple[str, ...] = ("interactive", "batch")  # served strictly in this order

    def __post_init__(self) -> None:
        if self.max_in_flight is not None and self.max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1 (or None: unlimited)")
        if self.max_queue < 0 or self.max_wait_seconds <= 0:
            raise ValueError("max_queue must be >= 0 and max_wait_seconds > 0")
        if not self.priorities or len(set(self.priorities)) != len(self.priorities):
            raise ValueError("priorities must be distinct and not empty")


class QueueFull(Exception):
    """The queue refused a request: `reason` is "queue_full" or "wait_timeout"; `retry_after`
    is the estimated wait, in whole seconds, before a retry would be served."""

    def __init__(self, queue: str, reason: str, retry_after: float) -> None:
        super().__init__(f"{queue}: {reason}, retry after {retry_after:.0f}s")
        self.queue, self.reason, self.retry_after = queue, reason, retry_after


@dataclass(slots=True, eq=False)
class Slot:
    """One slot held; give it back with `FairQueue.release` (twice is harmless)."""

    started: float  # the queue's clock when the slot was taken
    released: bool = False


@dataclass(slots=True)
class _Class:
    """The waiters of one priority class: a ring of tenants, each with its FIFO of futures."""

    ring: OrderedDict[str, deque[asyncio.Future[Slot]]] = field(default_factory=OrderedDict)
    held: str | None = None  # the tenant served last, back into the ring at the next turn
    held_q: deque[asyncio.Future[Slot]] | None = None

    def queue_of(self, tenant: str) -> deque[asyncio.Future[Slot]] | None:
        q = self.ring.get(tenant)
        return self.held_q if q is None and tenant == self.held else q

    def drop(self, tenant: str) -> None:
        """Forget a tenant whose queue is empty."""
        if tenant == self.held:
            self.held = self.held_q = None
        else:
            del self.ring[tenant]


class FairQueue:
    def __init__(self, settings: QueueSettings, name: str = "gateway",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings, self.name, self._clock = settings, name, clock
        self._limit = settings.max_in_flight
        self._classes = {p: _Class() for p in settings.priorities}
        self._order = tuple(self._classes.values())
        self._in_flight = 0
        self._waiting = 0
        self._mean_hold: float | None = None
        self.queued = 0  # requests that had to wait, since start
        self.refused_full = 0
        self.refused_timeout = 0

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def waiting(self) -> int:
        return self._waiting

    async def acquire(self, tenant: str, priority: str = "interactive") -> Slot:
        """A slot: at once if one is free and nobody waits, else after a fair wait.
        Raises QueueFull (queue too long, or waited too long), ValueError (unknown priority)."""
        if priority not in self._classes:
            raise ValueError(f"unknown priority {priority!r}; expected one of {self.settings.priorities}")
        limit = self._limit
        if limit is None:
            self._in_flight += 1
            return Slot(0.0)
        if self._in_flight < limit and not self._waiting:
            self._in_flight += 1
            return Slot(self._clock())
        return await self._wait(tenant, self._classes[priority])

    def slot(self, tenant: str, priority: str = "interactive") -> SlotContext:
        """`async with queue.slot(tenant, priority) as slot:` acquires, then releases."""
        return SlotContext(self, tenant, priority)

    def release(self, slot: Slot) -> None:
        """Give a slot back: to the next waiter in fair order, or to the pool. Idempotent."""
        if slot.released:
            return
        slot.released = True
        if self._limit is None:
            self._in_flight -= 1
            return
        now = self._clock()
        hold = now - slot.started
        mean = self._mean_hold
        self._mean_hold = hold if mean is None else mean + _ALPHA * (hold - mean)
        self._pass_on(now)

    def retry_after(self, ahead: int | None = None) -> float:
        """Whole seconds (>= 1) until `ahead` requests (default: all waiting, plus one) would
        have been served at the observed rate."""
        n = self._waiting + 1 if ahead is None else ahead
        hold = _DEFAULT_HOLD if self._mean_hold is None else self._mean_hold
        return float(max(1, math.ceil(n / (self._limit or 1) * hold - 1e-9)))

    def snapshot(self) -> dict[str, Any]:
        waiting = {p: sum(len(q) for q in c.ring.values()) + len(c.held_q or ())
                   for p, c in self._classes.items()}
        tenants = {p: len(c.ring) + (c.held is not None) for p, c in self._classes.items()}
        return {"name": self.name, "max_in_flight": self._limit, "in_flight": self._in_flight,
                "waiting": self._waiting, "waiting_by_priority": waiting,
                "tenants_waiting": tenants, "mean_hold_seconds": self._mean_hold,
                "retry_after": self.retry_after() if self._limit else None,
                "queued": self.queued, "refused_queue_full": self.refused_full,
                "refused_wait_timeout": self.refused_timeout}

    # -- the slow path ------------------------------------------------------------------------

    async def _wait(self, tenant: str, cls: _Class) -> Slot:
        if self._waiting >= self.settings.max_queue:
            self.refused_full += 1
            raise QueueFull(self.name, "queue_full", self.retry_after())
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Slot] = loop.create_future()
        q = cls.queue_of(tenant)
        if q is None:
            q = cls.ring[tenant] = deque()
        q.append(fut)
        self._waiting += 1
        self.queued += 1
        timer = loop.call_at(loop.time() + self.settings.max_wait_seconds, self._expire, fut, cls, tenant)
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                fut.result().released = True  # handed to us as we were cancelled: pass it on
                self._pass_on(self._clock())
            else:
                self._remove(fut, cls, tenant)
            raise
        finally:
            timer.cancel()

    def _expire(self, fut: asyncio.Future[Slot], cls: _Class, tenant: str) -> None:
        """The wait bound: refuse a waiter still queued (not one already handed a slot)."""
        if fut.done() or not self._remove(fut, cls, tenant):
            return
        self.refused_timeout += 1
        fut.set_exception(QueueFull(self.name, "wait_timeout", self.retry_after()))

    def _remove(self, fut: asyncio.Future[Slot], cls: _Class, tenant: str) -> bool:
        q = cls.queue_of(tenant)
        if q is None:
            return False
        try:
            q.remove(fut)
        except ValueError:  # already taken off the queue (and skipped, being cancelled)
            return False
        self._waiting -= 1
        if not q:
            cls.drop(tenant)
        return True

    def _pass_on(self, now: float) -> None:
        """A slot was freed: hand it to the next waiter, else return it to the pool."""
        if self._waiting:
            fut = self._next()
            if fut is not None:
                fut.set_result(Slot(now))  # in_flight unchanged: the slot moves directly
                return
        self._in_flight -= 1

    def _next(self) -> asyncio.Future[Slot] | None:
        """Take the next waiter in fair order off the queue (None: nobody live waits)."""
        for cls in self._order:
            while True:
                if cls.held is not None:
                    cls.ring[cls.held] = cls.held_q  # type: ignore[assignment]
                    cls.held = cls.held_q = None
                if not cls.ring:
                    break
                tenant, q = cls.ring.popitem(last=False)
                fut = q.popleft()
                self._waiting -= 1
                if q:
                    cls.held, cls.held_q = tenant, q
                if not fut.done():  # done: cancelled, its task not yet resumed to leave
                    return fut
        return None


@dataclass(slots=True)
class SlotContext:
    """`async with queue.slot(tenant):` — the slot is released however the block exits."""

    queue: FairQueue
    tenant: str
    priority: str
    held: Slot | None = None

    async def __aenter__(self) -> Slot:
        self.held = await self.queue.acquire(self.tenant, self.priority)
        return self.held

    async def __aexit__(self, *exc: object) -> None:
        if self.held is not None:
            self.queue.release(self.held)
