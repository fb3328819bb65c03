"""The dashboard's data endpoints (/ui/api/...) against a SQLite ledger of 1M synthetic rows.

Builds a fresh database at the head migration (so with the dashboard's index), fills it in one
SQL statement (a recursive CTE: rows in time order, deterministic pseudo-random values) — by
default all 1M rows inside the dashboard's default window (the last 7 days), its worst case —
starts `faregate serve` on it, logs in through /ui/login like a browser, and times every
endpoint: one warm-up call, then the median and the slowest of --runs calls each.
Target: each endpoint < 1 s; prints PASS/FAIL per endpoint (exit status 1 on any FAIL).

    .venv/bin/python bench/dashboard.py                    # 1M rows over 7 days (~1-2 min)
    .venv/bin/python bench/dashboard.py --rows 200000 --days 30 --keep /tmp/ledger.db
    .venv/bin/python bench/dashboard.py --postgres postgresql://postgres@127.0.0.1:5432/bench
"""

from __future__ import annotations

import argparse
import http.cookiejar
import json
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from procs import Server, free_port

TARGET_S = 1.0
MASTER = "sk-bench-dashboard-master-key"
MODELS = ["gpt-4o", "gpt-4o-mini", "claude-haiku", "claude-sonnet", "llama-70b",
          "text-embedding-3-small", "o3-mini", "local"]
PROVIDERS = ["openai", "anthropic", "azure", "local"]

CONFIG = """
model_list:
  - model_name: gpt-4o-mini
    litellm_params: {model: openai/gpt-4o-mini, api_base: "http://127.0.0.1:9/v1", api_key: unused}
general_settings:
  master_key: os.environ/BENCH_MASTER_KEY
"""


def _pick(expr: str, values: list[str]) -> str:
    whens = " ".join(f"WHEN {i} THEN '{v}'" for i, v in enumerate(values))
    return f"CASE ({expr}) % {len(values)} {whens} END"


def fill(path: Path, rows: int, days: float) -> float:
    """`rows` ledger rows evenly over the last `days` (ending a minute ago); seconds taken."""
    end = time.time() - 60
    start = end - days * 86400
    step = (end - start) / rows
    # u1..u4: independent-looking values in 0..999 from the row number (multiplicative hashes).
    sql = f"""
    WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i < {rows - 1}),
    r AS (SELECT i, {start} + i * {step} AS t,
                 (i * 7919 + 17) % 1000003 % 1000 AS u1, (i * 104729 + 3) % 999983 % 1000 AS u2,
                 (i * 15485863 + 7) % 1000033 % 1000 AS u3, (i * 32452843 + 11) % 999979 % 1000 AS u4
          FROM seq)
    INSERT INTO requests (request_id, created_at, endpoint, client_protocol, key_id, user_id, team_id,
      end_user, feature, conversation_id, requested_model, deployment, provider, attempts, status,
      error_code, cache, stream, input_tokens, cached_input_tokens, cache_write_tokens, output_tokens,
      reasoning_tokens, cost_nusd, saved_nusd, priced, usage_estimated, latency_ms, ttft_ms, tags,
      client_request_id)
    SELECT printf('req-%08d-%03d%03d', i, u1, u2),
      strftime('%Y-%m-%d %H:%M:%S', t, 'unixepoch') || printf('.%06d', CAST(t * 1000000 AS INTEGER) % 1000000),
      'chat', 'openai', printf('key_%04d', (u1 * u2) % 2000), printf('user-%03d', u2 % 300),
      printf('team-%02d', u2 % 25), NULL, printf('feature-%02d', u3 % 15), NULL,
      {_pick('u1', MODELS)}, 'dep-' || (u1 % 12), {_pick('u1 / 8', PROVIDERS)}, 1,
      CASE WHEN u3 < 960 THEN 200 WHEN u3 < 975 THEN 429 WHEN u3 < 990 THEN 502 ELSE 404 END,
      CASE WHEN u3 < 960 THEN NULL WHEN u3 < 975 THEN 'rate_limited' WHEN u3 < 990 THEN 'upstream_error'
           ELSE 'model_not_found' END,
      CASE WHEN u4 < 300 THEN NULL WHEN u4 < 800 THEN 'miss' WHEN u4 < 900 THEN 'hit-exact'
           WHEN u4 < 950 THEN 'hit-semantic' ELSE 'bypass' END,
      u2 % 5 < 2, 100 + u1, 0, 0, 20 + u2, 0,
      CASE WHEN u4 >= 800 AND u4 < 950 THEN 0 ELSE 1000 + u1 * 997 END,
      CASE WHEN u4 >= 800 AND u4 < 950 THEN 1000 + u1 * 997 ELSE 0 END,
      1, 0, 40 + (u1 / 1000.0) * (u1 / 1000.0) * (u1 / 1000.0) * 8000 + u2 / 2.0,
      CASE WHEN u2 % 5 < 2 THEN 15 + (u3 / 1000.0) * (u3 / 1000.0) * 1500 END, NULL, NULL
    FROM r
    """
    t0 = time.perf_counter()
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        with conn:
            conn.execute(sql)
    finally:
        conn.close()
    return time.perf_counter() - t0


