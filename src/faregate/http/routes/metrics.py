"""GET /metrics: Prometheus metrics (text format) — this process's, or every worker's with
several workers (telemetry/metrics.py). No auth, like /health: put it behind your network
policy. The names are a contract (docs/observability.md)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

router = APIRouter(tags=["Health"])


@router.get("/metrics", summary="Prometheus metrics of this process")
async def metrics(request: Request) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST

    from faregate.telemetry.metrics import exposition

    return Response(exposition(), media_type=CONTENT_TYPE_LATEST)
