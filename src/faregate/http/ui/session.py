"""Dashboard sessions: signed cookies, CSRF tokens, the Origin check, logout, login throttling.

A signed cookie rather than a server-side store: `faregate serve --workers N` runs N processes
that share only the config (and Redis, when set), and a session made by one worker must hold
on the others. The cookie is `sid.issued.expires.signature`: `sid` is 32 random bytes
(base64url), the times are epoch seconds (12 h apart), and the signature is HMAC-SHA256 over
the rest under a key derived from the master key (and the server secret, when set) — changing
the master key ends every session. The cookie holds no key and nothing secret; it is
`HttpOnly; SameSite=Strict; Path=/ui`, plus `Secure` over https.

Logout revokes the sid: at once in this process, and in every worker and replica through Redis
when the gateway has one (`fg:ui:revoked:<sid>`, expiring with the session). Without Redis the
other workers of the same host would still accept a copy of a logged-out cookie until it
expires; the browser itself drops it at logout.

CSRF: every state-changing request (login, logout) is a POST that must come from this origin
(Origin, else Referer, naming the host the request was sent to) and carry a token — for logout
the session's own (an HMAC of its sid, in the page), for login a signed double submit (a random
cookie set with the form; the form's hidden field is its HMAC). The data endpoints are GET-only
and need the session cookie, which SameSite=Strict keeps off cross-site requests.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request

log = logging.getLogger("faregate.ui")

SESSION_COOKIE = "fg_ui_session"
LOGIN_COOKIE = "fg_ui_login"
COOKIE_PATH = "/ui"
SESSION_SECONDS = 12 * 3600
LOGIN_FORM_SECONDS = 3600
MAX_FAILURES = 10  # failed logins per client address …
FAILURE_WINDOW = 300.0  # … within this many seconds; then 429 until the oldest ages out
REVOKED_PREFIX = "fg:ui:revoked:"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass(frozen=True)
class Session:
    sid: str
    issued: int
    expires: int
    csrf: str  # what the page's forms send back on logout


class Sessions:
    """Issues and checks session cookies and the CSRF tokens bound to them."""

    def __init__(self, master: str, secret: str | None = None, redis: Any = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._master = master.encode()
        self._key = hmac.new(self._master, b"faregate dashboard session v1|" + (secret or "").encode(),
                             hashlib.sha256).digest()
        self._redis = redis
        self._clock = clock
        self._revoked: dict[str, int] = {}  # sid -> its expiry

    def _sign(self, purpose: str, value: str) -> str:
        return _b64(hmac.new(self._key, f"{purpose}|{value}".encode(), hashlib.sha256).digest())

    def key_matches(self, presented: str) -> bool:
        """The master key, compared in constant time. (Admin keys would be checked here too.)"""
        return hmac.compare_digest(presented.encode(), self._master)

    def issue(self) -> tuple[str, Session]:
        now = int(self._clock())
        sid = _b64(secrets.token_bytes(32))
        payload = f"{sid}.{now}.{now + SESSION_SECONDS}"
        return f"{payload}.{self._sign('session', payload)}", self._session(sid, now, now + SESSION_SECONDS)

    def _session(self, sid: str, issued: int, expires: int) -> Session:
        return Session(sid, issued, expires, self._sign("csrf", sid))

    async def check(self, cookie: str | None) -> Session | None:
        """The session a cookie carries, or None: malformed, forged, expired or logged out."""
        if not cookie or len(cookie) > 256:
            return None
        parts = cookie.split(".")
        if len(parts) != 4:
            return None
        sid, issued_s, expires_s, sig = parts
        if not hmac.compare_digest(sig, self._sign("session", f"{sid}.{issued_s}.{expires_s}")):
            return None
        try:
            issued, expires = int(issued_s), int(expires_s)
        except ValueError:
            return None
        now = self._clock()
        if not (issued - 60 <= now < expires) or expires - issued > SESSION_SECONDS:
            return None
        if await self._is_revoked(sid):
            return None
        return self._session(sid, issued, expires)

    def csrf_ok(self, session: Session, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(str(token), session.csrf)

    async def revoke(self, session: Session) -> None:
        now = int(self._clock())
        self._revoked = {s: e for s, e in self._revoked.items() if e > now}
        self._revoked[session.sid] = session.expires
        if self._redis is not None:
            try:
                await self._redis.set(REVOKED_PREFIX + session.sid, b"1", ex=max(1, session.expires - now))
            except Exception as exc:  # the local revocation stands; other workers may lag
                log.warning("dashboard logout: could not record the revocation in Redis: %s",
                            type(exc).__name__)

    async def _is_revoked(self, sid: str) -> bool:
        if sid in self._revoked:
            return True
        if self._redis is None:
            return False
        try:
            return bool(await self._redis.exists(REVOKED_PREFIX + sid))
        except Exception as exc:  # Redis down: fall back to this process's own list
            log.warning("dashboard session check: Redis unavailable (%s)", type(exc).__name__)
            return False

    # -- the login form's CSRF token (signed double submit) -------------------------------------

    def login_token(self) -> tuple[str, str]:
        """(cookie value, hidden form field value) for a fresh login form."""
        nonce = _b64(secrets.token_bytes(32))
        return nonce, self._sign("login", nonce)

    def login_token_ok(self, cookie: str | None, field: str | None) -> bool:
        if not cookie or not field or len(cookie) > 128:
            return False
        return hmac.compare_digest(str(field), self._sign("login", cookie))


class Throttle:
    """At most MAX_FAILURES failed logins per client address in FAILURE_WINDOW seconds."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._failures: dict[str, deque[float]] = {}
        self._clock = clock

    def _recent(self, client: str) -> deque[float]:
        now = self._clock()
        q = self._failures.get(client) or deque()
        while q and now - q[0] > FAILURE_WINDOW:
            q.popleft()
        return q

    def blocked(self, client: str) -> bool:
        return len(self._recent(client)) >= MAX_FAILURES

    def failed(self, client: str) -> None:
        if len(self._failures) > 10_000:  # many addresses: forget the idle ones
            self._failures = {c: q for c, q in self._failures.items() if self._recent(c)}
        q = self._recent(client)
        q.append(self._clock())
        self._failures[client] = q

    def succeeded(self, client: str) -> None:
        self._failures.pop(client, None)


# -- request helpers ----------------------------------------------------------------------------


def is_https(request: Request) -> bool:
    """Served over https: directly, or behind a proxy that says so (X-Forwarded-Proto)."""
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return request.url.scheme == "https" or forwarded == "https"


def same_origin(request: Request) -> bool:
    """The request comes from a page of this server: its Origin (else its Referer) names the
    host the request was sent to. Neither header, or `Origin: null`: refused."""
    host = request.headers.get("host", "").lower()
    source = request.headers.get("origin") or request.headers.get("referer")
    if not host or not source or source == "null":
        return False
    parts = urlsplit(source)
    return parts.scheme in ("http", "https") and parts.netloc.lower() == host


def cookie_options(request: Request, max_age: int) -> dict[str, Any]:
    return {"max_age": max_age, "path": COOKIE_PATH, "httponly": True, "samesite": "strict",
            "secure": is_https(request)}
