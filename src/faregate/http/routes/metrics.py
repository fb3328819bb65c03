"""GET /metrics: this process's Prometheus metrics (text format). No auth, like /health: put
it behind your network policy. Issue 6 grows the metric set; names are a contract."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

router = APIRouter(tags=["Health"])


@router.get("/metrics", summary="Prometheus metrics of this process")
async def metrics(request: Request) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
