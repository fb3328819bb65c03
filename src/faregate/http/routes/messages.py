"""Anthropic surface: POST /v1/messages, for any model group behind the gateway.

The request is validated as Anthropic's, translated to the canonical (OpenAI) request, run
through the same pipeline, and the result translated back — a whole message or the full
event stream (message_start … message_stop). Errors take Anthropic's shape.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from faregate.http.calls import admit, run
from faregate.http.fastpath import fast_path
from faregate.http.responses import JSONResponse, result_headers, sse_response, translated_sse
from faregate.translate.anthropic_request import messages_request_to_chat
from faregate.translate.anthropic_response import chat_response_to_messages
from faregate.translate.anthropic_stream import ChatStreamToMessages
from faregate.wire.anthropic import MESSAGES_REQUEST, validate_messages_request

router = APIRouter(tags=["Anthropic"])


@router.post(
    "/v1/messages",
    summary="Create a message (Anthropic Messages API)",
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/MessagesRequest"}}}}},
)
@fast_path
async def create_message(request: Request) -> Response:
    principal, doc = await admit(request)
    req = validate_messages_request(doc)
    call = await run(request, principal, "chat", messages_request_to_chat(req), "anthropic")
    model = req["model"]
    if call.stream is not None:
        translator = ChatStreamToMessages(model, "msg_" + call.request_id)
        return sse_response(translated_sse(call.stream, translator.feed, translator.finish), call)
    return JSONResponse(chat_response_to_messages(call.response or {}, model), headers=result_headers(call))


def schemas() -> dict[str, Any]:
    schema = MESSAGES_REQUEST.json_schema(ref_template="#/components/schemas/{model}")
    out: dict[str, Any] = schema.pop("$defs", {})
    out["MessagesRequest"] = schema
    return out
