"""The request log against real gateway processes: metadata rows, redacted bodies (nothing
sensitive in the database file's bytes), sampling, streams, search and retention."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import MASTER_KEY, UPSTREAM_KEY, Server, stop
from tests.gateways import create_key, http, launch_gateway

EMAIL, PHONE, CARD = "jane.doe@example.org", "+1 415-555-0132", "4111 1111 1111 1111"
IBAN, SSN, IP = "DE89370400440532013000", "078-05-1120", "10.1.2.3"
API_KEY = "sk-live-9f8e7d6c5b4a39281706abcd"
PII = (f"Mail {EMAIL} or call {PHONE}. Card {CARD}, IBAN {IBAN}, SSN {SSN}, "
       f"my server is {IP} and the key is {API_KEY}.")
SENSITIVE = (EMAIL, PHONE, CARD, IBAN, SSN, IP, API_KEY, MASTER_KEY, UPSTREAM_KEY,
             "415-555-0132", "4111111111111111", "9f8e7d6c5b4a39281706abcd")


def _config(mock: str, request_log: str) -> str:
    return f"""
model_list:
  - model_name: gpt-4o-mini
    litellm_params: {{model: openai/gpt-4o-mini, api_base: "{mock}/v1", api_key: os.environ/TEST_UPSTREAM_KEY}}
  - model_name: claude-haiku
    litellm_params: {{model: anthropic/claude-haiku-4-5, api_base: "{mock}", api_key: os.environ/TEST_UPSTREAM_KEY}}
general_settings:
  master_key: os.environ/TEST_MASTER_KEY
{request_log}
"""


@pytest.fixture(scope="module")
def full(mock_upstream: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    gw = launch_gateway(tmp_path_factory.mktemp("log-full"), _config(mock_upstream.url, """
request_log:
  mode: full
  max_body_chars: 2000
  retention_days: 1
  retention_interval_seconds: 1
