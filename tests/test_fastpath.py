"""The hot routes bypass FastAPI's per-request machinery but keep its OpenAPI declarations."""

from __future__ import annotations

from faregate.config import parse_config
from faregate.http.app import create_app
from faregate.http.fastpath import FastPath, protocol_for

CONFIG = {"model_list": [{"model_name": "m", "litellm_params": {"model": "openai/m", "api_base": "http://127.0.0.1:1/v1"}}]}


def test_hot_routes_are_served_by_the_fast_path() -> None:
    app = create_app(parse_config(CONFIG))
    routes = set(FastPath(app).routes)
    assert {("POST", "/v1/chat/completions"), ("POST", "/v1/completions"), ("POST", "/v1/embeddings"),
            ("POST", "/v1/messages"), ("GET", "/v1/models"), ("POST", "/chat/completions"),
            ("GET", "/health/live")} <= routes
    # routes with path parameters stay with FastAPI
    assert not any("{" in path for _, path in routes)


def test_fast_routes_stay_documented() -> None:
    paths = create_app(parse_config(CONFIG)).openapi()["paths"]
    assert "post" in paths["/v1/chat/completions"] and "post" in paths["/v1/messages"]


def test_error_shape_follows_the_path() -> None:
    assert protocol_for("/v1/messages") == "anthropic"
    assert protocol_for("/v1/chat/completions") == "openai"
