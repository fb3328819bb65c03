"""Request-log retention: rows older than `retention_days` are deleted in the background.

Deletes run in small transactions so the ledger's writer is never held up for long. Ledger rows
are never touched: they are money, kept for billing and budgets whatever the log's retention.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any

from sqlalchemy import delete, select

from faregate.storage.stamps import bound, comparable
from faregate.storage.tables import request_logs

log = logging.getLogger("faregate.logs")

_PURGE_BATCH = 2000


async def purge(engine: Any, before: dt.datetime, batch: int = _PURGE_BATCH) -> int:
    """Delete log rows created before `before` (aware); returns how many."""
    dialect = engine.dialect.name
    old = (select(request_logs.c.request_id)
           .where(comparable(request_logs.c.created_at, dialect) < bound(dialect, before)).limit(batch))
    total = 0
    while True:
        async with engine.begin() as conn:
            result = await conn.execute(delete(request_logs).where(request_logs.c.request_id.in_(old)))
        total += result.rowcount or 0
        if (result.rowcount or 0) < batch:
            return total


async def retain(db: Any, days: float, interval: float) -> None:
    """Forever: every `interval` seconds (the first time sooner), delete rows older than `days`.
    Every replica runs it; the deletes are idempotent."""
    await asyncio.sleep(min(interval, 30.0))
    while True:
        try:
            before = dt.datetime.now(dt.UTC) - dt.timedelta(days=days)
            deleted = await purge(await db(), before)
            if deleted:
                log.info("request log: %d rows older than %g days deleted", deleted, days)
        except Exception as exc:  # retried next round; never fatal
            log.error("request log retention failed: %s: %s", type(exc).__name__, exc)
        await asyncio.sleep(interval)