def fill_postgres(url: str, rows: int, days: float) -> float:
    """The same rows in PostgreSQL (generate_series); seconds taken."""
    import asyncio

    from sqlalchemy import text

    from faregate.storage.db import create_engine

    end = time.time() - 60
    start = end - days * 86400
    pad = "lpad(({0})::text, {1}, '0')".format
    sql = f"""
    INSERT INTO requests (request_id, created_at, endpoint, client_protocol, key_id, user_id, team_id,
      end_user, feature, conversation_id, requested_model, deployment, provider, attempts, status,
      error_code, cache, stream, input_tokens, cached_input_tokens, cache_write_tokens, output_tokens,
      reasoning_tokens, cost_nusd, saved_nusd, priced, usage_estimated, latency_ms, ttft_ms, tags,
      client_request_id)
    SELECT 'req-' || {pad('i', 8)} || '-' || {pad('u1', 3)} || {pad('u2', 3)},
      to_timestamp({start} + i * {(end - start) / rows}), 'chat', 'openai', 'key_' || {pad('(u1 * u2) % 2000', 4)},
      'user-' || {pad('u2 % 300', 3)}, 'team-' || {pad('u2 % 25', 2)}, NULL, 'feature-' || {pad('u3 % 15', 2)}, NULL,
      {_pick('u1', MODELS)}, 'dep-' || (u1 % 12), {_pick('u1 / 8', PROVIDERS)}, 1,
      CASE WHEN u3 < 960 THEN 200 WHEN u3 < 975 THEN 429 WHEN u3 < 990 THEN 502 ELSE 404 END,
      CASE WHEN u3 < 960 THEN NULL WHEN u3 < 975 THEN 'rate_limited' WHEN u3 < 990 THEN 'upstream_error'
           ELSE 'model_not_found' END,
      CASE WHEN u4 < 300 THEN NULL WHEN u4 < 800 THEN 'miss' WHEN u4 < 900 THEN 'hit-exact'
           WHEN u4 < 950 THEN 'hit-semantic' ELSE 'bypass' END,
      u2 % 5 < 2, 100 + u1, 0, 0, 20 + u2, 0,
      CASE WHEN u4 >= 800 AND u4 < 950 THEN 0 ELSE 1000 + u1 * 997 END,
      CASE WHEN u4 >= 800 AND u4 < 950 THEN 1000 + u1 * 997 ELSE 0 END,
      true, false, 40 + (u1 / 1000.0) ^ 3 * 8000 + u2 / 2.0,
      CASE WHEN u2 % 5 < 2 THEN 15 + (u3 / 1000.0) ^ 2 * 1500 END, NULL, NULL
    FROM generate_series(0::bigint, {rows - 1}) AS i,
         LATERAL (SELECT (i * 7919 + 17) % 1000003 % 1000 AS u1, (i * 104729 + 3) % 999983 % 1000 AS u2,
                         (i * 15485863 + 7) % 1000033 % 1000 AS u3, (i * 32452843 + 11) % 999979 % 1000 AS u4) u
    """

    async def run() -> None:
        engine = create_engine(url.replace("postgresql://", "postgresql+asyncpg://"))
        try:
            async with engine.begin() as conn:
                await conn.execute(text(sql))
            async with engine.connect() as conn:
                await conn.execution_options(isolation_level="AUTOCOMMIT")
                await conn.execute(text("VACUUM ANALYZE requests"))
        finally:
            await engine.dispose()

    t0 = time.perf_counter()
    asyncio.run(run())
    return time.perf_counter() - t0


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return None


