"""The mock upstream server: app factory, /metrics, /mock/* control endpoints, start/stop, CLI.

    upstream = MockUpstream(MockSettings(ttft_ms=50), protocol="both")
    url = await upstream.start()          # http://127.0.0.1:<free port>
    ...                                   # point clients at url + "/v1"
    await upstream.stop()

Control endpoints (for tests): GET/DELETE /mock/requests (the last 200 API requests),
GET/POST/DELETE /mock/settings (read / patch / reset the live settings), GET /mock/stats
(API requests received, running, and cancelled: their client left before the response was
finished — the handler is cancelled the moment the connection drops, as an engine would abort).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import web

from faregate.mock import anthropic_routes, openai_routes
from faregate.mock.responses import anthropic_error, json_response, openai_error, respond_json
from faregate.mock.settings import Knobs, MockSettings
from faregate.mock.state import MockState, api_handler, wants_anthropic

STATE_KEY = web.AppKey("faregate_mock_state", MockState)
MODEL_CREATED = 1700000000
METRICS_CT = "text/plain; version=0.0.4; charset=utf-8"


def _metrics_text(state: MockState) -> bytes:
    """The engine gauges in Prometheus text format, named like `settings.metrics_flavor`'s engine
    (vLLM, SGLang: `model_name` label; TGI: no labels, no KV-cache gauge)."""
    s = state.settings
    label = '{model_name="' + s.metrics_model_name.replace("\\", "\\\\").replace('"', '\\"') + '"}'
    running = float(state.running + s.num_requests_running)
    waiting = float(s.num_requests_waiting)
    kv = float(s.kv_cache_usage_perc)
    if s.metrics_flavor == "sglang":
        gauges = (
            ("sglang:num_running_reqs", "The number of running requests", running),
            ("sglang:num_queue_reqs", "The number of requests in the waiting queue", waiting),
            ("sglang:token_usage", "The token usage", kv),
        )
    elif s.metrics_flavor == "tgi":
        label = ""
        gauges = (
            ("tgi_batch_current_size", "Current batch size", running),
            ("tgi_queue_size", "Current queue size", waiting),
        )
    else:
        gauges = (
            ("vllm:num_requests_running", "Number of requests currently running on GPU.", running),
            ("vllm:num_requests_waiting", "Number of requests waiting to be processed.", waiting),
            ("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", kv),
            ("vllm:gpu_cache_usage_perc", "GPU KV-cache usage. 1 means 100 percent usage.", kv),
        )
    lines = []
    for name, help_text, value in gauges:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name}{label} {value!r}"]
    return ("\n".join(lines) + "\n").encode()


def build_app(settings: MockSettings | None = None, protocol: str = "both") -> web.Application:
    """The aiohttp application; its live state is `app[STATE_KEY]`."""
    state = MockState(settings or MockSettings(), protocol)
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[STATE_KEY] = state
    r = app.router

    async def health(request: web.Request) -> web.Response:
        return json_response({"status": "ok"})

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=_metrics_text(state), headers={"Content-Type": METRICS_CT})

    async def get_requests(request: web.Request) -> web.Response:
        return json_response(list(state.requests))

    async def clear_requests(request: web.Request) -> web.Response:
        cleared = len(state.requests)
        state.requests.clear()
        return json_response({"cleared": cleared})

    async def get_stats(request: web.Request) -> web.Response:
        return json_response(state.stats())

    async def get_settings(request: web.Request) -> web.Response:
        return json_response(state.settings.to_dict())

    async def patch_settings(request: web.Request) -> web.Response:
        try:
            values = await request.json() if request.body_exists else {}
            state.patch(values)
        except ValueError as exc:  # includes JSONDecodeError
            return json_response({"error": str(exc)}, 400)
        return json_response(state.settings.to_dict())

    async def reset_settings(request: web.Request) -> web.Response:
        state.reset()
        return json_response(state.settings.to_dict())

    def anthropic_models() -> bool:
        return state.protocol == "anthropic"

    async def list_models(request: web.Request, body: Any, knobs: Knobs) -> web.StreamResponse:
        ids = state.settings.models
        if anthropic_models() or (state.protocol == "both" and wants_anthropic(request)):
            data = [{"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"} for m in ids]
            doc = {"data": data, "has_more": False, "first_id": ids[0] if ids else None, "last_id": ids[-1] if ids else None}
            return await respond_json(request, doc, knobs)
        data = [{"id": m, "object": "model", "created": MODEL_CREATED, "owned_by": "faregate-mock"} for m in ids]
        return await respond_json(request, {"object": "list", "data": data}, knobs)

    async def get_model(request: web.Request, body: Any, knobs: Knobs) -> web.StreamResponse:
        model = request.match_info["model"]
        anthropic = anthropic_models() or (state.protocol == "both" and wants_anthropic(request))
        if model not in state.settings.models:
            if anthropic:
                return anthropic_error(404, f"model: {model}")
            return openai_error(404, f"The model '{model}' does not exist", param="model")
        if anthropic:
            doc = {"type": "model", "id": model, "display_name": model, "created_at": "2025-01-01T00:00:00Z"}
        else:
            doc = {"id": model, "object": "model", "created": MODEL_CREATED, "owned_by": "faregate-mock"}
        return await respond_json(request, doc, knobs)

    async def not_found(request: web.Request) -> web.Response:
        if protocol == "anthropic" or request.path.startswith("/v1/messages"):
            return anthropic_error(404, f"Not found: {request.method} {request.path}")
        return openai_error(404, f"Invalid URL ({request.method} {request.path})", code="not_found")

    r.add_get("/health", health)
    r.add_get("/metrics", metrics)
    r.add_get("/mock/requests", get_requests)
    r.add_delete("/mock/requests", clear_requests)
    r.add_get("/mock/stats", get_stats)
    r.add_get("/mock/settings", get_settings)
    r.add_post("/mock/settings", patch_settings)
    r.add_delete("/mock/settings", reset_settings)
    if protocol in ("openai", "both"):
        openai_routes.add_routes(app, state)
    if protocol in ("anthropic", "both"):
        anthropic_routes.add_routes(app, state)
    flavor = {"openai": "openai", "anthropic": "anthropic"}.get(protocol, "auto")
    r.add_get("/v1/models", api_handler(state, flavor, list_models))
    r.add_get("/v1/models/{model:.+}", api_handler(state, flavor, get_model))
    r.add_route("*", "/{tail:.*}", not_found)
    return app


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class MockUpstream:
    """The mock server inside the current event loop (tests), on a free port by default."""

    def __init__(self, settings: MockSettings | None = None, protocol: str = "both") -> None:
        self.app = build_app(settings, protocol)
        self.state = self.app[STATE_KEY]
        self.settings = self.state.settings
        self.protocol = protocol
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._host = "127.0.0.1"

    async def start(self, host: str = "127.0.0.1", port: int = 0, *, reuse_port: bool = False,
                    backlog: int = 4096) -> str:
        """Listen and return the base URL, e.g. `http://127.0.0.1:54321` (port 0 = pick a free one)."""
        if self._runner is not None:
            raise RuntimeError("MockUpstream is already started")
        # handler_cancellation: a client that drops the connection cancels its handler at once.
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False, shutdown_timeout=2.0,
                               handler_cancellation=True)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port, backlog=backlog, reuse_port=reuse_port or None)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._host = host
        self._port = runner.addresses[0][1]
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> MockUpstream:
        if self._runner is None:
            await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("MockUpstream is not started")
        return self._port

    @property
    def url(self) -> str:
        return _url(self._host, self.port)

    @property
    def requests(self) -> list[dict[str, Any]]:
        """The recorded API requests, oldest first."""
        return list(self.state.requests)

    def clear_requests(self) -> None:
        self.state.requests.clear()


def run_loop(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run `coro` to completion on uvloop when it is installed, else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


async def serve(settings: MockSettings | None, host: str, port: int, protocol: str, *,
                reuse_port: bool = False, on_ready: Callable[[str], None] | None = None) -> None:
    """Serve until SIGINT/SIGTERM."""
    upstream = MockUpstream(settings, protocol)
    url = await upstream.start(host, port, reuse_port=reuse_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread / not supported
            loop.add_signal_handler(sig, stop.set)
    try:
        if on_ready is not None:
            on_ready(url)
        await stop.wait()
    finally:
        await upstream.stop()


def ready_line(url: str, protocol: str) -> str:
    return f"faregate mock upstream listening on {url} (protocol={protocol})"


def run(settings: MockSettings | None = None, host: str = "127.0.0.1", port: int = 9000,
        protocol: str = "both", *, workers: int = 1) -> int:
    """Blocking: serve until SIGINT/SIGTERM (`workers` > 1: that many processes on one port)."""
    if workers > 1:
        from faregate.mock.workers import run_workers

        return run_workers(settings or MockSettings(), host, port, protocol, workers)
    run_loop(serve(settings, host, port, protocol,
                   on_ready=lambda url: print(ready_line(url, protocol), flush=True)))
    return 0
