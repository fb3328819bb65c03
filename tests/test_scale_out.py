"""Scale-out: two gateway processes sharing one Redis and one PostgreSQL, as two replicas
behind a load balancer. Limits and budgets must be global, not per replica, and keys made or
revoked on one replica must hold on the other."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from decimal import Decimal

import asyncpg
import httpx
import pytest

from tests.conftest import Server, stop
from tests.gateways import chat, create_key, http, launch_gateway
from tests.test_access import IN_PRICE, OUT_PRICE, access_config


@pytest.fixture(scope="module")
def pair(mock_upstream: Server, redis_server, postgres_server,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server, str]]:
    tmp = tmp_path_factory.mktemp("scale")
    db_url = postgres_server.create_database("scale_out")
    env = {"FAREGATE_DATABASE_URL": db_url, "FAREGATE_REDIS_URL": redis_server.url}
    config = access_config(mock_upstream.url).replace("key_refresh_seconds: 0.5", "key_refresh_seconds: 30")
    a = launch_gateway(tmp, config, env, name="a")
    b = launch_gateway(tmp, config, env, name="b")
    yield a, b, db_url
    stop(a.proc)
    stop(b.proc)


async def _fire(urls: list[str], key: str, n: int, concurrency: int, max_tokens: int = 16) -> list[int]:
    """n chat requests spread round-robin over the replicas, `concurrency` at a time."""
    sem = asyncio.Semaphore(concurrency)
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens}

    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=concurrency)) as client:
        async def one(i: int) -> int:
            async with sem:
                resp = await client.post(f"{urls[i % len(urls)]}/v1/chat/completions", json=body,
                                         headers={"authorization": f"Bearer {key}"})
                return resp.status_code

        return list(await asyncio.gather(*(one(i) for i in range(n))))


def test_key_made_on_one_replica_works_on_the_other_and_revocation_is_shared(pair) -> None:
    a, b, _ = pair
    key = create_key(a)
    deadline = time.monotonic() + 2  # pub/sub: immediate in practice; polling is set to 30 s here
    while chat(b, key["key"])[0] != 200:
        assert time.monotonic() < deadline, "replica b never learned the new key"
        time.sleep(0.05)
    assert http("DELETE", f"{a.url}/admin/keys/{key['id']}")[0] == 200
    deadline = time.monotonic() + 2
    while chat(b, key["key"])[0] != 401:
        assert time.monotonic() < deadline, "replica b still accepts a revoked key"
        time.sleep(0.05)


def test_rpm_is_one_global_limit_across_replicas(pair) -> None:
    a, b, _ = pair
    key = create_key(a, rpm=100)
    time.sleep(0.3)  # b hears of the key
    statuses = asyncio.run(_fire([a.url, b.url], key["key"], n=300, concurrency=20))
    ok = statuses.count(200)
    print(f"global rpm 100 over two replicas: {ok} of 300 admitted")
    # LiteLLM lets limit x replicas through; one global window lets exactly the limit through.
    assert abs(ok - 100) <= 1, ok
    assert statuses.count(429) == 300 - ok


def test_budget_holds_under_200_concurrent_requests_on_two_replicas(pair, mock_settings) -> None:
    a, b, db_url = pair
    mock_settings(tokens=20, latency_ms=50)
    # one request costs about 8 x $1e-6 + 20 x $2e-6 = $0.000048; the budget fits ~20 of them
    budget = Decimal("0.001")
    key = create_key(a, budget_usd=str(budget))
    time.sleep(0.3)
    statuses = asyncio.run(_fire([a.url, b.url], key["key"], n=200, concurrency=200, max_tokens=20))
    assert statuses.count(200) > 0 and statuses.count(429) > 0
    assert set(statuses) == {200, 429}

    async def spent() -> tuple[int, int, int]:
        conn = await asyncpg.connect(db_url)
        try:
            for _ in range(50):  # rows reach the ledger within a flush interval
                row = await conn.fetchrow("SELECT count(*) n, coalesce(sum(cost_nusd), 0) s, "
                                          "coalesce(max(cost_nusd), 0) m FROM requests WHERE key_id = $1 AND status = 200",
                                          key["id"])
                if row["n"] == statuses.count(200):
                    return row["n"], row["s"], row["m"]
                await asyncio.sleep(0.1)
            raise AssertionError(f"ledger has {row['n']} rows, {statuses.count(200)} answered")
        finally:
            await conn.close()

    n, total, largest = asyncio.run(spent())
    budget_nusd = int(budget * 10**9)
    print(f"budget {budget_nusd} nUSD, 200 concurrent on two replicas: {n} answered, spent {total} nUSD, "
          f"largest request {largest} nUSD")
    assert total <= budget_nusd + largest, (total, budget_nusd, largest)  # overshoot ≤ one request
    per_request = IN_PRICE * 8 + OUT_PRICE * 20
    assert n >= int(budget / per_request) - 3  # and the budget is actually usable, not over-reserved
    # both replicas report the same key spend afterwards
    status, headers, _ = chat(b, key["key"], max_tokens=1)
    assert status in (200, 429)
