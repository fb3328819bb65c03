"""Circuit breakers: transitions on a fake clock in-process, and shared across two replicas (two
clients) on a real Redis, with real time and short cooldowns."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis

from faregate.routing.breaker import Breakers, BreakerSettings


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def breakers(**settings: float) -> tuple[Breakers, Clock]:
    clock = Clock()
    return Breakers(BreakerSettings(**settings), clock=clock), clock


async def fail(b: Breakers, dep: str, times: int) -> None:
    for _ in range(times):
        await b.record(dep, False)


async def test_opens_after_consecutive_failures() -> None:
    b, _ = breakers(failure_threshold=3, min_requests=1000)
    await fail(b, "d", 2)
    await b.record("d", True)  # a success breaks the run
    await fail(b, "d", 2)
    assert b.state("d") == "closed" and b.allows("d")
    await fail(b, "d", 1)
    assert b.state("d") == "open" and not b.allows("d") and not b.acquire_probe("d")
    assert b.allows("other") and b.acquire_probe("other")  # unknown deployments are closed
    snap = b.snapshot()["d"]
    assert snap["state"] == "open" and snap["opened_at"] and snap["cooldown_left"] == 30.0


async def test_opens_on_error_rate_only_from_min_requests() -> None:
    b, _ = breakers(failure_threshold=100, error_rate=0.5, min_requests=10)
    for i in range(9):  # f s f s f s f s f: 5 of 9 failed, but fewer than 10 outcomes
        await b.record("d", i % 2 == 1)
    assert b.state("d") == "closed"
    snap = b.snapshot()["d"]
    assert (snap["requests"], snap["failures"], snap["consecutive_failures"]) == (9, 5, 1)
    await b.record("d", True)  # 10 outcomes, 5 failures: a success never opens
    assert b.state("d") == "closed"
    await b.record("d", False)  # 11 outcomes, 6 failures
    assert b.state("d") == "open"


async def test_window_forgets_old_outcomes() -> None:
    b, clock = breakers(failure_threshold=100, error_rate=0.5, min_requests=4, window_seconds=10)
    await fail(b, "d", 3)
    clock.t += 11  # those failures slid out of the window
    for ok in (True, True, True, False):
        await b.record("d", ok)
    assert b.state("d") == "closed" and b.snapshot()["d"]["requests"] == 4


async def test_half_open_probe_success_closes() -> None:
    b, clock = breakers(failure_threshold=2, cooldown_seconds=5)
    await fail(b, "d", 2)
    clock.t += 4.9
    assert b.state("d") == "open" and not b.allows("d")
    clock.t += 0.1
    assert b.state("d") == "half_open" and b.allows("d")
    assert b.allows("d")  # allows() takes no slot
    assert b.acquire_probe("d")
    assert not b.allows("d") and not b.acquire_probe("d")  # the one slot is taken
    await b.record("d", True)
    assert b.state("d") == "closed" and b.allows("d")
    assert b.snapshot()["d"]["consecutive_failures"] == 0
    await fail(b, "d", 1)  # the window was cleared: one failure is one failure
    assert b.state("d") == "closed"


async def test_half_open_probe_failure_reopens() -> None:
    b, clock = breakers(failure_threshold=2, cooldown_seconds=5)
    await fail(b, "d", 2)
    clock.t += 5
    assert b.acquire_probe("d")
    await b.record("d", False)
    assert b.state("d") == "open" and not b.allows("d")
    clock.t += 4
    assert b.state("d") == "open"  # a whole new cooldown
    clock.t += 1
    assert b.state("d") == "half_open" and b.acquire_probe("d")


async def test_only_half_open_probes_go_and_lost_ones_are_freed() -> None:
    b, clock = breakers(failure_threshold=1, cooldown_seconds=5, half_open_probes=2)
    await fail(b, "d", 1)
    clock.t += 5
    assert [b.acquire_probe("d") for _ in range(3)] == [True, True, False]
    clock.t += 4
    assert not b.allows("d")
    clock.t += 1  # no verdict for a whole cooldown: the probes are taken as lost
    assert b.allows("d") and b.acquire_probe("d")


async def test_late_outcomes_while_open_change_nothing() -> None:
    b, clock = breakers(failure_threshold=1, cooldown_seconds=5)
    await fail(b, "d", 1)
    await b.record("d", True)  # a request sent before it opened
    assert b.state("d") == "open"
    clock.t += 5
    assert b.state("d") == "half_open"


def test_allows_is_cheap() -> None:
    b = Breakers()
    b.allows("d")
    n = 100_000
    start = time.perf_counter()
    for _ in range(n):
        b.allows("d")
    assert (time.perf_counter() - start) / n < 5e-6  # ~0.1 µs; loose for a busy machine


# --- Redis: two replicas --------------------------------------------------------------------

@pytest.fixture
async def clients(redis_server) -> AsyncIterator[Callable[[], aioredis.Redis]]:
    url = redis_server.url.rsplit("/", 1)[0] + "/7"  # a database of our own
    made = [aioredis.from_url(url)]
    await made[0].flushdb()

    def new() -> aioredis.Redis:
        made.append(aioredis.from_url(url))
        return made[-1]

    yield new
    for c in made:
        await c.aclose()


async def until(check: Callable[[], bool], within: float) -> float:
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < within, "not within the time allowed"
        await asyncio.sleep(0.01)
    return time.monotonic() - start


async def test_redis_replicas_share_the_breaker(clients) -> None:
    # a cooldown longer than B's refresh period (0.5 s), so B sees it open before half-open
    settings = BreakerSettings(failure_threshold=3, cooldown_seconds=1.0)
    a, b = Breakers(settings, redis=clients()), Breakers(settings, redis=clients())
    await a.start()
    await b.start()
    try:
        assert b.allows("gpt-4o#0")  # B routes to it, so B follows its state
        await fail(a, "gpt-4o#0", 3)
        assert a.state("gpt-4o#0") == "open" and a.snapshot()["gpt-4o#0"]["consecutive_failures"] == 3
        await until(lambda: not b.allows("gpt-4o#0"), within=1.0)  # opened for B too

        await until(lambda: b.state("gpt-4o#0") == "half_open", within=1.5)
        assert b.acquire_probe("gpt-4o#0")
        await b.record("gpt-4o#0", True)
        assert b.state("gpt-4o#0") == "closed"
        await until(lambda: a.state("gpt-4o#0") == "closed", within=1.0)  # closed for A too
        assert a.allows("gpt-4o#0")
    finally:
        await a.close()
        await b.close()


async def test_redis_probe_failure_reopens_everywhere(clients) -> None:
    settings = BreakerSettings(failure_threshold=2, cooldown_seconds=0.2)
    a, b = Breakers(settings, redis=clients()), Breakers(settings, redis=clients())
    assert b.allows("d")
    await fail(a, "d", 2)
    await asyncio.sleep(0.25)
    await b.refresh()
    assert b.state("d") == "half_open" and b.acquire_probe("d")
    await b.record("d", False)
    assert b.state("d") == "open"
    await a.refresh()
    assert a.state("d") == "open" and not a.allows("d")
    await a.record("d", True)  # a late probe of A's, after B reopened it: no effect
    assert a.state("d") == "open"
    await asyncio.sleep(0.25)
    await a.refresh()
    assert a.state("d") == "half_open"


async def test_redis_error_rate(clients) -> None:
    settings = BreakerSettings(failure_threshold=100, error_rate=0.5, min_requests=4)
    a, b = Breakers(settings, redis=clients()), Breakers(settings, redis=clients())
    await a.record("d", True)
    await b.record("d", False)
    await a.record("d", True)
    assert a.state("d") == "closed"
    await b.record("d", False)  # 2 of 4 outcomes, across both replicas
    assert b.state("d") == "open"
    snap = b.snapshot()["d"]
    assert snap["opened_at"] and abs(snap["opened_at"] - time.time()) < 5


async def test_redis_down_decides_locally(caplog: pytest.LogCaptureFixture) -> None:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there
    client = aioredis.from_url(f"redis://127.0.0.1:{port}/0", socket_connect_timeout=0.2)
    b = Breakers(BreakerSettings(failure_threshold=3), redis=client)
    try:
        with caplog.at_level(logging.WARNING, logger="faregate.routing"):
            await fail(b, "d", 3)
            await b.refresh()
        assert b.state("d") == "open"
        redis_warnings = [r for r in caplog.records if "Redis" in r.getMessage()]
        assert len(redis_warnings) == 1  # at most one every 10 s
    finally:
        await client.aclose()


async def test_redis_close_while_refreshing(clients) -> None:
    # redis-py can turn the cancellation of a call into a ConnectionError: close() must still end
    client = clients()
    for _ in range(30):
        b = Breakers(redis=client, refresh_seconds=0.0005)
        for i in range(20):
            b.allows(f"d{i}")
        await b.start()
        await asyncio.sleep(0.002)
        await asyncio.wait_for(b.close(), 2.0)