"""))
    yield gw
    stop(gw.proc)


@pytest.fixture(scope="module")
def metadata(mock_upstream: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    gw = launch_gateway(tmp_path_factory.mktemp("log-meta"), _config(mock_upstream.url, """
request_log: {mode: metadata}
"""))
    yield gw
    stop(gw.proc)


@pytest.fixture(scope="module")
def sampled(mock_upstream: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    gw = launch_gateway(tmp_path_factory.mktemp("log-sampled"), _config(mock_upstream.url, """
request_log: {mode: full, sample_rate: 0}
"""))
    yield gw
    stop(gw.proc)


def send(gw: Server, content: str = "hello", *, key: str = MASTER_KEY, model: str = "gpt-4o-mini",
         headers: dict[str, str] | None = None, **extra: Any) -> tuple[int, str, Any]:
    body = {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 64, **extra}
    status, hdrs, answer = http("POST", f"{gw.url}/v1/chat/completions", body, key=key, headers=headers)
    return status, hdrs["x-request-id"], answer


def log_row(gw: Server, request_id: str, timeout: float = 10.0) -> dict[str, Any]:
    assert gw.db is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with sqlite3.connect(gw.db) as conn:
            conn.row_factory = sqlite3.Row
            row = conn.execute("SELECT * FROM request_logs WHERE request_id = ?", (request_id,)).fetchone()
        if row is not None:
            return dict(row)
        time.sleep(0.1)
    raise AssertionError(f"no request_logs row for {request_id}")


def db_bytes(gw: Server) -> bytes:
    """The database as it is on disk: the file and its write-ahead log."""
    assert gw.db is not None
    return b"".join(p.read_bytes() for p in (gw.db, Path(f"{gw.db}-wal")) if p.exists())


def test_metadata_mode_keeps_sizes_and_trace_id_but_no_bodies(metadata: Server) -> None:
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    status, rid, _ = send(metadata, PII, headers={"traceparent": f"00-{trace}-00f067aa0ba902b7-01"})
    assert status == 200
    row = log_row(metadata, rid)
    assert row["request_body"] is None and row["response_body"] is None
    assert row["trace_id"] == trace and row["status"] == 200 and row["model"] == "gpt-4o-mini"
    assert row["request_bytes"] > len(PII) and row["response_bytes"] > len(PII)
    assert (row["key_id"], row["redactions"], row["truncated"]) == ("master", 0, 0)
    assert not any(s.encode() in db_bytes(metadata) for s in SENSITIVE)


def test_full_mode_stores_redacted_bodies_and_no_secret(full: Server) -> None:
    vkey = create_key(full, user="alice")
    content = f"{PII} Also {MASTER_KEY}, {vkey['key']} and {UPSTREAM_KEY}."
    status, rid, answer = send(full, content, key=vkey["key"])
    assert status == 200 and EMAIL in answer["choices"][0]["message"]["content"]  # the mock echoes
    row = log_row(full, rid)
    request, response = json.loads(row["request_body"]), json.loads(row["response_body"])
    stored = request["messages"][0]["content"]
    for placeholder in ("<EMAIL_ADDRESS>", "<PHONE_NUMBER>", "<CREDIT_CARD>", "<IBAN_CODE>",
                        "<US_SSN>", "<IP_ADDRESS>", "<API_KEY>"):
        assert placeholder in stored
        assert placeholder in response["choices"][0]["message"]["content"]
    assert stored.startswith("Mail <EMAIL_ADDRESS> or call <PHONE_NUMBER>. Card <CREDIT_CARD>")
    assert row["redactions"] >= 20 and not row["truncated"] and row["key_id"] == vkey["id"]
    assert response["usage"]["prompt_tokens"] > 0  # the rest of the response is kept as is
    raw = db_bytes(full)
    leaked = [s for s in (*SENSITIVE, vkey["key"]) if s.encode() in raw]
    assert not leaked, leaked
    assert b"<EMAIL_ADDRESS>" in raw and b"<CREDIT_CARD>" in raw


def test_stream_is_logged_with_its_output(full: Server) -> None:
    status, rid, _ = send(full, f"stream to {EMAIL}", model="claude-haiku", stream=True)
    assert status == 200
    row = log_row(full, rid)
    response = json.loads(row["response_body"])
    assert response == {"output_text": "Mock reply to: stream to <EMAIL_ADDRESS>"}
    assert json.loads(row["request_body"])["stream"] is True


def test_long_bodies_are_cut_and_stay_json(full: Server) -> None:
    status, rid, _ = send(full, "lorem ipsum " * 400 + EMAIL)
    assert status == 200
    row = log_row(full, rid)
    assert row["truncated"] == 1 and row["request_bytes"] > 4800
    stored = json.loads(row["request_body"])["messages"][0]["content"]
    assert len(stored) < 2000 and EMAIL not in row["request_body"] and EMAIL not in row["response_body"]


def test_sampling_zero_keeps_only_failures(sampled: Server) -> None:
    status, ok_id, _ = send(sampled, PII)
    assert status == 200
    status, failed_id, _ = send(sampled, f"unknown model, {EMAIL}", model="no-such-model")
    assert status == 404
    ok, failed = log_row(sampled, ok_id), log_row(sampled, failed_id)
    assert ok["request_body"] is None and ok["response_body"] is None and ok["request_bytes"] > 0
    assert failed["status"] == 404
    assert json.loads(failed["request_body"])["messages"][0]["content"] == "unknown model, <EMAIL_ADDRESS>"
    assert json.loads(failed["response_body"])["error"]["code"] == "model_not_found"


def search(gw: Server, auth: str = MASTER_KEY, **params: Any) -> tuple[int, Any]:
    status, _, body = http("GET", f"{gw.url}/admin/logs?{urllib.parse.urlencode(params)}", key=auth)
    return status, body


def test_search_filters_join_the_ledger_and_page(full: Server) -> None:
    alice, bob = create_key(full, user="search-alice"), create_key(full, user="search-bob")
    _, a1, _ = send(full, "one", key=alice["key"], headers={"x-faregate-feature": "summarize"})
    _, a2, _ = send(full, "two", key=alice["key"], model="claude-haiku")
    _, b1, _ = send(full, "three", key=bob["key"], headers={"x-faregate-feature": "summarize"})
    _, b2, _ = send(full, "four", key=bob["key"], model="nope")
    for rid in (a1, a2, b1, b2):
        log_row(full, rid)
    time.sleep(0.6)  # the ledger rows (another sink) too

    def ids(**params: Any) -> list[str]:
        status, body = search(full, **params)
        assert status == 200, body
        return [r["request_id"] for r in body["rows"]]

    assert ids(key=alice["id"]) == [a2, a1]  # newest first
    assert ids(user="search-bob") == [b2, b1]
    assert set(ids(feature="summarize")) == {a1, b1}
    assert ids(model="claude-haiku", user="search-alice") == [a2]
    assert ids(status=404, key=bob["id"]) == [b2]
    assert ids(request_id=a1) == [a1]
    now = dt.datetime.now(dt.UTC)
    assert set(ids(user="search-alice", start=(now - dt.timedelta(minutes=5)).isoformat(),
                   end=(now + dt.timedelta(minutes=5)).isoformat())) == {a1, a2}
    assert ids(user="search-alice", start=(now + dt.timedelta(days=1)).date().isoformat()) == []

    _, row = search(full, request_id=a1)
    hit = row["rows"][0]
    assert hit["has_request_body"] and hit["has_response_body"] and hit["latency_ms"] > 0
    assert hit["cost_usd"] is not None and hit["status"] == 200 and hit["stream"] is False
    assert search(full, request_id=b2)[1]["rows"][0]["error_code"] == "model_not_found"

    status, page = search(full, user="search-bob", limit=1)
    assert status == 200 and [r["request_id"] for r in page["rows"]] == [b2] and page["next_cursor"]
    _, page = search(full, user="search-bob", limit=1, cursor=page["next_cursor"])
    assert [r["request_id"] for r in page["rows"]] == [b1] and page["next_cursor"] is None

    status, _, one = http("GET", f"{full.url}/admin/logs/{a1}")
    assert status == 200 and one["ledger"]["request_id"] == a1 and one["ledger"]["status"] == 200
    assert json.loads(one["request_body"])["messages"][0]["content"] == "one"
    assert http("GET", f"{full.url}/admin/logs/nope")[0] == 404
    assert search(full, auth=alice["key"])[0] == 403  # a virtual key: admin_only
    assert search(full, cursor="garbage")[0] == 400
    assert search(full, start="yesterday")[0] == 400


def test_retention_deletes_old_log_rows_but_keeps_the_ledger(full: Server) -> None:
    _, rid, _ = send(full, "recent")
    log_row(full, rid)
    old = "2020-01-01 00:00:00.000000"
    assert full.db is not None
    with sqlite3.connect(full.db) as conn:
        conn.execute("INSERT INTO request_logs (request_id, created_at, model, status, redactions, truncated) "
                     "VALUES ('old-log', ?, 'gpt-4o-mini', 200, 0, 0)", (old,))
        conn.execute("INSERT INTO requests (request_id, created_at, endpoint, client_protocol, requested_model, "
                     "attempts, status, stream, input_tokens, cached_input_tokens, cache_write_tokens, "
                     "output_tokens, reasoning_tokens, cost_nusd, saved_nusd, priced, usage_estimated, latency_ms) "
                     "VALUES ('old-log', ?, 'chat', 'openai', 'gpt-4o-mini', 1, 200, 0, 1, 0, 0, 1, 0, 5, 0, 1, 0, 1.0)",
                     (old,))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with sqlite3.connect(full.db) as conn:
            logs = conn.execute("SELECT count(*) FROM request_logs WHERE request_id = 'old-log'").fetchone()[0]
        if logs == 0:
            break
        time.sleep(0.2)
    with sqlite3.connect(full.db) as conn:
        assert conn.execute("SELECT count(*) FROM request_logs WHERE request_id = 'old-log'").fetchone()[0] == 0
        assert conn.execute("SELECT cost_nusd FROM requests WHERE request_id = 'old-log'").fetchone()[0] == 5
        assert conn.execute("SELECT count(*) FROM request_logs WHERE request_id = ?", (rid,)).fetchone()[0] == 1
