"""OpenAI surface: /v1/chat/completions, /v1/completions, /v1/embeddings."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from faregate.core.call import Endpoint
from faregate.http.calls import admit, run
from faregate.http.fastpath import fast_path
from faregate.http.responses import JSONResponse, openai_sse, result_headers, sse_response
from faregate.wire.openai import json_schema, validate_request

router = APIRouter(tags=["OpenAI"])


def _doc(endpoint: str) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{endpoint}"}}}}}


async def run_openai(request: Request, endpoint: Endpoint) -> Response:
    principal, doc = await admit(request)
    call = await run(request, principal, endpoint, validate_request(endpoint, doc))
    if call.stream is not None:
        return sse_response(openai_sse(call.stream), call)
    return JSONResponse(call.response, headers=result_headers(call))


@router.post("/v1/chat/completions", openapi_extra=_doc("ChatRequest"), summary="Create a chat completion")
@fast_path
async def chat_completions(request: Request) -> Response:
    return await run_openai(request, "chat")


@router.post("/v1/completions", openapi_extra=_doc("CompletionRequest"), summary="Create a (legacy) completion")
@fast_path
async def completions(request: Request) -> Response:
    return await run_openai(request, "completions")


@router.post("/v1/embeddings", openapi_extra=_doc("EmbeddingRequest"), summary="Create embeddings")
@fast_path
async def embeddings(request: Request) -> Response:
    return await run_openai(request, "embeddings")


# LiteLLM and OpenAI clients configured without '/v1' hit these.
router.add_api_route("/chat/completions", chat_completions, methods=["POST"], include_in_schema=False)
router.add_api_route("/completions", completions, methods=["POST"], include_in_schema=False)
router.add_api_route("/embeddings", embeddings, methods=["POST"], include_in_schema=False)


def schemas() -> dict[str, Any]:
    """Request schemas for the OpenAPI document's components."""
    out: dict[str, Any] = {}
    for endpoint, name in (("chat", "ChatRequest"), ("completions", "CompletionRequest"), ("embeddings", "EmbeddingRequest")):
        schema = json_schema(endpoint)
        out.update(schema.pop("$defs", {}))
        out[name] = schema
    return out
