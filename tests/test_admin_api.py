"""The admin API (/admin): keys, teams and users round trips, secrets shown once and stored
nowhere, master-key-only auth, 400s naming the field, spend reports and ledger rows — over HTTP
against real gateway processes, on SQLite and on PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from faregate.storage.tables import requests as requests_table
from tests.conftest import MASTER_KEY, UPSTREAM_KEY, Server, free_port, start_process, stop


def call(url: str, method: str, path: str, body: Any = None, key: str | None = MASTER_KEY,
         raw: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    hdrs = {"content-type": "application/json", **(headers or {})}
    if key is not None:
        hdrs["authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url + path, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def ok(url: str, method: str, path: str, body: Any = None, status: int = 200) -> Any:
    got, doc = call(url, method, path, body)
    assert got == status, doc
    return doc


def chat(url: str, key: str, model: str = "gpt-4o-mini", **headers: str) -> tuple[int, str]:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]}).encode()
    req = urllib.request.Request(f"{url}/v1/chat/completions", data=body, method="POST",
                                 headers={"content-type": "application/json", "authorization": f"Bearer {key}", **headers})
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return resp.status, resp.headers["x-request-id"]
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("x-request-id", "")


def wait_for(check: Any, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


# -- gateways with a ledger of their own (SQLite and PostgreSQL) ---------------------------------


def ledger_config(mock: str, master: bool = True, extra: str = "") -> str:
    return f"""
model_list:
  - model_name: gpt-4o-mini
    litellm_params: {{model: openai/gpt-4o-mini, api_base: "{mock}/v1", api_key: "{UPSTREAM_KEY}"}}
