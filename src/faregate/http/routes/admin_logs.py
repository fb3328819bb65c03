"""Admin API for the request log: search log rows, and one request with its bodies.

Master key only (the same checks as the rest of /admin). Bodies are returned as stored: JSON
text with PII already replaced by `<ENTITY>` placeholders (cut text when `truncated`). Rows
written in the last ~0.25 s may not be visible yet (they are batched, like the ledger's).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from faregate.accounting import spend as ledger
from faregate.core.errors import GatewayError
from faregate.http.responses import JSONResponse
from faregate.http.routes.admin import router as admin
from faregate.logs import search

router = APIRouter(prefix="/admin", tags=["Admin"], route_class=admin.route_class,
                   dependencies=admin.dependencies, responses=admin.responses)


class _LogFields(BaseModel):
    """What a log row holds besides the bodies (shared by the search rows and one entry)."""

    request_id: str
    created_at: dt.datetime
    key_id: str | None
    user_id: str | None
    feature: str | None
    model: str
    status: int
    trace_id: str | None = Field(description="W3C trace id (32 hex digits), when the request was traced.")
    request_bytes: int | None = Field(description="Size of the request's JSON, bodies kept or not.")
    response_bytes: int | None
    redactions: int = Field(description="Findings replaced by placeholders in the stored bodies.")
    truncated: bool


class LogRow(_LogFields):
    has_request_body: bool
    has_response_body: bool
    cost_usd: str | None = Field(description="From the ledger row (null until it is written); exact decimal string.")
    latency_ms: float | None
    ttft_ms: float | None
    cache: str | None
    error_code: str | None
    deployment: str | None
    stream: bool | None


class LogPage(BaseModel):
    rows: list[LogRow]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next (older) page; null at the end.")


class LogEntry(_LogFields):
    request_body: str | None = Field(description="The request's JSON text, redacted; null when not kept.")
    response_body: str | None = Field(description="The response's JSON text (a stream: {output_text}; a failure: {error}), redacted.")
    ledger: Any = Field(description="The request's ledger row (see GET /admin/requests/{id}); null until written.")


@router.get("/logs", response_model=LogPage, summary="Search the request log, newest first")
async def search_logs(
        request: Request,
        request_id: str | None = Query(None, max_length=128),
        key: str | None = Query(None, max_length=64, description="A key id ('key_…', 'master')"),
        user: str | None = Query(None, max_length=128),
        feature: str | None = Query(None, max_length=128, description="x-faregate-feature"),
        model: str | None = Query(None, max_length=256, description="The model (group) requested"),
        status: int | None = Query(None, ge=100, le=599, description="HTTP status of the answer"),
        trace_id: str | None = Query(None, max_length=32),
        start: str | None = Query(None, description="ISO date or datetime; UTC unless it says otherwise"),
        end: str | None = Query(None, description="A date includes that day; a datetime is exclusive"),
        limit: int = Query(50, ge=1, le=500),
        cursor: str | None = Query(None, max_length=1024)) -> Response:
    since, until = ledger.period(start, end)
    filters = {"request_id": request_id, "key": key, "user": user, "feature": feature, "model": model,
               "status": status, "trace_id": trace_id}
    rows, next_cursor = await search.search(await request.app.state.gateway.db(), filters, since, until,
                                            limit, cursor)
    page = LogPage.model_validate({"rows": rows, "next_cursor": next_cursor})
    return JSONResponse(page.model_dump(mode="json"))


@router.get("/logs/{request_id}", response_model=LogEntry,
            summary="One request: its log row with the (redacted) bodies, and its ledger row")
async def get_log(request: Request, request_id: str) -> Response:
    found = await search.entry(await request.app.state.gateway.db(), request_id)
    if found is None:
        raise GatewayError(404, f"No request '{request_id}' in the request log (rows are written within "
                           "about a second of the answer; request_log.mode may be off, or the row "
                           "past retention).", code="request_not_found", param="request_id")
    return JSONResponse(entry_json(found))


def entry_json(found: dict[str, Any]) -> dict[str, Any]:
    """A log entry (`search.entry`) as this API and the dashboard show it."""
    ledger_row = found.pop("ledger")
    out = LogEntry.model_validate({**found, "ledger": None}).model_dump(mode="json")
    out["ledger"] = None if ledger_row is None else ledger.LedgerEntry.model_validate(ledger_row).model_dump(mode="json")
    return out
