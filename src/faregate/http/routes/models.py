"""GET /v1/models and /v1/models/{id}: the model groups this gateway serves."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from faregate.core.errors import model_not_found
from faregate.http.fastpath import fast_path
from faregate.http.responses import JSONResponse

router = APIRouter(tags=["OpenAI"])


def _model(group: str, created: int) -> dict[str, Any]:
    return {"id": group, "object": "model", "created": created, "owned_by": "faregate"}


def _authenticate(request: Request) -> None:
    request.app.state.gateway.auth.check(request.headers)


@router.get("/v1/models", summary="List model groups")
@fast_path
async def list_models(request: Request) -> Response:
    _authenticate(request)
    gw = request.app.state.gateway
    return JSONResponse({"object": "list", "data": [_model(g, gw.created) for g in gw.router.groups]})


@router.get("/v1/models/{model_id:path}", summary="Retrieve one model group")
async def get_model(model_id: str, request: Request) -> Response:
    _authenticate(request)
    gw = request.app.state.gateway
    if not gw.router.has(model_id):
        raise model_not_found(model_id)
    return JSONResponse(_model(model_id, gw.created))


router.add_api_route("/models", list_models, methods=["GET"], include_in_schema=False)
