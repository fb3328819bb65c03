"""Latency SLOs: /admin/slo computes exact percentiles per model group from the ledger, and a
missed objective raises one slo_violation alert (log, gauge, webhook) per hour."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import insert

from faregate.accounting.alerts import AlertMonitor
from faregate.config.schema import AlertSettings, SloSettings
from faregate.storage.db import create_engine
from faregate.storage.tables import metadata, requests
from faregate.telemetry.slo import report
from tests.conftest import Server, stop
from tests.gateways import http, launch_gateway

# The middle of the current hour: alerts dedupe per hour, so checks at BASE and BASE + 5 min
# fall in one hour whenever the test runs.
BASE = dt.datetime.now(dt.UTC).replace(minute=30, second=0, microsecond=0)


def _row(model: str, latency: float, ttft: float | None, status: int = 200, age: float = 60) -> dict:
    return {"request_id": uuid.uuid4().hex, "created_at": BASE - dt.timedelta(seconds=age),
            "endpoint": "chat", "client_protocol": "openai", "requested_model": model, "attempts": 1,
            "status": status, "stream": ttft is not None, "input_tokens": 1, "cached_input_tokens": 0,
            "cache_write_tokens": 0, "output_tokens": 1, "reasoning_tokens": 0, "cost_nusd": 0, "saved_nusd": 0,
            "priced": False, "usage_estimated": False, "latency_ms": latency, "ttft_ms": ttft}


@pytest.fixture
def engine(tmp_path) -> Iterator:
    eng = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'slo.db'}")

    async def fill() -> None:
        async with eng.begin() as conn:
            await conn.run_sync(metadata.create_all)
            rows = [_row("fast", 100 + i, 20 + i) for i in range(100)]  # latency 100..199, ttft 20..119
            rows += [_row("slow", 1000 * (i + 1), None) for i in range(30)]  # 1..30 s, no streams
            rows += [_row("slow", 1, None, status=500)]  # failures do not count
            rows += [_row("fast", 99999, 99999, age=7200)]  # outside the window
            await conn.execute(insert(requests), rows)

    asyncio.run(fill())
    yield eng
    asyncio.run(eng.dispose())


SETTINGS = SloSettings.model_validate({"targets": [
    {"model": "*", "window_seconds": 3600, "min_requests": 10, "latency_p99_ms": 5000, "ttft_p95_ms": 200},
]})


def test_report_gives_exact_nearest_rank_percentiles_per_group(engine) -> None:
    entries = {e["model"]: e for e in asyncio.run(report(engine, SETTINGS, BASE))}
    fast, slow = entries["fast"], entries["slow"]
    assert fast["latency_ms"] == {"requests": 100, "p50": 149.0, "p95": 194.0, "p99": 198.0}
    assert fast["ttft_ms"] == {"requests": 100, "p50": 69.0, "p95": 114.0, "p99": 118.0}
    assert fast["ok"] and fast["violations"] == []
    assert slow["latency_ms"]["requests"] == 30 and slow["latency_ms"]["p99"] == 30000.0
    assert slow["ttft_ms"] == {"requests": 0, "p50": None, "p95": None, "p99": None}
    assert not slow["ok"]
    assert slow["violations"] == [{"objective": "latency_p99_ms", "target": 5000, "actual": 30000.0, "requests": 30}]


def test_a_violation_alerts_once_per_hour(engine) -> None:
    monitor = AlertMonitor(AlertSettings(), engine, slo=SETTINGS)
    now = BASE
    first = asyncio.run(monitor.check(now))
    assert [(a.kind, a.subject) for a in first] == [("slo_violation", "slow:latency_p99_ms")]
    assert "30000" in first[0].message and first[0].payload()["alert"]["threshold"] == "5000.0"
    assert asyncio.run(monitor.check(now + dt.timedelta(minutes=5))) == []


def test_admin_slo_endpoint(mock_upstream: Server, tmp_path_factory) -> None:
    config = f"""
model_list:
  - model_name: chat
    litellm_params: {{model: openai/gpt-4o-mini, api_base: "{mock_upstream.url}/v1", api_key: os.environ/TEST_UPSTREAM_KEY}}
general_settings:
  master_key: os.environ/TEST_MASTER_KEY
slo:
  targets:
    - {{model: chat, min_requests: 3, latency_p50_ms: 0.001, ttft_p99_ms: 60000}}
"""
    gw = launch_gateway(tmp_path_factory.mktemp("slo"), config)
    try:
        for _ in range(4):
            assert http("POST", f"{gw.url}/v1/chat/completions",
                        {"model": "chat", "messages": [{"role": "user", "content": "hi"}]})[0] == 200
        time.sleep(1.2)  # the ledger sink flushes
        status, _, body = http("GET", f"{gw.url}/admin/slo")
        assert status == 200 and not body["ok"]
        (target,) = body["targets"]
        assert target["latency_ms"]["requests"] == 4
        assert [v["objective"] for v in target["violations"]] == ["latency_p50_ms"]
        assert target["objectives"] == {"ttft_p99_ms": 60000.0, "latency_p50_ms": 0.001}
    finally:
        stop(gw.proc)
