"""Serializing results and errors: JSON bodies and SSE streams, OpenAI or Anthropic shaped."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable, Iterable
from contextlib import aclosing
from decimal import Decimal
from typing import Any, Literal

import orjson
from starlette.responses import Response

from faregate.core.call import Call
from faregate.core.errors import GatewayError
from faregate.http.sse_response import SSEResponse
from faregate.wire import sse

log = logging.getLogger("faregate.http")

Protocol = Literal["openai", "anthropic"]


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def cache_headers(call: Call) -> dict[str, str] | None:
    """x-faregate-cache (and the similarity of a semantic hit), when caching is on."""
    if call.cache is None:
        return None
    if call.cache_similarity is None:
        return {"x-faregate-cache": call.cache}
    return {"x-faregate-cache": call.cache, "x-faregate-cache-similarity": f"{call.cache_similarity:.4f}"}


def result_headers(call: Call) -> dict[str, str] | None:
    """Headers only a finished (non-stream) call can carry: its cost, and the key's spend in
    its budget period after it (keys with a budget); and the cache outcome."""
    headers = cache_headers(call)
    if call.cost is not None and call.cost.priced:
        cost = {"x-faregate-cost-usd": str(call.cost.total_usd)}
        headers = {**headers, **cost} if headers else cost
    elif call.cache and call.cache.startswith("hit"):
        headers = {**(headers or {}), "x-faregate-cost-usd": "0"}
    if call.key_spend_nusd is not None:
        spend = str(Decimal(call.key_spend_nusd).scaleb(-9))
        headers = {**headers, "x-faregate-key-spend": spend} if headers else {"x-faregate-key-spend": spend}
    return headers


def error_response(exc: GatewayError, protocol: Protocol = "openai") -> JSONResponse:
    body = exc.anthropic_body() if protocol == "anthropic" else exc.openai_body()
    return JSONResponse(body, status_code=exc.status, headers=exc.headers or None)


def internal_error(exc: BaseException) -> GatewayError:
    # Log the type only at error level with the traceback; the message never goes to the client.
    log.error("unhandled %s while serving a request", type(exc).__name__, exc_info=exc)
    return GatewayError(500, "The gateway failed unexpectedly; the error is logged with this request's x-request-id.",
                        type="api_error", code="internal_error")


def protocol_for(path: str) -> Protocol:
    """Which error shape a path answers in."""
    return "anthropic" if path.startswith("/v1/messages") else "openai"


def exception_response(exc: BaseException, path: str) -> JSONResponse:
    """Any exception raised while serving `path`, as that API's error (500 if unexpected)."""
    err = exc if isinstance(exc, GatewayError) else internal_error(exc)
    return error_response(err, protocol_for(path))


def stream_error_event(exc: BaseException, protocol: Protocol) -> bytes:
    err = exc if isinstance(exc, GatewayError) else internal_error(exc)
    if protocol == "anthropic":
        return sse.encode_event("error", err.anthropic_body())
    return sse.encode(err.openai_body())


async def openai_sse(stream: AsyncGenerator[dict[str, Any], None]) -> AsyncGenerator[bytes, None]:
    encode = sse.encode
    try:
        async with aclosing(stream):
            async for chunk in stream:
                yield encode(chunk)
    except Exception as exc:  # the client already has a 200: end with an error event, not [DONE]
        yield stream_error_event(exc, "openai")
        return
    yield sse.DONE


async def translated_sse(stream: AsyncGenerator[dict[str, Any], None],
                         feed: Callable[[dict[str, Any]], Iterable[tuple[str, dict[str, Any]]]],
                         finish: Callable[[], Iterable[tuple[str, dict[str, Any]]]]) -> AsyncGenerator[bytes, None]:
    """Canonical chunks -> named events (Anthropic) via a stateful translator."""
    encode = sse.encode_event
    try:
        async with aclosing(stream):
            async for chunk in stream:
                for event, data in feed(chunk):
                    yield encode(event, data)
        for event, data in finish():
            yield encode(event, data)
    except Exception as exc:
        yield stream_error_event(exc, "anthropic")


def sse_response(body: AsyncGenerator[bytes, None], call: Call | None = None) -> SSEResponse:
    return SSEResponse(body, cache_headers(call) if call is not None else None)
