"""Every failure a client can see, as one exception type with two wire shapes.

A `GatewayError` knows its HTTP status and OpenAI error fields; the HTTP layer renders it
as OpenAI JSON (`{"error": {...}}`) or Anthropic JSON (`{"type": "error", ...}`) depending on
the endpoint. Messages never carry secrets: they are written here or copied from an upstream
body that has been through `scrub()`.
"""

from __future__ import annotations

import re
from typing import Any

# Anthropic's error `type` for each status (https://docs.anthropic.com/en/api/errors).
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}

# Bearer tokens, sk-style keys and similar credentials an upstream may echo back.
_SECRET = re.compile(
    r"(?i)(bearer\s+)[A-Za-z0-9._\-]{8,}|\b(sk|pk|rk|fg)-[A-Za-z0-9_\-]{8,}|"
    r"(api[_-]?key[\"'\s:=]+)[A-Za-z0-9._\-]{8,}"
)


def scrub(text: str) -> str:
    """Mask anything shaped like a credential before it reaches a client or a log."""

    def _mask(m: re.Match[str]) -> str:
        prefix = m.group(1) or m.group(3) or ""
        return prefix + "[redacted]"

    return _SECRET.sub(_mask, text)


class GatewayError(Exception):
    """An error with an HTTP status and an OpenAI-style `type`/`code`/`param`."""

    __slots__ = ("status", "type", "code", "param", "message", "headers")

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.code = code
        self.param = param
        self.message = message
        self.headers = headers or {}

    def openai_body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def anthropic_body(self) -> dict[str, Any]:
        kind = _ANTHROPIC_TYPES.get(self.status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": self.message}}

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"GatewayError({self.status}, {self.code!r}, {self.message!r})"


def unauthorized(message: str = "Missing or invalid API key. Send 'Authorization: Bearer <key>' or 'x-api-key: <key>'.") -> GatewayError:
    return GatewayError(401, message, type="authentication_error", code="invalid_api_key")


def model_not_found(model: str) -> GatewayError:
    return GatewayError(
        404,
        f"The model '{model}' does not exist on this gateway. GET /v1/models lists the models you can use.",
        type="invalid_request_error",
        code="model_not_found",
        param="model",
    )


def upstream_unavailable(message: str) -> GatewayError:
    return GatewayError(502, message, type="api_error", code="upstream_error")


def client_closed() -> GatewayError:
    """Not sent to anyone (the client is gone): what the ledger records for a call it abandoned."""
    return GatewayError(499, "The client closed the connection before the answer was complete.",
                        type="api_error", code="client_closed_request")