general_settings:
  {"master_key: " + MASTER_KEY if master else "{}"}
{extra}
"""


def start_gateway(tmp: Path, mock: str, database_url: str, master: bool = True, extra: str = "",
                  redis_url: str = "") -> Server:
    tmp.mkdir(parents=True, exist_ok=True)
    config = tmp / "config.yaml"
    config.write_text(ledger_config(mock, master, extra))
    port = free_port()
    env = {"FAREGATE_DATABASE_URL": database_url, "FAREGATE_MASTER_KEY": "", "LITELLM_MASTER_KEY": "",
           "FAREGATE_SECRET_KEY": "", "FAREGATE_REDIS_URL": redis_url, "REDIS_URL": ""}
    proc = start_process([sys.executable, "-m", "faregate", "serve", "--config", str(config), "--port", str(port)],
                         f"http://127.0.0.1:{port}/health/ready", tmp / "gateway.log", env=env, timeout=60)
    return Server(f"http://127.0.0.1:{port}", proc, tmp / "gateway.log")


class Ledger:
    """A gateway process and a way to put ledger rows into its database directly."""

    def __init__(self, server: Server, kind: str, db: Path | None = None, pg: Any = None, name: str = "") -> None:
        self.server, self.kind, self.db, self.pg, self.name = server, kind, db, pg, name

    def insert(self, rows: list[dict[str, Any]]) -> None:
        full = [ledger_row(**r) for r in rows]
        names = list(full[0])
        if self.kind == "sqlite":
            sql = f"INSERT INTO requests ({', '.join(names)}) VALUES ({', '.join(':' + n for n in names)})"
            with sqlite3.connect(self.db) as conn:
                conn.executemany(sql, full)
            return
        values = ", ".join("(" + ", ".join(pg_literal(r[n]) for n in names) + ")" for r in full)
        self.pg.psql(f"INSERT INTO requests ({', '.join(names)}) VALUES {values}", database=self.name)

    def dump(self, table: str) -> str:
        if self.kind == "sqlite":
            with sqlite3.connect(self.db) as conn:
                return json.dumps(conn.execute(f"SELECT * FROM {table}").fetchall(), default=str)
        return self.pg.psql(f"SELECT row_to_json(t) FROM {table} t", database=self.name)


def pg_literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def ledger_row(**values: Any) -> dict[str, Any]:
    """A full `requests` row: every NOT NULL column filled, `created_at` as UTC text
    ('YYYY-MM-DD HH:MM:SS.fff', as the SQLite ledger writer stores it)."""
    row: dict[str, Any] = {}
    for col in requests_table.columns:
        default: Any = None
        if not col.nullable:
            default = {int: 0, bool: False, float: 1.0}.get(col.type.python_type, "x")
        row[col.name] = default
    row.update(request_id=f"req_{uuid.uuid4().hex}", endpoint="chat", client_protocol="openai", attempts=1,
               status=200, priced=True, created_at="2025-01-01 00:00:00.000")
    row.update(values)
    return row


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def ledger(request: pytest.FixtureRequest, mock_upstream: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ledger]:
    tmp = tmp_path_factory.mktemp(f"admin-{request.param}")
    if request.param == "sqlite":
        db = tmp / "ledger.db"
        server = start_gateway(tmp, mock_upstream.url, f"sqlite:///{db}")
        found = Ledger(server, "sqlite", db=db)
    else:
        pg = request.getfixturevalue("postgres_server")
        name = f"admin_{uuid.uuid4().hex[:12]}"
        server = start_gateway(tmp, mock_upstream.url, pg.create_database(name))
        found = Ledger(server, "postgres", pg=pg, name=name)
    yield found
    stop(server.proc)


# -- keys ----------------------------------------------------------------------------------------


def test_key_round_trip(ledger: Ledger) -> None:
    url = ledger.server.url
    created = ok(url, "POST", "/admin/keys", {
        "name": "ci", "user": "alice", "team": "ml-platform", "models": ["gpt-4o-mini"], "rpm": 60, "tpm": 1000,
        "max_parallel": 2, "budget_usd": 12.123456789, "budget_period": "month", "expires_at": "2030-01-01T02:00:00+02:00",
        "metadata": {"owner": "ops", "ratio": 0.5}, "conversation_max_requests": 20,
        "conversation_max_cost_usd": "0.000000001"}, status=201)
    key_id, secret = created["id"], created["key"]
    assert secret.startswith("sk-fg-") and key_id.startswith("key_") and created["key_hint"] == f"sk-fg-…{secret[-4:]}"
    assert created["budget_usd"] == "12.123456789" and created["conversation_max_cost_usd"] == "0.000000001"
    assert created["expires_at"] == "2030-01-01T00:00:00Z" and created["metadata"] == {"owner": "ops", "ratio": 0.5}
    assert (created["user"], created["team"], created["revoked"], created["spend_usd"]) == ("alice", "ml-platform", False, "0.000000000")
    shown = ok(url, "GET", f"/admin/keys/{key_id}")
    assert shown == {k: v for k, v in created.items() if k != "key"}
    assert "key_hash" not in shown and secret not in json.dumps(shown)

    patched = ok(url, "PATCH", f"/admin/keys/{key_id}", {"rpm": None, "budget_usd": None, "models": None, "name": "ci-2"})
    assert (patched["rpm"], patched["budget_usd"], patched["models"], patched["name"]) == (None, None, None, "ci-2")
    assert patched["tpm"] == 1000 and patched["budget_period"] == "month" and patched["user"] == "alice"
    assert patched["updated_at"] > created["updated_at"] and patched["created_at"] == created["created_at"]
    assert ok(url, "PATCH", f"/admin/keys/{key_id}", {}) == patched  # nothing sent, nothing changed

    assert key_id in [k["id"] for k in ok(url, "GET", "/admin/keys?user=alice")["data"]]
    assert key_id not in [k["id"] for k in ok(url, "GET", "/admin/keys?team=other")["data"]]

    rotated = ok(url, "POST", f"/admin/keys/{key_id}/rotate")
    assert rotated["id"] == key_id and rotated["key"] != secret and rotated["key"].startswith("sk-fg-")
    after = ok(url, "GET", f"/admin/keys/{key_id}")
    assert after["tpm"] == 1000 and after["key_hint"] == rotated["key_hint"]

    revoked = ok(url, "DELETE", f"/admin/keys/{key_id}")
    assert revoked["revoked"] is True and revoked["revoked_at"] is not None
    assert key_id not in [k["id"] for k in ok(url, "GET", "/admin/keys")["data"]]
    assert key_id in [k["id"] for k in ok(url, "GET", "/admin/keys?include_revoked=true")["data"]]
    assert ok(url, "DELETE", f"/admin/keys/{key_id}")["revoked_at"] == revoked["revoked_at"]  # idempotent
    status, doc = call(url, "POST", f"/admin/keys/{key_id}/rotate")
    assert (status, doc["error"]["code"]) == (409, "key_revoked")

    stored = ledger.dump("keys")
    for s in (secret, rotated["key"]):
        assert s not in stored and hashlib.sha256(s.encode()).hexdigest() not in stored
    assert "12123456789" not in stored  # the PATCH cleared the budget (nano-dollars in the row)


def test_budget_is_stored_in_exact_nano_dollars(ledger: Ledger) -> None:
    url = ledger.server.url
    for given, shown in ((12.5, "12.5"), ("9223372036.854775807", "9223372036.854775807"), (0, "0"),
                         ("100", "100"), (0.1, "0.1")):
        key = ok(url, "POST", "/admin/keys", {"budget_usd": given}, status=201)
        assert key["budget_usd"] == shown
        nusd = int(Decimal(shown) * 1_000_000_000)
        assert str(nusd) in ledger.dump("keys")


def test_teams_and_users_round_trip(ledger: Ledger) -> None:
    url = ledger.server.url
    for plural, kind in (("teams", "team"), ("users", "user")):
        sid = f"ml-platform-{uuid.uuid4().hex[:6]}"
        made = ok(url, "POST", f"/admin/{plural}", {"id": sid, "name": "ML", "budget_usd": "100.50", "budget_period": "week",
                                                    "rpm": 10, "models": ["gpt-4o-mini"], "metadata": {"cc": 42}}, status=201)
        assert (made["id"], made["budget_usd"], made["rpm"], made["spend_usd"]) == (sid, "100.5", 10, "0.000000000")
        status, doc = call(url, "POST", f"/admin/{plural}", {"id": sid})
        assert (status, doc["error"]["code"], doc["error"]["param"]) == (409, f"{kind}_exists", "id")
        assert ok(url, "GET", f"/admin/{plural}/{sid}") == made
        assert sid in [t["id"] for t in ok(url, "GET", f"/admin/{plural}")["data"]]
        patched = ok(url, "PATCH", f"/admin/{plural}/{sid}", {"rpm": None, "budget_usd": None, "tpm": 5})
        assert (patched["rpm"], patched["budget_usd"], patched["tpm"], patched["name"]) == (None, None, 5, "ML")
        assert ok(url, "DELETE", f"/admin/{plural}/{sid}")["id"] == sid
        for method in ("GET", "PATCH", "DELETE"):
            status, doc = call(url, method, f"/admin/{plural}/{sid}", {} if method == "PATCH" else None)
            assert (status, doc["error"]["code"]) == (404, f"{kind}_not_found")


AWKWARD = [  # (method, path, body, status): odd but possible input, on SQLite and PostgreSQL
    ("GET", "/admin/keys/a%00b", None, 400), ("GET", "/admin/teams/a%00b", None, 400),
    ("GET", "/admin/requests/a%00b", None, 400), ("GET", "/admin/keys?user=a%00b", None, 400),
    ("POST", "/admin/keys", {"name": "a\x00b"}, 400), ("POST", "/admin/keys", {"models": ["a\x00"]}, 400),
    ("POST", "/admin/keys", {"expires_at": "9999-12-31T23:00:00-05:00"}, 400),
    ("POST", "/admin/keys", {"expires_at": "0001-01-01T00:00:00+05:00"}, 400),
    ("GET", "/admin/spend?end=9999-12-31", None, 400), ("GET", "/admin/spend?start=9999-12-31T23:00:00-05:00", None, 400),
    ("GET", "/admin/keys/" + "k" * 5000, None, 404), ("GET", "/admin/users/" + "u" * 5000, None, 404),
    ("POST", "/admin/teams", {"id": "t" * 129}, 400), ("POST", "/admin/keys", {"rpm": 2**31}, 400),
    ("POST", "/admin/keys", {"metadata": {"n": 10**30}}, 400), ("POST", "/admin/keys", {"metadata": {"n": 1e400}}, 400),
    ("POST", "/admin/keys", {"metadata": {"deep": [[[1.5]]], "big": 1e308, "u": "é✓", "nul": "a\x00b", "i": 2**63}}, 201),
    ("POST", "/admin/keys", {"name": "ünïcode ✓", "user": "alice@example.com", "expires_at": "2030-01-01"}, 201),
]


@pytest.mark.parametrize("method,path,body,status", AWKWARD)
def test_awkward_input_is_never_a_500(ledger: Ledger, method: str, path: str, body: Any, status: int) -> None:
    raw = None
    if isinstance(body, dict) and body.get("metadata", {}).get("n") == 1e400:
        raw, body = b'{"metadata": {"n": 1e400}}', None
    got, doc = call(ledger.server.url, method, path, body, raw=raw)
    assert got == status, doc
    if status == 201:
        shown = ok(ledger.server.url, "GET", f"/admin/keys/{doc['id']}")
        assert {k: shown[k] for k in body} == {k: doc[k] for k in body}
        if "metadata" in body:
            assert shown["metadata"] == body["metadata"]


@pytest.mark.parametrize("method,path", [("GET", "/admin/keys/key_nope"), ("PATCH", "/admin/keys/key_nope"),
                                         ("DELETE", "/admin/keys/key_nope"), ("POST", "/admin/keys/key_nope/rotate")])
def test_unknown_key_is_404(gateway: Server, method: str, path: str) -> None:
    status, doc = call(gateway.url, method, path, {} if method == "PATCH" else None)
    assert (status, doc["error"]["code"]) == (404, "key_not_found")


@pytest.mark.parametrize("body,param", [
    ({"rpm": "5"}, "rpm"), ({"rpm": 0}, "rpm"), ({"rpm": 1.5}, "rpm"), ({"tpm": True}, "tpm"),
    ({"budget_usd": -1}, "budget_usd"), ({"budget_usd": "1.0000000001"}, "budget_usd"),
    ({"budget_usd": 0.0000000001}, "budget_usd"), ({"budget_usd": "lots"}, "budget_usd"),
    ({"budget_usd": "1e30"}, "budget_usd"), ({"conversation_max_cost_usd": "-0.5"}, "conversation_max_cost_usd"),
    ({"budget_period": "year"}, "budget_period"), ({"models": "gpt-4o-mini"}, "models"), ({"models": [1]}, "models.0"),
    ({"expires_at": "soon"}, "expires_at"), ({"metadata": [1]}, "metadata"), ({"user": "a/b"}, "user"),
    ({"name": "x" * 300}, "name"), ({"budget": 5}, "budget"), ({"key_hash": "abc"}, "key_hash"), ({"id": "mine"}, "id"),
])
def test_bad_key_fields_are_400_naming_the_field(gateway: Server, body: dict, param: str) -> None:
    for method, path in (("POST", "/admin/keys"), ("PATCH", "/admin/keys/key_whatever")):
        status, doc = call(gateway.url, method, path, body)
        assert status == 400, (method, body, doc)
        assert doc["error"]["param"] == param and doc["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("raw,code", [(b"{", "invalid_json"), (b"[1, 2]", "invalid_json"), (b"{\"rpm\": NaN}", "invalid_json"),
                                      (b"\xff\xfe", "invalid_json"), (b"[" * 50000 + b"]" * 50000, "invalid_json")])
def test_bad_bodies_are_400(gateway: Server, raw: bytes, code: str) -> None:
    status, doc = call(gateway.url, "POST", "/admin/keys", raw=raw)
    assert (status, doc["error"]["code"]) == (400, code)


def test_bad_subject_and_query_input(gateway: Server) -> None:
    for body, param in (({}, "id"), ({"id": ""}, "id"), ({"id": "a b"}, "id"), ({"id": "t", "extra": 1}, "extra")):
        status, doc = call(gateway.url, "POST", "/admin/teams", body)
        assert (status, doc["error"]["param"]) == (400, param), doc
    for query, param in (("include_revoked=maybe", "include_revoked"),):
        status, doc = call(gateway.url, "GET", f"/admin/keys?{query}")
        assert (status, doc["error"]["param"]) == (400, param)
    for query, param in (("group_by=planet", "group_by"), ("start=yesterday", "start"), ("end=2025-13-01", "end"),
                         ("start=2025-02-01&end=2025-01-01", "end")):
        status, doc = call(gateway.url, "GET", f"/admin/spend?{query}")
        assert (status, doc["error"]["param"]) == (400, param), (query, doc)
    status, doc = call(gateway.url, "POST", "/admin/keys", raw=b"{" + b" " * 300_000 + b"}")
    assert status == 413


# -- auth -----------------------------------------------------------------------------------------

ROUTES = [("GET", "/admin/keys"), ("POST", "/admin/keys"), ("GET", "/admin/keys/k"), ("PATCH", "/admin/keys/k"),
          ("DELETE", "/admin/keys/k"), ("POST", "/admin/keys/k/rotate"), ("GET", "/admin/teams"), ("POST", "/admin/teams"),
          ("GET", "/admin/users/u"), ("PATCH", "/admin/users/u"), ("DELETE", "/admin/teams/t"), ("GET", "/admin/spend"),
          ("GET", "/admin/requests/r")]


def test_admin_routes_need_the_master_key(gateway: Server) -> None:
    virtual = ok(gateway.url, "POST", "/admin/keys", {"name": "not-admin"}, status=201)["key"]
    for method, path in ROUTES:
        body = {} if method in ("POST", "PATCH") else None
        status, doc = call(gateway.url, method, path, body, key=None)
        assert (status, doc["error"]["code"]) == (401, "invalid_api_key"), path
        status, doc = call(gateway.url, method, path, body, key="sk-fg-not-a-real-key")
        assert status == 401, path
        status, doc = call(gateway.url, method, path, body, key=virtual)
        assert status == 403 and doc["error"]["type"] == "permission_error" and doc["error"]["code"] == "admin_only", path
    status, _ = call(gateway.url, "GET", "/admin/keys", key=None, headers={"x-api-key": MASTER_KEY})
    assert status == 200


def test_admin_is_disabled_without_a_master_key(mock_upstream: Server, tmp_path: Path) -> None:
    server = start_gateway(tmp_path, mock_upstream.url, f"sqlite:///{tmp_path / 'open.db'}", master=False)
    try:
        for key in (None, "anything"):
            for method, path in (("GET", "/admin/keys"), ("POST", "/admin/keys"), ("GET", "/admin/spend")):
                status, doc = call(server.url, method, path, {} if method == "POST" else None, key=key)
                assert status == 403 and doc["error"]["code"] == "admin_disabled"
                assert "general_settings.master_key" in doc["error"]["message"]
                assert "FAREGATE_MASTER_KEY" in doc["error"]["message"]
    finally:
        stop(server.proc)


def test_other_replicas_hear_of_changes_at_once(mock_upstream: Server, redis_server: Any, tmp_path: Path) -> None:
    """Two replicas on one database and Redis; polling set to 5 minutes, so only the admin API's
    pub/sub announcement can make replica B honour (and then refuse) a key created on A."""
    db = f"sqlite:///{tmp_path / 'shared.db'}"
    slow_poll = "limits:\n  key_refresh_seconds: 300"
    a = start_gateway(tmp_path / "a", mock_upstream.url, db, extra=slow_poll, redis_url=redis_server.url)
    b = start_gateway(tmp_path / "b", mock_upstream.url, db, extra=slow_poll, redis_url=redis_server.url)
    try:
        created = ok(a.url, "POST", "/admin/keys", {"name": "replicated"}, status=201)

        def models(server: Server, key: str) -> int:
            return call(server.url, "GET", "/v1/models", key=key)[0]

        assert wait_for(lambda: models(b, created["key"]) == 200, timeout=3)
        rotated = ok(a.url, "POST", f"/admin/keys/{created['id']}/rotate")
        assert wait_for(lambda: models(b, created["key"]) == 401, timeout=3)
        assert models(b, rotated["key"]) == 200
        ok(a.url, "DELETE", f"/admin/keys/{created['id']}")
        assert wait_for(lambda: models(b, rotated["key"]) == 401, timeout=3)
    finally:
        stop(a.proc)
        stop(b.proc)


# -- the secret: shown once, works on the hot path, stored and logged nowhere ----------------------


def test_secret_is_shown_once_and_stored_nowhere(gateway: Server) -> None:
    url = gateway.url
    created = ok(url, "POST", "/admin/keys", {"name": "hot-path", "models": ["gpt-4o-mini"]}, status=201)
    key_id, secret = created["id"], created["key"]
    assert chat(url, secret)[0] == 200  # the new key works at once
    assert chat(url, secret, "claude-haiku")[0] == 403  # outside its models
    answers = [ok(url, "GET", f"/admin/keys/{key_id}"), ok(url, "GET", "/admin/keys"),
               ok(url, "PATCH", f"/admin/keys/{key_id}", {"rpm": 100})]
    rotated = ok(url, "POST", f"/admin/keys/{key_id}/rotate")
    new = rotated["key"]
    assert chat(url, secret)[0] == 401 and chat(url, new)[0] == 200  # old secret refused at once
    answers += [ok(url, "GET", f"/admin/keys/{key_id}"), ok(url, "DELETE", f"/admin/keys/{key_id}"),
                ok(url, "GET", "/admin/keys?include_revoked=true")]
    assert chat(url, new)[0] == 401  # revoked: refused at once
    text = json.dumps(answers)
    assert secret not in text and new not in text and key_id in text

    with sqlite3.connect(gateway.db) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        dump = json.dumps({t: conn.execute(f"SELECT * FROM {t}").fetchall() for t in tables}, default=str)
    assert "keys" in tables and key_id in dump
    log = gateway.output()
    for s in (secret, new):
        digest = hashlib.sha256(s.encode()).hexdigest()
        assert s not in dump and digest not in dump
        assert s not in log and digest not in log and s[6:] not in log
    assert MASTER_KEY not in log


def test_key_spend_comes_from_the_ledger(gateway: Server) -> None:
    created = ok(gateway.url, "POST", "/admin/keys", {"name": "spender"}, status=201)
    status, request_id = chat(gateway.url, created["key"])
    assert status == 200

    def spent() -> str | None:
        value = ok(gateway.url, "GET", f"/admin/keys/{created['id']}")["spend_usd"]
        return value if value != "0.000000000" else None

    spend = wait_for(spent)
    assert spend and Decimal(spend) > 0
    row = ok(gateway.url, "GET", f"/admin/requests/{request_id}")
    assert row["key_id"] == created["id"] and row["cost_usd"] == spend and row["request_id"] == request_id
    assert "cost_nusd" not in row and created["key"] not in json.dumps(row)


# -- spend and ledger rows --------------------------------------------------------------------------

ROWS = [  # key, user, team, end_user, feature, model, deployment, created_at, in, out, cost (nano-USD)
    ("key_a", "alice", "ml", "u1", "search", "gpt", "gpt#0", "2025-01-01 10:00:00.000", 10, 5, 1_000_000_001),
    ("key_a", "alice", "ml", "u1", "search", "gpt", "gpt#0", "2025-01-01 23:59:59.999", 20, 10, 2),
    ("key_b", "bob", "ml", "u2", "chat", "claude", "claude#0", "2025-01-02 00:00:00.000", 1, 1, 5_000_000_000),
    ("key_b", "bob", None, None, None, "claude", None, "2025-01-03 12:00:00.000", 0, 0, 0),
    ("key_c", None, None, None, None, "big", "big#0", "2025-01-02 12:00:00.000", 7, 3, 123_456_789_012_345_678),
]


@pytest.fixture(scope="module")
def spend_rows(ledger: Ledger) -> list[str]:
    ids = []
    rows = []
    for key, user, team, end_user, feature, model, dep, at, i, o, cost in ROWS:
        ids.append(f"req_{uuid.uuid4().hex}")
        rows.append({"request_id": ids[-1], "key_id": key, "user_id": user, "team_id": team, "end_user": end_user,
                     "feature": feature, "requested_model": model, "deployment": dep, "created_at": at,
                     "input_tokens": i, "output_tokens": o, "cost_nusd": cost, "status": 404 if dep is None else 200})
    ledger.insert(rows)
    return ids


def report(ledger: Ledger, query: str) -> list[tuple]:
    doc = ok(ledger.server.url, "GET", f"/admin/spend?{query}")
    return [(r["group"], r["requests"], r["input_tokens"], r["output_tokens"], r["cost_usd"]) for r in doc["rows"]]


def test_spend_grouped(ledger: Ledger, spend_rows: list[str]) -> None:
    big = "123456789.012345678"
    assert report(ledger, "group_by=key") == [("key_c", 1, 7, 3, big), ("key_b", 2, 1, 1, "5.000000000"),
                                              ("key_a", 2, 30, 15, "1.000000003")]
    assert report(ledger, "") == report(ledger, "group_by=key")
    assert report(ledger, "group_by=user") == [(None, 1, 7, 3, big), ("bob", 2, 1, 1, "5.000000000"),
                                               ("alice", 2, 30, 15, "1.000000003")]
    assert report(ledger, "group_by=team") == [(None, 2, 7, 3, big), ("ml", 3, 31, 16, "6.000000003")]
    assert report(ledger, "group_by=end_user")[1:] == [("u2", 1, 1, 1, "5.000000000"), ("u1", 2, 30, 15, "1.000000003")]
    assert report(ledger, "group_by=feature")[1:] == [("chat", 1, 1, 1, "5.000000000"), ("search", 2, 30, 15, "1.000000003")]
    assert report(ledger, "group_by=model") == [("big", 1, 7, 3, big), ("claude", 2, 1, 1, "5.000000000"),
                                                ("gpt", 2, 30, 15, "1.000000003")]
    assert report(ledger, "group_by=deployment") == [("big#0", 1, 7, 3, big), ("claude#0", 1, 1, 1, "5.000000000"),
                                                     ("gpt#0", 2, 30, 15, "1.000000003"), (None, 1, 0, 0, "0.000000000")]
    assert report(ledger, "group_by=day") == [("2025-01-02", 2, 8, 4, "123456794.012345678"),
                                              ("2025-01-01", 2, 30, 15, "1.000000003"), ("2025-01-03", 1, 0, 0, "0.000000000")]


def test_spend_between_dates(ledger: Ledger, spend_rows: list[str]) -> None:
    # a date as `end` includes that whole day; a datetime `end` is exclusive; zones are honoured
    assert report(ledger, "group_by=day&start=2025-01-02&end=2025-01-02") == [("2025-01-02", 2, 8, 4, "123456794.012345678")]
    assert report(ledger, "group_by=key&start=2025-01-01T23:00:00Z&end=2025-01-02T00:00:00Z") == [("key_a", 1, 20, 10, "0.000000002")]
    assert report(ledger, "group_by=key&start=2025-01-02T01:00:00%2B02:00&end=2025-01-02T00:00:00.001") == [
        ("key_b", 1, 1, 1, "5.000000000"), ("key_a", 1, 20, 10, "0.000000002")]
    assert report(ledger, "group_by=day&start=2025-01-03") == [("2025-01-03", 1, 0, 0, "0.000000000")]
    assert report(ledger, "group_by=day&end=2024-12-31") == []


def test_ledger_row_by_request_id(ledger: Ledger, spend_rows: list[str]) -> None:
    row = ok(ledger.server.url, "GET", f"/admin/requests/{spend_rows[4]}")
    assert row["cost_usd"] == "123456789.012345678" and "cost_nusd" not in row
    assert (row["key_id"], row["requested_model"], row["input_tokens"], row["stream"]) == ("key_c", "big", 7, False)
    assert row["created_at"] == "2025-01-02T12:00:00Z" and row["priced"] is True
    status, doc = call(ledger.server.url, "GET", "/admin/requests/req_missing")
    assert (status, doc["error"]["code"]) == (404, "request_not_found")


def test_ledger_row_of_a_real_request(gateway: Server) -> None:
    status, request_id = chat(gateway.url, MASTER_KEY, **{"x-faregate-feature": "admin-row"})
    assert status == 200
    row = wait_for(lambda: call(gateway.url, "GET", f"/admin/requests/{request_id}")[1].get("request_id"))
    assert row == request_id
    doc = ok(gateway.url, "GET", f"/admin/requests/{request_id}")
    assert doc["feature"] == "admin-row" and doc["key_id"] == "master" and Decimal(doc["cost_usd"]) > 0
    assert MASTER_KEY not in json.dumps(doc) and UPSTREAM_KEY not in json.dumps(doc)


# -- OpenAPI -----------------------------------------------------------------------------------------


def test_openapi_lists_the_admin_api(gateway: Server) -> None:
    status, doc = call(gateway.url, "GET", "/openapi.json", key=None)
    assert status == 200
    paths = doc["paths"]
    for path, methods in {"/admin/keys": {"get", "post"}, "/admin/keys/{id}": {"get", "patch", "delete"},
                          "/admin/keys/{id}/rotate": {"post"}, "/admin/teams": {"get", "post"},
                          "/admin/teams/{id}": {"get", "patch", "delete"}, "/admin/users": {"get", "post"},
                          "/admin/users/{id}": {"get", "patch", "delete"}, "/admin/spend": {"get"},
                          "/admin/requests/{request_id}": {"get"}}.items():
        assert methods <= set(paths[path]), path
        assert all(paths[path][m]["tags"] == ["Admin"] for m in methods)
    body = paths["/admin/keys"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"budget_usd", "budget_period", "models", "expires_at", "metadata"} <= set(body["properties"])
    assert body["additionalProperties"] is False
    assert {p["name"] for p in paths["/admin/spend"]["get"]["parameters"]} >= {"group_by", "start", "end"}
    schemas = doc["components"]["schemas"]
    assert {"KeyView", "KeyCreated", "SubjectView", "SpendReport", "LedgerEntry"} <= set(schemas)
    assert "key_hash" not in schemas["KeyView"]["properties"] and "key" in schemas["KeyCreated"]["properties"]
    assert set(doc["components"]["securitySchemes"]) >= {"HTTPBearer", "APIKeyHeader"}
