"""Virtual keys, limits, budgets and attribution on one gateway with in-process state (the
embedded default's mode), against the mock upstream. Scale-out (Redis, Postgres, two
replicas): test_scale_out.py."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import MASTER_KEY, Server, stop
from tests.gateways import chat, create_key, http, launch_gateway

IN_PRICE, OUT_PRICE = Decimal("0.000001"), Decimal("0.000002")


def access_config(mock: str, webhook: str | None = None) -> str:
    alerts = f"alerts:\n  interval_seconds: 1\n  webhook_url: {webhook}\n" if webhook else ""
    return alerts + f"""
model_list:
  - model_name: gpt-4o-mini
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: {mock}/v1
      api_key: os.environ/TEST_UPSTREAM_KEY
      input_cost_per_token: {IN_PRICE}
      output_cost_per_token: {OUT_PRICE}
  - model_name: premium
    litellm_params:
      model: openai/gpt-4o
      api_base: {mock}/v1
      api_key: os.environ/TEST_UPSTREAM_KEY
  - model_name: tiny-quota
    litellm_params:
      model: openai/tiny
      api_base: {mock}/v1
      api_key: os.environ/TEST_UPSTREAM_KEY
      rpm: 2
general_settings:
  master_key: os.environ/TEST_MASTER_KEY
limits:
  key_refresh_seconds: 0.5
