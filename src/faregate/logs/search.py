"""Reading the request log back (admin API only, never on the request path).

`search` pages through log rows newest first, each joined with its ledger row's outcome (cost,
latency, TTFT, cache, error code); filters are equalities on indexed columns plus a time
range, and the cursor is keyset (created_at, request_id), so every page costs the same however
deep. `entry` is one request: its log row with the (redacted) bodies and its ledger row.
"""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

import orjson
from sqlalchemy import and_, or_, select

from faregate.access.store import bad_request, cost_usd
from faregate.accounting.spend import ledger_entry
from faregate.storage.stamps import bound, comparable
from faregate.storage.tables import request_logs, requests

# query parameter -> request_logs column
FILTERS = {"request_id": "request_id", "key": "key_id", "user": "user_id", "feature": "feature",
           "model": "model", "status": "status", "trace_id": "trace_id"}
_LEDGER = ("cost_nusd", "latency_ms", "ttft_ms", "cache", "error_code", "deployment", "stream")
_META = [c for c in request_logs.columns if c.name not in ("request_body", "response_body")]


async def search(engine: Any, filters: dict[str, Any], start: dt.datetime | None = None,
                 end: dt.datetime | None = None, limit: int = 50,
                 cursor: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
    """(rows, next cursor or None) for `start <= created_at < end` and the equality filters."""
    dialect = engine.dialect.name
    sqlite = dialect == "sqlite"
    created = comparable(request_logs.c.created_at, dialect)
    query = (select(*_META, created.label("_at"),
                    request_logs.c.request_body.is_not(None).label("has_request_body"),
                    request_logs.c.response_body.is_not(None).label("has_response_body"),
                    *(requests.c[name] for name in _LEDGER))
             .select_from(request_logs.outerjoin(requests, requests.c.request_id == request_logs.c.request_id)))
    for param, value in filters.items():
        if value is not None:
            query = query.where(request_logs.c[FILTERS[param]] == value)
    if start is not None:
        query = query.where(created >= bound(dialect, start))
    if end is not None:
        query = query.where(created < bound(dialect, end))
    if cursor:
        at, rid = _decode(cursor, sqlite)
        query = query.where(or_(created < at, and_(created == at, request_logs.c.request_id < rid)))
    query = query.order_by(created.desc(), request_logs.c.request_id.desc()).limit(limit + 1)
    async with engine.connect() as conn:
        found = (await conn.execute(query)).mappings().all()
    more = len(found) > limit
    rows = [_row(r) for r in found[:limit]]
    next_cursor = _encode(found[limit - 1]["_at"], found[limit - 1]["request_id"]) if more else None
    return rows, next_cursor


async def entry(engine: Any, request_id: str) -> dict[str, Any] | None:
    """One request's log row with its bodies, and its ledger row (None until written)."""
    async with engine.connect() as conn:
        row = (await conn.execute(select(request_logs).where(request_logs.c.request_id == request_id))).mappings().first()
    if row is None:
        return None
    out = dict(row)
    out["created_at"] = _utc(out["created_at"])
    out["ledger"] = await ledger_entry(engine, request_id)
    return out


def _row(r: Any) -> dict[str, Any]:
    out = {c.name: r[c.name] for c in _META}
    out["created_at"] = _utc(out["created_at"])
    out["has_request_body"] = bool(r["has_request_body"])
    out["has_response_body"] = bool(r["has_response_body"])
    out["truncated"] = bool(out["truncated"])
    in_ledger = r["cost_nusd"] is not None
    out["cost_usd"] = cost_usd(r["cost_nusd"]) if in_ledger else None
    for name in _LEDGER[1:]:
        out[name] = r[name]
    out["stream"] = bool(r["stream"]) if in_ledger else None
    return out


def _utc(when: dt.datetime) -> dt.datetime:
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)


def _encode(at: Any, request_id: str) -> str:
    """Opaque: the last row's stored created_at (SQLite's text as is, else ISO) and its id."""
    stamp = at if isinstance(at, str) else at.isoformat()
    return base64.urlsafe_b64encode(orjson.dumps([stamp, request_id])).decode().rstrip("=")


def _decode(cursor: str, sqlite: bool) -> tuple[Any, str]:
    try:
        stamp, rid = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not (isinstance(stamp, str) and isinstance(rid, str)):
            raise ValueError
        return (stamp if sqlite else dt.datetime.fromisoformat(stamp)), rid
    except (ValueError, TypeError):
        raise bad_request("'cursor' is not a cursor this API returned.", "cursor") from None
