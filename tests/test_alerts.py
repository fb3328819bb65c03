"""Spend anomaly alerts: a real SQLite ledger, a real webhook receiver, explicit clocks."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import logging
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import REGISTRY

from faregate.accounting.alerts import Alert, AlertMonitor, BudgetStatus
from faregate.config.schema import AlertSettings
from faregate.storage.db import create_engine, upgrade
from faregate.storage.tables import requests

NOW = dt.datetime(2026, 11, 25, 10, 30, tzinfo=dt.UTC)  # a Wednesday, ISO week 2026-W48
USD = 1_000_000_000  # nano-USD
_ids = itertools.count()


def free_port() -> int:  # (tests.conftest has one, but `.venv/bin/pytest` cannot import `tests`)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def row(at: dt.datetime, cost_nusd: int, user: str | None = None, feature: str | None = None) -> dict[str, Any]:
    return {"request_id": f"r{next(_ids)}", "created_at": at, "endpoint": "chat",
            "client_protocol": "openai", "key_id": "key_test", "user_id": user, "feature": feature,
            "requested_model": "m", "attempts": 1, "status": 200, "stream": False, "input_tokens": 10,
            "cached_input_tokens": 0, "cache_write_tokens": 0, "output_tokens": 5,
            "reasoning_tokens": 0, "cost_nusd": cost_nusd, "priced": True, "usage_estimated": False,
            "latency_ms": 12.5, "saved_nusd": 0}


async def insert(engine: Any, rows: list[dict[str, Any]]) -> None:
    async with engine.begin() as conn:
        await conn.execute(requests.insert(), rows)


def sent(kind: str) -> float:
    return REGISTRY.get_sample_value("faregate_spend_alerts_total", {"kind": kind}) or 0.0


def active(kind: str) -> float | None:
    return REGISTRY.get_sample_value("faregate_spend_alerts_active", {"kind": kind})


def alert_lines(caplog: pytest.LogCaptureFixture, kind: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "faregate.alerts" and r.levelno == logging.WARNING and f"spend alert {kind} " in r.getMessage()]


@dataclass
class Receiver:
    url: str
    posts: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Any]:
    """A fresh SQLite ledger, migrated to head."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}")
    await upgrade(engine)
    yield engine
    await engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
