"""Reading a JSON request body within the configured size limit."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request

from faregate.core.errors import GatewayError


def _too_large(limit: int) -> GatewayError:
    return GatewayError(413, f"Request body is larger than the {limit}-byte limit (server.max_body_bytes).",
                        code="request_too_large")


async def read_json(request: Request, limit: int) -> Any:
    length = request.headers.get("content-length")
    if length is not None:
        try:
            declared = int(length)
        except ValueError:
            raise GatewayError(400, "Invalid Content-Length header.", code="invalid_request") from None
        if declared > limit:
            raise _too_large(limit)
    # Straight from the ASGI channel (Starlette's Request.body adds a generator per request);
    # counted as it arrives so a chunked upload beyond the limit is refused early.
    receive = request.receive
    message = await receive()
    body = message.get("body", b"")
    if message.get("more_body"):
        parts = [body]
        size = len(body)
        while message.get("more_body"):
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()
            part = message.get("body", b"")
            size += len(part)
            if size > limit:
                raise _too_large(limit)
            parts.append(part)
        body = b"".join(parts)
    elif len(body) > limit:
        raise _too_large(limit)
    if not body:
        raise GatewayError(400, "The request body is empty; send a JSON object.", code="invalid_json")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise GatewayError(400, f"The request body is not valid JSON: {exc}.", code="invalid_json") from None
