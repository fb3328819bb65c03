"""Bad input never becomes a 500: random JSON and mutated valid requests against every endpoint.

Runs the real ASGI app in-process (fast path, FastAPI, error rendering) with a deployment whose
upstream is a closed port, so a request that passes validation ends in a 502, never a 500.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from faregate.config import parse_config
from faregate.http.app import asgi_app, create_app
from faregate.storage.db import create_engine, upgrade
from faregate.storage.urls import database_url
from tests.conftest import free_port

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)

VALID = {
    "/v1/chat/completions": {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5},
    "/v1/completions": {"model": "m", "prompt": "hi", "max_tokens": 5},
    "/v1/embeddings": {"model": "m", "input": "hi"},
    "/v1/messages": {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
}


def mutate(doc: Any, path: list[Any], value: Any) -> Any:
    """Replace the value at a (possibly missing) path inside a copy of doc."""
    doc = orjson.loads(orjson.dumps(doc))
    node = doc
    for key in path[:-1]:
        node = node[key] if isinstance(node, dict) and key in node else node[0] if isinstance(node, list) and node else node
    if isinstance(node, dict):
        node[path[-1]] = value
    return doc


@pytest.fixture(scope="module")
async def client() -> AsyncIterator[httpx.AsyncClient]:
    config = parse_config({"model_list": [{"model_name": "m", "litellm_params": {
        "model": "openai/m", "api_base": f"http://127.0.0.1:{free_port()}/v1", "timeout": 2}}],
        "router_settings": {"num_retries": 0}})
    app = create_app(config)
    gateway = app.state.gateway
    engine = create_engine(database_url(config))
    await upgrade(engine)  # the ledger gets rows for requests that reached the pipeline
    await engine.dispose()
    await gateway.start()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi_app(app)), base_url="http://t") as c:
        yield c
    await gateway.close()


FIELDS = ["model", "messages", "max_tokens", "stream", "stream_options", "tools", "tool_choice", "temperature",
          "n", "stop", "prompt", "input", "system", "response_format", "logprobs", "top_logprobs", "user"]


@pytest.mark.parametrize("path", list(VALID))
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
async def test_no_input_is_a_500(client: httpx.AsyncClient, path: str, data: st.DataObject) -> None:
    choice = data.draw(st.sampled_from(["random", "field", "nested"]))
    if choice == "random":
        body = data.draw(JSON)
    elif choice == "field":
        body = mutate(VALID[path], [data.draw(st.sampled_from(FIELDS))], data.draw(JSON))
    else:
        key = "messages" if "messages" in VALID[path] else "input"
        body = mutate(VALID[path], [key, 0, data.draw(st.sampled_from(["role", "content", "tool_calls", "name"]))],
                      data.draw(JSON))
    resp = await client.post(path, content=orjson.dumps(body), headers={"content-type": "application/json"})
    assert resp.status_code < 500 or resp.status_code in (502, 504), resp.text
    doc = resp.json()
    if resp.status_code >= 400:
        err = doc["error"]
        assert err["message"] and err["type"]
        if path != "/v1/messages":
            assert err["code"]
