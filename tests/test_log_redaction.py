"""The request log's parts without a server: the redactor (Presidio, regex-only), the body
renderer (cuts, JSON kept valid), entries from a Call, the writer failing closed, retention's
SQL, the settings, and that nothing imports Presidio unless bodies are redacted."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from faregate.core.call import Call
from faregate.core.errors import GatewayError
from faregate.logs.entry import log_entry, log_row, render, trace_id
from faregate.logs.redact import Redactor, Span, merge
from faregate.logs.settings import RequestLogSettings
from faregate.logs.writer import LogWriter


@pytest.fixture(scope="module")
def redactor() -> Redactor:
    r = Redactor(secrets=["master-secret-0123456789"])
    r.load()
    return r


@pytest.mark.parametrize(("text", "placeholder"), [
    ("write to jane.doe@example.org today", "EMAIL_ADDRESS"),
    ("write to ops@corp.internal today", "EMAIL_ADDRESS"),  # no TLD check
    ("call +1 415-555-0132 now", "PHONE_NUMBER"),
    ("call (212) 555-0199 now", "PHONE_NUMBER"),
    ("call +44 20 7946 0958 now", "PHONE_NUMBER"),
    ("card 4111 1111 1111 1111 ok", "CREDIT_CARD"),
    ("card 5500-0000-0000-0004 ok", "CREDIT_CARD"),
    ("iban DE89370400440532013000 ok", "IBAN_CODE"),
    ("iban GB82 WEST 1234 5698 7654 32 ok", "IBAN_CODE"),
    ("ssn 078-05-1120 ok", "US_SSN"),  # the published sample counts too
    ("ssn 536-22-8726 ok", "US_SSN"),
    ("host 10.1.2.3 ok", "IP_ADDRESS"),
    ("host 2001:db8:85a3::8a2e:370:7334 ok", "IP_ADDRESS"),
    ("key sk-live-9f8e7d6c5b4a39281706abcd ok", "API_KEY"),
    ("key sk-ant-api03-AbCdEfGhIjKlMnOpQrStUv ok", "API_KEY"),
    ("aws AKIAIOSFODNN7EXAMPLE ok", "API_KEY"),
    ("gh ghp_0123456789abcdefghijABCDEFGHIJ012345 ok", "API_KEY"),
    ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U ok", "API_KEY"),
])
def test_each_entity_is_replaced(redactor: Redactor, text: str, placeholder: str) -> None:
    out, n = redactor.redact(text)
    assert f"<{placeholder}>" in out and n >= 1, out
    assert out.split(" ")[0] == text.split(" ")[0] and out.endswith(text.split(" ")[-1])


@pytest.mark.parametrize(("text", "expected"), [
    ("Authorization: Bearer abc.def.ghi12345.", "Authorization: Bearer <API_KEY>."),
    ("api_key=Zm9vYmFyYmF6cXV4MTIzNDU2 done", "api_key=<API_KEY> done"),
    ("my token is 3f9a8b7c6d5e4f3a2b1c0d9e.", "my token is <API_KEY>."),
    ("the master is master-secret-0123456789!", "the master is <SECRET>!"),
])
def test_keys_keep_the_words_around_them(redactor: Redactor, text: str, expected: str) -> None:
    assert redactor(text) == expected


def test_ordinary_text_is_left_alone(redactor: Redactor) -> None:
    text = ("In Q3 2024 revenue grew 12% to 4.5 million (order 42, version 3.11.7, 10:30 am). "
            "The tokenizer splits words; keys on a keyboard are fine.")
    assert redactor.redact(text) == (text, 0)


def test_secrets_are_removed_without_presidio() -> None:
    r = Redactor(secrets=["upstream-key-abcdef", "short"], presidio=False)
    assert r.loaded
    out, n = r.redact("a upstream-key-abcdef b sk-fg-AbCdEfGhIjKlMnOpQrStUv0123 c me@x.org short",
                      secrets=["presented-key-0123"])
    assert out == "a <SECRET> b <API_KEY> c me@x.org short" and n == 2
    assert r.redact("key presented-key-0123", secrets=["presented-key-0123"])[0] == "key <SECRET>"


def test_overlapping_findings_are_merged_surest_first() -> None:
    spans = [Span(4, 15, "PHONE_NUMBER", 0.4), Span(4, 15, "US_SSN", 0.5), Span(20, 25, "X", 1.0)]
    assert merge(spans) == [Span(4, 15, "US_SSN", 0.5), Span(20, 25, "X", 1.0)]
    assert merge([Span(0, 5, "A", 1.0), Span(3, 9, "B", 0.5)]) == [Span(0, 9, "A", 1.0)]


def test_a_finding_across_the_cut_goes_whole(redactor: Redactor) -> None:
    text = "x" * 10 + " jane.doe@example.org tail"
    assert redactor.redact(text, limit=15) == ("x" * 10 + " <EMAIL_ADDRESS>", 1)
    assert redactor.redact(text, limit=11) == ("x" * 10 + " ", 0)


def test_render_keeps_json_valid_and_cuts_strings(redactor: Redactor) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "a" * 300 + " bob@example.com"},
                                       {"role": "user", "content": "second"}],
            "meta": {"bob@example.com": 1}, "vector": [0.5] * 100, "n": 3, "none": None}
    (text, missing), found, truncated = render([body, None], redactor, 256)
    doc = json.loads(text)
    assert missing is None and truncated and found == 1
    assert doc["messages"][0]["content"] == "a" * 251  # 256 characters of strings ("m", "user", …)
    assert doc["messages"][1] == "<1 more items>" and doc["vector"] == "<100 numbers>"
    assert doc["meta"] == {"<EMAIL_ADDRESS>": 1} and doc["n"] == 3 and doc["none"] is None
    (short,), found, truncated = render([{"q": "mail bob@example.com"}], redactor, 1000)
    assert json.loads(short) == {"q": "mail <EMAIL_ADDRESS>"} and found == 1 and not truncated


def _call(**fields: Any) -> Call:
    body = {"model": "gpt", "messages": [{"role": "user", "content": "hi bob@example.com"}]}
    return Call("req-1", "chat", body, {"traceparent": "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"}, **fields)


def test_entry_holds_references_and_rows_render_in_the_writer(redactor: Redactor) -> None:
    call = _call()
    call.response = {"choices": [{"message": {"content": "hello bob@example.com"}}]}
    entry = log_entry(call, bodies=True, sample_rate=1.0)
    assert entry["_body"] is call.body and entry["_response"] is call.response and entry["_keep"]
    assert entry["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736" and entry["status"] == 200
    row = log_row(entry, redactor, 1000)
    assert json.loads(row["request_body"])["messages"][0]["content"] == "hi <EMAIL_ADDRESS>"
    assert "<EMAIL_ADDRESS>" in row["response_body"] and row["redactions"] == 2
    assert row["request_bytes"] == len(json.dumps(call.body, separators=(",", ":")))
    assert not any(k.startswith("_") for k in row)


def test_failed_and_streamed_entries() -> None:
    plain = Redactor(presidio=False)
    call = _call(error=GatewayError(404, "No model 'gpt'.", code="model_not_found"))
    entry = log_entry(call, bodies=True, sample_rate=0.0)  # failures are kept whatever the rate
    row = log_row(entry, plain, 1000)
    assert row["status"] == 404 and json.loads(row["response_body"])["error"]["code"] == "model_not_found"
    stream = _call(stream=iter(()), stream_text=["Hel", "lo"])
    row = log_row(log_entry(stream, bodies=True, sample_rate=1.0), plain, 1000)
    assert json.loads(row["response_body"]) == {"output_text": "Hello"}
    skipped = log_row(log_entry(_call(), bodies=True, sample_rate=0.0), plain, 1000)
    assert skipped["request_body"] is None and skipped["request_bytes"] > 0
    assert log_row(log_entry(_call(), bodies=False, sample_rate=1.0), plain, 1000)["request_body"] is None


def test_trace_id_from_the_tracer_first() -> None:
    class Ctx:
        trace_id = 0xABC

    class Root:
        def get_span_context(self) -> Ctx:
            return Ctx()

    class Trace:
        root = Root()

    assert trace_id(_call(trace=Trace())) == f"{0xABC:032x}"
    assert trace_id(Call("r", "chat", {}, {"traceparent": "00-zz-00f067aa0ba902b7-01"})) is None


def test_writer_fails_closed_when_redaction_breaks(tmp_path: Path) -> None:
    class Broken(Redactor):
        def spans(self, text: str, secrets: Any = ()) -> list[Span]:
            raise RuntimeError("boom")

    writer = LogWriter(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}", Broken(presidio=False), 1000)
    entries = [log_entry(_call(), bodies=True, sample_rate=1.0)]
    (row,) = writer._prepare(entries)
    assert row["request_body"] is None and row["request_bytes"] > 0 and writer.failed_redactions == 1
    assert entries == [{"_row": row}]  # bodies released; a retried write reuses the row
    assert writer._prepare(entries) == [row]


async def test_purge_deletes_only_old_log_rows(tmp_path: Path) -> None:
    from sqlalchemy import func, insert, select

    from faregate.logs.retention import purge
    from faregate.storage.db import create_engine
    from faregate.storage.tables import metadata, request_logs

    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'p.db'}")
    now = dt.datetime.now(dt.UTC)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
        await conn.execute(insert(request_logs), [
            {"request_id": f"r{i}", "created_at": now - dt.timedelta(days=i), "model": "m", "status": 200}
            for i in range(10)])
    assert await purge(engine, now - dt.timedelta(days=4, hours=12), batch=2) == 5
    async with engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(request_logs))).scalar() == 5
    await engine.dispose()


def test_settings() -> None:
    assert RequestLogSettings().mode == "off" and not RequestLogSettings().needs_presidio
    assert RequestLogSettings(mode="full").needs_presidio
    assert not RequestLogSettings(mode="full", redact=False).needs_presidio
    for bad in ({"sample_rate": 1.5}, {"entities": ["NAME"]}, {"retention_days": 0}, {"mode": "all"},
                {"unknown": 1}):
        with pytest.raises(ValidationError):
            RequestLogSettings.model_validate(bad)


def test_config_check_says_when_presidio_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ValidationError, match=r"faregate\[pii\]"):
        RequestLogSettings(mode="full")
    assert RequestLogSettings(mode="full", redact=False).bodies


def test_presidio_is_imported_only_to_redact_bodies() -> None:
    code = """
