"""The request ledger: one row per request, exact cost, no secrets, nothing lost on SIGTERM."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from decimal import Decimal
from pathlib import Path

import openai
import pytest

from faregate.accounting.ledger import usd
from faregate.storage.urls import HEAD_REVISION
from tests.conftest import MASTER_KEY, UPSTREAM_KEY, Server, free_port, start_process


def rows(db: Path, where: str = "1=1", args: tuple = ()) -> list[dict]:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(f"SELECT * FROM requests WHERE {where}", args)]


def wait_row(db: Path, request_id: str, timeout: float = 5.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = rows(db, "request_id = ?", (request_id,))
        if found:
            return found[0]
        time.sleep(0.1)
    raise AssertionError(f"no ledger row for {request_id}")


@pytest.fixture(scope="module")
def client(gateway: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=MASTER_KEY, max_retries=0, timeout=20)


def test_row_matches_the_response(client: openai.OpenAI, gateway: Server) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "ledger me"}], user="alice",
        extra_headers={"x-faregate-feature": "search", "x-faregate-conversation-id": "conv-1"})
    usage = raw.parse().usage
    row = wait_row(gateway.db, raw.headers["x-request-id"])
    assert row["requested_model"] == "gpt-4o-mini" and row["deployment"] == "gpt-4o-mini#0"
    assert row["provider"] == "openai" and row["status"] == 200 and row["attempts"] == 1
    assert (row["input_tokens"], row["output_tokens"]) == (usage.prompt_tokens, usage.completion_tokens)
    assert usd(row["cost_nusd"]) == Decimal(raw.headers["x-faregate-cost-usd"]) and row["priced"]
    assert (row["end_user"], row["feature"], row["conversation_id"]) == ("alice", "search", "conv-1")
    assert row["key_id"] == "master" and row["stream"] == 0 and row["latency_ms"] > 0


@pytest.mark.parametrize("include_usage", [True, False])
def test_streamed_request_is_costed_with_or_without_client_usage(client: openai.OpenAI, gateway: Server,
                                                                 include_usage: bool) -> None:
    extra = {"stream_options": {"include_usage": True}} if include_usage else {}
    raw = client.chat.completions.with_raw_response.create(
        model="claude-haiku", messages=[{"role": "user", "content": "stream cost"}], stream=True, **extra)
    list(raw.parse())
    row = wait_row(gateway.db, raw.headers["x-request-id"])
    assert row["stream"] == 1 and row["output_tokens"] == 5 and row["input_tokens"] > 0
    assert row["ttft_ms"] is not None and row["ttft_ms"] <= row["latency_ms"]
    assert row["cost_nusd"] > 0 and row["provider"] == "anthropic"


def test_failed_request_has_a_row_with_its_error(client: openai.OpenAI, gateway: Server) -> None:
    with pytest.raises(openai.NotFoundError) as exc:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    row = wait_row(gateway.db, exc.value.response.headers["x-request-id"])
    assert (row["status"], row["error_code"], row["deployment"]) == (404, "model_not_found", None)
    assert row["cost_nusd"] == 0


def test_no_secret_in_the_ledger(gateway: Server) -> None:
    time.sleep(1.2)
    dump = "\n".join(json.dumps(r, default=str) for r in rows(gateway.db))
    assert dump and MASTER_KEY not in dump and UPSTREAM_KEY not in dump


def test_migrations_from_empty_are_idempotent(tmp_path: Path) -> None:
    env_url = f"sqlite:///{tmp_path / 'x.db'}"
    for _ in range(2):
        out = subprocess.run([sys.executable, "-m", "faregate", "db", "upgrade"], capture_output=True, text=True,
                             env={"FAREGATE_DATABASE_URL": env_url, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == f"database at revision {HEAD_REVISION}"
    assert rows(tmp_path / "x.db") == []


def test_sigterm_under_load_loses_no_row(mock_upstream: Server, mock_settings, tmp_path: Path) -> None:
    mock_settings(latency_ms=300)  # requests are in flight when SIGTERM lands
    db = tmp_path / "ledger.db"
    config = tmp_path / "c.yaml"
    config.write_text(f"""
model_list:
  - model_name: m
    litellm_params: {{model: openai/m, api_base: "{mock_upstream.url}/v1", api_key: "{UPSTREAM_KEY}"}}
