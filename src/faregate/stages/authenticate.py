"""authenticate: who is calling. Accepts `Authorization: Bearer <key>`, `x-api-key: <key>` or
`api-key: <key>`; the key is the master key or a virtual key (`sk-fg-…`) from the directory.

With no master key configured the gateway is open (the embedded default): requests without a
known key run as "anonymous"; the CLI refuses to bind such a gateway to a non-loopback address
without `--insecure`. A known virtual key is still honoured (attribution, limits, budgets).
"""

from __future__ import annotations

import datetime as dt
import hmac

from faregate.access.directory import Directory
from faregate.access.records import ANONYMOUS, MASTER, Principal
from faregate.core.call import Call
from faregate.core.errors import GatewayError, unauthorized
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

    def __init__(self, master_key: str | None, directory: Directory) -> None:
        self._master = master_key.encode() if master_key else None
        self.directory = directory

    @property
    def open(self) -> bool:
        return self._master is None

    def check(self, headers: object) -> Principal:
        """The principal for these headers, or 401 (also used by the WebSocket)."""
        key = presented_key(headers)
        if key is not None:
            if self._master is not None and hmac.compare_digest(key.encode(), self._master):
                return MASTER
            record = self.directory.lookup(key)
            if record is not None:
                if record.expired(dt.datetime.now(dt.UTC)):
                    raise GatewayError(401, f"API key {record.id} expired at {record.expires_at.isoformat()}.",  # type: ignore[union-attr]
                                       type="authentication_error", code="key_expired")
                return self.directory.principal(record)
        if self._master is None:
            return ANONYMOUS
        raise unauthorized()

    async def before(self, call: Call) -> bool:
        # HTTP routes authenticate before reading a body (an unauthenticated client must not
        # make the gateway parse megabytes); then there is nothing left to do here.
        if call.principal is None:
            call.principal = self.check(call.headers)
        return False
