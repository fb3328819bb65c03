"""The limiter on both storages: the in-process one decides exactly as the `limits` library's own
memory storage, and on Redis two limiters (two replicas) share one window; TPM settlement and
parallel slots work on both."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator

import pytest
import redis.asyncio as aioredis
from limits.aio.storage import MemoryStorage

from faregate.access.limiter import Limiter, LimitRefused
from faregate.access.memory_storage import LoopLocalStorage
from faregate.access.records import AccessPlan, Limits, Subject


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """time.time() under the test's control (both storages read it)."""
    now = [1_700_000_000.0]
    monkeypatch.setattr(time, "time", lambda: now[0])
    yield now


@pytest.mark.parametrize("seed", range(5))
async def test_loop_local_storage_decides_as_the_library_does(clock: list[float], seed: int) -> None:
    rng = random.Random(seed)
    ours, theirs = LoopLocalStorage(), MemoryStorage()
    decisions = []
    for _ in range(600):
        clock[0] += rng.choice([0.0, 0.01, 0.5, 3.0, 20.0])
        key, limit, cost = rng.choice(["a", "b"]), rng.choice([3, 10]), rng.choice([1, 1, 2])
        mine = await ours.acquire_entry("m" + key, limit, 60, cost)
        ref = await theirs.acquire_entry("m" + key, limit, 60, cost)
        decisions.append(mine)
        assert mine == ref
        mine = await ours.acquire_sliding_window_entry("s" + key, limit * 3, 60, cost)
        ref = await theirs.acquire_sliding_window_entry("s" + key, limit * 3, 60, cost)
        assert mine == ref
    assert True in decisions and False in decisions  # the sequence exercised both outcomes


async def test_loop_local_storage_forgets_idle_windows(clock: list[float]) -> None:
    s = LoopLocalStorage()
    await s.acquire_entry("m", 5, 60)
    await s.acquire_sliding_window_entry("s", 5, 60)
    await s.incr("f", 300)
    clock[0] += 10
    s.sweep()
    assert s._moving and s._sliding and s._counters
    clock[0] += 1000
    s.sweep()
    assert not s._moving and not s._sliding and not s._counters