""")
    port = free_port()
    proc = start_process([sys.executable, "-m", "faregate", "serve", "--config", str(config), "--port", str(port)],
                         f"http://127.0.0.1:{port}/health/ready", tmp_path / "g.log",
                         env={"FAREGATE_DATABASE_URL": f"sqlite:///{db}"})
    answered: list[str] = []
    lock = threading.Lock()

    def one() -> None:
        body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "load"}]}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=body,
                                     headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=20) as resp:
                if resp.status == 200:
                    with lock:
                        answered.append(resp.headers["x-request-id"])
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass  # refused once shutdown began: never answered, so no row is owed

    threads = [threading.Thread(target=one) for _ in range(120)]
    for t in threads:
        t.start()
    time.sleep(0.15)
    proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join()
    assert proc.wait(timeout=30) == 0
    assert len(answered) > 20  # the load was real
    recorded = {r["request_id"] for r in rows(db)}
    assert set(answered) <= recorded


def test_head_revision_constant_matches_the_migrations() -> None:
    from alembic.config import Config as AlembicConfig
    from alembic.script import ScriptDirectory

    from faregate.storage.db import MIGRATIONS
    from faregate.storage.urls import HEAD_REVISION

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(cfg).get_current_head() == HEAD_REVISION


@pytest.mark.parametrize("kind", ["stdlib", "sqlalchemy"])
async def test_rows_read_back_through_sqlalchemy(tmp_path: Path, kind: str) -> None:
    """Both writers (stdlib sqlite3 for the embedded default, SQLAlchemy async as used for
    PostgreSQL) store what the SQLAlchemy side (admin queries) reads."""
    import datetime as dt

    from sqlalchemy import select

    from faregate.accounting.ledger import LedgerWriter, ledger_row, ledger_writer
    from faregate.accounting.pricing import Tokens
    from faregate.core.call import Call
    from faregate.storage.db import create_engine, upgrade
    from faregate.storage.tables import requests

    url = f"sqlite+aiosqlite:///{tmp_path / 'l.db'}"
    engine = create_engine(url)
    await upgrade(engine)
    call = Call(request_id="rid-1", endpoint="chat", body={"model": "m", "user": "u"}, headers={})
    call.usage = {"prompt_tokens": 3, "completion_tokens": 2}
    call.tokens = Tokens.from_usage(call.usage)
    call.body["metadata"] = {"team": "search"}
    writer = ledger_writer(url) if kind == "stdlib" else LedgerWriter(url)
    assert type(writer).__name__ == ("SQLiteLedgerWriter" if kind == "stdlib" else "LedgerWriter")
    await writer([ledger_row(call)])
    await writer.close()
    async with engine.connect() as conn:
        row = (await conn.execute(select(requests))).mappings().one()
    await engine.dispose()
    assert (row["request_id"], row["end_user"], row["input_tokens"], row["output_tokens"]) == ("rid-1", "u", 3, 2)
    assert json.loads(row["tags"]) == {"team": "search"}
    assert abs(row["created_at"].replace(tzinfo=dt.UTC).timestamp() - call.received_at) < 0.002  # ms precision


async def test_stdlib_writer_stores_sqlalchemys_datetime_text(tmp_path: Path) -> None:
    """A row stamped exactly at a period's start is inside `created_at >= start` (budgets, spend
    and alerts compare with bound datetimes; a shorter text form would sort before them)."""
    import datetime as dt

    from sqlalchemy import select

    from faregate.accounting.ledger import ledger_row, ledger_writer
    from faregate.core.call import Call
    from faregate.storage.db import create_engine, upgrade
    from faregate.storage.tables import requests

    url = f"sqlite+aiosqlite:///{tmp_path / 'l.db'}"
    engine = create_engine(url)
    await upgrade(engine)
    midnight = dt.datetime(2026, 11, 23, tzinfo=dt.UTC)
    rows = []
    for rid, at in (("at-start", midnight.timestamp()), ("micro", midnight.timestamp() + 0.000123),
                    ("before", midnight.timestamp() - 0.001)):
        call = Call(request_id=rid, endpoint="chat", body={"model": "m"}, headers={}, received_at=at)
        rows.append(ledger_row(call))
    writer = ledger_writer(url)
    await writer(rows)
    await writer.close()
    async with engine.connect() as conn:
        found = (await conn.execute(select(requests.c.request_id, requests.c.created_at)
                                    .where(requests.c.created_at >= midnight))).all()
    await engine.dispose()
    assert sorted(r[0] for r in found) == ["at-start", "micro"]
    assert {r[0]: r[1].microsecond for r in found} == {"at-start": 0, "micro": 123}
