"""From an HTTP request to a finished pipeline run: the steps every API route shares.

`admit` authenticates before anything is read (an unauthenticated client must not make the
gateway parse megabytes) and reads the JSON body within the size limit; `run` builds the
`Call`, links it to the request context (for `x-faregate-overhead-ms`) and runs the pipeline.
Routes only validate, translate and serialize around these two.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from starlette.requests import Request

from faregate.access.records import Principal
from faregate.core.call import Call, Endpoint
from faregate.core.errors import GatewayError
from faregate.http.body import read_json
from faregate.http.context import CALL, CLIENT_REQUEST_ID, REQUEST_ID, STARTED

if TYPE_CHECKING:
    from faregate.gateway import Gateway


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
    call = Call(request_id=scope[REQUEST_ID], endpoint=endpoint, body=body, headers=request.headers,
                client_protocol=client_protocol, started=scope[STARTED], principal=principal,
                client_request_id=scope.get(CLIENT_REQUEST_ID))
    scope[CALL] = call
    await request.app.state.gateway.pipeline.run(call)
    return call
