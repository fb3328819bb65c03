"""Storage on a real PostgreSQL: `faregate db upgrade` takes an empty database to head (and is
a no-op the second time), the migrations build exactly what `storage/tables.py` declares (on
PostgreSQL and on SQLite, so the two cannot drift), and the ledger writer's rows read back as
they were written."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import UniqueConstraint, inspect, select, text

from faregate.access.records import MASTER, KeyRecord, Principal
from faregate.accounting.ledger import LedgerWriter, ledger_row
from faregate.accounting.pricing import Cost, Tokens
from faregate.core.call import Call
from faregate.core.errors import GatewayError
from faregate.storage.db import create_engine, upgrade
from faregate.storage.tables import metadata, requests
from faregate.storage.urls import HEAD_REVISION
from tests.servers import PostgresServer


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> str:
    """A fresh, empty database of its own for each test."""
    return postgres_server.create_database(f"t_{uuid.uuid4().hex[:16]}")


def db_upgrade(url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "FAREGATE_CONFIG")}
    return subprocess.run([sys.executable, "-m", "faregate", "db", "upgrade"], capture_output=True, text=True,
                          env={**env, "FAREGATE_DATABASE_URL": url}, timeout=120)


def async_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+asyncpg://").replace("sqlite:///", "sqlite+aiosqlite:///")


async def reflect(url: str) -> dict[str, dict]:
    """What is in the database: per table, its columns (name -> nullable), primary key, indexes
    and unique column sets; plus the Alembic revision."""

    def schema(conn) -> dict[str, dict]:  # type: ignore[no-untyped-def]
        insp = inspect(conn)
        return {t: {"columns": {c["name"]: c["nullable"] for c in insp.get_columns(t)},
                    "primary_key": insp.get_pk_constraint(t)["constrained_columns"],
                    "indexes": {(i["name"], tuple(i["column_names"]), bool(i["unique"]))
                                for i in insp.get_indexes(t) if "duplicates_constraint" not in i},
                    "unique": {tuple(u["column_names"]) for u in insp.get_unique_constraints(t)}}
                for t in insp.get_table_names()}

    engine = create_engine(async_url(url))
    try:
        async with engine.connect() as conn:
            found = await conn.run_sync(schema)
            found["alembic_version"]["revision"] = (
                await conn.execute(text("SELECT version_num FROM alembic_version"))).scalars().all()
    finally:
        await engine.dispose()
    return found


async def autogenerate_diff(url: str) -> list:
    """What Alembic's autogenerate would still change to match `metadata` (types included)."""
    engine = create_engine(async_url(url))
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(lambda c: compare_metadata(
                MigrationContext.configure(c, opts={"compare_type": True}), metadata))
    finally:
        await engine.dispose()


def declared() -> dict[str, dict]:
    """The same, as `storage/tables.py` declares it."""
    return {t.name: {"columns": {c.name: c.nullable for c in t.columns},
                     "primary_key": [c.name for c in t.primary_key.columns],
                     "indexes": {(i.name, tuple(c.name for c in i.columns), bool(i.unique)) for i in t.indexes},
                     "unique": {tuple(c.name for c in u.columns) for u in t.constraints
                                if isinstance(u, UniqueConstraint)}}
            for t in metadata.sorted_tables}


