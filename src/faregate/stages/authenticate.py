"""authenticate: who is calling. Accepts `Authorization: Bearer <key>` or `x-api-key: <key>`.

With no master key configured the gateway is open (the embedded default); the CLI refuses to
bind such a gateway to a non-loopback address without `--insecure`.
"""

from __future__ import annotations

import hmac

from faregate.core.call import Call
from faregate.core.errors import unauthorized
from faregate.core.pipeline import NoAfter


def presented_key(headers: object) -> str | None:
    get = headers.get  # type: ignore[attr-defined]
    auth = get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return None
    key = get("x-api-key") or get("api-key")
    return key.strip() if key else None


class Authenticate(NoAfter):
    name = "authenticate"

    def __init__(self, master_key: str | None) -> None:
        self._master = master_key.encode() if master_key else None

    @property
    def open(self) -> bool:
        return self._master is None

    def check(self, headers: object) -> str:
        """Return the principal for these headers or raise 401 (also used by the WebSocket)."""
        if self._master is None:
            return "anonymous"
        key = presented_key(headers)
        if key is None or not hmac.compare_digest(key.encode(), self._master):
            raise unauthorized()
        return "master"

    async def before(self, call: Call) -> bool:
        # HTTP routes authenticate before reading a body (an unauthenticated client must not
        # make the gateway parse megabytes); then there is nothing left to do here.
        if call.principal is None:
            call.principal = self.check(call.headers)
        return False
