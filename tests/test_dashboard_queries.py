"""The dashboard's SQL (http/ui/queries.py) against known ledger rows, on SQLite and PostgreSQL:
totals and series per bucket, provider traffic, percentiles within the stated bound, breakdowns,
the request explorer; and the session and histogram helpers as units."""

from __future__ import annotations

import datetime as dt
import math
import random
import uuid
from collections import Counter, defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from sqlalchemy import insert, inspect, literal, select

from faregate.accounting.ledger import ledger_writer
from faregate.http.ui import histogram, queries
from faregate.http.ui.session import MAX_FAILURES, SESSION_SECONDS, Sessions, Throttle
from faregate.storage.db import create_engine, upgrade
from faregate.storage.tables import metadata
from faregate.storage.tables import requests as requests_table

START = dt.datetime(2025, 3, 8, tzinfo=dt.UTC)
END = START + dt.timedelta(days=2)
MODELS = ["gpt-4o-mini", "claude-haiku", "nope"]
PROVIDERS = {"gpt-4o-mini": "openai", "claude-haiku": "anthropic", "nope": None}


def make_rows(n: int = 400) -> list[dict[str, Any]]:
    rnd = random.Random(7)
    rows = []
    first = START - dt.timedelta(hours=4)
    span = (END + dt.timedelta(hours=2) - first).total_seconds()
    for i in range(n):
        at = first.timestamp() + span * i / n + 0.000123
        model = MODELS[rnd.randrange(3) if i % 17 else 2]
        cache = rnd.choice([None, "miss", "hit-exact", "hit-semantic", "bypass"]) if model != "nope" else None
        status = 404 if model == "nope" else rnd.choice([200] * 9 + [502])
        stream = model != "nope" and i % 3 == 0
        hit = cache in ("hit-exact", "hit-semantic")
        price = rnd.randrange(1, 10**7) * 7
        rows.append(row(
            request_id=f"r{i:05d}", created_at=at, requested_model=model,
            provider=None if hit else PROVIDERS[model], deployment=None if hit else f"{model}#0",
            status=200 if stream else status,
            error_code={404: "model_not_found", 502: "upstream_error"}.get(status) if not (stream and i % 2) else None,
            cache=cache, stream=stream, cost_nusd=0 if hit or status >= 400 else price,
            saved_nusd=price if hit else 0, key_id=rnd.choice(["key_a", "key_b", "key_c", None]),
            user_id=rnd.choice(["alice", "bob", None]), team_id=rnd.choice(["ml", "web", None]),
            feature=rnd.choice(["search", "chat"]),
            latency_ms=round(rnd.choice([0.4, 3.0, 3.0]) if i % 11 == 0 else rnd.lognormvariate(5, 1.2), 3),
            ttft_ms=round(rnd.lognormvariate(4, 1), 3) if stream else None))
    # exactly on the window's edges: the start counts, the end does not
    rows.append(row(request_id="edge-start", created_at=START.timestamp(), cost_nusd=11))
    rows.append(row(request_id="edge-end", created_at=END.timestamp(), cost_nusd=13))
    return rows


def row(**values: Any) -> dict[str, Any]:
    base = {c.name: None for c in requests_table.columns}
    base.update(endpoint="chat", client_protocol="openai", requested_model="gpt-4o-mini", provider="openai",
                attempts=1, status=200, stream=False, input_tokens=10, cached_input_tokens=0,
                cache_write_tokens=0, output_tokens=5, reasoning_tokens=0, cost_nusd=0, saved_nusd=0,
                priced=True, usage_estimated=False, latency_ms=100.0)
    base.update(values)
    return base


ROWS = make_rows()
IN = [r for r in ROWS if START.timestamp() <= r["created_at"] < END.timestamp()]


def is_error(r: dict[str, Any]) -> bool:
    return r["status"] >= 400 or r["error_code"] is not None


def label(r: dict[str, Any], bucket: str) -> str:
    at = dt.datetime.fromtimestamp(r["created_at"], dt.UTC)
    return at.strftime("%Y-%m-%d %H:00" if bucket == "hour" else "%Y-%m-%d")