async def test_db_upgrade_migrates_an_empty_database_to_head(pg_url: str) -> None:
    first = db_upgrade(pg_url)
    assert first.returncode == 0, first.stderr
    assert f"database at revision {HEAD_REVISION}" in first.stdout
    found = await reflect(pg_url)
    assert {"requests", "keys", "teams", "users", "alembic_version"} <= set(found)
    assert found["alembic_version"]["revision"] == [HEAD_REVISION]

    again = db_upgrade(pg_url)  # nothing left to do
    assert again.returncode == 0, again.stderr
    assert f"database at revision {HEAD_REVISION}" in again.stdout
    assert await reflect(pg_url) == found


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
async def test_migrations_build_what_the_tables_declare(backend: str, request: pytest.FixtureRequest,
                                                         tmp_path: Path) -> None:
    url = request.getfixturevalue("pg_url") if backend == "postgresql" else f"sqlite:///{tmp_path / 'f.db'}"
    result = db_upgrade(url)
    assert result.returncode == 0, result.stderr
    found = await reflect(url)
    assert set(found) == set(metadata.tables) | {"alembic_version"}
    for name, want in declared().items():
        assert found[name]["columns"] == want["columns"], name
        assert found[name]["primary_key"] == want["primary_key"], name
        assert found[name]["indexes"] == want["indexes"], name
        assert want["unique"] <= found[name]["unique"] | {i[1] for i in found[name]["indexes"] if i[2]}, name
    assert await autogenerate_diff(url) == []  # column types too


def calls() -> list[Call]:
    """Calls the way the pipeline leaves them: by a key, priced and huge; failed; streamed; plain."""
    key = KeyRecord("k1", "0" * 64, user_id="alice", team_id="ml")
    big = Call(request_id="a-big", endpoint="chat", body={"model": "gpt-x", "user": "bob", "metadata": {"app": "é"}},
               headers={"x-faregate-feature": "search", "x-faregate-conversation-id": "conv-1"},
               principal=Principal("k1", key=key), attempts=2, client_request_id="client-1")
    big.cost = Cost(Decimal("4611686018.427387904"), Decimal("0.000000001"), priced=True)  # 2**62 + 1 nUSD
    failed = Call(request_id="b-failed", endpoint="completions", body={"model": "nope"}, headers={},
                  client_protocol="anthropic", principal=MASTER)
    failed.error = GatewayError(404, "no such model", code="model_not_found")
    streamed = Call(request_id="c-stream", endpoint="chat", body={"model": "m", "stream": True}, headers={},
                    usage_estimated=True)
    streamed.first_token_at = streamed.started + 0.0123456
    streamed.finished_at = streamed.started + 0.5
    plain = [Call(request_id=f"d-{i:03}", endpoint="embeddings", body={"model": "e"}, headers={})
             for i in range(200)]
    for call in (big, streamed, *plain):
        call.tokens = Tokens(input=1_000_003, cached_input=7, cache_write=5, output=42, reasoning=11)
    return [big, failed, streamed, *plain]


async def test_ledger_writer_rows_read_back_exactly(pg_url: str) -> None:
    url = async_url(pg_url)
    engine = create_engine(url)
    await upgrade(engine)
    rows = [ledger_row(c) for c in calls()]
    writer = LedgerWriter(url)
    try:
        await writer(rows)
    finally:
        await writer.close()
    try:
        async with engine.connect() as conn:
            back = [dict(r) for r in (await conn.execute(select(requests).order_by(requests.c.request_id))).mappings()]
    finally:
        await engine.dispose()

    null = dict.fromkeys(requests.columns.keys())  # what a row leaves out is NULL
    want = [{**null, **r, "created_at": dt.datetime.fromtimestamp(r["created_at"], dt.UTC)} for r in rows]
    assert [r["request_id"] for r in back] == [r["request_id"] for r in want]
    diffs = [(w["request_id"], k, b.get(k), v) for b, w in zip(back, want, strict=True)
             for k, v in w.items() if b.get(k) != v or type(b.get(k)) is not type(v)]
    assert diffs == []
    assert back[0]["cost_nusd"] == 2**62 + 1 and type(back[0]["cost_nusd"]) is int
    assert (back[0]["priced"], back[0]["stream"], back[2]["stream"]) == (True, False, True)
    assert (back[0]["key_id"], back[0]["user_id"], back[0]["team_id"]) == ("k1", "alice", "ml")
    assert all(type(r[k]) is bool for r in back for k in ("priced", "stream", "usage_estimated"))
    assert (back[1]["status"], back[1]["error_code"], back[1]["priced"]) == (404, "model_not_found", False)
    assert all(r["created_at"].utcoffset() == dt.timedelta(0) for r in back)
