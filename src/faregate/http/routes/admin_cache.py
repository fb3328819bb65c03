"""Admin API for the response cache: stats, and purges by tenant scope, model group or age.

Master key only (the same checks as the rest of /admin). A gateway whose config caches nothing
answers 404 `cache_disabled`.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from faregate.cache.store import Purge
from faregate.core.errors import GatewayError
from faregate.http.responses import JSONResponse
from faregate.http.routes.admin import router as admin

router = APIRouter(prefix="/admin", tags=["Admin"], route_class=admin.route_class,
                   dependencies=admin.dependencies, responses=admin.responses)


def _cache(request: Request) -> Any:
    cache = request.app.state.gateway.cache
    if cache is None:
        raise GatewayError(404, "Response caching is off in this gateway's config (cache.mode, or a group's).",
                           type="invalid_request_error", code="cache_disabled")
    return cache


@router.get("/cache", summary="Response cache: backend, scope, entries and hit rates per layer")
async def cache_stats(request: Request) -> Response:
    return JSONResponse(await _cache(request).describe())


@router.delete("/cache", summary="Purge cached responses (all, or by scope, model group and age)")
async def purge_cache(
        request: Request,
        scope: str | None = Query(None, max_length=300, description="'global', 'team:<team id>' or 'key:<key id>'"),
        model: str | None = Query(None, max_length=256, description="A model group"),
        older_than: float | None = Query(None, ge=0, description="Only entries created more than this many seconds ago")) -> Response:
    what = Purge(scope=scope or None, group=model or None,
                 before=None if older_than is None else time.time() - older_than)
    return JSONResponse({"purged": await _cache(request).purge(what)})
