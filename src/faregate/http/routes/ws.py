"""WS /v1/chat/ws: chat streaming over a WebSocket.

Protocol (JSON text frames). The client sends an OpenAI chat request (`stream` is implied).
The server answers with `{"type": "chunk", "data": <chat.completion.chunk>}` frames, then
`{"type": "done", "request_id": ..., "usage": {...}}`; or `{"type": "error", "error": {...}}`.
The socket stays open for the next request. Authentication is checked on the handshake
(`Authorization: Bearer` or `x-api-key`); a refused handshake closes with code 1008.
"""

from __future__ import annotations

from contextlib import aclosing
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from faregate.access.records import Principal
from faregate.core.call import Call
from faregate.core.errors import GatewayError
from faregate.http.calls import authenticate
from faregate.http.context import new_request_id
from faregate.http.responses import internal_error
from faregate.wire.openai import validate_request

if TYPE_CHECKING:
    from faregate.gateway import Gateway

router = APIRouter()


@router.websocket("/v1/chat/ws")
async def chat_ws(ws: WebSocket) -> None:
    gw = ws.app.state.gateway
    try:
        principal = await authenticate(gw, ws.headers)
    except GatewayError:
        await ws.close(code=1008, reason="invalid API key")
        return
    await ws.accept()
    try:
        while True:
            raw = await ws.receive_text()
            await _serve_one(ws, gw, raw, principal)
    except WebSocketDisconnect:
        return


def _frame(obj: dict[str, Any]) -> str:
    return orjson.dumps(obj).decode()


async def _serve_one(ws: WebSocket, gw: Gateway, raw: str, principal: Principal) -> None:
    rid = new_request_id()
    try:
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise GatewayError(400, f"The message is not valid JSON: {exc}.", code="invalid_json") from None
        if isinstance(doc, dict):
            doc["stream"] = True
            doc["stream_options"] = {"include_usage": True}
        body = validate_request("chat", doc)
        call = Call(request_id=rid, endpoint="chat", body=body, headers=ws.headers, principal=principal)
        await gw.pipeline.run(call)
        if call.stream is None:  # a short-circuit answered with a whole response
            await ws.send_text(_frame({"type": "response", "data": call.response}))
        else:
            async with aclosing(call.stream) as stream:  # a dropped socket cancels the upstream
                async for chunk in stream:
                    await ws.send_text(_frame({"type": "chunk", "data": chunk}))
        await ws.send_text(_frame({"type": "done", "request_id": rid, "usage": call.usage}))
    except WebSocketDisconnect:
        raise
    except GatewayError as exc:
        await ws.send_text(_frame({"type": "error", "request_id": rid, **exc.openai_body()}))
    except Exception as exc:
        await ws.send_text(_frame({"type": "error", "request_id": rid, **internal_error(exc).openai_body()}))
