"""Reading the ledger back: spend grouped by who or what, and one request's row.

Aggregation runs in SQL (SQLite or PostgreSQL); money stays integer nano-dollars until it is
formatted as an exact decimal string. Admin calls only: never on the request path.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, Field, create_model
from sqlalchemy import String, case, cast, func, literal_column, select

from faregate.access.store import bad_request, cost_usd
from faregate.storage.stamps import in_period
from faregate.storage.tables import requests

GroupBy = Literal["key", "user", "team", "end_user", "feature", "model", "deployment", "day"]
_COLUMNS = {"key": "key_id", "user": "user_id", "team": "team_id", "end_user": "end_user",
            "feature": "feature", "model": "requested_model", "deployment": "deployment"}


def _day(dialect: str) -> Any:
    """The UTC date of `created_at` as 'YYYY-MM-DD'."""
    if dialect == "sqlite":  # stored as UTC text 'YYYY-MM-DD HH:MM:SS.fff'
        return func.substr(cast(requests.c.created_at, String), literal_column("1"), literal_column("10"))
    if dialect == "postgresql":
        return func.to_char(requests.c.created_at.op("AT TIME ZONE")(literal_column("'UTC'")),
                            literal_column("'YYYY-MM-DD'"))
    return func.date(requests.c.created_at)


# What the admin API answers (and /docs shows).

class SpendRow(BaseModel):
    group: str | None
    requests: int
    input_tokens: int
    output_tokens: int
    cost_usd: str = Field(description="Exact decimal string, 9 decimals.")
    cache_hits: int = Field(description="Requests answered from the response cache (exact or semantic).")
    saved_usd: str = Field(description="What those hits would have cost upstream; exact decimal string.")


class SpendReport(BaseModel):
    rows: list[SpendRow]


def _ledger_model() -> type[BaseModel]:
    """A ledger row as the API shows it: every column, cost as an exact `cost_usd` string."""
    fields: dict[str, Any] = {}
    for col in requests.columns:
        if col.name in ("cost_nusd", "saved_nusd"):
            fields[col.name.replace("_nusd", "_usd")] = (str, ...)
            continue
        kind: Any = dict[str, Any] | str if col.name == "tags" else col.type.python_type
        fields[str(col.name)] = (kind | None if col.nullable else kind, ...)  # not quoted_name: orjson wants str
    return create_model("LedgerEntry", **fields)


LedgerEntry = _ledger_model()


def period(start: str | None, end: str | None) -> tuple[dt.datetime | None, dt.datetime | None]:
    """`start`/`end` query values as aware datetimes: ISO dates or datetimes, UTC unless they say
    otherwise; a date as `end` includes that whole day. A 400 naming the parameter if invalid."""
    since, until = _when(start, "start"), _when(end, "end", end=True)
    if since is not None and until is not None and until <= since:
        raise bad_request("'end' must be after 'start'.", "end")
    return since, until


def _when(value: str | None, param: str, end: bool = False) -> dt.datetime | None:
    if not value:
        return None
    try:
        if len(value) == 10:
            day = dt.datetime.combine(dt.date.fromisoformat(value), dt.time(), dt.UTC)
            return day + dt.timedelta(days=1) if end else day
        when = dt.datetime.fromisoformat(value)
        return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)
    except (ValueError, OverflowError):
        raise bad_request(f"'{param}' must be an ISO date (2025-01-31) or datetime (2025-01-31T12:00:00Z).",
                          param) from None


async def spend_by(engine: Any, group_by: GroupBy, start: Any = None, end: Any = None) -> list[dict[str, Any]]:
    """Requests, tokens and cost per group for `start <= created_at < end` (aware datetimes),
    most expensive first."""
    group = (_day(engine.dialect.name) if group_by == "day" else requests.c[_COLUMNS[group_by]]).label("grp")
    cost = func.sum(requests.c.cost_nusd).label("cost")
    hits = func.sum(case((requests.c.cache.like("hit%"), 1), else_=0))
    query = select(group, func.count().label("n"), func.sum(requests.c.input_tokens).label("input"),
                   func.sum(requests.c.output_tokens).label("output"), cost, hits,
                   func.sum(requests.c.saved_nusd)).group_by(group)
    query = in_period(query, requests.c.created_at, engine.dialect.name, start, end).order_by(cost.desc(), group.asc().nulls_last())
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [{"group": None if g is None else str(g), "requests": int(n), "input_tokens": int(i or 0),
             "output_tokens": int(o or 0), "cost_usd": cost_usd(c), "cache_hits": int(h or 0),
             "saved_usd": cost_usd(s)} for g, n, i, o, c, h, s in rows]


async def ledger_entry(engine: Any, request_id: str) -> dict[str, Any] | None:
    """One request's ledger row for display: cost as an exact `cost_usd` string, times in UTC."""
    async with engine.connect() as conn:
        row = (await conn.execute(select(requests).where(requests.c.request_id == request_id))).mappings().first()
    return None if row is None else entry(row)


def entry(row: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["cost_usd"] = cost_usd(out.pop("cost_nusd"))
    out["saved_usd"] = cost_usd(out.pop("saved_nusd", 0))
    created = out["created_at"]
    out["created_at"] = created.replace(tzinfo=dt.UTC) if created.tzinfo is None else created.astimezone(dt.UTC)
    tags = out.get("tags")
    if isinstance(tags, str):
        with contextlib.suppress(ValueError):
            out["tags"] = json.loads(tags)
    return out
