"""Two gateway processes sharing one Redis: a circuit breaker opened by one replica's traffic is
open on the other, which never sent that deployment anything."""

from __future__ import annotations

import time

import pytest

from tests.conftest import MASTER_KEY, Server, free_port, stop
from tests.gateways import chat, http, launch_gateway


def _config(mock: str, dead: str) -> str:
    return f"""
model_list:
  - model_name: pair
    litellm_params: {{model: openai/gpt-4o-mini, api_base: "{mock}/v1", api_key: os.environ/TEST_UPSTREAM_KEY}}
  - model_name: pair
    litellm_params: {{model: openai/gpt-4o-mini, api_base: "{dead}/v1", api_key: os.environ/TEST_UPSTREAM_KEY}}
router_settings: {{allowed_fails: 2, cooldown_time: 60, num_retries: 2, retry_backoff_seconds: 0.01}}
general_settings: {{master_key: os.environ/TEST_MASTER_KEY}}
"""


def _breaker(gw: Server, dep: str) -> str:
    status, _, body = http("GET", f"{gw.url}/health/deployments", key=MASTER_KEY)
    assert status == 200
    return body["deployments"][dep]["breaker"]["state"]


def test_a_breaker_opened_on_one_replica_is_open_on_the_other(mock_upstream: Server, redis_server,
                                                             tmp_path_factory: pytest.TempPathFactory) -> None:
    tmp = tmp_path_factory.mktemp("breakers")
    config = _config(mock_upstream.url, f"http://127.0.0.1:{free_port()}")
    env = {"FAREGATE_REDIS_URL": redis_server.url}
    a = launch_gateway(tmp, config, env, name="a")
    b = launch_gateway(tmp, config, env, name="b")
    try:
        dead = "pair#1"
        assert _breaker(b, dead) == "closed"
        for _ in range(12):  # the weighted pick lands on the dead one about half the time
            status, _, _ = chat(a, MASTER_KEY, model="pair")
            assert status == 200  # retried on the live one: nobody sees the dead deployment
            if _breaker(a, dead) == "open":
                break
        assert _breaker(a, dead) == "open"
        deadline = time.monotonic() + 2.0
        while _breaker(b, dead) != "open":
            assert time.monotonic() < deadline, "replica b never saw the breaker open"
            time.sleep(0.1)
        _, _, health = http("GET", f"{b.url}/health/deployments", key=MASTER_KEY)
        assert health["deployments"][dead]["requests"] == 0  # b learned it from Redis alone
        for _ in range(5):  # and b now keeps its traffic off the dead one from the first request
            status, _, body = chat(b, MASTER_KEY, model="pair")
            assert status == 200
        _, _, health = http("GET", f"{b.url}/health/deployments", key=MASTER_KEY)
        assert health["deployments"][dead]["requests"] == 0
    finally:
        stop(a.proc)
        stop(b.proc)