"""


class Webhook:
    """A Slack-style incoming webhook: records every JSON POST."""

    def __init__(self) -> None:
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                received.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.server.shutdown()


@pytest.fixture(scope="module")
def gw(mock_upstream: Server, webhook: Webhook, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = launch_gateway(tmp_path_factory.mktemp("access"), access_config(mock_upstream.url, webhook.url))
    yield server
    stop(server.proc)


def ledger(db: Path, request_id: str, timeout: float = 5.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with sqlite3.connect(db) as conn:
            conn.row_factory = sqlite3.Row
            row = conn.execute("SELECT * FROM requests WHERE request_id = ?", (request_id,)).fetchone()
        if row:
            return dict(row)
        time.sleep(0.05)
    raise AssertionError(f"no ledger row for {request_id}")


def test_virtual_key_authenticates_and_unknown_or_revoked_keys_do_not(gw: Server) -> None:
    key = create_key(gw, name="svc")
    assert key["key"].startswith("sk-fg-") and key["id"]
    status, _, body = chat(gw, key["key"])
    assert status == 200 and body["choices"]
    status, _, body = chat(gw, "sk-fg-not-a-real-key-0000000000000000000000000")
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
    assert http("DELETE", f"{gw.url}/admin/keys/{key['id']}")[0] == 200
    status, _, body = chat(gw, key["key"])  # revoked on this replica: refused at once
    assert status == 401


def test_rotation_keeps_id_and_limits_and_kills_the_old_secret(gw: Server) -> None:
    key = create_key(gw, rpm=1000)
    status, _, rotated = http("POST", f"{gw.url}/admin/keys/{key['id']}/rotate")
    assert status == 200 and rotated["id"] == key["id"] and rotated["key"] != key["key"]
    assert chat(gw, key["key"])[0] == 401
    assert chat(gw, rotated["key"])[0] == 200
    assert http("GET", f"{gw.url}/admin/keys/{key['id']}")[2]["rpm"] == 1000


def test_expired_key_is_refused(gw: Server) -> None:
    key = create_key(gw, expires_at="2020-01-01T00:00:00Z")
    status, _, body = chat(gw, key["key"])
    assert status == 401 and body["error"]["code"] == "key_expired"


def test_models_outside_the_key_list_are_forbidden(gw: Server) -> None:
    key = create_key(gw, models=["gpt-4o-mini"])
    assert chat(gw, key["key"])[0] == 200
    status, _, body = chat(gw, key["key"], model="premium")
    assert status == 403
    assert body["error"]["code"] == "model_not_allowed" and body["error"]["param"] == "model"
    # the team's list applies too: the tightest of key, user and team
    assert http("POST", f"{gw.url}/admin/teams", {"id": "no-premium", "models": ["gpt-4o-mini"]})[0] == 201
    team_key = create_key(gw, team="no-premium")
    assert chat(gw, team_key["key"], model="premium")[0] == 403
    # and /v1/models shows a key only what it may call
    status, _, listed = http("GET", f"{gw.url}/v1/models", key=key["key"])
    assert status == 200 and [m["id"] for m in listed["data"]] == ["gpt-4o-mini"]
    assert http("GET", f"{gw.url}/v1/models/premium", key=key["key"])[0] == 404
    assert "premium" in [m["id"] for m in http("GET", f"{gw.url}/v1/models")[2]["data"]]


def test_rpm_refusal_carries_openai_rate_limit_headers(gw: Server) -> None:
    key = create_key(gw, rpm=3, tpm=100_000)
    assert [chat(gw, key["key"])[0] for _ in range(3)] == [200, 200, 200]
    status, headers, body = chat(gw, key["key"])
    assert status == 429
    assert body["error"]["code"] == "key_rpm_exceeded" and key["id"] in body["error"]["message"]
    assert headers["x-ratelimit-limit-requests"] == "3" and headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-reset-requests"].endswith("s") and int(headers["retry-after"]) >= 1
    assert headers["x-ratelimit-limit-tokens"] == "100000"
    assert int(headers["x-ratelimit-remaining-tokens"]) < 100_000


def test_tpm_admits_on_estimate_and_settles_on_real_usage(gw: Server, mock_settings) -> None:
    mock_settings(tokens=5)
    # each request reserves ~prompt + 400 tokens; it really uses ~15. Without settling, the
    # third request would not fit in 1000 tokens per minute.
    key = create_key(gw, tpm=1000)
    statuses = [chat(gw, key["key"], max_tokens=400)[0] for _ in range(6)]
    assert statuses == [200] * 6
    status, headers, body = chat(gw, key["key"], max_tokens=5000)  # can never fit
    assert status == 429 and body["error"]["code"] == "key_tpm_exceeded"
    assert headers["x-ratelimit-limit-tokens"] == "1000"


def test_max_parallel_refuses_beyond_the_slots(gw: Server, mock_settings) -> None:
    mock_settings(latency_ms=600)
    key = create_key(gw, max_parallel=2)
    results: list[tuple[int, str | None]] = []

    def one() -> None:
        status, _, body = chat(gw, key["key"])
        results.append((status, body.get("error", {}).get("code") if status != 200 else None))

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
        time.sleep(0.05)
    for t in threads:
        t.join()
    assert sorted(results, key=str) == sorted([(200, None)] * 2 + [(429, "key_parallel_exceeded")] * 2, key=str)
    mock_settings(latency_ms=0)
    assert chat(gw, key["key"])[0] == 200  # slots were released


def test_team_limit_binds_a_key_with_a_looser_one(gw: Server) -> None:
    assert http("POST", f"{gw.url}/admin/teams", {"id": "small-team", "rpm": 2})[0] == 201
    key = create_key(gw, team="small-team", rpm=100)
    assert [chat(gw, key["key"])[0] for _ in range(2)] == [200, 200]
    status, _, body = chat(gw, key["key"])
    assert status == 429 and body["error"]["code"] == "team_rpm_exceeded" and "small-team" in body["error"]["message"]


def test_budget_is_enforced_and_spend_reported(gw: Server, mock_settings) -> None:
    mock_settings(tokens=10)
    # one request: ~10 prompt tokens x $1e-6 + 10 output x $2e-6 ≈ $0.00003; reserved with max_tokens=10
    key = create_key(gw, budget_usd="0.0001", budget_period="day")
    spends, costs = [], []
    for _ in range(10):
        status, headers, body = chat(gw, key["key"], max_tokens=10)
        if status != 200:
            break
        costs.append(Decimal(headers["x-faregate-cost-usd"]))
        spends.append(Decimal(headers["x-faregate-key-spend"]))
    assert status == 429 and body["error"]["code"] == "budget_exceeded"
    assert body["error"]["type"] == "insufficient_quota" and int(headers["retry-after"]) > 0
    assert 2 <= len(costs) <= 4
    assert spends == [sum(costs[: i + 1]) for i in range(len(costs))]  # exact running spend
    assert spends[-1] <= Decimal("0.0001")


def test_user_budget_spans_the_users_keys(gw: Server, mock_settings) -> None:
    mock_settings(tokens=10)
    assert http("POST", f"{gw.url}/admin/users", {"id": "alice", "budget_usd": "0.00007"})[0] == 201
    a, b = create_key(gw, user="alice"), create_key(gw, user="alice")
    statuses = [chat(gw, k["key"], max_tokens=10)[0] for k in (a, b, a, b)]
    assert statuses[:2] == [200, 200] and statuses[-1] == 429


def test_conversation_guard_stops_a_runaway_agent(gw: Server) -> None:
    key = create_key(gw, conversation_max_requests=3)
    conv = {"x-faregate-conversation-id": "agent-run-1"}
    assert [chat(gw, key["key"], headers=conv)[0] for _ in range(3)] == [200, 200, 200]
    status, _, body = chat(gw, key["key"], headers=conv)
    assert status == 429 and body["error"]["code"] == "conversation_requests_exceeded"
    assert chat(gw, key["key"], headers={"x-faregate-conversation-id": "agent-run-2"})[0] == 200


def test_deployment_rpm_is_its_own_limit(gw: Server) -> None:
    statuses = [chat(gw, MASTER_KEY, model="tiny-quota")[0] for _ in range(3)]
    assert statuses[:2] == [200, 200]
    status, _, body = chat(gw, MASTER_KEY, model="tiny-quota")
    assert status == 429 and body["error"]["code"] == "deployment_rpm_exceeded"


def test_ledger_row_attributes_the_request(gw: Server) -> None:
    assert http("POST", f"{gw.url}/admin/teams", {"id": "search"})[0] == 201
    key = create_key(gw, user="bob", team="search")
    status, headers, _ = chat(gw, key["key"], user="end-user-7", metadata={"ticket": "T-1"},
                              headers={"x-faregate-feature": "summarize", "x-faregate-conversation-id": "c-9",
                                       "x-client-request-id": "client-1"})
    assert status == 200
    row = ledger(gw.db, headers["x-request-id"])
    assert (row["key_id"], row["user_id"], row["team_id"], row["end_user"]) == (key["id"], "bob", "search", "end-user-7")
    assert (row["feature"], row["conversation_id"], row["client_request_id"]) == ("summarize", "c-9", "client-1")
    assert json.loads(row["tags"]) == {"ticket": "T-1"}
    assert Decimal(row["cost_nusd"]) / 10**9 == Decimal(headers["x-faregate-cost-usd"])


def test_refused_requests_have_ledger_rows(gw: Server) -> None:
    key = create_key(gw, models=["gpt-4o-mini"])
    status, headers, _ = chat(gw, key["key"], model="premium")
    assert status == 403
    row = ledger(gw.db, headers["x-request-id"])
    assert (row["status"], row["error_code"], row["key_id"], row["cost_nusd"]) == (403, "model_not_allowed", key["id"], 0)


def test_usage_is_counted_locally_when_the_upstream_sends_none(gw: Server, mock_settings) -> None:
    mock_settings(omit_usage=True, tokens=7)
    key = create_key(gw)
    status, headers, body = chat(gw, key["key"])
    assert status == 200 and "usage" not in body or not body.get("usage")
    row = ledger(gw.db, headers["x-request-id"])
    assert row["usage_estimated"] == 1 and row["input_tokens"] > 0 and row["output_tokens"] > 0
    assert row["cost_nusd"] > 0


def test_key_secret_is_never_stored_or_logged(gw: Server) -> None:
    key = create_key(gw, name="secret-check", rpm=1)
    chat(gw, key["key"])
    limited = chat(gw, key["key"])  # a 429 names the key's id, never the key
    wrong = chat(gw, key["key"] + "x")  # a wrong key, echoed and logged nowhere either
    time.sleep(0.5)
    secret = key["key"]
    assert limited[0] == 429 and key["id"] in limited[2]["error"]["message"]
    assert wrong[0] == 401
    for answer in (limited, wrong):
        assert secret not in json.dumps(answer[2]) and secret not in json.dumps(answer[1])
    assert secret not in http("GET", f"{gw.url}/metrics", key=None)[2]
    digests = {hashlib.sha256(secret.encode()).hexdigest(), hashlib.sha1(secret.encode()).hexdigest()}
    with sqlite3.connect(gw.db) as conn:
        dump = "\n".join(conn.iterdump())
    for needle in (secret, secret[6:], *digests):
        assert needle not in dump
        assert needle not in gw.output()
    status, _, listed = http("GET", f"{gw.url}/admin/keys")
    assert secret not in json.dumps(listed)


def test_budget_alert_reaches_the_webhook_once(gw: Server, webhook: Webhook, mock_settings) -> None:
    mock_settings(tokens=10)
    key = create_key(gw, budget_usd="0.0001", budget_period="day")  # ~3 requests reach 80 %
    while chat(gw, key["key"], max_tokens=10)[0] == 200:
        pass

    def mine() -> list[dict]:
        return [a for a in webhook.received if a["alert"]["subject"] == f"key:{key['id']}"]

    deadline = time.monotonic() + 10
    while not mine():
        assert time.monotonic() < deadline, webhook.received
        time.sleep(0.2)
    time.sleep(2.5)  # two more checks: the alert is not repeated within its window
    alerts = mine()
    assert len(alerts) == 1, alerts
    assert alerts[0]["alert"]["kind"] == "budget_threshold" and "text" in alerts[0]
    assert key["key"] not in json.dumps(webhook.received)
    assert "budget_threshold" in gw.output()  # and in the log
    metrics = http("GET", f"{gw.url}/metrics", key=None)[2]
    assert 'faregate_spend_alerts_total{kind="budget_threshold"}' in metrics


def test_streams_settle_budgets_and_free_slots_even_when_the_client_leaves(gw: Server, mock_settings) -> None:
    import httpx

    mock_settings(tokens=30, itl_ms=20)
    key = create_key(gw, budget_usd="1", max_parallel=1)
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "stream": True,
            "max_tokens": 30}
    auth = {"authorization": f"Bearer {key['key']}"}
    with httpx.Client(base_url=gw.url, timeout=30) as client:
        # a stream read to the end is settled at its real cost
        with client.stream("POST", "/v1/chat/completions", json=body, headers=auth) as resp:
            assert resp.status_code == 200
            streamed_id = resp.headers["x-request-id"]
            assert "[DONE]" in "".join(resp.iter_text())
        # a stream the client abandons after the first chunk frees its slot and is settled too
        with client.stream("POST", "/v1/chat/completions", json=body, headers=auth) as resp:
            abandoned_id = resp.headers["x-request-id"]
            next(resp.iter_bytes())
        time.sleep(0.3)
        status, headers, _ = chat(gw, key["key"], max_tokens=5)  # max_parallel=1: the slot is free
    assert status == 200
    rows = [ledger(gw.db, rid) for rid in (streamed_id, abandoned_id, headers["x-request-id"])]
    assert all(r["cost_nusd"] > 0 for r in rows)
    assert rows[1]["output_tokens"] < rows[0]["output_tokens"]  # it was cut short
    spent = sum(Decimal(r["cost_nusd"]) for r in rows) / 10**9
    assert Decimal(headers["x-faregate-key-spend"]) == spent
