"""The dashboard's SQL: aggregates over the ledger for a time window, computed in the database.

Only aggregates leave the database (SQLAlchemy Core; SQLite and PostgreSQL). How a query runs
depends on the dialect, because SQLite has no hash aggregation — every GROUP BY sorts all of
its input rows (measured: ~2 s for one GROUP BY over 1M rows on a 2-core machine):
- SQLite: one statement per chunk of time (a time bucket, or a day for breakdowns) over the
  `created_at` index, each a range scan whose GROUP BY sorts only that chunk's rows (or none:
  conditional sums); the chunks are merged here. Hundreds of small statements on one
  connection cost far less than one big sort.
- PostgreSQL: one statement over the window, grouped by the bucket (hash aggregates).

Indexes (`storage/migrations/versions/0005_dashboard_indexes.py`): a covering index on
(created_at, provider, requested_model, cache, status, error_code, cost_nusd, saved_nusd,
latency_ms, ttft_ms) serves every time-series query without touching the table.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import bindparam, case, func, literal_column, or_, select, text

from faregate.access.store import bad_request, cost_usd
from faregate.accounting.spend import period
from faregate.http.ui import histogram
from faregate.storage.stamps import bound, comparable
from faregate.storage.tables import requests as R

Bucket = Literal["hour", "day"]
BUCKET_SECONDS = {"hour": 3600, "day": 86400}
DEFAULT_DAYS = 7
MAX_BUCKETS = 24 * 93  # hour buckets for up to ~3 months; day buckets for ~25 years
CACHE_VALUES = ("hit-exact", "hit-semantic", "miss", "bypass")
BREAKDOWNS = {"model": R.c.requested_model, "team": R.c.team_id, "feature": R.c.feature,
              "key": R.c.key_id, "user": R.c.user_id, "deployment": R.c.deployment,
              "provider": R.c.provider}
WALKED = ("model", "team", "feature", "key", "user")  # indexed (col, created_at, cost, saved)
NUSD_PER_USD = 1_000_000_000
# SQLite work runs on worker threads: at most this many at once per process, so dashboards
# refreshing together cannot take every core from the requests the gateway is serving.
SQLITE_THREADS = 2
_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class Window:
    """`start <= created_at < end` (aware, UTC), shown in `bucket`s labelled by their start."""

    start: dt.datetime
    end: dt.datetime
    bucket: Bucket

    def chunks(self, bucket: Bucket | None = None) -> list[tuple[str, dt.datetime, dt.datetime]]:
        """(label, lo, hi) of every bucket in the window; the first and last are clipped to it."""
        step = dt.timedelta(seconds=BUCKET_SECONDS[bucket or self.bucket])
        fmt = "%Y-%m-%d %H:00" if (bucket or self.bucket) == "hour" else "%Y-%m-%d"
        at = _floor(self.start, bucket or self.bucket)
        out = []
        while at < self.end:
            out.append((at.strftime(fmt), max(at, self.start), min(at + step, self.end)))
            at += step
        return out

    def labels(self) -> list[str]:
        return [label for label, _, _ in self.chunks()]

    def describe(self) -> dict[str, Any]:
        return {"start": _iso(self.start), "end": _iso(self.end), "bucket": self.bucket}


def _floor(when: dt.datetime, bucket: Bucket) -> dt.datetime:
    when = when.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
    return when.replace(hour=0) if bucket == "day" else when


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def window(start: str | None, end: str | None, bucket: str | None,
           now: dt.datetime | None = None) -> Window:
    """The query's window: ISO `start`/`end` (default: the last 7 days), `bucket` hour or day
    (default: hour up to 2 days, else day). A 400 naming the parameter when invalid."""
    since, until = period(start, end)
    until = until or (now or dt.datetime.now(dt.UTC))
    since = since or until - dt.timedelta(days=DEFAULT_DAYS)
    if until <= since:
        raise bad_request("'end' must be after 'start'.", "end")
    if bucket not in (None, "", "hour", "day"):
        raise bad_request("'bucket' must be 'hour' or 'day'.", "bucket")
    chosen: Bucket = bucket or ("hour" if until - since <= dt.timedelta(days=2) else "day")  # type: ignore[assignment]
    if (until - since).total_seconds() / BUCKET_SECONDS[chosen] > MAX_BUCKETS:
        raise bad_request(f"Too many {chosen} buckets (at most {MAX_BUCKETS}): shorten the range "
                          "or use bucket=day.", "bucket")
    return Window(since, until, chosen)


# -- running a query per chunk (SQLite) or grouped by bucket (PostgreSQL) -------------------------


def _bucket_expr(bucket: Bucket) -> Any:
    """PostgreSQL: the start of created_at's bucket as a UTC timestamp (date_trunc: faster to
    group by than formatted text); labelled in Python."""
    return func.date_trunc(literal_column(f"'{bucket}'"), func.timezone(literal_column("'UTC'"), R.c.created_at))


# PostgreSQL, per dashboard query (SET LOCAL: this transaction only): no JIT — compiling the
# histogram's CASE tree took longer than running it (~1.6 s on 1M rows) — and room for the
# hash aggregates in memory.
PG_SETTINGS = ("SET LOCAL jit = off", "SET LOCAL work_mem = '32MB'")


async def _bucketed(engine: Any, w: Window, groups: Sequence[Any], aggregates: Sequence[Any],
                    where: Sequence[Any] = (), chunk: Bucket | None = None,
                    by_bucket: bool = True) -> list[tuple[Any, ...]]:
    """Rows of (bucket label, *groups, *aggregates) over the window, grouped by bucket and
    `groups`. On SQLite `chunk` sets the size of the time slices run one statement each (default:
    the window's bucket; rows are labelled by their slice). PostgreSQL runs one statement, by
    bucket unless `by_bucket` is false (labels are then None)."""
    dialect = engine.dialect.name
    created = comparable(R.c.created_at, dialect)
    if dialect != "sqlite":
        label = _bucket_expr(w.bucket).label("bucket") if by_bucket else literal_column("NULL").label("bucket")
        query = select(label, *groups, *aggregates).where(created >= w.start, created < w.end, *where)
        query = query.group_by(label, *groups) if by_bucket else query.group_by(*groups)
        fmt = "%Y-%m-%d %H:00" if w.bucket == "hour" else "%Y-%m-%d"
        async with engine.begin() as conn:
            for setting in PG_SETTINGS:
                await conn.execute(text(setting))
            rows = (await conn.execute(query)).all()
        return [(None if r[0] is None else r[0].strftime(fmt), *r[1:]) for r in rows]
    query = select(*groups, *aggregates).where(created >= bindparam("lo"), created < bindparam("hi"), *where)
    if groups:
        query = query.group_by(*groups)
    chunks = w.chunks(chunk)
    results = await _run_sqlite(engine, query, [{"lo": bound(dialect, lo), "hi": bound(dialect, hi)}
                                                for _, lo, hi in chunks])
    return [(name, *r) for (name, _, _), rows in zip(chunks, results, strict=True) for r in rows]


async def _run_sqlite(engine: Any, query: Any, param_sets: list[dict[str, Any]]) -> list[list[tuple[Any, ...]]]:
    """`query` once per parameter set, on a SQLite database: compiled once and run on the
    standard library's sqlite3 in one worker thread — no driver hop and no result processing per
    statement (these results are plain numbers and text). In-memory: through the engine."""
    path = engine.url.database
    if not path or path == ":memory:" or path.startswith("file:"):
        async with engine.connect() as conn:
            return [[tuple(r) for r in (await conn.execute(query, p)).all()] for p in param_sets]
    compiled = query.compile(dialect=engine.dialect)
    names = list(compiled.positiontup or ())
    fixed = dict(compiled.params)

    def run() -> list[list[tuple[Any, ...]]]:
        conn = sqlite3.connect(path, timeout=5, check_same_thread=False)
        try:
            conn.execute("PRAGMA query_only=1")
            return [conn.execute(compiled.string, [{**fixed, **p}[n] for n in names]).fetchall()
                    for p in param_sets]
        finally:
            conn.close()

    loop = asyncio.get_running_loop()
    slots = _slots.get(loop) or _slots.setdefault(loop, asyncio.Semaphore(SQLITE_THREADS))
    async with slots:
        return await asyncio.to_thread(run)


def _is_error() -> Any:
    return or_(R.c.status >= 400, R.c.error_code.is_not(None))


def _count_if(cond: Any) -> Any:
    return func.sum(case((cond, 1), else_=0))


def _int(v: Any) -> int:
    return int(v or 0)


def _usd(nusd: int) -> float:
    """For charts only (floats); exact totals are `cost_usd` strings."""
    return nusd / NUSD_PER_USD


# -- the panels -----------------------------------------------------------------------------------


async def summary(engine: Any, w: Window) -> dict[str, Any]:
    """Totals and per-bucket series: requests, errors, spend, cache savings and hit rate, and
    the requests and savings per `cache` value."""
    aggs = [func.count(), _count_if(_is_error()), func.sum(R.c.cost_nusd), func.sum(R.c.saved_nusd),
            *[_count_if(R.c.cache == v) for v in CACHE_VALUES],
            *[func.sum(case((R.c.cache == v, R.c.saved_nusd), else_=0)) for v in CACHE_VALUES[:2]]]
    rows = await _bucketed(engine, w, (), aggs)
    labels = w.labels()
    per = {label: [0] * (len(aggs)) for label in labels}
    for label, *values in rows:
        if label in per:
            per[label] = [_int(v) for v in values]
    total = [sum(col) for col in zip(*per.values(), strict=True)] if per else [0] * len(aggs)
    n, errors, cost, saved, *rest = total
    by_cache, saved_by = rest[:len(CACHE_VALUES)], rest[len(CACHE_VALUES):]

    def hit_rate(v: list[int]) -> float | None:
        hits, misses = v[4] + v[5], v[6]
        return round(hits / (hits + misses), 6) if hits + misses else None

    return {
        **w.describe(), "buckets": labels,
        "totals": {"requests": n, "errors": errors, "error_rate": round(errors / n, 6) if n else None,
                   "cost_usd": cost_usd(cost), "saved_usd": cost_usd(saved),
                   "cache_hits": by_cache[0] + by_cache[1], "cache_misses": by_cache[2],
                   "hit_rate": hit_rate(total)},
        "cache": [{"cache": v, "requests": by_cache[i],
                   "saved_usd": cost_usd(saved_by[i] if i < len(saved_by) else 0)}
                  for i, v in enumerate(CACHE_VALUES)] + [
                  {"cache": None, "requests": n - sum(by_cache), "saved_usd": cost_usd(0)}],
        "series": {"requests": [per[b][0] for b in labels], "errors": [per[b][1] for b in labels],
                   "cost_usd": [_usd(per[b][2]) for b in labels],
                   "saved_usd": [_usd(per[b][3]) for b in labels],
                   "hit_rate": [hit_rate(per[b]) for b in labels]},
    }


async def traffic(engine: Any, w: Window) -> dict[str, Any]:
    """Requests and errors per provider per bucket (provider null: answered before an upstream
    was chosen — refused, not found, or served from the cache)."""
    rows = await _bucketed(engine, w, (R.c.provider,), (func.count(), _count_if(_is_error())), chunk="hour")
    labels = w.labels()
    index = {b: i for i, b in enumerate(labels)}
    series: dict[str | None, dict[str, list[int]]] = {}
    for hour, provider, n, errors in rows:
        label = hour[:10] if w.bucket == "day" else hour  # SQLite: hour chunks (small sorts)
        s = series.setdefault(provider, {"requests": [0] * len(labels), "errors": [0] * len(labels)})
        if label in index:
            s["requests"][index[label]] += _int(n)
            s["errors"][index[label]] += _int(errors)
    providers = []
    for name, s in sorted(series.items(), key=lambda kv: -sum(kv[1]["requests"])):
        n, e = sum(s["requests"]), sum(s["errors"])
        providers.append({"provider": name, "requests": n, "errors": e,
                          "error_rate": round(e / n, 6) if n else None, "series": {
                              **s, "error_rate": [round(b / a, 6) if a else None
                                                  for a, b in zip(s["requests"], s["errors"], strict=True)]}})
    return {**w.describe(), "buckets": labels, "providers": providers}


async def latency(engine: Any, w: Window, metric: Literal["latency", "ttft"]) -> dict[str, Any]:
    """p50/p95/p99 of total latency or time to first token (streams) per bucket and overall,
    from per-bucket histograms counted in SQL (`histogram.py`: within 9.05 %)."""
    col = R.c.latency_ms if metric == "latency" else R.c.ttft_ms
    k = histogram.bucket_of(col)
    # SQLite: hour chunks even for day buckets — many small sorts beat a few large ones (and
    # histograms merge exactly); PostgreSQL ignores the chunk and labels rows by bucket.
    rows = await _bucketed(engine, w, (k.label("k"),), (func.count(), func.min(col), func.max(col)),
                           where=(col.is_not(None),), chunk="hour")
    labels = w.labels()
    cells: dict[str, list[histogram.Cell]] = {b: [] for b in labels}
    for label, kk, n, lo, hi in rows:
        bucket = label[:10] if w.bucket == "day" else label
        if bucket in cells:
            cells[bucket].append((int(kk), int(n), float(lo), float(hi)))
    per = [histogram.summarize(histogram.merge(cells[b])) for b in labels]
    return {**w.describe(), "metric": metric, "buckets": labels,
            "series": {name: [p[name] for p in per] for name in ("count", "p50", "p95", "p99")},
            "overall": histogram.summarize(histogram.merge(c for cs in cells.values() for c in cs)),
            "relative_error_bound": round(histogram.RELATIVE_ERROR_BOUND, 4)}


async def breakdown(engine: Any, w: Window, by: str, limit: int = 10) -> dict[str, Any]:
    """Spend per model, team, feature, key, user…: the `limit` largest by cost, and the rest."""
    if by not in BREAKDOWNS:
        raise bad_request(f"'by' must be one of {', '.join(BREAKDOWNS)}.", "by")
    col = BREAKDOWNS[by]
    if engine.dialect.name == "sqlite" and by in WALKED:
        merged = await _walk(engine, w, col)
    else:
        aggs = (func.count(), func.sum(R.c.cost_nusd), func.sum(R.c.saved_nusd))
        merged = {}
        for _, group, *values in await _bucketed(engine, w, (col,), aggs, chunk="day", by_bucket=False):
            acc = merged.setdefault(group, [0, 0, 0])
            for i, v in enumerate(values):
                acc[i] += _int(v)
    ordered = sorted(merged.items(), key=lambda kv: (-kv[1][1], -kv[1][0], kv[0] is None, kv[0] or ""))

    def row(group: str | None, v: list[int]) -> dict[str, Any]:
        return {"group": group, "requests": v[0], "cost_usd": cost_usd(v[1]), "saved_usd": cost_usd(v[2])}

    rest = [sum(v[i] for _, v in ordered[limit:]) for i in range(3)]
    return {**w.describe(), "by": by, "rows": [row(g, v) for g, v in ordered[:limit]],
            "others": row(None, rest) if ordered[limit:] else None, "groups": len(ordered)}


async def _walk(engine: Any, w: Window, col: Any) -> dict[str | None, list[int]]:
    """SQLite: (requests, cost, saved) per value of `col` without sorting the window's rows.
    A recursive CTE walks the distinct values on the (col, created_at, cost, saved) index (one
    seek each) and a correlated subquery sums each value's rows in the window from the same
    index; the three sums come back as one text ('n cost saved') so the rows are read once.
    Cost: a seek per distinct value in the ledger plus the window's index entries."""
    created = comparable(R.c.created_at, "sqlite")
    lo, hi = bindparam("lo"), bindparam("hi")
    vals = select(func.min(col).label("v")).cte("vals", recursive=True)
    prev = vals.alias("prev")
    vals = vals.union_all(select(select(func.min(col)).where(col > prev.c.v).scalar_subquery())
                          .where(prev.c.v.is_not(None)))
    packed = (select(func.printf("%d %d %d", func.count(), func.sum(R.c.cost_nusd), func.sum(R.c.saved_nusd)))
              .where(col == vals.c.v, created >= lo, created < hi).scalar_subquery())
    values = select(vals.c.v, packed).where(vals.c.v.is_not(None))
    nulls = (select(func.count(), func.sum(R.c.cost_nusd), func.sum(R.c.saved_nusd))
             .where(col.is_(None), created >= lo, created < hi)
             .with_hint(R, f"INDEXED BY ix_requests_{col.name}_created_at", "sqlite"))
    params = [{"lo": bound("sqlite", w.start), "hi": bound("sqlite", w.end)}]
    out: dict[str | None, list[int]] = {}
    for value, sums in (await _run_sqlite(engine, values, params))[0]:
        n, cost, saved = (int(x) for x in sums.split())
        if n:
            out[value] = [n, cost, saved]
    n, cost, saved = (await _run_sqlite(engine, nulls, params))[0][0]
    if n:
        out[None] = [int(n), _int(cost), _int(saved)]
    return out


LIST_COLUMNS = (R.c.request_id, R.c.created_at, R.c.endpoint, R.c.requested_model, R.c.provider,
                R.c.deployment, R.c.status, R.c.error_code, R.c.cache, R.c.stream, R.c.cost_nusd,
                R.c.latency_ms, R.c.ttft_ms, R.c.key_id, R.c.user_id, R.c.team_id, R.c.feature)
SEARCHED = (R.c.requested_model, R.c.key_id, R.c.user_id, R.c.team_id, R.c.feature)  # indexed


async def recent(engine: Any, w: Window, q: str | None = None, errors: bool = False,
                 limit: int = 50) -> dict[str, Any]:
    """The newest requests in the window — only errors, and only those matching `q`, if given:
    a request id or its start, or exactly a model, key, user, team or feature. One indexed
    statement per kind of match (each newest first, at most `limit`), merged here."""
    dialect = engine.dialect.name

    def listed(created: Any) -> Any:
        query = select(*LIST_COLUMNS).where(created >= bound(dialect, w.start), created < bound(dialect, w.end))
        return query.where(_is_error()) if errors else query

    base = listed(comparable(R.c.created_at, dialect))
    if not q:
        wanted = [base]
    elif dialect == "sqlite":  # the prefix on the primary key's index (created_at made unindexable)
        prefix = listed(comparable(R.c.created_at, dialect).op("||")(literal_column("''")))
        wanted = [prefix.where(R.c.request_id >= q, R.c.request_id < q + "\U0010ffff"),
                  *[base.where(c == q) for c in SEARCHED]]
    else:
        wanted = [base.where(R.c.request_id.startswith(q, autoescape=True)), *[base.where(c == q) for c in SEARCHED]]
    found: dict[str, dict[str, Any]] = {}
    async with engine.connect() as conn:
        for query in wanted:
            query = query.order_by(R.c.created_at.desc()).limit(limit)
            for r in (await conn.execute(query)).mappings():
                found[r["request_id"]] = {str(k): v for k, v in r.items()}  # names are str subclasses
    data = []
    for item in sorted(found.values(), key=lambda i: (i["created_at"], i["request_id"]), reverse=True)[:limit]:
        created_at = item["created_at"]
        item["created_at"] = _iso(created_at if created_at.tzinfo else created_at.replace(tzinfo=dt.UTC))
        item["cost_usd"] = cost_usd(item.pop("cost_nusd"))
        item["model"] = item.pop("requested_model")
        data.append(item)
    return {**w.describe(), "data": data}
