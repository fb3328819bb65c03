"""Live state of one mock server, and the common front of every API handler.

`api_handler` wraps a route's implementation with what every API request goes through:
the in-flight count (for /metrics), request recording, the API key check, the `x-mock-*`
knobs and injected errors, and JSON body parsing. The implementation then only builds the
answer: `impl(request, body, knobs) -> response`.

A request whose client goes away before its response is finished (the server cancels the
handler, or a stream write finds the socket closed) counts as cancelled: `MockState.cancelled`
and the record's `cancelled_at` (wall-clock seconds) — how tests see that a gateway really
stopped the upstream request.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from faregate.mock.responses import CLIENT_GONE, anthropic_error, openai_error
from faregate.mock.settings import Knobs, MockSettings, resolve_knobs

RECORD_LIMIT = 200
PROTOCOLS = ("openai", "anthropic", "both")

Impl = Callable[[web.Request, Any, Knobs], Awaitable[web.StreamResponse]]


class MockState:
    def __init__(self, settings: MockSettings, protocol: str = "both") -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
        self.settings = settings
        self.protocol = protocol
        self.initial = settings.to_dict()
        self.rng = random.Random(settings.seed)
        self.running = 0
        self.total = 0  # API requests received
        self.cancelled = 0  # ... whose client left before the response was finished
        self.requests: deque[dict[str, Any]] = deque(maxlen=RECORD_LIMIT)

    def patch(self, values: dict[str, Any]) -> None:
        self.settings.patch(values)
        if "seed" in values:
            self.rng.seed(self.settings.seed)

    def reset(self) -> None:
        self.settings.patch(self.initial)
        self.rng.seed(self.settings.seed)

    def stats(self) -> dict[str, int]:
        return {"requests": self.total, "running": self.running, "cancelled": self.cancelled}


_INVALID = object()


def _authorized(headers: Any, key: str, flavor: str) -> bool:
    auth = headers.get("Authorization")
    if auth is not None and auth == "Bearer " + key:
        return True
    return headers.get("x-api-key" if flavor == "anthropic" else "api-key") == key


def wants_anthropic(request: web.BaseRequest) -> bool:
    """For routes both APIs share (/v1/models): the caller speaks Anthropic."""
    headers = request.headers
    return "anthropic-version" in headers or "x-api-key" in headers


def api_handler(state: MockState, flavor: str, impl: Impl) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """`flavor`: "openai", "anthropic", or "auto" (decided per request by `wants_anthropic`)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        state.running += 1
        state.total += 1
        record: dict[str, Any] | None = None
        try:
            fl = flavor if flavor != "auto" else ("anthropic" if wants_anthropic(request) else "openai")
            error = anthropic_error if fl == "anthropic" else openai_error
            body: Any = None
            if request.body_exists:
                raw = await request.read()
                try:
                    body = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    body = _INVALID
            s = state.settings
            if s.record_requests:
                record = {
                    "method": request.method, "path": request.path, "query": dict(request.query),
                    "headers": {str(k): v for k, v in request.headers.items()}, "body": None if body is _INVALID else body,
                    "received_at": time.time(), "cancelled_at": None,
                }
                state.requests.append(record)
            key = s.require_api_key
            if key is not None and not _authorized(request.headers, key, fl):
                return error(401)
            try:
                knobs = resolve_knobs(s, request.headers, state.rng)
            except ValueError as exc:
                return error(400, str(exc))
            if knobs.status is not None:
                if knobs.latency > 0:
                    await asyncio.sleep(knobs.latency)
                return error(knobs.status, code=knobs.error_code)
            if request.method == "POST" and not isinstance(body, dict):
                return error(400, "We could not parse the JSON body of your request: expected a JSON object.")
            response = await impl(request, body, knobs)
            if request.get(CLIENT_GONE):
                _cancelled(state, record)
            return response
        except asyncio.CancelledError:  # the server cancels the handler when the client leaves
            _cancelled(state, record)
            raise
        finally:
            state.running -= 1

    return handler


def _cancelled(state: MockState, record: dict[str, Any] | None) -> None:
    state.cancelled += 1
    if record is not None:
        record["cancelled_at"] = time.time()
