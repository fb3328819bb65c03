"""Retry budget: retries may be at most a share of recent traffic, so an outage never becomes a
retry storm (Envoy's retry budget, Finagle's RetryBudget).

Every first attempt is counted with `record_request`; a retry asks `try_spend`, which lets it
go (and counts it) only while the retries in the rolling window stay under
max(min_per_second * window_seconds, ratio * first attempts in the window). The minimum keeps
retries possible at low traffic, where a ratio of a few requests would round to none.

Counts are kept in a ring of ten buckets, each a tenth of the window (`RollingPair`): O(1) per
call, no list of timestamps. The window slides a bucket at a time, so it covers between 90 % and
100 % of `window_seconds`.

Each replica keeps its own budget, in-process: it needs no round trip, and a share of a
replica's own traffic is already a share of the whole. Only the minimum multiplies: N replicas
allow N times `min_per_second` between them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

BUCKETS = 10


class RollingPair:
    """Two counters (a and b) summed over a rolling window of `BUCKETS` buckets.

    Adding or reading first drops the buckets that slid out of the window, and the totals are
    kept as running sums, so both are O(1) (at most `BUCKETS` steps after a long silence).
    """

    __slots__ = ("width", "idx", "a", "b", "total_a", "total_b")

    def __init__(self, window_seconds: float) -> None:
        if window_seconds <= 0:
            raise ValueError("window_seconds must be positive")
        self.width = window_seconds / BUCKETS
        self.idx: int | None = None  # the newest bucket's number (time // width)
        self.a = [0] * BUCKETS
        self.b = [0] * BUCKETS
        self.total_a = 0
        self.total_b = 0

    def _advance(self, now: float) -> int:
        idx = int(now // self.width)
        last = self.idx
        if last is None or idx - last >= BUCKETS:
            self.clear()
        elif idx > last:
            a, b = self.a, self.b
            for i in range(last + 1, idx + 1):
                slot = i % BUCKETS
                self.total_a -= a[slot]
                self.total_b -= b[slot]
                a[slot] = b[slot] = 0
        else:
            return last  # same bucket (or a clock that stepped back: count in the newest)
        self.idx = idx
        return idx

    def add(self, now: float, a: int = 0, b: int = 0) -> None:
        slot = self._advance(now) % BUCKETS
        self.a[slot] += a
        self.b[slot] += b
        self.total_a += a
        self.total_b += b

    def totals(self, now: float) -> tuple[int, int]:
        self._advance(now)
        return self.total_a, self.total_b

    def clear(self) -> None:
        self.a = [0] * BUCKETS
        self.b = [0] * BUCKETS
        self.total_a = self.total_b = 0


class RetryBudget:
    """Retries allowed as a share of first attempts over a rolling window, per replica."""

    __slots__ = ("ratio", "minimum", "_clock", "_counts")

    def __init__(self, ratio: float = 0.2, min_per_second: float = 1.0, window_seconds: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if ratio < 0 or min_per_second < 0:
            raise ValueError("ratio and min_per_second must not be negative")
        self.ratio = ratio
        self.minimum = min_per_second * window_seconds  # retries always allowed per window
        self._clock = clock
        self._counts = RollingPair(window_seconds)  # a: first attempts, b: retries

    def record_request(self) -> None:
        """Count a first attempt (never a retry)."""
        self._counts.add(self._clock(), a=1)

    def try_spend(self) -> bool:
        """True (and the retry is counted) if the budget has room for one more retry."""
        counts = self._counts
        now = self._clock()
        requests, retries = counts.totals(now)
        if retries >= max(self.minimum, self.ratio * requests):
            return False
        counts.add(now, b=1)
        return True

    def snapshot(self) -> dict:
        """Requests and retries in the window, and how many retries the window allows."""
        requests, retries = self._counts.totals(self._clock())
        return {"requests": requests, "retries": retries,
                "allowed": math.ceil(max(self.minimum, self.ratio * requests))}