async def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    """The detectors' SQL runs on both databases: a fresh ledger on each, migrated to head."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    else:
        server = request.getfixturevalue("postgres_server")
        url = server.create_database(f"alerts_{uuid.uuid4().hex[:12]}")
        url = url.replace("postgresql://", "postgresql+asyncpg://")
    engine = create_engine(url)
    await upgrade(engine)
    yield engine
    await engine.dispose()


@pytest.fixture
async def webhook() -> AsyncIterator[Receiver]:
    port = free_port()
    receiver = Receiver(f"http://127.0.0.1:{port}/hook/T000/SECRET")

    async def hook(request: web.Request) -> web.Response:
        receiver.posts.append(await request.json())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook/{tail:.*}", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield receiver
    await runner.cleanup()


def settings(webhook: Receiver | None = None, **kw: Any) -> AlertSettings:
    return AlertSettings(webhook_url=webhook.url if webhook else None, **kw)


async def normal_week(engine: Any, users: list[str], hourly_nusd: int = 1_000_000) -> None:
    """Each user spends `hourly_nusd` every 6 hours (so ~hourly_nusd/6 per hour on average)."""
    rows = [row(NOW - dt.timedelta(hours=h, minutes=20), hourly_nusd, user=u)
            for u in users for h in range(0, 168, 6)]
    await insert(engine, rows)


async def test_user_spike_fires_once_per_hour(ledger: Any, webhook: Receiver,
                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="faregate.alerts")
    await normal_week(ledger, ["ann", "bob", "cyd", "dee", "eve"])
    await insert(ledger, [row(NOW - dt.timedelta(minutes=m), USD // 10, user="whale") for m in (5, 15, 25)])
    before = sent("user_spend_spike")
    monitor = AlertMonitor(settings(webhook), ledger)
    try:
        results = [await monitor.check(NOW + dt.timedelta(minutes=m)) for m in (0, 1, 2)]
        first = results[0]
        assert [a.subject for a in first] == ["whale"] and results[1] == results[2] == []
        a = first[0]
        assert (a.kind, a.value, a.window) == ("user_spend_spike", Decimal("0.3"), "2026-11-25T10Z")
        assert Decimal("0.01") <= a.threshold < a.value  # 10x the median, not under the floor
        assert len(webhook.posts) == 1
        assert webhook.posts[0]["alert"] == {"kind": "user_spend_spike", "subject": "whale", "value": "0.300000000",
                                             "threshold": str(a.threshold), "window": "2026-11-25T10Z"}
        assert "whale" in webhook.posts[0]["text"]
        assert sent("user_spend_spike") == before + 1
        assert len(alert_lines(caplog, "user_spend_spike")) == 1
        assert active("user_spend_spike") == 1

        # the next clock hour is a new window: still spiking, so it fires again (once)
        await insert(ledger, [row(NOW + dt.timedelta(minutes=50), USD // 5, user="whale")])
        later = NOW + dt.timedelta(hours=1)
        assert [a.window for a in await monitor.check(later)] == ["2026-11-25T11Z"]
        assert await monitor.check(later + dt.timedelta(minutes=5)) == []
        assert len(webhook.posts) == 2 and sent("user_spend_spike") == before + 2
    finally:
        await monitor.close()


async def test_normal_users_do_not_fire(ledger: Any) -> None:
    await normal_week(ledger, ["ann", "bob", "cyd"])
    # everyone's last hour is 6x their hourly average, bob's 9x: above average, under 10x
    await insert(ledger, [row(NOW - dt.timedelta(minutes=3), 500_000, user="bob")])
    monitor = AlertMonitor(settings(min_spend_usd=Decimal(0)), ledger)
    assert await monitor.check(NOW) == []
    assert active("user_spend_spike") == 0


async def test_min_spend_floor(ledger: Any) -> None:
    await normal_week(ledger, ["ann", "bob", "cyd"], hourly_nusd=600)  # 100 nUSD an hour on average
    await insert(ledger, [row(NOW - dt.timedelta(minutes=10), 50_000, user="zed")])  # 500x, but $0.00005
    assert await AlertMonitor(settings(), ledger).check(NOW) == []  # default floor $0.01
    floored = await AlertMonitor(settings(min_spend_usd=Decimal("0.00001")), ledger).check(NOW)
    assert [(a.subject, a.threshold) for a in floored] == [("zed", Decimal("0.00001"))]


async def test_rows_from_the_embedded_ledger_writer(tmp_path: Path, db: Any) -> None:
    """The embedded default writes `created_at` as SQLite text itself (stdlib sqlite3, not
    SQLAlchemy): the detectors' bound datetimes must compare with that text."""
    from faregate.accounting.ledger import SQLiteLedgerWriter

    writer = SQLiteLedgerWriter(str(tmp_path / "ledger.db"))
    rows = [{**dict.fromkeys(c.name for c in requests.columns), **r, "created_at": r["created_at"].timestamp()}
            for r in [row(NOW - dt.timedelta(hours=h), 1000, user="ann") for h in range(2, 160, 12)]
            + [row(NOW - dt.timedelta(minutes=20), USD // 20, user="whale"),
               row(NOW + dt.timedelta(minutes=1), USD, user="late"),  # after `now`: not counted
               row(NOW - dt.timedelta(minutes=61), USD, user="earlier")]]  # before the last hour
    await writer(rows)
    await writer.close()
    alerts = await AlertMonitor(settings(), db).check(NOW)
    assert [(a.subject, a.value) for a in alerts] == [("whale", Decimal("0.05"))]


async def test_feature_cost_doubled(ledger: Any, webhook: Receiver) -> None:
    def calls(feature: str, n: int, cost: int, days_ago: float) -> list[dict[str, Any]]:
        return [row(NOW - dt.timedelta(days=days_ago, minutes=i), cost, feature=feature) for i in range(n)]

    await insert(ledger, calls("search", 20, 1000, 10) + calls("search", 20, 2500, 2)  # 2.5x: fires
                 + calls("chat", 20, 1000, 10) + calls("chat", 19, 5000, 2)  # too few calls now
                 + calls("tags", 19, 1000, 10) + calls("tags", 30, 5000, 2)  # too few calls before
                 + calls("flat", 25, 3000, 9) + calls("flat", 25, 3100, 1)  # steady
                 + calls("free", 20, 0, 10) + calls("free", 20, 100, 1)  # nothing to double from
                 + calls("old", 20, 1000, 20) + calls("old", 20, 9000, 10))  # nothing this week
    monitor = AlertMonitor(settings(webhook), ledger)
    try:
        first = await monitor.check(NOW)
        assert [(a.kind, a.subject, a.window) for a in first] == [("feature_cost_doubled", "search", "2026-W48")]
        assert first[0].value == Decimal("0.0000025") and first[0].threshold == Decimal("0.000002")
        assert await monitor.check(NOW + dt.timedelta(hours=3)) == []  # same ISO week
        assert len(webhook.posts) == 1 and webhook.posts[0]["alert"]["subject"] == "search"
        assert active("feature_cost_doubled") == 1
    finally:
        await monitor.close()


async def test_budget_thresholds_once_per_period(db: Any, webhook: Receiver) -> None:
    budget = 10 * USD
    statuses = [BudgetStatus("key:key_ab12", budget * 85 // 100, budget, "2026-11-01"),
                BudgetStatus("team:ml", 3 * USD, budget, "lifetime"),
                BudgetStatus("user:nobudget", 5 * USD, 0, "lifetime")]

    async def budget_status() -> list[BudgetStatus]:
        return list(statuses)

    monitor = AlertMonitor(settings(webhook), db, budget_status=budget_status)
    key = lambda alerts: [(a.subject, a.threshold, a.window) for a in alerts]  # noqa: E731
    try:
        assert key(await monitor.check(NOW)) == [("key:key_ab12", Decimal("0.8"), "2026-11-01")]
        assert await monitor.check(NOW) == []
        statuses[0] = BudgetStatus("key:key_ab12", budget, budget, "2026-11-01")  # at 100 %
        assert key(await monitor.check(NOW)) == [("key:key_ab12", Decimal("1.0"), "2026-11-01")]
        assert await monitor.check(NOW) == []
        statuses[0] = BudgetStatus("key:key_ab12", budget + 1, budget, "2026-12-01")  # a new period
        again = await monitor.check(NOW + dt.timedelta(days=6))
        assert key(again) == [("key:key_ab12", Decimal("0.8"), "2026-12-01"),
                              ("key:key_ab12", Decimal("1.0"), "2026-12-01")]
        assert again[1].value == Decimal("1.0000")
        assert [p["alert"]["threshold"] for p in webhook.posts] == ["0.8", "1.0", "0.8", "1.0"]
        assert all("key_ab12" in p["text"] for p in webhook.posts)
        assert active("budget_threshold") == 1
    finally:
        await monitor.close()


async def test_webhook_failure_is_logged_not_raised(db: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="faregate.alerts")

    async def budget_status() -> list[BudgetStatus]:
        return [BudgetStatus("key:key_x", 9, 10, "lifetime")]

    dead = f"http://127.0.0.1:{free_port()}/hook/SECRET-TOKEN"  # nothing listens there
    monitor = AlertMonitor(AlertSettings(webhook_url=dead), db, budget_status=budget_status)
    try:
        assert [a.subject for a in await monitor.check(NOW)] == ["key:key_x"]
    finally:
        await monitor.close()
    failures = [r.getMessage() for r in caplog.records if "webhook failed" in r.getMessage()]
    assert len(failures) == 1 and "SECRET-TOKEN" not in caplog.text


async def test_run_survives_errors(db: Any, caplog: pytest.LogCaptureFixture) -> None:
    calls = 0

    async def engine_factory() -> Any:
        nonlocal calls
        calls += 1
        raise OSError("database unavailable")

    fast = AlertSettings().model_copy(update={"interval_seconds": 0.01})
    monitor = AlertMonitor(fast, engine_factory)
    task = asyncio.create_task(monitor.run())
    for _ in range(200):
        await asyncio.sleep(0.01)
        if calls >= 6:  # two detectors per check: three checks, each failing
            break
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert calls >= 6 and "database unavailable" in caplog.text


async def test_two_replicas_share_one_redis(db: Any, webhook: Receiver, request: pytest.FixtureRequest) -> None:
    try:
        server = request.getfixturevalue("redis_server")
    except pytest.FixtureLookupError:
        pytest.skip("tests/conftest.py has no `redis_server` fixture yet")
    import redis.asyncio as aioredis

    run = uuid.uuid4().hex[:8]  # subjects of their own, should the Redis server outlive this run
    await normal_week(db, ["ann", "bob", "cyd"])
    await insert(db, [row(NOW - dt.timedelta(minutes=5), USD, user=f"whale-{run}")])

    async def budget_status() -> list[BudgetStatus]:
        return [BudgetStatus(f"key:key_{run}", 10, 10, "2026-11-25")]

    clients = [aioredis.Redis.from_url(server.url) for _ in range(2)]
    monitors = [AlertMonitor(settings(webhook), db, budget_status=budget_status, redis=c) for c in clients]
    try:
        results = await asyncio.gather(*(m.check(NOW) for m in monitors))
        results += [await m.check(NOW + dt.timedelta(minutes=1)) for m in monitors]
        delivered: list[Alert] = [a for r in results for a in r]
        assert sorted((a.kind, a.subject, a.threshold) for a in delivered) == [
            ("budget_threshold", f"key:key_{run}", Decimal("0.8")),
            ("budget_threshold", f"key:key_{run}", Decimal("1.0")),
            ("user_spend_spike", f"whale-{run}", Decimal("0.01"))]
        assert len(webhook.posts) == 3
    finally:
        for m in monitors:
            await m.close()
        for c in clients:
            await c.aclose()


def test_module_imports_twice_and_monitors_share_the_metrics(tmp_path: Path) -> None:
    code = """
import importlib, importlib.util, sys
import faregate.accounting.alerts as first
importlib.reload(first)  # the metrics are registered already: reused, not registered again
spec = importlib.util.spec_from_file_location("alerts_copy", first.__file__)
copy = sys.modules["alerts_copy"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(copy)  # the same file under a second name
from faregate.config.schema import AlertSettings
monitors = [m.AlertMonitor(AlertSettings(), lambda: None) for m in (first, copy, first)]
assert first.ALERTS_SENT is copy.ALERTS_SENT and first.ALERTS_ACTIVE is copy.ALERTS_ACTIVE
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
