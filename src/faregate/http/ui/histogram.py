"""Latency percentiles from a histogram counted in SQL: no ledger row is read into Python.

The database puts each value in a log-spaced bucket — 8 per doubling from 1 ms to 2^20 ms
(~17.5 min), plus one below 1 ms and one above — with a CASE tree (8 comparisons a row, plain
SQL on SQLite and PostgreSQL alike), and returns per bucket the count, the smallest and the
largest value. A percentile is then read off the cumulative counts here.

Error bound: the value of nearest rank r = ceil(p * n) lies in the bucket that holds rank r;
the estimate is interpolated between that bucket's own smallest and largest value, so it is
never further from the true value than that spread, which is less than the bucket's width:
under 2^(1/8) - 1 = 9.05 % of the value (under 1 ms below 1 ms). It is exact when the bucket
holds one value (or one distinct value), p100 is always exact, and in practice (many values
spread through a bucket) the error is a fraction of the bound.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from sqlalchemy import case, literal_column

STEPS_PER_DOUBLING = 8
DOUBLINGS = 20
# EDGES[k] is the upper bound of bucket k (bucket 0: below 1 ms; the last one is unbounded).
EDGES = [2 ** (i / STEPS_PER_DOUBLING) for i in range(STEPS_PER_DOUBLING * DOUBLINGS + 1)]
LAST = len(EDGES)  # the bucket for values >= EDGES[-1]
RELATIVE_ERROR_BOUND = 2 ** (1 / STEPS_PER_DOUBLING) - 1
PERCENTILES = (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))

Cell = tuple[int, int, float, float]  # (bucket, count, smallest value, largest value)


def bucket_of(value: Any) -> Any:
    """SQL: the histogram bucket (0..LAST) of `value`, a binary search written as nested CASEs.
    The edges are inlined literals, so the expression is the same text in SELECT and GROUP BY."""

    def node(lo: int, hi: int) -> Any:
        if lo == hi:
            return literal_column(str(lo))
        mid = (lo + hi) // 2
        return case((value < literal_column(repr(EDGES[mid])), node(lo, mid)), else_=node(mid + 1, hi))

    return node(0, LAST)


def bucket_index(value: float) -> int:
    """The same bucket, computed in Python (tests check the two agree)."""
    lo, hi = 0, LAST
    while lo < hi:
        mid = (lo + hi) // 2
        if value < EDGES[mid]:
            hi = mid
        else:
            lo = mid + 1
    return lo


def merge(cells: Iterable[Cell]) -> list[Cell]:
    """Cells of several histograms (time buckets) as one histogram, ordered by bucket."""
    out: dict[int, list[Any]] = {}
    for k, n, lo, hi in cells:
        cur = out.get(k)
        if cur is None:
            out[k] = [k, n, lo, hi]
        else:
            cur[1] += n
            cur[2] = min(cur[2], lo)
            cur[3] = max(cur[3], hi)
    return [tuple(out[k]) for k in sorted(out)]  # type: ignore[misc]


def percentile(cells: list[Cell], p: float) -> float | None:
    """The p-quantile (nearest rank) of a histogram whose cells are ordered by bucket."""
    total = sum(c[1] for c in cells)
    if total == 0:
        return None
    rank = max(1, math.ceil(p * total - 1e-9))
    seen = 0
    for _, n, lo, hi in cells:
        if seen + n >= rank:
            pos = rank - seen  # 1..n within this cell
            value = lo if n == 1 else lo + (hi - lo) * (pos - 1) / (n - 1)
            return round(value, 3)
        seen += n
    return round(cells[-1][3], 3)


def summarize(cells: list[Cell]) -> dict[str, Any]:
    """p50/p95/p99 and the count of one histogram."""
    ordered = sorted(cells)
    return {"count": sum(c[1] for c in ordered),
            **{name: percentile(ordered, p) for name, p in PERCENTILES}}
