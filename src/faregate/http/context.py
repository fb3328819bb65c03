"""Per-request context as a raw ASGI middleware (no BaseHTTPMiddleware: it costs a task).

Every HTTP response gets `x-request-id` — always minted here, since it is the ledger's primary
key and a client must not be able to collide with another request's row — plus, when the
client sent a sane `x-client-request-id` (OpenAI's header) or `x-request-id`, that id echoed as
`x-client-request-id` (and kept in the ledger); and `x-faregate-overhead-ms`: time spent in the gateway, excluding upstream waits. For a
stream, the headers leave after the first upstream chunk, so the figure covers everything up
to the first byte.
"""

from __future__ import annotations

import itertools
import os
import re
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from faregate.core.call import Call

_SANE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
REQUEST_ID = "faregate.request_id"
CLIENT_REQUEST_ID = "faregate.client_request_id"
STARTED = "faregate.started"
CALL = "faregate.call"


# A random per-process prefix plus a counter: unique across processes and replicas with the
# same odds as a random id, without a syscall per request.
_ID_PREFIX = os.urandom(8).hex()
_id_counter = itertools.count(1)


def new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_id_counter):016x}"


def client_request_id(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The client's own id for this request, if it sent a sane one."""
    for name, value in headers:
        if name == b"x-client-request-id" or name == b"x-request-id":
            text = value.decode("latin-1")
            if _SANE_ID.match(text):
                return text
    return None


def overhead_ms(scope: dict[str, Any], now: float) -> float:
    call: Call | None = scope.get(CALL)
    if call is not None:
        return call.overhead_seconds(now) * 1000
    return (now - scope[STARTED]) * 1000


class RequestContext:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            await self.app(scope, receive, send)
            return
        scope[STARTED] = time.perf_counter()
        rid = scope[REQUEST_ID] = new_request_id()
        client_rid = scope[CLIENT_REQUEST_ID] = client_request_id(scope["headers"])
        if kind == "websocket":
            await self.app(scope, receive, send)
            return
        extra = [(b"x-request-id", rid.encode())]
        if client_rid is not None:
            extra.append((b"x-client-request-id", client_rid.encode()))

        async def send_with_context(message: Message) -> None:
            if message["type"] == "http.response.start":
                ms = overhead_ms(scope, time.perf_counter())
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    *extra,
                    (b"x-faregate-overhead-ms", f"{ms:.3f}".encode()),
                ]
            await send(message)

        await self.app(scope, receive, send_with_context)
