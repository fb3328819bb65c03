"""OpenTelemetry GenAI metrics over OTLP/HTTP, into a real receiver: the semconv histograms
with bounded attributes, and token sums that match the ledger."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import MASTER_KEY, Server, stop
from tests.gateways import launch_gateway
from tests.test_tracing import Receiver


@pytest.fixture(scope="module")
def setup(mock_upstream: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Receiver]]:
    receiver = Receiver()
    config = f"""
model_list:
  - model_name: chat
    litellm_params: {{model: openai/gpt-4o-mini, api_base: "{mock_upstream.url}/v1", api_key: os.environ/TEST_UPSTREAM_KEY}}
general_settings:
  master_key: os.environ/TEST_MASTER_KEY
tracing: {{enabled: false}}
"""
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_METRIC_EXPORT_INTERVAL": "300"}
    gw = launch_gateway(tmp_path_factory.mktemp("genai-metrics"), config, env)
    yield gw, receiver
    stop(gw.proc)
    receiver.server.shutdown()


def _attrs(point: Any) -> dict[str, str]:
    return {a.key: a.value.string_value for a in point.attributes}


def test_genai_histograms_reach_the_receiver_and_match_the_ledger(setup: tuple[Server, Receiver]) -> None:
    gw, receiver = setup
    auth = {"authorization": f"Bearer {MASTER_KEY}"}
    url = f"{gw.url}/v1/chat/completions"
    assert httpx.post(url, json={"model": "chat", "messages": [{"role": "user", "content": "one two three"}]},
                      headers=auth, timeout=30).status_code == 200
    with httpx.stream("POST", url, json={"model": "chat", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
                      headers=auth, timeout=30) as resp:
        assert resp.status_code == 200
        resp.read()
    assert httpx.post(url, json={"model": "nope", "messages": [{"role": "user", "content": "x"}]},
                      headers=auth, timeout=30).status_code == 404
    time.sleep(1.5)  # the ledger flushes, and the reader exports every 0.3 s
    with sqlite3.connect(gw.db) as conn:
        inp, out = conn.execute("SELECT sum(input_tokens), sum(output_tokens) FROM requests").fetchone()
    deadline = time.monotonic() + 10
    while True:
        with receiver.lock:
            points = dict(receiver.metrics)
        usage = points.get("gen_ai.client.token.usage", [])
        by_type = {_attrs(p)["gen_ai.token.type"]: p.sum for p in usage}
        if by_type == {"input": inp, "output": out} or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert by_type == {"input": inp, "output": out}
    attrs = _attrs(usage[0])
    assert attrs["gen_ai.operation.name"] == "chat" and attrs["gen_ai.request.model"] == "chat"
    assert attrs["gen_ai.provider.name"] == "openai" and attrs["gen_ai.response.model"] == "gpt-4o-mini"
    requests = {_attrs(p)["gen_ai.request.model"]: p.count for p in points["gen_ai.server.request.duration"]}
    assert requests == {"chat": 2, "unknown": 1}
    assert sum(p.count for p in points["gen_ai.client.operation.duration"]) == 2
    assert sum(p.count for p in points["gen_ai.server.time_to_first_token"]) == 1
    assert sum(p.count for p in points["gen_ai.server.time_per_output_token"]) == 1
    assert not any(MASTER_KEY in str(p) for ps in points.values() for p in ps)
