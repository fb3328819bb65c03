"""An in-process storage for the `limits` strategies, made for one event loop.

`limits.aio.storage.MemoryStorage` is general: an asyncio lock per key, an error-wrapping layer
around every call, a moving window kept as a list that grows at its head (O(n) per hit), and a
background task that re-scans every key — through a thread — after each call. Measured in
`bench/admission.py`: ~100 µs per moving-window limit per request under load, ~10 µs per
sliding-window one. A gateway process runs one event loop, and nothing here awaits, so every
call is atomic without a lock; windows are pruned as they are read, and keys nobody touched for
a while are dropped every few thousand calls. ~1-2 µs per call.

It implements the storage calls the strategies make (fixed window: `incr`/`get`; moving window:
`acquire_entry`/`get_moving_window`; sliding-window counter: `acquire_sliding_window_entry`/
`get_sliding_window`) with the library's own semantics, so `MovingWindowRateLimiter` &co run on
it unchanged. Redis keeps the library's own storage (its Lua scripts are what make limits global).
"""

from __future__ import annotations

import math
import time
from array import array
from bisect import bisect_left
from collections.abc import Sequence

from limits.aio.storage import Storage

_SWEEP_EVERY = 4096


class LoopLocalStorage(Storage):
    """(Subclasses the library's `Storage` because its strategies insist on that type; it
    wraps the fixed-window calls with its error layer, the hot window calls stay direct.)"""

    STORAGE_SCHEME = None

    def __init__(self) -> None:
        super().__init__()
        self._counters: dict[str, list[float]] = {}  # fixed windows: key -> [count, expires_at]
        self._moving: dict[str, _Hits] = {}  # key -> hit timestamps, oldest first
        self._sliding: dict[str, list[float]] = {}  # key -> [window index, current, previous, expiry]
        self._calls = 0

    # -- fixed window -------------------------------------------------------------------------

    async def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        self._tick()
        now = time.time()
        entry = self._counters.get(key)
        if entry is None or entry[1] <= now:
            entry = self._counters[key] = [0, now + expiry]
        entry[0] += amount
        return int(entry[0])

    async def get(self, key: str) -> int:
        entry = self._counters.get(key)
        return int(entry[0]) if entry is not None and entry[1] > time.time() else 0

    async def get_expiry(self, key: str) -> float:
        entry = self._counters.get(key)
        return entry[1] if entry is not None else time.time()

    async def clear(self, key: str) -> None:
        self._counters.pop(key, None)
        self._moving.pop(key, None)
        self._sliding.pop(key, None)

    async def reset(self) -> int | None:
        n = len(self._counters) + len(self._moving) + len(self._sliding)
        self._counters.clear()
        self._moving.clear()
        self._sliding.clear()
        return n

    async def check(self) -> bool:
        return True

    @property
    def base_exceptions(self) -> type[Exception]:
        return ValueError

    # -- moving window ------------------------------------------------------------------------

    def _window(self, key: str, expiry: float, now: float) -> _Hits:
        hits = self._moving.get(key)
        if hits is None:
            hits = self._moving[key] = _Hits(expiry)
        hits.prune(now - expiry)  # a hit exactly `expiry` ago still counts (as in the library)
        return hits

    async def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        self._tick()
        if amount > limit:
            return False
        now = time.time()
        hits = self._window(key, expiry, now)
        if len(hits) + amount > limit:
            return False
        hits.add(now, amount)
        return True

    async def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        now = time.time()
        hits = self._window(key, expiry, now)
        return (hits.first() if len(hits) else now), len(hits)

    def acquire_all(self, moving: Sequence[tuple[str, int]], sliding: Sequence[tuple[str, int]],
                    amounts: Sequence[int], expiry: int = 60) -> int:
        """One hit on every moving window (key, limit) and amounts[i] on sliding-window counter
        sliding[i] — on all of them or on none: each is checked first, as `acquire_entry` /
        `acquire_sliding_window_entry` would decide, then all are charged. Returns -1, or the
        index of the first window that refused (the sliding ones numbered after the moving
        ones). Synchronous: one request's whole admission in one call, nothing awaited."""
        self._tick()
        now = time.time()
        windows = [self._window(key, expiry, now) for key, _ in moving]
        for i, hits in enumerate(windows):
            if len(hits) + 1 > moving[i][1]:
                return i
        states = [self._slide(key, expiry, now) for key, _ in sliding]
        for i, state in enumerate(states):
            limit, amount = sliding[i][1], amounts[i]
            weighted = state[2] * (expiry - (now - state[0] * expiry)) / expiry + state[1]
            if amount > limit or math.floor(weighted) + amount > limit:
                return len(windows) + i
        for hits in windows:
            hits.add(now)
        for i, state in enumerate(states):
            state[1] += amounts[i]
        return -1

    # -- sliding-window counter ---------------------------------------------------------------

    def _slide(self, key: str, expiry: int, now: float) -> list[float]:
        index = math.floor(now / expiry)
        state = self._sliding.get(key)
        if state is None:
            state = self._sliding[key] = [index, 0, 0, expiry]
        elif state[0] != index:
            state[2] = state[1] if state[0] == index - 1 else 0
            state[1] = 0
            state[0] = index
        return state

    async def acquire_sliding_window_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        self._tick()
        if amount > limit:
            return False
        now = time.time()
        state = self._slide(key, expiry, now)
        elapsed = now - state[0] * expiry
        weighted = state[2] * (expiry - elapsed) / expiry + state[1]
        if math.floor(weighted) + amount > limit:
            return False
        state[1] += amount
        return True

    async def get_sliding_window(self, key: str, expiry: int) -> tuple[int, float, int, float]:
        now = time.time()
        state = self._slide(key, expiry, now)
        left = expiry - (now - state[0] * expiry)
        return int(state[2]), (left if state[2] else 0.0), int(state[1]), left + expiry

    async def clear_sliding_window(self, key: str, expiry: int) -> None:
        self._sliding.pop(key, None)

    def adjust_sliding_window(self, key: str, expiry: int, delta: int) -> None:
        """Settle a charge in the current window (never below zero)."""
        state = self._slide(key, expiry, time.time())
        state[1] = max(0, state[1] + delta)

    def adjust_sliding_windows(self, keys: Sequence[str], expiry: int, delta: int) -> None:
        now = time.time()
        for key in keys:
            state = self._slide(key, expiry, now)
            state[1] = max(0, state[1] + delta)

    # -- housekeeping -------------------------------------------------------------------------

    def _tick(self) -> None:
        self._calls += 1
        if self._calls % _SWEEP_EVERY == 0:
            self.sweep()

    def sweep(self, now: float | None = None) -> None:
        """Drop windows with nothing left in them (keys of idle keys, ended conversations)."""
        now = time.time() if now is None else now
        for key in [k for k, e in self._counters.items() if e[1] <= now]:
            del self._counters[key]
        for key in [k for k, h in self._moving.items() if not len(h) or h.last() <= now - h.expiry]:
            del self._moving[key]
        # a sliding window whose current and previous windows both ended counts nothing
        for key in [k for k, s in self._sliding.items() if (s[0] + 2) * s[3] <= now]:
            del self._sliding[key]


class _Hits:
    """One moving window's hit times, oldest first, as raw doubles in an array with a moving
    head: 8 bytes per hit instead of a float object and a deque slot (~32). The window of a busy
    key holds every hit of its last minute (~120,000 at 2,000 requests/s)."""

    __slots__ = ("times", "head", "expiry")

    def __init__(self, expiry: float) -> None:
        self.times = array("d")
        self.head = 0
        self.expiry = expiry

    def __len__(self) -> int:
        return len(self.times) - self.head

    def first(self) -> float:
        return self.times[self.head]

    def last(self) -> float:
        return self.times[-1]

    def prune(self, cutoff: float) -> None:
        times = self.times
        head = self.head
        if head < len(times) and times[head] < cutoff:
            head = bisect_left(times, cutoff, head)
            if head > 1024 and head * 2 > len(times):  # drop the dead half: amortized O(1)
                del times[:head]
                head = 0
            self.head = head

    def add(self, now: float, amount: int = 1) -> None:
        if amount == 1:
            self.times.append(now)
        else:
            self.times.extend([now] * amount)
