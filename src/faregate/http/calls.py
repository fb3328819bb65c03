"""From an HTTP request to a finished pipeline run: the steps every API route shares.

`admit` authenticates before anything is read (an unauthenticated client must not make the
gateway parse megabytes) and reads the JSON body within the size limit; `run` builds the
`Call`, links it to the request context (for `x-faregate-overhead-ms`) and runs the pipeline.
Routes only validate, translate and serialize around these two.

`INFLIGHT` holds the task of every API call until it ends (its response sent or its stream
closed): when a shutdown's drain deadline passes, `end_inflight` cancels what is left, each
call answering 503 (a stream: cut short) with its ledger row written before the sinks flush.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Literal

from starlette.requests import Request

from faregate.access.records import Principal
from faregate.core.call import Call, Endpoint
from faregate.core.errors import GatewayError, client_closed
from faregate.http.body import read_json
from faregate.http.context import CALL, CLIENT_REQUEST_ID, REQUEST_ID, STARTED
from faregate.http.disconnect import ClientWatch

if TYPE_CHECKING:
    from faregate.gateway import Gateway

INFLIGHT: dict[asyncio.Task[Any], Call] = {}
_ended = False  # the drain deadline has passed: cancellations now mean "shutting down"


def shutting_down() -> GatewayError:
    return GatewayError(503, "The gateway is shutting down; retry the request.", type="api_error",
                        code="server_shutting_down", headers={"retry-after": "1"})


def end_inflight() -> int:
    """Cancel every API call still running (the drain deadline has passed); how many."""
    global _ended
    _ended = True
    for task, call in INFLIGHT.items():
        if call.finished_at is None and call.error is None:
            call.error = shutting_down()  # what the ledger records for a stream cut short
        task.cancel()
    return len(INFLIGHT)


def _forget(task: asyncio.Task[Any]) -> None:
    INFLIGHT.pop(task, None)


def ending() -> bool:
    return _ended


async def admit(request: Request) -> tuple[Principal, Any]:
    """(principal, parsed JSON body) or a 401/400/413 GatewayError."""
    gw: Gateway = request.app.state.gateway
    principal = await authenticate(gw, request.headers)
    return principal, await read_json(request, gw.config.server.max_body_bytes)


async def authenticate(gw: Gateway, headers: Any) -> Principal:
    try:
        return gw.auth.check(headers)
    except GatewayError:
        if gw.directory.loaded:
            raise
    # The first moments after start-up: a virtual key may be one the directory has not read yet.
    await gw.directory.wait_loaded()
    return gw.auth.check(headers)


async def run(request: Request, principal: Principal, endpoint: Endpoint, body: dict[str, Any],
              client_protocol: Literal["openai", "anthropic"] = "openai") -> Call:
    scope = request.scope
    headers = request.headers
    call = Call(request_id=scope[REQUEST_ID], endpoint=endpoint, body=body, headers=headers,
                client_protocol=client_protocol, started=scope[STARTED], principal=principal,
                client_request_id=scope.get(CLIENT_REQUEST_ID))
    wanted = headers.get("x-faregate-timeout")
    if wanted is not None:
        call.timeout = _timeout(wanted, request.app.state.gateway.config.router_settings.max_request_timeout)
    scope[CALL] = call
    # Until the pipeline returns (a stream: its first chunk), a client that leaves cancels the
    # call at once — the upstream request is closed with it and the ledger keeps what was spent
    # (after that, the SSE response watches).
    task = asyncio.current_task()
    assert task is not None
    INFLIGHT[task] = call
    task.add_done_callback(_forget)
    watch = ClientWatch(request.receive, task)
    try:
        await request.app.state.gateway.pipeline.run(call)
    except asyncio.CancelledError:
        if watch.gone:
            task.uncancel()
            raise client_closed() from None
        if _ended:
            task.uncancel()
            raise shutting_down() from None
        raise
    finally:
        watch.stop()
    return call


def _timeout(value: str, cap: float) -> float:
    """A client's x-faregate-timeout: seconds per upstream attempt, at most `cap`."""
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < float("inf"):
        raise GatewayError(400, f"x-faregate-timeout must be a positive number of seconds (at most {cap:g}); got '{value[:40]}'.",
                           type="invalid_request_error", code="invalid_timeout", param="x-faregate-timeout")
    return min(seconds, cap)
