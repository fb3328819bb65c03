"""`faregate keys|teams|users|spend` against a running gateway, as a shell user runs them."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest

from tests.conftest import MASTER_KEY, Server, free_port


def faregate(gateway: Server, *args: str, master_key: str | None = MASTER_KEY, url: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FAREGATE_URL", "FAREGATE_MASTER_KEY")}
    env["FAREGATE_URL"] = url or gateway.url
    if master_key is not None:
        env["FAREGATE_MASTER_KEY"] = master_key
    return subprocess.run([sys.executable, "-m", "faregate", *args], capture_output=True, text=True, env=env, timeout=30)


def run_ok(gateway: Server, *args: str) -> str:
    out = faregate(gateway, *args)
    assert out.returncode == 0, out.stderr
    return out.stdout


def as_json(gateway: Server, *args: str) -> object:
    return json.loads(run_ok(gateway, *args, "--format", "json"))


def test_keys_create_list_show_update_rotate_revoke(gateway: Server) -> None:
    name = f"cli-{uuid.uuid4().hex[:6]}"
    out = faregate(gateway, "keys", "create", "--name", name, "--user", "carol", "--team", "cli-team",
                   "--models", "gpt-4o-mini,claude-haiku", "--rpm", "10", "--tpm", "5000", "--max-parallel", "3",
                   "--budget-usd", "2.50", "--budget-period", "month", "--expires-at", "2031-06-01T00:00:00Z",
                   "--metadata", '{"owner": "cli"}')
    assert out.returncode == 0, out.stderr
    secret = next(w for w in out.stdout.split() if w.startswith("sk-fg-"))
    assert "will not be shown again" in out.stderr
    keys = as_json(gateway, "keys", "list", "--user", "carol")
    mine = next(k for k in keys if k["name"] == name)
    key_id = mine["id"]
    assert (mine["budget_usd"], mine["models"], mine["rpm"], mine["metadata"]) == ("2.5", ["gpt-4o-mini", "claude-haiku"], 10, {"owner": "cli"})
    assert mine["expires_at"] == "2031-06-01T00:00:00Z" and mine["key_hint"] == f"sk-fg-…{secret[-4:]}"

    table = run_ok(gateway, "keys", "list").splitlines()
    header = table[0]
    assert header.split()[:4] == ["id", "name", "key_hint", "user"]
    row = next(line for line in table if line.startswith(key_id))
    assert row.index(name) == header.index("name") and row.index("carol") == header.index("user")
    assert "2.5" in row and "gpt-4o-mini,claude-haiku" in row
    rows = list(csv.DictReader(io.StringIO(run_ok(gateway, "keys", "list", "--format", "csv"))))
    assert next(r for r in rows if r["id"] == key_id)["budget_usd"] == "2.5"

    shown = run_ok(gateway, "keys", "show", key_id)
    assert any(line.split() == ["budget_usd", "2.5"] for line in shown.splitlines())
    assert secret not in shown

    updated = as_json(gateway, "keys", "update", key_id, "--rpm", "none", "--budget-usd", "0.000000001", "--name", "renamed")
    assert (updated["rpm"], updated["budget_usd"], updated["name"], updated["tpm"]) == (None, "0.000000001", "renamed", 5000)
    assert run_ok(gateway, "keys", "update", key_id, "--models", "none", "--format", "csv").count("\n") == 2

    rotated = faregate(gateway, "keys", "rotate", key_id)
    assert rotated.returncode == 0 and "will not be shown again" in rotated.stderr
    new = next(w for w in rotated.stdout.split() if w.startswith("sk-fg-"))
    assert new != secret and as_json(gateway, "keys", "show", key_id)["key_hint"].endswith(new[-4:])

    revoked = as_json(gateway, "keys", "revoke", key_id)
    assert revoked["revoked"] is True
    assert key_id not in run_ok(gateway, "keys", "list")
    assert key_id in run_ok(gateway, "keys", "list", "--include-revoked")
    log = gateway.output()
    assert secret not in log and new not in log


def test_create_json_returns_the_secret_once(gateway: Server) -> None:
    created = as_json(gateway, "keys", "create", "--name", "json-once")
    assert created["key"].startswith("sk-fg-") and created["id"].startswith("key_")
    assert created["key"] not in run_ok(gateway, "keys", "show", created["id"], "--format", "json")


def test_teams_and_users(gateway: Server) -> None:
    for plural in ("teams", "users"):
        sid = f"cli-{plural}-{uuid.uuid4().hex[:6]}"
        made = as_json(gateway, plural, "create", sid, "--budget-usd", "100", "--budget-period", "week", "--rpm", "7")
        assert (made["id"], made["budget_usd"], made["rpm"]) == (sid, "100", 7)
        assert sid in run_ok(gateway, plural, "list")
        assert as_json(gateway, plural, "update", sid, "--rpm", "none")["rpm"] is None
        assert as_json(gateway, plural, "show", sid)["budget_period"] == "week"
        run_ok(gateway, plural, "delete", sid)
        gone = faregate(gateway, plural, "show", sid)
        assert gone.returncode == 1 and "error 404" in gone.stderr


def test_spend_in_every_format(gateway: Server) -> None:
    feature = f"cli-spend-{uuid.uuid4().hex[:6]}"
    body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "spend"}]}).encode()
    for _ in range(2):
        req = urllib.request.Request(f"{gateway.url}/v1/chat/completions", data=body, method="POST", headers={
            "content-type": "application/json", "authorization": f"Bearer {MASTER_KEY}", "x-faregate-feature": feature})
        urllib.request.urlopen(req, timeout=15).read()
    deadline = time.monotonic() + 5
    while True:
        rows = as_json(gateway, "spend", "--group-by", "feature")
        mine = [r for r in rows if r["group"] == feature]
        if (mine and mine[0]["requests"] == 2) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert mine and mine[0]["requests"] == 2 and len(mine[0]["cost_usd"].split(".")[1]) == 9
    costs = [float(r["cost_usd"]) for r in rows]
    assert costs == sorted(costs, reverse=True)
    table = run_ok(gateway, "spend", "--group-by", "feature").splitlines()
    assert table[0].split() == ["group", "requests", "input_tokens", "output_tokens", "cost_usd", "cache_hits", "saved_usd"]
    line = next(line for line in table if line.startswith(feature))
    assert line.split()[4] == mine[0]["cost_usd"] and line.endswith(mine[0]["saved_usd"])
    assert len(line) == len(table[0])  # numbers right-aligned
    parsed = list(csv.DictReader(io.StringIO(run_ok(gateway, "spend", "--group-by", "feature", "--format", "csv"))))
    assert next(r for r in parsed if r["group"] == feature)["requests"] == "2"
    today = time.strftime("%Y-%m-%d", time.gmtime())
    days = as_json(gateway, "spend", "--group-by", "day", "--start", today, "--end", today)
    assert [d["group"] for d in days] == [today]
    assert as_json(gateway, "spend", "--group-by", "day", "--end", "2000-01-01") == []
    assert "(none)" in run_ok(gateway, "spend", "--end", "2000-01-01")


@pytest.mark.parametrize("args,expect", [
    (("keys", "show", "key_missing"), "error 404: No key with id 'key_missing'."),
    (("keys", "create", "--budget-usd", "1.0000000001"), "(param: budget_usd)"),
    (("keys", "create", "--budget-period", "year"), "(param: budget_period)"),
    (("spend", "--start", "yesterday"), "(param: start)"),
])
def test_api_errors_print_the_message_and_exit_1(gateway: Server, args: tuple[str, ...], expect: str) -> None:
    out = faregate(gateway, *args)
    assert out.returncode == 1 and expect in out.stderr and out.stdout == ""


def test_wrong_master_key_and_unreachable_gateway(gateway: Server) -> None:
    out = faregate(gateway, "keys", "list", master_key="sk-wrong")
    assert out.returncode == 1 and "error 401" in out.stderr
    out = faregate(gateway, "keys", "list", master_key=None)
    assert out.returncode == 1 and "error 401" in out.stderr
    out = faregate(gateway, "keys", "list", url=f"http://127.0.0.1:{free_port()}")
    assert out.returncode == 1 and "cannot reach the gateway" in out.stderr
    out = faregate(gateway, "keys", "list", "--url", gateway.url, "--master-key", MASTER_KEY, master_key="sk-wrong")
    assert out.returncode == 0  # flags win over the environment


def test_bad_flags_are_refused_before_any_request(gateway: Server) -> None:
    out = faregate(gateway, "keys", "create", "--rpm", "many")
    assert out.returncode == 2 and "--rpm" in out.stderr
    out = faregate(gateway, "keys", "create", "--metadata", "[1]")
    assert out.returncode == 2 and "JSON object" in out.stderr


def test_the_cli_imports_nothing_heavy() -> None:
    code = ("import sys, faregate.admin_cli; "
            "print(sorted(m for m in ('pydantic', 'sqlalchemy', 'fastapi', 'aiohttp', 'orjson') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "[]", out.stdout
