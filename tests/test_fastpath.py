"""The hot routes bypass FastAPI's per-request machinery but keep its OpenAPI declarations."""

from __future__ import annotations

from faregate.config import parse_config
from faregate.http.app import ROUTERS, create_app
from faregate.http.fastpath import fast_routes
from faregate.http.responses import protocol_for

CONFIG = {"model_list": [{"model_name": "m", "litellm_params": {"model": "openai/m", "api_base": "http://127.0.0.1:1/v1"}}]}


def test_hot_routes_are_served_by_the_fast_path() -> None:
    routes = set(fast_routes(ROUTERS))
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


async def test_fast_routes_never_enter_fastapi() -> None:
    import httpx

    from faregate.http.fastpath import FastPath

    app = create_app(parse_config(CONFIG))
    entered: list[str] = []

    stack = app.build_middleware_stack()

    async def framework(scope, receive, send) -> None:  # FastAPI's own per-request stack, recorded
        entered.append(scope["path"])
        await stack(scope, receive, send)

    app.middleware_stack = framework
    fast = FastPath(app, fast_routes(ROUTERS))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=fast), base_url="http://t") as client:
        assert (await client.get("/health/live")).json() == {"status": "ok"}
        resp = await client.post("/v1/chat/completions", content=b"{bad")
        assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_json"
        resp = await client.post("/v1/messages", content=b"{}")
        assert resp.json()["type"] == "error"  # Anthropic's shape on the Anthropic route
        assert entered == []
        assert (await client.get("/v1/models/m")).status_code == 200  # path parameter: FastAPI's
        assert entered == ["/v1/models/m"]