def login(base: str) -> urllib.request.OpenerDirector:
    """An opener holding a dashboard session, made the way a browser makes one."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), NoRedirect())
    with opener.open(f"{base}/ui/login", timeout=10) as resp:
        page = resp.read().decode()
    csrf = re.search(r'name="csrf" value="([^"]+)"', page)
    assert csrf, "no CSRF field in the login form"
    body = urllib.parse.urlencode({"csrf": csrf.group(1), "key": MASTER}).encode()
    req = urllib.request.Request(f"{base}/ui/login", data=body, method="POST", headers={
        "content-type": "application/x-www-form-urlencoded", "origin": base})
    try:
        opener.open(req, timeout=10)
    except urllib.error.HTTPError as exc:  # the 303 to /ui
        assert exc.code == 303, f"login answered {exc.code}"
    assert any(c.name == "fg_ui_session" for c in jar), "no session cookie after login"
    return opener


def timed(opener: urllib.request.OpenerDirector, url: str) -> tuple[float, int]:
    t0 = time.perf_counter()
    with opener.open(url, timeout=120) as resp:
        size = len(resp.read())
        assert resp.status == 200, resp.status
    return time.perf_counter() - t0, size


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--days", type=float, default=7.0, help="the rows' time span, ending now (default 7: "
                    "all inside the dashboard's default window)")
    ap.add_argument("--runs", type=int, default=3, help="timed calls per endpoint after one warm-up")
    ap.add_argument("--keep", type=Path, help="copy the filled database here")
    ap.add_argument("--db", type=Path, help="use this already filled database (skips the fill)")
    ap.add_argument("--postgres", metavar="URL", help="an empty PostgreSQL database (postgresql://…) "
                    "instead of SQLite: filled the same way (then VACUUM ANALYZE)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="faregate-bench-dashboard-"))
    db = args.db or tmp / "ledger.db"
    url = args.postgres or f"sqlite:///{db}"
    env = {**os.environ, "FAREGATE_DATABASE_URL": url, "BENCH_MASTER_KEY": MASTER,
           "HOME": str(tmp)}
    env.pop("FAREGATE_CONFIG", None)
    cfg = tmp / "config.yaml"
    cfg.write_text(CONFIG)
    proc = None
    try:
        if args.db is None:
            subprocess.run([sys.executable, "-m", "faregate", "db", "upgrade", "--config", str(cfg)],
                           env=env, check=True, capture_output=True)
            print(f"filling {args.rows:,} ledger rows over {args.days:g} days …", flush=True)
            if args.postgres:
                print(f"  filled in {fill_postgres(args.postgres, args.rows, args.days):.1f} s (PostgreSQL)", flush=True)
            else:
                took = fill(db, args.rows, args.days)
                print(f"  filled in {took:.1f} s; database {db.stat().st_size / 1e6:.0f} MB", flush=True)
                if args.keep:
                    shutil.copy(db, args.keep)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        proc = Server("gateway", [sys.executable, "-m", "faregate", "serve", "--config", str(cfg), "--port",
                                  str(port)], tmp, None, env=env)
        proc.wait_http(port, "/health/ready", 90)
        opener = login(base)
        with opener.open(f"{base}/ui/api/requests?limit=1", timeout=60) as resp:
            some_id = json.loads(resp.read())["data"][0]["request_id"]
        endpoints = [
            "summary?bucket=day", "summary?bucket=hour", "traffic?bucket=day", "traffic?bucket=hour",
            "latency?metric=latency&bucket=day", "latency?metric=latency&bucket=hour",
            "latency?metric=ttft&bucket=hour", "spend?by=model", "spend?by=team", "spend?by=feature",
            "spend?by=key", "spend?by=user", "breakers", "requests", "requests?errors=1",
            "requests?q=gpt-4o", "requests?q=no-such-thing", f"requests/{some_id}",
        ]
        print(f"\n{'endpoint (/ui/api/...)':42s} {'median':>8s} {'slowest':>8s} {'bytes':>8s}  target < {TARGET_S:g} s")
        failed = 0
        for ep in endpoints:
            url = f"{base}/ui/api/{ep}"
            timed(opener, url)  # warm-up
            times, size = [], 0
            for _ in range(args.runs):
                t, size = timed(opener, url)
                times.append(t)
            median, worst = statistics.median(times), max(times)
            ok = median < TARGET_S
            failed += not ok
            print(f"{ep[:42]:42s} {median * 1000:6.0f}ms {worst * 1000:6.0f}ms {size:8d}  {'PASS' if ok else 'FAIL'}",
                  flush=True)
        where = "PostgreSQL" if args.postgres else "SQLite"
        print(f"\n{len(endpoints) - failed}/{len(endpoints)} endpoints PASS ({args.rows:,} rows over {args.days:g} days, {where})")
        return 1 if failed else 0
    finally:
        if proc is not None:
            proc.stop(grace=20)
        shutil.rmtree(tmp, ignore_errors=True)



if __name__ == "__main__":
    sys.exit(main())
