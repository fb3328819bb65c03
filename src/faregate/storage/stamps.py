"""Comparing `created_at` columns with instants in SQL, the same way on every database.

SQLite keeps a timestamp as UTC text ('YYYY-MM-DD HH:MM:SS.ffffff', 3 or 6 decimals: the
embedded ledger writer and SQLAlchemy write both), so there the column is compared as text
with the instant in that format; PostgreSQL compares timestamps. Every period filter on the
ledger or the request log (spend reports, SLOs, the dashboard, log search and retention) goes
through these.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import String, type_coerce


def sqlite_text(when: dt.datetime | None) -> str | None:
    """The shortest text of `when` (UTC) in SQLite's storage format: a stored value equal to it is
    never shorter, so text comparison orders them as the instants ('…00.000' vs '…00')."""
    if when is None:
        return None
    text = when.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    fraction = f"{when.microsecond:06d}".rstrip("0")
    return f"{text}.{fraction}" if fraction else text


def comparable(column: Any, dialect: str) -> Any:
    """`column` as compared with `bound` values (SQLite: as text)."""
    return type_coerce(column, String) if dialect == "sqlite" else column


def bound(dialect: str, when: dt.datetime | None) -> Any:
    """An aware instant as `comparable` columns are compared with it."""
    return sqlite_text(when) if dialect == "sqlite" else when


def in_period(query: Any, column: Any, dialect: str, start: dt.datetime | None, end: dt.datetime | None) -> Any:
    """`query` limited to rows with `start <= column < end` (either may be None)."""
    created = comparable(column, dialect)
    if start is not None:
        query = query.where(created >= bound(dialect, start))
    if end is not None:
        query = query.where(created < bound(dialect, end))
    return query
