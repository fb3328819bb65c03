"""The web dashboard (/ui) on a real gateway: in headless Chromium (Debian package `chromium`,
driven over the DevTools protocol by tests/browser.py) — login through the form, charts drawn
from real traffic and matching the ledger, the request explorer, logout — and over plain HTTP:
no data without a session, wrong keys, CSRF and Origin checks, cookie flags, a gateway without
a master key."""

from __future__ import annotations

import contextlib
import http.client as hc
import json
import re
import sqlite3
import time
import urllib.parse
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.browser import Browser, chromium_path
from tests.conftest import MASTER_KEY, Server, free_port, stop
from tests.gateways import chat, create_key, http, launch_gateway

API = ["summary", "traffic", "latency", "spend", "breakers", "requests", "requests/some-id"]


def dashboard_config(mock: str, master: bool = True) -> str:
    return f"""
model_list:
  - model_name: gpt-4o-mini
    litellm_params: {{model: openai/gpt-4o-mini, api_base: "{mock}/v1", api_key: os.environ/TEST_UPSTREAM_KEY}}
  - model_name: claude-haiku
    litellm_params: {{model: anthropic/claude-haiku-4-5, api_base: "{mock}", api_key: os.environ/TEST_UPSTREAM_KEY}}
  - model_name: broken
    litellm_params: {{model: openai/broken, api_base: "http://127.0.0.1:{free_port()}/v1", api_key: x, timeout: 2}}
router_settings:
  num_retries: 0
  allowed_fails: 100000
  breaker: {{min_requests: 100000}}
general_settings:
  {"master_key: os.environ/TEST_MASTER_KEY" if master else "{}"}
cache:
  groups:
    gpt-4o-mini: {{mode: exact}}
request_log: {{mode: full, redact: false}}
"""


def ledger(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, args).fetchall()


