"""Reading a JSON request body within the configured size limit."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

from faregate.core.errors import GatewayError


def _too_large(limit: int) -> GatewayError:
    return GatewayError(413, f"Request body is larger than the {limit}-byte limit (server.max_body_bytes).",
                        code="request_too_large")


async def read_json(request: Request, limit: int) -> Any:
    length = request.headers.get("content-length")
    if length is not None:
        try:
            if int(length) > limit:
                raise _too_large(limit)
        except ValueError:
            raise GatewayError(400, "Invalid Content-Length header.", code="invalid_request") from None
        body = await request.body()
    else:  # chunked: count as we go so a huge upload is refused early
        parts: list[bytes] = []
        size = 0
        async for part in request.stream():
            size += len(part)
            if size > limit:
                raise _too_large(limit)
            parts.append(part)
        body = b"".join(parts)
    if not body:
        raise GatewayError(400, "The request body is empty; send a JSON object.", code="invalid_json")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise GatewayError(400, f"The request body is not valid JSON: {exc}.", code="invalid_json") from None
