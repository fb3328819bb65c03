"""The web dashboard at /ui: the page, login and logout, static files and the JSON it draws.

Pages: `GET /ui` (the dashboard; without a session a 303 to the login form), `GET|POST
/ui/login`, `POST /ui/logout`, `GET /ui/static/{app.js,app.css}`. Data: `GET /ui/api/...`
(session cookie required; 401 without, 403 when the gateway has no master key), aggregated in
SQL by `queries.py`. Sessions and CSRF: `session.py`. The key is only ever read from the login
form's POST body: never from a URL, never logged, never sent back.
"""

from __future__ import annotations

import html
import logging
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from faregate.access.store import bad_request
from faregate.accounting.spend import LedgerEntry, ledger_entry
from faregate.core.errors import GatewayError, unauthorized
from faregate.http.responses import JSONResponse
from faregate.http.ui import queries
from faregate.http.ui.session import (
    LOGIN_COOKIE,
    LOGIN_FORM_SECONDS,
    SESSION_COOKIE,
    SESSION_SECONDS,
    Session,
    Sessions,
    Throttle,
    cookie_options,
    same_origin,
)

log = logging.getLogger("faregate.ui")

STATIC = Path(__file__).parent / "static"
ASSETS = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}
MAX_FORM_BYTES = 4096
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}
DISABLED = ("The dashboard is disabled: this gateway has no master key. Set "
            "general_settings.master_key (or FAREGATE_MASTER_KEY) and restart.")

router = APIRouter(prefix="/ui", include_in_schema=False)
_files: dict[str, bytes] = {}
_throttle = Throttle()


def _file(name: str) -> bytes:
    if name not in _files:
        _files[name] = (STATIC / name).read_bytes()
    return _files[name]


def _sessions(request: Request) -> Sessions | None:
    """This app's session keeper (built on first use), or None: no master key, no dashboard."""
    state = request.app.state
    keeper = getattr(state, "ui_sessions", None)
    if keeper is None:
        gw = state.gateway
        gs = gw.config.general_settings
        if gs.master_key is None:
            return None
        secret = gs.secret_key.get_secret_value() if gs.secret_key is not None else None
        keeper = state.ui_sessions = Sessions(gs.master_key.get_secret_value(), secret, redis=gw.redis)
    return keeper


def _page(body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status_code=status, headers=SECURITY_HEADERS)


def _disabled_page() -> HTMLResponse:
    doc = _file("login.html").decode()
    form_start, form_end = doc.index("<form"), doc.index("</form>") + len("</form>")
    doc = doc[:form_start] + f'<p class="error" id="disabled">{html.escape(DISABLED)}</p>' + doc[form_end:]
    return _page(doc, 403)


def _login_page(request: Request, keeper: Sessions, error: str = "", status: int = 200) -> HTMLResponse:
    nonce, field = keeper.login_token()
    doc = _file("login.html").decode().replace("{{csrf}}", field)
    doc = doc.replace("{{error}}", html.escape(error))
    resp = _page(doc, status)
    resp.set_cookie(LOGIN_COOKIE, nonce, **cookie_options(request, LOGIN_FORM_SECONDS))
    return resp


def _redirect(to: str) -> RedirectResponse:
    return RedirectResponse(to, status_code=303, headers={"cache-control": "no-store"})


def _forbidden(message: str) -> HTMLResponse:
    return _page(f"<!doctype html><title>Forbidden</title><p>{html.escape(message)}</p>", 403)


async def _read_form(request: Request) -> dict[str, str]:
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        raise GatewayError(400, "Send the form as application/x-www-form-urlencoded.", code="invalid_form")
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_FORM_BYTES:
            raise GatewayError(413, "The form is too large.", code="request_too_large")
    try:
        fields = parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=8)
    except ValueError:  # too many fields
        raise GatewayError(400, "The form has too many fields.", code="invalid_form") from None
    return {k: v[0] for k, v in fields.items()}


# -- pages ------------------------------------------------------------------------------------------


@router.get("")
async def index(request: Request) -> Response:
    keeper = _sessions(request)
    if keeper is None:
        return _disabled_page()
    session = await keeper.check(request.cookies.get(SESSION_COOKIE))
    if session is None:
        return _redirect("/ui/login")
    return _page(_file("index.html").decode().replace("{{csrf}}", session.csrf))


@router.get("/login")
async def login_form(request: Request) -> Response:
    keeper = _sessions(request)
    if keeper is None:
        return _disabled_page()
    if await keeper.check(request.cookies.get(SESSION_COOKIE)) is not None:
        return _redirect("/ui")
    return _login_page(request, keeper)


@router.post("/login")
async def login(request: Request) -> Response:
    keeper = _sessions(request)
    if keeper is None:
        return _disabled_page()
    if not same_origin(request):
        return _forbidden("Cross-origin login refused (the Origin header must name this server).")
    form = await _read_form(request)
    if not keeper.login_token_ok(request.cookies.get(LOGIN_COOKIE), form.get("csrf")):
        return _forbidden("The login form expired or is invalid: reload the page and try again.")
    client = request.client.host if request.client else "?"
    if _throttle.blocked(client):
        return _login_page(request, keeper, "Too many failed attempts: wait a few minutes.", 429)
    if not keeper.key_matches(form.get("key", "")):
        _throttle.failed(client)
        log.warning("dashboard: failed login from %s", client)
        return _login_page(request, keeper, "That is not the master key.", 401)
    _throttle.succeeded(client)
    cookie, _ = keeper.issue()
    resp = _redirect("/ui")
    resp.set_cookie(SESSION_COOKIE, cookie, **cookie_options(request, SESSION_SECONDS))
    resp.delete_cookie(LOGIN_COOKIE, path="/ui")
    log.info("dashboard: login from %s", client)
    return resp


