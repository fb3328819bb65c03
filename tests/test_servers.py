"""The real Redis and PostgreSQL servers the tests share (`tests/servers.py`) answer."""

from __future__ import annotations

import asyncpg
import redis.asyncio as aioredis

from tests.servers import PostgresServer, RedisServer


async def test_redis_answers(redis_server: RedisServer) -> None:
    client = aioredis.from_url(redis_server.url)
    try:
        assert await client.ping()
        await client.set("test_servers:k", "v", ex=60)
        assert await client.get("test_servers:k") == b"v"
    finally:
        await client.aclose()


async def test_each_database_is_its_own(postgres_server: PostgresServer) -> None:
    a, b = (postgres_server.create_database(n) for n in ("test_servers_a", "test_servers_b"))
    assert a != b and a.startswith("postgresql://postgres@127.0.0.1:")
    conn_a, conn_b = await asyncpg.connect(a), await asyncpg.connect(b)
    try:
        await conn_a.execute("CREATE TABLE only_in_a (x int)")
        assert await conn_a.fetchval("SELECT to_regclass('only_in_a')::text") == "only_in_a"
        assert await conn_b.fetchval("SELECT to_regclass('only_in_a')::text") is None
    finally:
        await conn_a.close()
        await conn_b.close()
    # asking again gives a fresh, empty database
    conn = await asyncpg.connect(postgres_server.create_database("test_servers_a"))
    try:
        assert await conn.fetchval("SELECT to_regclass('only_in_a')::text") is None
    finally:
        await conn.close()