def usd(nusd: int) -> str:
    return f"{Decimal(nusd) / 10**9:.9f}"


@pytest.fixture(params=["sqlite", "postgresql"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    else:
        pg = request.getfixturevalue("postgres_server")
        url = pg.create_database(f"d_{uuid.uuid4().hex[:12]}").replace("postgresql://", "postgresql+asyncpg://")
    eng = create_engine(url)
    await upgrade(eng)
    writer = ledger_writer(url)
    await writer([dict(r) for r in ROWS])
    await writer.close()
    yield eng
    await eng.dispose()


async def test_summary_totals_and_series(engine: Any) -> None:
    for bucket in ("hour", "day"):
        w = queries.window(START.isoformat(), END.isoformat(), bucket)
        s = await queries.summary(engine, w)
        assert len(s["buckets"]) == (48 if bucket == "hour" else 2)
        t = s["totals"]
        assert t["requests"] == len(IN) and t["errors"] == sum(map(is_error, IN))
        assert t["cost_usd"] == usd(sum(r["cost_nusd"] for r in IN))
        assert t["saved_usd"] == usd(sum(r["saved_nusd"] for r in IN))
        caches = Counter(r["cache"] for r in IN)
        assert {c["cache"]: c["requests"] for c in s["cache"]} == {v: caches[v] for v in [*queries.CACHE_VALUES, None]}
        hits = caches["hit-exact"] + caches["hit-semantic"]
        assert t["hit_rate"] == round(hits / (hits + caches["miss"]), 6)
        per = Counter(label(r, bucket) for r in IN)
        assert s["series"]["requests"] == [per[b] for b in s["buckets"]]
        cost = defaultdict(int)
        for r in IN:
            cost[label(r, bucket)] += r["cost_nusd"]
        assert s["series"]["cost_usd"] == pytest.approx([cost[b] / 1e9 for b in s["buckets"]])


@pytest.mark.parametrize("bucket", ["hour", "day"])
async def test_traffic_per_provider(engine: Any, bucket: str) -> None:
    w = queries.window(START.isoformat(), END.isoformat(), bucket)
    t = await queries.traffic(engine, w)
    by = {p["provider"]: p for p in t["providers"]}
    assert set(by) == {r["provider"] for r in IN}
    for name, p in by.items():
        mine = [r for r in IN if r["provider"] == name]
        assert p["requests"] == len(mine) and p["errors"] == sum(map(is_error, mine))
        per = Counter(label(r, bucket) for r in mine)
        assert p["series"]["requests"] == [per[b] for b in t["buckets"]]
        errs = Counter(label(r, bucket) for r in mine if is_error(r))
        assert p["series"]["errors"] == [errs[b] for b in t["buckets"]]


def exact(values: list[float], p: float) -> float:
    return sorted(values)[max(1, math.ceil(p * len(values))) - 1]


def within_bound(est: float, true: float) -> bool:
    return abs(est - true) <= max(true * histogram.RELATIVE_ERROR_BOUND, 1.0 if true < 1 else 0) + 1e-6


@pytest.mark.parametrize("metric", ["latency", "ttft"])
async def test_percentiles_within_the_bound(engine: Any, metric: str) -> None:
    col = "latency_ms" if metric == "latency" else "ttft_ms"
    w = queries.window(START.isoformat(), END.isoformat(), "day")
    d = await queries.latency(engine, w, metric)  # type: ignore[arg-type]
    values = [r[col] for r in IN if r[col] is not None]
    assert d["overall"]["count"] == len(values)
    for name, p in histogram.PERCENTILES:
        assert within_bound(d["overall"][name], exact(values, p)), (name, d["overall"][name], exact(values, p))
    for i, b in enumerate(d["buckets"]):
        mine = [r[col] for r in IN if r[col] is not None and label(r, "day") == b]
        assert d["series"]["count"][i] == len(mine)
        for name, p in histogram.PERCENTILES:
            assert within_bound(d["series"][name][i], exact(mine, p))


@pytest.mark.parametrize("by,col", [("model", "requested_model"), ("key", "key_id"), ("team", "team_id"),
                                    ("provider", "provider")])
async def test_breakdowns(engine: Any, by: str, col: str) -> None:
    w = queries.window(START.isoformat(), END.isoformat(), None)
    d = await queries.breakdown(engine, w, by, limit=2)
    totals: dict[Any, list[int]] = defaultdict(lambda: [0, 0, 0])
    for r in IN:
        t = totals[r[col]]
        t[0] += 1
        t[1] += r["cost_nusd"]
        t[2] += r["saved_nusd"]
    ordered = sorted(totals.items(), key=lambda kv: (-kv[1][1], -kv[1][0], kv[0] is None, kv[0] or ""))
    assert d["groups"] == len(totals)
    assert [(x["group"], x["requests"], x["cost_usd"], x["saved_usd"]) for x in d["rows"]] == [
        (g, v[0], usd(v[1]), usd(v[2])) for g, v in ordered[:2]]
    rest = ordered[2:]
    assert d["others"]["requests"] == sum(v[0] for _, v in rest)
    assert d["others"]["cost_usd"] == usd(sum(v[1] for _, v in rest))


async def test_recent_requests_and_search(engine: Any) -> None:
    w = queries.window(START.isoformat(), END.isoformat(), None)
    newest = sorted(IN, key=lambda r: r["created_at"], reverse=True)
    got = (await queries.recent(engine, w, limit=5))["data"]
    assert [r["request_id"] for r in got] == [r["request_id"] for r in newest[:5]]
    assert got[0]["cost_usd"] == usd(newest[0]["cost_nusd"]) and got[0]["model"] == newest[0]["requested_model"]
    errors = (await queries.recent(engine, w, errors=True, limit=200))["data"]
    assert [r["request_id"] for r in errors] == [r["request_id"] for r in newest if is_error(r)]
    by_model = (await queries.recent(engine, w, q="claude-haiku", limit=200))["data"]
    assert {r["request_id"] for r in by_model} == {r["request_id"] for r in IN if r["requested_model"] == "claude-haiku"}
    prefix = (await queries.recent(engine, w, q="r0001", limit=200))["data"]
    assert {r["request_id"] for r in prefix} == {r["request_id"] for r in IN if r["request_id"].startswith("r0001")}
    assert (await queries.recent(engine, w, q="r0001%", limit=5))["data"] == []  # no wildcards


async def test_window_defaults_and_errors() -> None:
    now = dt.datetime(2025, 3, 10, 12, tzinfo=dt.UTC)
    w = queries.window(None, None, None, now=now)
    assert (w.start, w.end, w.bucket) == (now - dt.timedelta(days=7), now, "day")
    assert queries.window("2025-03-10", None, None, now=now).bucket == "hour"
    chunks = queries.window("2025-03-10T10:30:00Z", "2025-03-10T12:15:00Z", "hour").chunks()
    assert [c[0] for c in chunks] == ["2025-03-10 10:00", "2025-03-10 11:00", "2025-03-10 12:00"]
    assert chunks[0][1] == dt.datetime(2025, 3, 10, 10, 30, tzinfo=dt.UTC)
    for args in (("x", None, None), (None, None, "minute"), ("2020-01-01", "2025-01-01", "hour"),
                 ("2025-03-10", "2025-03-09", None)):
        with pytest.raises(Exception) as err:
            queries.window(*args, now=now)
        assert getattr(err.value, "status", None) == 400, args


async def test_in_memory_database_goes_through_the_engine() -> None:
    eng = create_engine("sqlite+aiosqlite://")
    async with eng.begin() as conn:
        await conn.run_sync(metadata.create_all)
        at = dt.datetime(2025, 3, 8, 1, tzinfo=dt.UTC)
        await conn.execute(insert(requests_table), [row(request_id="m1", created_at=at, cost_nusd=5)])
    s = await queries.summary(eng, queries.window(START.isoformat(), END.isoformat(), "hour"))
    assert s["totals"]["requests"] == 1 and s["totals"]["cost_usd"] == usd(5)
    await eng.dispose()


async def test_migration_builds_the_declared_indexes(engine: Any) -> None:
    def indexes(conn: Any) -> set[tuple[str, tuple[str, ...]]]:
        return {(i["name"], tuple(i["column_names"])) for i in inspect(conn).get_indexes("requests")}

    async with engine.connect() as conn:
        found = await conn.run_sync(indexes)
    declared = {(i.name, tuple(c.name for c in i.columns)) for i in requests_table.indexes}
    assert found == declared
    assert ("ix_requests_key_id_created_at", ("key_id", "created_at", "cost_nusd", "saved_nusd")) in found
    assert "ix_requests_key_id" not in {name for name, _ in found}  # replaced by the wider one


def test_migration_downgrades_and_upgrades(tmp_path: Path) -> None:
    from alembic import command
    from alembic.config import Config as AlembicConfig

    from faregate.storage.db import MIGRATIONS

    db = tmp_path / "m.db"
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", f"sqlite:///{db}")
    with sqlalchemy.create_engine(f"sqlite:///{db}").begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
        command.downgrade(cfg, "0004")
        names = {i["name"] for i in inspect(conn).get_indexes("requests")}
        assert "ix_requests_key_id" in names and "ix_requests_dashboard" not in names
        command.upgrade(cfg, "head")
        assert "ix_requests_dashboard" in {i["name"] for i in inspect(conn).get_indexes("requests")}


# -- units ---------------------------------------------------------------------------------------


async def test_sql_buckets_match_python(tmp_path: Path) -> None:
    values = [0.0, 0.5, 0.999, *histogram.EDGES[:5], *histogram.EDGES[-3:], 1e9,
              *(e * 1.0001 for e in histogram.EDGES[::7]), *(e * 0.9999 for e in histogram.EDGES[1::9])]
    eng = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'h.db'}")
    async with eng.connect() as conn:
        got = [(await conn.execute(select(histogram.bucket_of(literal(v))))).scalar() for v in values]
    await eng.dispose()
    assert got == [histogram.bucket_index(v) for v in values]
    for v in values[3:-1]:
        k = histogram.bucket_index(v)
        assert (histogram.EDGES[k - 1] if k else 0) <= v < (histogram.EDGES[k] if k < histogram.LAST else math.inf)


def test_percentile_exact_for_small_samples() -> None:
    cells = histogram.merge([(histogram.bucket_index(v), 1, v, v) for v in (5.0, 7.0, 900.0)])
    assert histogram.percentile(cells, 0.5) == 7.0 and histogram.percentile(cells, 0.99) == 900.0
    assert histogram.summarize([]) == {"count": 0, "p50": None, "p95": None, "p99": None}


async def test_sessions_sign_expire_and_revoke() -> None:
    now = [1_000_000.0]
    s = Sessions("sk-master", clock=lambda: now[0])
    cookie, session = s.issue()
    assert "sk-master" not in cookie and len(session.sid) >= 43  # 32 random bytes
    assert await s.check(cookie) == session
    sid, issued, expires, sig = cookie.split(".")
    assert await s.check(f"{sid}.{issued}.{int(expires) + 3600}.{sig}") is None  # extended: bad signature
    assert await s.check(cookie[:-2] + ("AA" if not cookie.endswith("AA") else "BB")) is None
    assert await Sessions("sk-other", clock=lambda: now[0]).check(cookie) is None  # another master key
    assert s.csrf_ok(session, session.csrf) and not s.csrf_ok(session, "x") and not s.csrf_ok(session, None)
    now[0] += SESSION_SECONDS
    assert await s.check(cookie) is None  # expired
    now[0] -= SESSION_SECONDS
    await s.revoke(session)
    assert await s.check(cookie) is None
    nonce, field = s.login_token()
    assert s.login_token_ok(nonce, field) and not s.login_token_ok(nonce, s.login_token()[1])
    assert not s.login_token_ok(None, field) and not s.login_token_ok(nonce, "")


def test_throttle() -> None:
    now = [0.0]
    t = Throttle(clock=lambda: now[0])
    for _ in range(MAX_FAILURES):
        assert not t.blocked("1.2.3.4")
        t.failed("1.2.3.4")
    assert t.blocked("1.2.3.4") and not t.blocked("5.6.7.8")
    now[0] += 301
    assert not t.blocked("1.2.3.4")
