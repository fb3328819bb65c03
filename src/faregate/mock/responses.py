"""Writing responses: JSON bodies, protocol-shaped errors, and paced SSE streams.

Streams are planned up front as a list of encoded events (`SSEPlan`) and then written with
the request's timing: everything up to the first content event goes out with the headers
after `ttft`, each later content event after `itl`, and trailing events with the last content.
`disconnect_after` cuts the plan and closes the socket without the terminating event.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import web

from faregate.mock.content import rand_id
from faregate.mock.settings import Knobs

JSON_CT = "application/json"
SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
CLIENT_GONE = "faregate_mock_client_gone"  # set on a request whose stream found the client gone


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(obj), status=status, content_type=JSON_CT, headers=headers)


def drop_connection(request: web.BaseRequest) -> web.Response:
    """Close the socket now; aiohttp then fails to write the returned response, quietly."""
    transport = request.transport
    if transport is not None:
        transport.close()
    return web.Response()


async def respond_json(request: web.BaseRequest, obj: Any, knobs: Knobs) -> web.StreamResponse:
    """A non-streamed answer after `latency` (or a dropped connection when asked to disconnect)."""
    if knobs.latency > 0:
        await asyncio.sleep(knobs.latency)
    if knobs.disconnect_after is not None:
        return drop_connection(request)
    return web.Response(body=orjson.dumps(obj), content_type=JSON_CT)


# ---------------------------------------------------------------- errors

_OPENAI_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Mock upstream error: invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("permission_error", None, "You are not allowed to access this resource."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist or you do not have access to it."),
    408: ("timeout", None, "Request timed out."),
    409: ("invalid_request_error", None, "Conflict."),
    413: ("invalid_request_error", "request_too_large", "Request too large."),
    422: ("invalid_request_error", None, "Unprocessable entity."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests. Please try again in 1s."),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
    504: ("server_error", None, "Gateway timeout."),
}

_ANTHROPIC_ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "Mock upstream error: invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    402: ("billing_error", "Your credit balance is too low."),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "The requested resource could not be found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of requests has exceeded your rate limit."),
    500: ("api_error", "Internal server error"),
    504: ("timeout_error", "Request timed out."),
    529: ("overloaded_error", "Overloaded"),
}


def _extra_headers(status: int, headers: dict[str, str] | None) -> dict[str, str] | None:
    if status == 429:
        return {**(headers or {}), "retry-after": "1"}
    return headers


def openai_error(status: int, message: str | None = None, *, code: str | None = None,
                 param: str | None = None, type_: str | None = None) -> web.Response:
    """`{"error": {message, type, param, code}}` with OpenAI's type/code for the status."""
    default_type, default_code, default_message = _OPENAI_ERRORS.get(
        status, ("invalid_request_error" if status < 500 else "server_error", None, f"Mock upstream error {status}."))
    if code == "context_length_exceeded" and message is None:
        message = ("This model's maximum context length is 128000 tokens. However, your messages resulted in "
                   "130000 tokens. Please reduce the length of the messages.")
        param = param or "messages"
        default_type = "invalid_request_error"
    body = {"error": {"message": message or default_message, "type": type_ or default_type, "param": param,
                      "code": code if code is not None else default_code}}
    headers = {"x-request-id": rand_id("req_", 32)}
    return json_response(body, status, _extra_headers(status, headers))


def anthropic_error(status: int, message: str | None = None, *, code: str | None = None,
                    param: str | None = None, type_: str | None = None) -> web.Response:
    """`{"type": "error", "error": {type, message}, "request_id"}` with Anthropic's type for the status."""
    default_type, default_message = _ANTHROPIC_ERRORS.get(
        status, ("invalid_request_error" if status < 500 else "api_error", f"Mock upstream error {status}."))
    if code == "context_length_exceeded" and message is None:
        message = "prompt is too long: 210000 tokens > 200000 maximum"
        default_type = "invalid_request_error"
    request_id = rand_id("req_01", 22)
    body = {"type": "error", "error": {"type": type_ or default_type, "message": message or default_message},
            "request_id": request_id}
    return json_response(body, status, _extra_headers(status, {"request-id": request_id}))


# ---------------------------------------------------------------- SSE

def sse_data(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def sse_event(name: bytes, obj: Any) -> bytes:
    return b"event: " + name + b"\ndata: " + orjson.dumps(obj) + b"\n\n"


class SSEPlan:
    """Encoded events in order; `paced` marks content events (spaced by `itl`)."""

    __slots__ = ("events", "paced")

    def __init__(self) -> None:
        self.events: list[bytes] = []
        self.paced: list[bool] = []

    def add(self, event: bytes, paced: bool = False) -> None:
        self.events.append(event)
        self.paced.append(paced)


async def stream_sse(request: web.BaseRequest, plan: SSEPlan, knobs: Knobs,
                     headers: dict[str, str] | None = None) -> web.StreamResponse:
    if knobs.ttft > 0:
        await asyncio.sleep(knobs.ttft)
    resp = web.StreamResponse(headers=headers or SSE_HEADERS)
    events, paced = plan.events, plan.paced
    cut = knobs.disconnect_after is not None and knobs.disconnect_after < len(events)
    if cut:
        events = events[: knobs.disconnect_after]
    itl = knobs.itl
    try:
        await resp.prepare(request)
        if itl <= 0:
            if events:
                await resp.write(b"".join(events))
        else:
            pending: list[bytes] = []
            seen_content = False
            for event, is_content in zip(events, paced, strict=False):
                if is_content:
                    if seen_content:
                        if pending:
                            await resp.write(b"".join(pending))
                            pending = []
                        await asyncio.sleep(itl)
                    seen_content = True
                pending.append(event)
            if pending:
                await resp.write(b"".join(pending))
    except ConnectionError:
        request[CLIENT_GONE] = True  # the client went away
        return resp
    if cut:
        drop_connection(request)
    return resp