@pytest.fixture(scope="module")
def gw(mock_upstream: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A gateway with traffic: cached and uncached, streamed, by a virtual key and the master
    key, and failures (unknown model, dead upstream); every row in the ledger before it yields."""
    server = launch_gateway(tmp_path_factory.mktemp("dashboard"), dashboard_config(mock_upstream.url))
    try:
        assert http("POST", f"{server.url}/admin/teams", {"id": "ml"})[0] == 201
        assert http("POST", f"{server.url}/admin/users", {"id": "alice"})[0] == 201
        key = create_key(server, name="dash", user="alice", team="ml")["key"]
        sent = []
        for _ in range(3):  # a miss, then two exact hits
            sent.append(chat(server, key, headers={"x-faregate-feature": "search"}, messages=[
                {"role": "user", "content": "cache me"}]))
        for text in ("one", "two"):
            sent.append(chat(server, MASTER_KEY, headers={"x-faregate-feature": "chat"},
                             messages=[{"role": "user", "content": text}]))
        for model in ("claude-haiku", "claude-haiku", "gpt-4o-mini"):
            sent.append(chat(server, key, model=model, stream=True, headers={
                "x-faregate-feature": "stream", "x-faregate-cache": "off"}))
        sent.append(chat(server, key, model="nope"))
        sent += [chat(server, key, model="broken") for _ in range(2)]
        statuses = [s for s, _, _ in sent]
        assert statuses[:9] == [200] * 8 + [404] and all(s >= 500 for s in statuses[9:]), statuses
        deadline = time.monotonic() + 10
        while ledger(server.db, "SELECT count(*) FROM requests")[0][0] < len(sent):
            assert time.monotonic() < deadline, "ledger rows not written"
            time.sleep(0.1)
        yield server
    finally:
        stop(server.proc)


# -- plain HTTP ---------------------------------------------------------------------------------


def request(gw: Server, method: str, path: str, cookies: dict[str, str] | None = None,
            form: dict[str, str] | None = None, headers: dict[str, str] | None = None,
            origin: bool = True) -> tuple[int, hc.HTTPMessage, str]:
    """(status, headers, body) without following redirects; a form is sent urlencoded."""
    host = urllib.parse.urlsplit(gw.url).netloc
    h = {"host": host, **(headers or {})}
    if cookies:
        h["cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
    body = None
    if form is not None:
        body = urllib.parse.urlencode(form)
        h["content-type"] = "application/x-www-form-urlencoded"
        if origin and "origin" not in h:
            h["origin"] = gw.url
    conn = hc.HTTPConnection(host, timeout=30)
    try:
        conn.request(method, path, body=body, headers=h)
        resp = conn.getresponse()
        return resp.status, resp.msg, resp.read().decode()
    finally:
        conn.close()


def set_cookies(headers: hc.HTTPMessage) -> dict[str, str]:
    """name -> the whole Set-Cookie header."""
    return {v.split("=", 1)[0]: v for v in headers.get_all("set-cookie") or []}


def login_form(gw: Server) -> tuple[str, str]:
    """(login cookie, hidden CSRF field) from a fresh GET /ui/login."""
    status, headers, body = request(gw, "GET", "/ui/login")
    assert status == 200, body
    cookie = set_cookies(headers)["fg_ui_login"].split(";")[0].split("=", 1)[1]
    field = re.search(r'name="csrf" value="([^"]+)"', body)
    assert field
    return cookie, field.group(1)


def login(gw: Server, **headers: str) -> tuple[str, hc.HTTPMessage]:
    """A session cookie's value, and the login response's headers."""
    cookie, field = login_form(gw)
    status, h, body = request(gw, "POST", "/ui/login", {"fg_ui_login": cookie},
                              {"csrf": field, "key": MASTER_KEY}, headers)
    assert status == 303 and h["location"] == "/ui", (status, body)
    return set_cookies(h)["fg_ui_session"].split(";")[0].split("=", 1)[1], h


def csrf_of(gw: Server, session: str) -> str:
    status, _, page = request(gw, "GET", "/ui", {"fg_ui_session": session})
    assert status == 200
    m = re.search(r'name="csrf" value="([^"]+)"', page)
    assert m
    return m.group(1)


def test_data_endpoints_need_a_session(gw: Server) -> None:
    session, _ = login(gw)
    forged = session.rsplit(".", 1)[0] + ".AAAA"
    for path in API:
        for cookies in (None, {"fg_ui_session": "a.b.c.d"}, {"fg_ui_session": forged}):
            status, _, body = request(gw, "GET", f"/ui/api/{path}", cookies)
            assert status == 401, (path, cookies, body)
        assert request(gw, "GET", f"/ui/api/{path}", headers={"authorization": f"Bearer {MASTER_KEY}"})[0] == 401
    status, _, body = request(gw, "GET", "/ui/api/summary", {"fg_ui_session": session})
    assert status == 200 and json.loads(body)["totals"]["requests"] > 0
    assert request(gw, "POST", "/ui/api/summary", {"fg_ui_session": session}, form={})[0] == 405
    assert request(gw, "GET", "/ui")[0] == 303  # the page itself: to the login form


def test_login_with_a_wrong_key_fails(gw: Server) -> None:
    cookie, field = login_form(gw)
    wrong = "sk-wrong-key-7d1c"
    status, headers, body = request(gw, "POST", "/ui/login", {"fg_ui_login": cookie}, {"csrf": field, "key": wrong})
    assert status == 401 and "not the master key" in body
    assert "fg_ui_session" not in set_cookies(headers) and wrong not in body
    status, _, body = request(gw, "POST", "/ui/login", {"fg_ui_login": cookie}, {"csrf": field, "key": ""})
    assert status == 401


def test_login_csrf_and_origin(gw: Server) -> None:
    cookie, field = login_form(gw)
    other_cookie, other_field = login_form(gw)
    good = {"csrf": field, "key": MASTER_KEY}
    cases = [
        ({"fg_ui_login": cookie}, {"key": MASTER_KEY}, {}),  # no token
        ({"fg_ui_login": cookie}, {"csrf": other_field, "key": MASTER_KEY}, {}),  # another form's token
        ({"fg_ui_login": cookie}, {"csrf": "x" * 43, "key": MASTER_KEY}, {}),
        (None, good, {}),  # no login cookie
        ({"fg_ui_login": cookie}, good, {"origin": "http://evil.example"}),
        ({"fg_ui_login": cookie}, good, {"origin": "null"}),
        ({"fg_ui_login": cookie}, good, {"referer": "http://evil.example/x"}),
    ]
    for cookies, form, headers in cases:
        status, h, body = request(gw, "POST", "/ui/login", cookies, form, headers, origin=not headers)
        assert status == 403 and "fg_ui_session" not in set_cookies(h), (form, headers, body)
    status, _, _ = request(gw, "POST", "/ui/login", {"fg_ui_login": cookie}, good, origin=False)
    assert status == 403  # neither Origin nor Referer
    status, h, _ = request(gw, "POST", "/ui/login", {"fg_ui_login": other_cookie}, {"csrf": other_field, "key": MASTER_KEY},
                           {"referer": f"{gw.url}/ui/login"}, origin=False)
    assert status == 303  # a same-origin Referer is enough


def test_login_form_limits(gw: Server) -> None:
    cookie, field = login_form(gw)
    jar = {"fg_ui_login": cookie}
    status, _, _ = request(gw, "POST", "/ui/login", jar, {f"f{i}": "x" for i in range(20)})
    assert status == 400
    status, _, _ = request(gw, "POST", "/ui/login", jar, {"csrf": field, "key": "k" * 5000})
    assert status == 413
    status, _, _ = request(gw, "POST", "/ui/login", jar, headers={"origin": gw.url, "content-type": "application/json"})
    assert status == 400


def test_session_cookie_flags(gw: Server) -> None:
    _, headers = login(gw)
    flags = [f.strip().lower() for f in set_cookies(headers)["fg_ui_session"].split(";")]
    assert {"httponly", "samesite=strict", "path=/ui", "max-age=43200"} <= set(flags)
    assert "secure" not in flags
    _, headers = login(gw, **{"x-forwarded-proto": "https"})
    assert "secure" in [f.strip().lower() for f in set_cookies(headers)["fg_ui_session"].split(";")]
    status, h, page = request(gw, "GET", "/ui/login")
    assert "default-src 'none'" in h["content-security-policy"] and h["x-frame-options"] == "DENY"
    assert h["cache-control"] == "no-store"


def test_logout_needs_the_session_token_and_ends_the_session(gw: Server) -> None:
    session, _ = login(gw)
    token = csrf_of(gw, session)
    jar = {"fg_ui_session": session}
    assert request(gw, "POST", "/ui/logout", jar, {})[0] == 403
    assert request(gw, "POST", "/ui/logout", jar, {"csrf": "nope"})[0] == 403
    assert request(gw, "POST", "/ui/logout", jar, {"csrf": token}, {"origin": "http://evil.example"})[0] == 403
    assert request(gw, "GET", "/ui/api/breakers", jar)[0] == 200  # still logged in
    status, h, _ = request(gw, "POST", "/ui/logout", jar, {"csrf": token})
    assert status == 303 and h["location"] == "/ui/login"
    assert 'fg_ui_session=""' in set_cookies(h)["fg_ui_session"] or "max-age=0" in set_cookies(h)["fg_ui_session"].lower()
    assert request(gw, "GET", "/ui/api/breakers", jar)[0] == 401  # the old cookie is dead


def test_bad_parameters_are_400s(gw: Server) -> None:
    jar = {"fg_ui_session": login(gw)[0]}
    for path in ("latency?metric=x", "summary?bucket=minute", "summary?start=yesterday", "spend?by=nope",
                 "spend?limit=0", "requests?limit=1000", "summary?start=2000-01-01&bucket=hour",
                 "summary?start=2025-01-02&end=2025-01-01"):
        status, _, body = request(gw, "GET", f"/ui/api/{path}", jar)
        assert status == 400, (path, body)
    status, _, body = request(gw, "GET", "/ui/api/requests/no-such-request", jar)
    assert status == 404 and json.loads(body)["error"]["code"] == "request_not_found"


def test_static_files(gw: Server) -> None:
    status, h, body = request(gw, "GET", "/ui/static/app.js")
    assert status == 200 and h["content-type"].startswith("text/javascript") and "lineChart" in body
    assert request(gw, "GET", "/ui/static/app.css")[0] == 200
    for name in ("index.html", "login.html", "..%2Fqueries.py", "nope.js"):
        assert request(gw, "GET", f"/ui/static/{name}")[0] == 404


def test_the_key_is_never_logged_or_returned(gw: Server) -> None:
    session, headers = login(gw)
    _, _, page = request(gw, "GET", "/ui", {"fg_ui_session": session})
    assert MASTER_KEY not in page and MASTER_KEY not in str(headers) and MASTER_KEY not in session
    for path in API[:-1]:
        assert MASTER_KEY not in request(gw, "GET", f"/ui/api/{path}", {"fg_ui_session": session})[2]
    assert MASTER_KEY not in gw.output()


def test_a_gateway_without_a_master_key_has_no_dashboard(mock_upstream: Server, tmp_path: Path) -> None:
    open_gw = launch_gateway(tmp_path, dashboard_config(mock_upstream.url, master=False), name="open")
    try:
        for path in ("/ui", "/ui/login"):
            status, _, body = request(open_gw, "GET", path)
            assert status == 403 and "disabled" in body and "<form" not in body
        status, _, body = request(open_gw, "POST", "/ui/login", form={"key": "x", "csrf": "y"})
        assert status == 403
        for path in API:
            status, _, body = request(open_gw, "GET", f"/ui/api/{path}")
            assert status == 403 and json.loads(body)["error"]["code"] == "dashboard_disabled"
    finally:
        stop(open_gw.proc)


# -- in the browser ----------------------------------------------------------------------------


def test_dashboard_in_headless_chromium(gw: Server, tmp_path: Path) -> None:
    assert chromium_path(), ("Chromium is not installed: apt-get install -y --no-install-recommends chromium "
                             "(the Debian package 'chromium').")
    rows = ledger(gw.db, "SELECT count(*), sum(cost_nusd), sum(saved_nusd) FROM requests")[0]
    stream_id = ledger(gw.db, "SELECT request_id FROM requests WHERE requested_model = 'claude-haiku' "
                              "AND stream = 1 LIMIT 1")[0][0]
    by_model = dict(ledger(gw.db, "SELECT requested_model, sum(cost_nusd) FROM requests GROUP BY 1"))
    hits, misses, errors = ledger(gw.db, "SELECT sum(cache LIKE 'hit%'), sum(cache = 'miss'), "
                                         "sum(status >= 400 OR error_code IS NOT NULL) FROM requests")[0]
    assert hits == 2 and misses >= 1 and errors == 3
    with Browser() as b:
        try:
            b.goto(f"{gw.url}/ui")
            assert b.evaluate("location.pathname") == "/ui/login"
            login_cookie = {c["name"]: c for c in b.cookies(f"{gw.url}/ui")}["fg_ui_login"]
            assert login_cookie["httpOnly"] and login_cookie["sameSite"] == "Strict" and login_cookie["path"] == "/ui"

            b.type_into("#key", MASTER_KEY)
            b.click("#login-submit")
            b.wait_for("location.pathname === '/ui' && document.readyState === 'complete'")
            b.wait_for("document.body.dataset.loaded === '1'", timeout=30)
            assert MASTER_KEY not in b.evaluate("location.href + document.documentElement.outerHTML")
            session = {c["name"]: c for c in b.cookies(f"{gw.url}/ui")}["fg_ui_session"]
            assert session["httpOnly"] and session["sameSite"] == "Strict" and session["path"] == "/ui"
            assert not session["secure"] and MASTER_KEY not in session["value"]
            assert b.evaluate("document.cookie") == ""  # HttpOnly: scripts cannot read it
            assert "failed" not in b.evaluate("document.querySelector('#status').textContent")

            # the numbers are the ledger's
            kpi = b.evaluate("Object.fromEntries([...document.querySelectorAll('.kpi')].map("
                             "k => [k.id, k.querySelector('.value').dataset.value]))")
            assert kpi["kpi-requests"] == str(rows[0])
            assert Decimal(kpi["kpi-cost"]) == Decimal(rows[1]) / 10**9
            assert Decimal(kpi["kpi-saved"]) == Decimal(rows[2]) / 10**9 > 0
            assert float(kpi["kpi-hit-rate"]) == pytest.approx(hits / (hits + misses), abs=1e-6)
            assert float(kpi["kpi-error-rate"]) == pytest.approx(errors / rows[0], abs=1e-6)

            # the charts are drawn, with data
            counts = b.evaluate("""Object.fromEntries(['#chart-spend-time', '#chart-hit-rate', '#chart-traffic',
                '#chart-errors', '#chart-latency', '#chart-ttft'].map(id => [id,
                [...document.querySelectorAll(id + ' svg circle.point')].filter(c => +c.dataset.value > 0).length]))""")
            assert all(n > 0 for n in counts.values()), counts
            bars = b.evaluate("""Object.fromEntries(['#chart-spend-model', '#chart-spend-team', '#chart-spend-feature',
                '#chart-cache', '#chart-saved', '#chart-top-keys', '#chart-top-users'].map(id => [id,
                Object.fromEntries([...document.querySelectorAll(id + ' svg rect.bar')].map(
                  r => [r.dataset.label, +r.dataset.value]))]))""")
            assert bars["#chart-spend-model"]["gpt-4o-mini"] == pytest.approx(by_model["gpt-4o-mini"] / 1e9)
            assert bars["#chart-spend-team"]["ml"] > 0 and bars["#chart-top-users"]["alice"] > 0
            assert set(bars["#chart-spend-feature"]) >= {"search", "chat", "stream"}
            assert bars["#chart-cache"]["hit-exact"] == 2 and bars["#chart-saved"]["hit-exact"] > 0
            assert len(bars["#chart-top-keys"]) == 2  # the virtual key and the master key
            traffic = b.evaluate("[...document.querySelectorAll('#chart-traffic svg path.series')].map(p => p.dataset.series)")
            assert {"openai", "anthropic"} <= set(traffic)
            assert b.evaluate("document.querySelectorAll('#breakers tbody tr').length") == 3
            assert b.evaluate("document.querySelector('#breakers tbody tr[data-deployment] .badge').textContent") == "closed"

            # the request explorer: newest first, one opened
            assert b.evaluate("document.querySelectorAll('#requests tbody tr[data-id]').length") == rows[0]
            b.click(f"#requests tr[data-id='{stream_id}']")
            b.wait_for("document.querySelector('#detail').dataset.loaded === '1'")
            assert b.evaluate("document.querySelector('#detail-title').textContent") == stream_id
            fields = b.evaluate("Object.fromEntries([...document.querySelectorAll('#detail-fields dd')].map("
                                "d => [d.dataset.field, d.textContent]))")
            assert fields["request_id"] == stream_id and fields["requested_model"] == "claude-haiku"
            assert fields["stream"] == "true" and fields["status"] == "200" and float(fields["ttft_ms"]) > 0
            log_text = b.evaluate("document.querySelector('#detail-log').textContent")
            # this gateway keeps a request log (request_log.mode: full): its bodies are shown
            assert "Request body" in log_text, log_text
            assert '"model": "claude-haiku"' in log_text and "Response body" in log_text

            # search: errors of one model
            b.type_into("#q", "broken")
            b.click("#errors-only")
            b.evaluate("document.querySelector('#search').requestSubmit()")
            b.wait_for("document.querySelectorAll('#requests tbody tr[data-id]').length === 2")
            assert b.evaluate("[...document.querySelectorAll('#requests tbody tr[data-id] td:nth-child(3)')]"
                              ".every(td => td.textContent === 'broken')")

            # logout: back to the form, the session is gone
            b.click("#logout")
            b.wait_for("location.pathname === '/ui/login' && document.readyState === 'complete'")
            assert "fg_ui_session" not in {c["name"] for c in b.cookies(f"{gw.url}/ui")}
            assert b.evaluate("fetch('/ui/api/summary').then(r => r.status)") == 401
            b.goto(f"{gw.url}/ui")
            assert b.evaluate("location.pathname") == "/ui/login"
            assert MASTER_KEY not in gw.output()
        except BaseException:
            with contextlib.suppress(Exception):
                b.screenshot(tmp_path / "dashboard-failure.png")
                print(f"screenshot: {tmp_path / 'dashboard-failure.png'}")
            raise
