"""Prometheus metrics: the contract's names, bounded labels, and totals that add up to the
ledger after mixed traffic — with one worker and with several (multiprocess mode)."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from collections.abc import Iterator
from decimal import Decimal

import httpx
import pytest

from tests.conftest import MASTER_KEY, Server, stop
from tests.gateways import create_key, http, launch_gateway

IN_PRICE, OUT_PRICE = "0.0000011", "0.0000042"


def metrics_config(mock: str, workers: int = 1) -> str:
    return f"""
model_list:
  - model_name: priced
    litellm_params: {{model: openai/gpt-4o-mini, api_base: "{mock}/v1", api_key: os.environ/TEST_UPSTREAM_KEY,
                      input_cost_per_token: {IN_PRICE}, output_cost_per_token: {OUT_PRICE}}}
  - model_name: cached
    litellm_params: {{model: openai/gpt-4o-mini, api_base: "{mock}/v1", api_key: os.environ/TEST_UPSTREAM_KEY,
                      input_cost_per_token: {IN_PRICE}, output_cost_per_token: {OUT_PRICE}}}
general_settings:
  master_key: os.environ/TEST_MASTER_KEY
limits:
  key_refresh_seconds: 0.5
router_settings:
  num_retries: 0
cache:
  groups: {{cached: {{mode: exact}}}}
server:
  workers: {workers}
"""


def scrape(gw: Server) -> dict[str, float]:
    text = httpx.get(f"{gw.url}/metrics", timeout=10).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("faregate_"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def total(samples: dict[str, float], name: str, **labels: str) -> float:
    """Sum of a metric's samples whose labels include `labels`."""
    out = 0.0
    for key, value in samples.items():
        if (key == name or key.startswith(name + "{")) and all(f'{k}="{v}"' in key for k, v in labels.items()):
            out += value
    return out


async def _traffic(gw: Server, key: str) -> None:
    """Non-stream and stream calls (with and without usage), cache hits, a 404 and 429s."""
    url = f"{gw.url}/v1/chat/completions"
    auth = {"authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(timeout=30) as client:
        async def one(i: int) -> None:
            body = {"model": "priced", "messages": [{"role": "user", "content": f"question {i} " * (1 + i % 4)}],
                    "max_tokens": 5 + i % 7}
            if i % 3 == 0:
                body["stream"] = True
                if i % 2 == 0:
                    body["stream_options"] = {"include_usage": True}
                async with client.stream("POST", url, json=body, headers=auth) as resp:
                    async for _ in resp.aiter_bytes():
                        pass
            else:
                await client.post(url, json=body, headers=auth)

        for _ in range(3):  # first, before the key's RPM runs out
            await client.post(url, json={"model": "cached", "messages": [{"role": "user", "content": "same"}]}, headers=auth)
        await asyncio.gather(*(one(i) for i in range(30)))
        await client.post(url, json={"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}, headers=auth)


def _ledger_totals(db, timeout: float = 5.0, expect: int = 0) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        with sqlite3.connect(db) as conn:
            row = conn.execute("SELECT count(*), sum(input_tokens), sum(output_tokens), sum(cost_nusd), "
                               "sum(saved_nusd), sum(status = 200), sum(status = 429), sum(status = 404) "
                               "FROM requests").fetchone()
        if row[0] >= expect or time.monotonic() > deadline:
            keys = ("requests", "input", "output", "cost", "saved", "ok", "limited", "not_found")
            return dict(zip(keys, (int(v or 0) for v in row), strict=True))
        time.sleep(0.1)


@pytest.fixture(scope="module", params=[1, 2], ids=["1-worker", "2-workers"])
def gw(request, mock_upstream: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = launch_gateway(tmp_path_factory.mktemp("metrics"), metrics_config(mock_upstream.url, request.param))
    yield server
    stop(server.proc)


def test_metrics_add_up_to_the_ledger(gw: Server) -> None:
    made = create_key(gw, user="ann", team="ops", rpm=10)  # per worker without Redis
    time.sleep(0.8)  # the key reaches every worker's directory
    asyncio.run(_traffic(gw, made["key"]))
    ledger = _ledger_totals(gw.db, expect=34)
    assert ledger["requests"] == 34 and ledger["limited"] >= 1 and ledger["not_found"] == 1
    for _ in range(4):  # any worker answers for all of them
        m = scrape(gw)
        assert total(m, "faregate_requests_total") == ledger["requests"]
        assert total(m, "faregate_requests_total", status="200") == ledger["ok"]
        assert total(m, "faregate_requests_total", status="429") == ledger["limited"]
        assert total(m, "faregate_requests_total", model="unknown", status="404") == 1
        assert total(m, "faregate_tokens_total", type="input") == ledger["input"]
        assert total(m, "faregate_tokens_total", type="output") == ledger["output"]
        assert abs(Decimal(str(total(m, "faregate_cost_usd_total"))) - Decimal(ledger["cost"]) / 10**9) < Decimal("1e-9")
        assert abs(total(m, "faregate_saved_usd_total") - ledger["saved"] / 1e9) < 1e-9
        assert total(m, "faregate_ratelimit_rejections_total", scope="key") == ledger["limited"]
        assert total(m, "faregate_cache_requests_total", layer="exact", outcome="hit") == 2
        assert total(m, "faregate_request_duration_seconds_count") == ledger["requests"]
        assert total(m, "faregate_time_to_first_token_seconds_count") >= 1
        assert total(m, "faregate_inter_token_latency_seconds_count") >= 1
        assert total(m, "faregate_overhead_seconds_count") == ledger["requests"]
    text = httpx.get(f"{gw.url}/metrics").text
    for secret in (made["key"], made["id"], "ann", "ops", MASTER_KEY):
        assert secret not in text  # labels never carry keys, key ids or user/team ids


def test_state_gauges_are_sampled(gw: Server) -> None:
    status, _, _ = http("POST", f"{gw.url}/admin/teams", {"id": "gauge-team", "budget_usd": "12.5", "budget_period": "day"})
    assert status == 201
    deadline = time.monotonic() + 10  # team budgets are sampled every 5 s
    while total(scrape(gw), "faregate_budget_remaining_usd", team="gauge-team") != 12.5:
        assert time.monotonic() < deadline, "the team budget gauge never showed"
        time.sleep(0.3)
    m = scrape(gw)
    deployments = {re.search(r'deployment="([^"]+)"', k).group(1) for k in m if k.startswith("faregate_breaker_state{")}
    assert len(deployments) == 2
    assert total(m, "faregate_breaker_state") == 0  # all closed
    assert "faregate_queue_depth" in m
    assert total(m, "faregate_in_flight") == 0


def test_admin_can_check_the_metric_contract(gw: Server) -> None:
    names = {k.split("{")[0] for k in scrape(gw)}
    for name in ("faregate_requests_total", "faregate_request_duration_seconds_bucket", "faregate_overhead_seconds_bucket",
                 "faregate_upstream_duration_seconds_bucket", "faregate_time_to_first_token_seconds_bucket",
                 "faregate_inter_token_latency_seconds_bucket", "faregate_tokens_total", "faregate_cost_usd_total",
                 "faregate_cache_requests_total", "faregate_in_flight", "faregate_queue_depth",
                 "faregate_breaker_state", "faregate_ratelimit_rejections_total"):
        assert name in names, name
    assert http("GET", f"{gw.url}/admin/cache")[0] == 200
