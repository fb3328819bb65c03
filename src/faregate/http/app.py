"""The ASGI application: routes, error rendering, the request-context middleware, lifespan.

`create_app(config)` builds one; `app_from_env()` is the factory the server workers import
(the CLI validated the config and passes its path in FAREGATE_CONFIG).

Shutdown (SIGTERM/SIGINT): granian stops accepting at once and waits for every open request;
then the lifespan's exit closes the gateway (sinks flushed). `_drain_deadline` bounds that
wait: FAREGATE_SHUTDOWN_TIMEOUT seconds after the signal, the calls still running are ended
(503, streams cut short, each with its ledger row) so the worker can still flush and exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from faregate import __version__
from faregate.config import Config
from faregate.config.sources import CONFIG_ENV, load
from faregate.core.errors import GatewayError
from faregate.gateway import Gateway
from faregate.http.calls import end_inflight
from faregate.http.context import RequestContext
from faregate.http.fastpath import FastPath, fast_routes
from faregate.http.responses import exception_response
from faregate.http.routes import (
    admin,
    admin_cache,
    admin_logs,
    admin_slo,
    health,
    messages,
    metrics,
    models,
    openai,
    ws,
)
from faregate.http.ui import routes as ui

log = logging.getLogger("faregate")


GC_GEN0_THRESHOLD = 20_000

ROUTERS = (openai.router, messages.router, models.router, health.router, metrics.router, ws.router, admin.router, admin_cache.router, admin_logs.router, admin_slo.router, ui.router)


def create_app(config: Config) -> FastAPI:
    gateway = Gateway(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await gateway.start()
        # Everything built so far lives as long as the process: move it out of the GC's view
        # so full collections stop rescanning it (measured: 45-50 ms pauses every ~6 s under
        # load before, ~1 ms after).
        gc.collect()
        gc.freeze()
        # A collection every 700 allocations (Python's default), and the older-generation ones
        # it triggers, traverse the objects of every request in flight — at 200 concurrent
        # requests that was the gateway's largest single cost (measured: 560-610 µs of CPU per request at max
        # load, 390-490 µs with 20,000). Request garbage is freed by reference counting; only
        # cycles wait for the collector, so a larger threshold only delays freeing those.
        gc.set_threshold(GC_GEN0_THRESHOLD, 10, 10)
        restore = _drain_deadline(shutdown_timeout())
        try:
            yield
        finally:
            restore()
            await gateway.close()

    app = FastAPI(title="faregate", version=__version__, lifespan=lifespan,
                  description="A self-hosted LLM gateway: OpenAI- and Anthropic-compatible.")
    app.state.gateway = gateway
    for router in ROUTERS:
        app.include_router(router)

    async def on_error(request: Request, exc: Exception) -> Response:
        return exception_response(exc, request.url.path)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "invalid_request")
        message = {404: f"No route {request.method} {request.url.path}. See /docs for the API.",
                   405: f"{request.method} is not allowed on {request.url.path}."}.get(exc.status_code, str(exc.detail))
        err = GatewayError(exc.status_code, message, code=code)
        return exception_response(err, request.url.path)

    app.add_exception_handler(GatewayError, on_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_error)

    def custom_openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(openai.schemas())
            components.update(messages.schemas())
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = custom_openapi  # type: ignore[method-assign]
    return app


SHUTDOWN_TIMEOUT_ENV = "FAREGATE_SHUTDOWN_TIMEOUT"
DEFAULT_SHUTDOWN_TIMEOUT = 30.0


def shutdown_timeout() -> float:
    """Seconds in-flight calls may take to finish after SIGTERM (`faregate serve` sets the env)."""
    try:
        return max(0.0, float(os.environ.get(SHUTDOWN_TIMEOUT_ENV, DEFAULT_SHUTDOWN_TIMEOUT)))
    except ValueError:
        return DEFAULT_SHUTDOWN_TIMEOUT


def _drain_deadline(timeout: float) -> Callable[[], None]:
    """Chain onto the server's SIGTERM/SIGINT handlers: the signal starts a `timeout` timer
    that ends the calls still running. Returns what restores the handlers.

    The server's own handler (the loop's, installed with `add_signal_handler`) still runs
    first-hand: only the Python-level handler is wrapped. Outside the main thread (an
    in-process test client) there is no signal to watch."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    timer: asyncio.TimerHandle | None = None

    def expire() -> None:
        ended = end_inflight()
        if ended:
            log.warning("shutdown: %d call(s) still running after %gs, ended", ended, timeout)

    def start() -> None:
        nonlocal timer
        if timer is None:
            log.info("shutdown: draining in-flight calls (at most %gs)", timeout)
            timer = loop.call_later(timeout, expire)

    previous: dict[int, Callable[..., object]] = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        handler = signal.getsignal(sig)
        if not callable(handler):  # nobody serving us handles it: not ours to take over
            continue

        def chained(signum: int, frame: object, handler: Callable[..., object] = handler) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(start)
            handler(signum, frame)

        previous[sig] = handler
        signal.signal(sig, chained)

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if timer is not None:
            timer.cancel()

    return restore


def asgi_app(app: FastAPI) -> RequestContext:
    """What the server runs: request context outermost, then the fast path, then FastAPI."""
    return RequestContext(FastPath(app, fast_routes(ROUTERS)))


def app_from_env() -> RequestContext:
    return asgi_app(create_app(load(os.environ.get(CONFIG_ENV))))
