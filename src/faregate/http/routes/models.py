"""GET /v1/models and /v1/models/{id}: the model groups this gateway serves — to a virtual
key, only those its key, user and team may call."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from faregate.core.errors import model_not_found
from faregate.http.calls import authenticate
from faregate.http.fastpath import fast_path
from faregate.http.responses import JSONResponse

router = APIRouter(tags=["OpenAI"])


def _model(group: str, created: int) -> dict[str, Any]:
    return {"id": group, "object": "model", "created": created, "owned_by": "faregate"}


@router.get("/v1/models", summary="List model groups")
@fast_path
async def list_models(request: Request) -> Response:
    gw = request.app.state.gateway
    principal = await authenticate(gw, request.headers)
    groups = [g for g in gw.router.groups if principal.may_call(g)]
    return JSONResponse({"object": "list", "data": [_model(g, gw.created) for g in groups]})


@router.get("/v1/models/{model_id:path}", summary="Retrieve one model group")
async def get_model(model_id: str, request: Request) -> Response:
    gw = request.app.state.gateway
    principal = await authenticate(gw, request.headers)
    if not gw.router.has(model_id) or not principal.may_call(model_id):
        raise model_not_found(model_id)
    return JSONResponse(_model(model_id, gw.created))


router.add_api_route("/models", list_models, methods=["GET"], include_in_schema=False)
