"""GET /admin/slo: the latency objectives of `slo.targets`, with current percentiles and
violations (telemetry/slo.py). Master key only."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from faregate.http.responses import JSONResponse
from faregate.http.routes.admin import router as admin

router = APIRouter(prefix="/admin", tags=["Admin"], route_class=admin.route_class,
                   dependencies=admin.dependencies, responses=admin.responses)


@router.get("/slo", summary="Latency SLOs: TTFT and total latency percentiles per model group, and violations")
async def slo(request: Request) -> Response:
    from faregate.telemetry.slo import report

    gw = request.app.state.gateway
    targets = await report(await gw.db(), gw.config.slo)
    return JSONResponse({"targets": targets, "ok": all(t["ok"] for t in targets)})