@router.post("/logout")
async def logout(request: Request) -> Response:
    keeper = _sessions(request)
    if keeper is None:
        return _disabled_page()
    if not same_origin(request):
        return _forbidden("Cross-origin logout refused (the Origin header must name this server).")
    form = await _read_form(request)
    session = await keeper.check(request.cookies.get(SESSION_COOKIE))
    if session is not None:
        if not keeper.csrf_ok(session, form.get("csrf")):
            return _forbidden("Invalid CSRF token: reload the page and try again.")
        await keeper.revoke(session)
    resp = _redirect("/ui/login")
    resp.delete_cookie(SESSION_COOKIE, path="/ui", httponly=True, samesite="strict")
    return resp


@router.get("/static/{name}")
async def static(request: Request, name: str) -> Response:
    if name not in ASSETS:
        raise GatewayError(404, f"No file '{name}'.", code="not_found")
    return Response(_file(name), media_type=ASSETS[name],
                    headers={"cache-control": "no-cache", "x-content-type-options": "nosniff"})


# -- data -------------------------------------------------------------------------------------------


async def _session(request: Request) -> Session:
    keeper = _sessions(request)
    if keeper is None:
        raise GatewayError(403, DISABLED, type="permission_error", code="dashboard_disabled")
    session = await keeper.check(request.cookies.get(SESSION_COOKIE))
    if session is None:
        raise unauthorized()
    return session


async def _data(request: Request) -> tuple[Any, queries.Window]:
    """Checks the session; the ledger's engine and the query's window."""
    await _session(request)
    p = request.query_params
    w = queries.window(p.get("start"), p.get("end"), p.get("bucket"))
    return await request.app.state.gateway.db(), w


def _json(doc: Any) -> JSONResponse:
    return JSONResponse(doc, headers={"cache-control": "no-store"})


@router.get("/api/summary")
async def api_summary(request: Request) -> Response:
    engine, w = await _data(request)
    return _json(await queries.summary(engine, w))


@router.get("/api/traffic")
async def api_traffic(request: Request) -> Response:
    engine, w = await _data(request)
    return _json(await queries.traffic(engine, w))


def _choice(request: Request, name: str, allowed: tuple[str, ...], default: str) -> str:
    value = request.query_params.get(name) or default
    if value not in allowed:
        raise bad_request(f"'{name}' must be one of {', '.join(allowed)}.", name)
    return value


def _count(request: Request, name: str, default: int, most: int) -> int:
    value = request.query_params.get(name)
    if value is None:
        return default
    if not value.isdigit() or not 1 <= int(value) <= most:
        raise bad_request(f"'{name}' must be a whole number from 1 to {most}.", name)
    return int(value)


@router.get("/api/latency")
async def api_latency(request: Request) -> Response:
    engine, w = await _data(request)
    metric = _choice(request, "metric", ("latency", "ttft"), "latency")
    return _json(await queries.latency(engine, w, metric))  # type: ignore[arg-type]


@router.get("/api/spend")
async def api_spend(request: Request) -> Response:
    engine, w = await _data(request)
    by = _choice(request, "by", tuple(queries.BREAKDOWNS), "model")
    return _json(await queries.breakdown(engine, w, by, _count(request, "limit", 10, 100)))


@router.get("/api/requests")
async def api_requests(request: Request) -> Response:
    engine, w = await _data(request)
    q = (request.query_params.get("q") or "").strip()[:256] or None
    errors = request.query_params.get("errors", "") in ("1", "true", "on")
    return _json(await queries.recent(engine, w, q, errors, _count(request, "limit", 50, 200)))


@router.get("/api/requests/{request_id}")
async def api_request(request: Request, request_id: str) -> Response:
    await _session(request)
    entry = await ledger_entry(await request.app.state.gateway.db(), request_id)
    if entry is None:
        raise GatewayError(404, f"No request '{request_id}' in the ledger (rows are written within "
                           "about a second of the answer).", code="request_not_found", param="request_id")
    return _json({"entry": LedgerEntry.model_validate(entry).model_dump(mode="json"),
                  "log": await _request_log(request, request_id)})


@router.get("/api/breakers")
async def api_breakers(request: Request) -> Response:
    await _session(request)
    rows = []
    for dep, h in request.app.state.gateway.routing.health().items():
        breaker = h.get("breaker") or {}
        rows.append({"deployment": dep, "group": h.get("group"), "provider": h.get("provider"),
                     "model": h.get("model"), "state": breaker.get("state", "closed"),
                     "failures": breaker.get("failures"), "window_requests": breaker.get("requests"),
                     "consecutive_failures": breaker.get("consecutive_failures"),
                     "cooldown_left": breaker.get("cooldown_left"), "cooling_down": h.get("cooling_down"),
                     "in_flight": h.get("in_flight"), "ewma_latency_ms": h.get("ewma_latency_ms"),
                     "last_error": h.get("last_error")})
    return _json({"deployments": rows})


async def _request_log(request: Request, request_id: str) -> dict[str, Any]:
    """The request's log entry (redacted bodies, trace id), as `GET /admin/logs/{id}` shows it;
    status 404 when there is none (logging off, sampled out or past retention)."""
    from faregate.http.routes.admin_logs import entry_json
    from faregate.logs.search import entry

    try:
        found = await entry(await request.app.state.gateway.db(), request_id)
    except Exception as exc:  # the explorer still shows the ledger row
        log.warning("dashboard: request log lookup failed: %s", type(exc).__name__)
        return {"status": 502, "body": None}
    if found is None:
        return {"status": 404, "body": None}
    return {"status": 200, "body": entry_json(found)}
