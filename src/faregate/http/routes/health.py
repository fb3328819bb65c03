"""Liveness and readiness probes (no auth: load balancers call them), and the deployments'
health for operators (master key)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from faregate.http.fastpath import fast_path
from faregate.http.responses import JSONResponse

router = APIRouter(tags=["Health"])


@router.get("/health/live", summary="The process is up")
@fast_path
async def live(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


@router.get("/health/ready", summary="Config loaded and every deployment ready")
async def ready(request: Request) -> Response:
    ok, states = request.app.state.gateway.ready()
    body = {"status": "ready" if ok else "starting", "deployments": {k: ("ready" if v else "starting") for k, v in states.items()}}
    return JSONResponse(body, status_code=200 if ok else 503)


@router.get("/health/deployments", summary="Each deployment's breaker, load, latency and last error (master key)")
async def deployments(request: Request) -> Response:
    from faregate.http.routes.admin import require_master

    await require_master(request)
    return JSONResponse({"deployments": request.app.state.gateway.routing.health()})
