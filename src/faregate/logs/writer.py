"""`LogWriter`: the request log's `BatchSink` writer.

A batch of entries becomes rows in a worker thread (sizes, cut, redaction — Presidio's CPU time
is spent there, never on the event loop) and is inserted by the ledger's writer for this table
(stdlib sqlite3 on a thread for the embedded SQLite, SQLAlchemy/asyncpg for PostgreSQL). A
failed insert is retried by the sink with the rows already prepared: nothing is redacted twice.
No SQLAlchemy or Presidio import here: both load in the background once the gateway serves.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from faregate.accounting.ledger import ledger_writer
from faregate.logs.entry import log_row
from faregate.logs.redact import Redactor

log = logging.getLogger("faregate.logs")


class LogWriter:
    def __init__(self, url: str, redactor: Redactor, max_body_chars: int) -> None:
        self.redactor = redactor
        self.max_body_chars = max_body_chars
        self.db = ledger_writer(url, "request_logs")
        self.failed_redactions = 0

    async def open(self) -> None:
        """Connect, and load Presidio when bodies are redacted (in a thread, ~1 s)."""
        await self.db.open()
        if not self.redactor.loaded:
            await asyncio.to_thread(self.redactor.load)

    async def __call__(self, entries: list[dict[str, Any]]) -> None:
        rows = await asyncio.to_thread(self._prepare, entries)
        await self.db(rows)

    def _prepare(self, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        rows = []
        for entry in entries:
            row = entry.get("_row")
            if row is None:
                redacted = entry["_keep"]
                row = self._row(entry)
                entry.clear()  # drop the references to bodies; a retried write reuses the row
                entry["_row"] = row
                if redacted:
                    # Hand the GIL to the event loop between rows (~1 ms of Presidio each)
                    # rather than after the interpreter's 5 ms switch interval.
                    time.sleep(0)
            rows.append(row)
        return rows

    def _row(self, entry: dict[str, Any]) -> dict[str, Any]:
        try:
            return log_row(entry, self.redactor, self.max_body_chars)
        except Exception as exc:  # fail closed: the row without its bodies, never unredacted
            self.failed_redactions += 1
            log.error("request log: bodies of %s not stored (%s: %s)", entry.get("request_id"),
                      type(exc).__name__, exc)
            return log_row({**entry, "_keep": False}, self.redactor, self.max_body_chars)

    async def close(self) -> None:
        await self.db.close()
