"""Latency SLOs: objectives per model group (and endpoint) on TTFT and total latency at p50,
p95 and p99 over a window, checked against the ledger.

The ledger holds every replica's requests, so the percentiles are global, exact (nearest rank
over the window's rows, not a histogram estimate) and need no extra state. `report` answers
`GET /admin/slo`; `violations` feeds the alert monitor (accounting/alerts.py), which logs,
counts in `faregate_spend_alerts_active{kind="slo_violation"}`, posts to the webhook and
dedupes per objective and hour. Only successful calls count (status 200); TTFT only for
streams. Admin and background work only: never on the request path.
"""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select

from faregate.config.schema import SloSettings, SloTarget
from faregate.storage.stamps import in_period
from faregate.storage.tables import requests

QUANTILES = {"p50": 0.50, "p95": 0.95, "p99": 0.99}
MEASURES = {"ttft": requests.c.ttft_ms, "latency": requests.c.latency_ms}


def _filtered(query: Any, dialect: str, model: str, target: SloTarget, since: dt.datetime) -> Any:
    query = in_period(query, requests.c.created_at, dialect, since, None).where(requests.c.status == 200,
                                                        requests.c.requested_model == model)
    if target.endpoint is not None:
        query = query.where(requests.c.endpoint == target.endpoint)
    return query


async def _percentiles(conn: Any, dialect: str, model: str, target: SloTarget, since: dt.datetime,
                       column: Any) -> tuple[int, dict[str, float | None]]:
    """(rows, {p50, p95, p99}) of one column, nearest rank, NULLs left out."""
    base = _filtered(select(func.count()), dialect, model, target, since).where(column.is_not(None))
    n = int((await conn.execute(base)).scalar() or 0)
    out: dict[str, float | None] = {}
    for name, q in QUANTILES.items():
        if n == 0:
            out[name] = None
            continue
        rank = max(0, math.ceil(q * n) - 1)
        query = _filtered(select(column), dialect, model, target, since).where(column.is_not(None))
        value = (await conn.execute(query.order_by(column).limit(1).offset(rank))).scalar()
        out[name] = None if value is None else round(float(value), 3)
    return n, out


async def _groups(conn: Any, dialect: str, target: SloTarget, since: dt.datetime) -> list[str]:
    if target.model != "*":
        return [target.model]
    query = in_period(select(requests.c.requested_model).distinct(), requests.c.created_at, dialect, since, None)
    return sorted(str(m) for (m,) in (await conn.execute(query.where(requests.c.status == 200))).all())


async def report(engine: Any, settings: SloSettings, now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """One entry per model group and objective set: percentiles, objectives, violations."""
    now = now or dt.datetime.now(dt.UTC)
    dialect = engine.dialect.name
    out = []
    async with engine.connect() as conn:
        for target in settings.targets:
            since = now - dt.timedelta(seconds=target.window_seconds)
            for model in await _groups(conn, dialect, target, since):
                entry: dict[str, Any] = {"model": model, "endpoint": target.endpoint,
                                         "window_seconds": target.window_seconds}
                violations = []
                for measure, column in MEASURES.items():
                    n, values = await _percentiles(conn, dialect, model, target, since, column)
                    entry[f"{measure}_ms"] = {"requests": n, **values}
                    for name in QUANTILES:
                        goal = getattr(target, f"{measure}_{name}_ms")
                        actual = values[name]
                        if goal is not None and actual is not None and n >= target.min_requests and actual > goal:
                            violations.append({"objective": f"{measure}_{name}_ms", "target": goal, "actual": actual,
                                               "requests": n})
                entry["objectives"] = target.objectives()
                entry["violations"] = violations
                entry["ok"] = not violations
                out.append(entry)
    return out


async def violations(engine: Any, settings: SloSettings, now: dt.datetime) -> list[tuple[str, str, Decimal, Decimal, str]]:
    """(subject, objective, actual, target, message) for every objective missed now."""
    found = []
    for entry in await report(engine, settings, now):
        for v in entry["violations"]:
            subject = f"{entry['model']}:{v['objective']}"
            message = (f"model group {entry['model']}: {v['objective']} is {v['actual']} ms over the last "
                       f"{entry['window_seconds']:g} s ({v['requests']} requests); objective {v['target']} ms")
            found.append((subject, v["objective"], Decimal(str(v["actual"])), Decimal(str(v["target"])), message))
    return found