async def _limiter_pair(redis_url: str | None) -> tuple[Limiter, Limiter, list]:
    if redis_url is None:
        one = Limiter()
        return one, one, []
    clients = [aioredis.from_url(redis_url), aioredis.from_url(redis_url)]
    await clients[0].flushdb()
    return Limiter(redis_url, clients[0]), Limiter(redis_url, clients[1]), clients


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_rpm_tpm_and_parallel(backend: str, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue("redis_server").url if backend == "redis" else None
    a, b, clients = await _limiter_pair(url)
    try:
        # one RPM window, whichever replica a request lands on
        hits = [await (a if i % 2 else b).hit_requests("key:x", 5) for i in range(8)]
        assert hits == [True] * 5 + [False] * 3
        window = await a.requests_window("key:x", 5)
        assert window.remaining == 0 and 0 < window.reset_seconds <= 60

        # TPM: charged on the estimate, settled on the real usage
        hold = await a.hit_tokens("key:x", 1000, 900)
        assert hold is not None and await b.hit_tokens("key:x", 1000, 200) is None
        await a.settle_tokens(hold, 100)
        assert (await b.tokens_window("key:x", 1000)).remaining == 900
        assert await b.hit_tokens("key:x", 1000, 800) is not None
        assert await a.hit_tokens("key:x", 1000, 5000) is None  # larger than the limit itself

        # parallel slots are shared and released
        assert await a.acquire_parallel("key:x", 2, "r1", 600)
        assert await b.acquire_parallel("key:x", 2, "r2", 600)
        assert not await a.acquire_parallel("key:x", 2, "r3", 600)
        await b.release_parallel("key:x", "r1")
        assert await a.acquire_parallel("key:x", 2, "r3", 600)
    finally:
        for c in clients:
            await c.aclose()


async def test_redis_parallel_slots_of_a_dead_replica_expire(redis_server) -> None:
    client = aioredis.from_url(redis_server.url)
    try:
        await client.flushdb()
        lim = Limiter(redis_server.url, client)
        assert await lim.acquire_parallel("key:y", 1, "lost", max_seconds=0.2)  # never released
        assert not await lim.acquire_parallel("key:y", 1, "next", max_seconds=0.2)
        await asyncio.sleep(0.3)
        assert await lim.acquire_parallel("key:y", 1, "next", max_seconds=0.2)
    finally:
        await client.aclose()


async def test_acquire_all_takes_every_window_or_none(clock: list[float]) -> None:
    """The batched admission call decides each window as the single calls do, and a refusal by
    any window leaves every other one untouched."""
    s = LoopLocalStorage()
    for _ in range(2):
        assert s.acquire_all([("m1", 5), ("m2", 2)], [("s1", 100)], [40]) == -1
    assert s.acquire_all([("m1", 5), ("m2", 2)], [("s1", 100)], [10]) == 1  # m2 is full
    assert s.acquire_all([("m1", 5)], [("s1", 100), ("s2", 10)], [10, 11]) == 2  # 11 > s2's limit
    assert s.acquire_all([("m1", 5)], [("s1", 100)], [30]) == 1  # 80 + 30 > 100 (s1, after m1)
    # nothing above was charged by the refused calls: the windows hold what the two admitted took
    assert (await s.get_moving_window("m1", 5, 60))[1] == 2
    assert (await s.get_moving_window("m2", 2, 60))[1] == 2
    assert (await s.get_sliding_window("s1", 60))[2] == 80
    assert "s2" not in s._sliding or s._sliding["s2"][1] == 0
    clock[0] += 61
    assert s.acquire_all([("m2", 2)], [], []) == -1  # the moving window moved on


def _plan(*subjects: Subject) -> AccessPlan:
    return AccessPlan.of(subjects)


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_admit_holds_a_request_to_every_subject_all_or_none(backend: str, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue("redis_server").url if backend == "redis" else None
    lim, _, clients = await _limiter_pair(url)
    try:
        key = Subject("key", "k", Limits(rpm=10, tpm=1000, max_parallel=5))
        team = Subject("team", "t", Limits(rpm=3, max_parallel=2))
        plan = _plan(key, team)
        grants = [await lim.admit(plan, 100, f"r{i}", 600) for i in range(2)]
        with pytest.raises(LimitRefused) as refused:
            await lim.admit(plan, 100, "r2", 600)  # the team's 2 parallel slots are taken
        assert (refused.value.subject, refused.value.which) == (team, "parallel")
        await lim.release(grants[0], 50, "r0")  # settles 100 -> 50 tokens and frees a slot
        assert (await lim.tokens_window("key:k", 1000)).remaining == 1000 - 150
        third = await lim.admit(plan, 100, "r3", 600)
        await lim.release(grants[1], 100, "r1")
        with pytest.raises(LimitRefused) as refused:
            await lim.admit(_plan(key, team), 100, "r4", 600)  # the team's 3 rpm are used
        assert (refused.value.subject.kind, refused.value.which) == ("team", "rpm")
        with pytest.raises(LimitRefused) as refused:
            await lim.admit(_plan(key), 2000, "r5", 600)  # more than the key's whole TPM
        assert refused.value.which == "tpm"
        # refusals took no tokens and no slots
        assert (await lim.tokens_window("key:k", 1000)).remaining == 1000 - 250
        await lim.release(third, 100, "r3")
        assert await lim.acquire_parallel("team:t", 2, "x1", 600) and await lim.acquire_parallel("team:t", 2, "x2", 600)
        if backend == "memory":  # in-process every window is checked before any is charged
            assert (await lim.requests_window("key:k", 10)).remaining == 10 - 3
    finally:
        for c in clients:
            await c.aclose()


async def test_admit_with_the_sliding_window_rpm_strategy() -> None:
    lim = Limiter(rpm_strategy="sliding-window")
    plan = _plan(Subject("key", "k", Limits(rpm=2, tpm=100)))
    await lim.admit(plan, 10, "a", 600)
    await lim.admit(plan, 10, "b", 600)
    with pytest.raises(LimitRefused) as refused:
        await lim.admit(plan, 10, "c", 600)
    assert refused.value.which == "rpm"
    assert (await lim.tokens_window("key:k", 100)).remaining == 80