import sys
from faregate.config.schema import Config
from faregate.http.app import create_app
from faregate.logs.service import request_log
config = Config.model_validate({"request_log": {"mode": "full"}})
log = request_log(config, "sqlite+aiosqlite:////tmp/unused.db")
assert log is not None and log.redactor.presidio
print("presidio_analyzer" in sys.modules, "spacy" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]


def test_redaction_makes_no_network_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """Presidio's stock e-mail check asks tldextract, which fetches the Public Suffix List."""
    import socket

    attempts: list[Any] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        attempts.append(args)  # recorded: tldextract would swallow the error and fall back
        raise OSError("no network in this test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    r = Redactor()
    r.load()
    assert r("mail bob@example.com or ops@corp.internal") == "mail <EMAIL_ADDRESS> or <EMAIL_ADDRESS>"
    assert attempts == []


async def test_postgres_write_search_and_purge(postgres_server: Any) -> None:
    """The SQLAlchemy/asyncpg path end to end: migrations, the writer, search pages, purge."""
    from faregate.logs import search
    from faregate.logs.retention import purge
    from faregate.storage.db import create_engine, upgrade

    url = "postgresql+asyncpg://" + postgres_server.create_database("request_log").split("://", 1)[1]
    engine = create_engine(url)
    await upgrade(engine)
    writer = LogWriter(url, Redactor(presidio=False), 1000)
    now = dt.datetime.now(dt.UTC).timestamp()
    entries = []
    for i in range(5):
        call = _call()
        call.request_id, call.received_at = f"pg-{i}", now - i * 86400
        entries.append(log_entry(call, bodies=i == 0, sample_rate=1.0))
    await writer(entries)
    rows, cursor = await search.search(engine, {"model": "gpt"}, limit=2)
    assert [r["request_id"] for r in rows] == ["pg-0", "pg-1"] and rows[0]["has_request_body"]
    assert rows[0]["cost_usd"] is None  # no ledger row
    rows, cursor = await search.search(engine, {"model": "gpt"}, limit=2, cursor=cursor)
    assert [r["request_id"] for r in rows] == ["pg-2", "pg-3"] and cursor
    one = await search.entry(engine, "pg-0")
    assert one is not None and json.loads(one["request_body"])["model"] == "gpt" and one["ledger"] is None
    assert await purge(engine, dt.datetime.now(dt.UTC) - dt.timedelta(days=2, hours=12)) == 2
    assert len((await search.search(engine, {}, limit=10))[0]) == 3
    await writer.close()
    await engine.dispose()
