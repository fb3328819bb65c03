"""Two gateway replicas sharing one Redis share one cache: an answer stored through one is a
hit on the other, exact and semantic, and a purge on one empties both."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.conftest import Server, stop
from tests.gateways import http, launch_gateway
from tests.test_cache import answer, ask, cache_config


def _ready(gw: Server, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, _, stats = http("GET", f"{gw.url}/admin/cache")
        if stats["layers"]["semantic"]["ready"]:
            return
        time.sleep(0.1)
    raise AssertionError("the semantic layer never got ready")


@pytest.fixture(scope="module")
def pair(mock_upstream: Server, redis_server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    tmp = tmp_path_factory.mktemp("cache-replicas")
    env = {"FAREGATE_REDIS_URL": redis_server.url.rsplit("/", 1)[0] + "/5"}
    a = launch_gateway(tmp, cache_config(mock_upstream.url), env, name="a")
    b = launch_gateway(tmp, cache_config(mock_upstream.url), env, name="b")
    _ready(a)
    _ready(b)
    yield a, b
    stop(a.proc)
    stop(b.proc)


def _eventually(check, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.05)


def test_an_answer_cached_by_one_replica_is_a_hit_on_the_other(pair: tuple[Server, Server], mock_requests) -> None:
    a, b = pair
    assert http("GET", f"{a.url}/admin/cache")[2]["backend"] == "redis"
    _, h1, first = ask(a, "What is the capital of Australia?", model="exact-only")
    assert h1["x-faregate-cache"] == "miss"
    _, h2, second = ask(b, "What is the capital of Australia?", model="exact-only")
    assert h2["x-faregate-cache"] == "hit-exact" and second == first
    assert len(mock_requests()) == 1


def test_semantic_entries_reach_the_other_replica(pair: tuple[Server, Server]) -> None:
    a, b = pair
    original = "How do I cancel my subscription?"
    assert ask(a, original)[1]["x-faregate-cache"] == "miss"
    _eventually(lambda: http("GET", f"{b.url}/admin/cache")[2]["layers"]["semantic"]["entries"] >= 1)
    _, h, body = ask(b, "How can I cancel my subscription?")
    assert h["x-faregate-cache"] == "hit-semantic" and original in answer(body)
    _, h, _ = ask(b, "How do I renew my subscription?")
    assert h["x-faregate-cache"] == "miss"


def test_a_purge_on_one_replica_empties_the_shared_cache(pair: tuple[Server, Server]) -> None:
    a, b = pair
    ask(a, "purge across replicas", model="exact-only")
    assert ask(b, "purge across replicas", model="exact-only")[1]["x-faregate-cache"] == "hit-exact"
    status, _, purged = http("DELETE", f"{a.url}/admin/cache")
    assert status == 200 and purged["purged"]["exact"] >= 1
    assert ask(b, "purge across replicas", model="exact-only")[1]["x-faregate-cache"] == "miss"
    _eventually(lambda: http("GET", f"{b.url}/admin/cache")[2]["layers"]["semantic"]["entries"] == 0)
