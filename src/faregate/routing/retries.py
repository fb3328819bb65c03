"""What an upstream failure is, how many retries it gets, and how long to wait before one.

Failures fall into the classes LiteLLM's `retry_policy` names, and each class has its own
number of retries (`num_retries` unless the policy says otherwise):

    timeout          TimeoutErrorRetries                 timeouts, HTTP 408
    rate_limit       RateLimitErrorRetries               HTTP 429
    server           InternalServerErrorRetries          5xx, connection refused or reset, broken streams
    auth             AuthenticationErrorRetries          the gateway's upstream key was refused (401/403)
    bad_request      BadRequestErrorRetries (0)          other 4xx: the request itself is wrong
    content_policy   ContentPolicyViolationErrorRetries  the upstream refused the content (0; falls back)
    context_window   —                                   the prompt is too long (never retried; falls back)

Only timeout, rate_limit and server failures count against a deployment's circuit breaker: the
others say nothing about its health. Waits are exponential backoff with full jitter (a uniform
draw up to base·2^n, capped), or the upstream's own `retry-after` when it gave one and it is
short enough (`max_retry_after_seconds`); a longer one sends the retry elsewhere at once.
"""

from __future__ import annotations

import random
from typing import Literal

from faregate.core.errors import GatewayError

ErrorClass = Literal["timeout", "rate_limit", "server", "auth", "bad_request", "content_policy", "context_window"]

POLICY_NAMES = {
    "TimeoutErrorRetries": "timeout",
    "RateLimitErrorRetries": "rate_limit",
    "InternalServerErrorRetries": "server",
    "AuthenticationErrorRetries": "auth",
    "BadRequestErrorRetries": "bad_request",
    "ContentPolicyViolationErrorRetries": "content_policy",
}
HEALTH_FAILURES = frozenset({"timeout", "rate_limit", "server"})
MAX_BACKOFF = 2.0

_CONTEXT_CODES = frozenset({"context_length_exceeded", "context_window_exceeded", "string_above_max_length"})
_CONTEXT_TEXT = ("maximum context length", "context length", "context window", "prompt is too long",
                 "input is too long", "too many tokens", "reduce the length")
_POLICY_CODES = frozenset({"content_policy_violation", "content_filter", "content_filtered", "responsibleaipolicyviolation"})
_POLICY_TEXT = ("content management policy", "content policy", "content filter", "safety system")


def classify(err: GatewayError) -> ErrorClass:
    kind = getattr(err, "kind", None)
    upstream = getattr(err, "upstream_status", None)
    code = (err.code or "").lower()
    if kind == "timeout" or upstream == 408:
        return "timeout"
    if err.status == 429 or upstream == 429:
        return "rate_limit"
    if code == "upstream_auth_failed":
        return "auth"
    if kind in ("connection", "disconnect", "protocol"):
        return "server"
    if upstream is not None and upstream >= 500 or (upstream is None and err.status >= 500):
        return "server"
    text = err.message.lower()
    if code in _CONTEXT_CODES or any(t in text for t in _CONTEXT_TEXT):
        return "context_window"
    if code in _POLICY_CODES or any(t in text for t in _POLICY_TEXT):
        return "content_policy"
    return "bad_request"


class RetryPolicy:
    def __init__(self, num_retries: int, policy: dict[str, int] | None = None, *, backoff: float = 0.05,
                 max_retry_after: float = 10.0, rng: random.Random | None = None) -> None:
        self._retries: dict[str, int] = {"timeout": num_retries, "rate_limit": num_retries, "server": num_retries,
                                         "auth": num_retries, "bad_request": 0, "content_policy": 0,
                                         "context_window": 0}
        for name, n in (policy or {}).items():
            self._retries[POLICY_NAMES[name]] = n
        self.backoff = backoff
        self.max_retry_after = max_retry_after
        self._rng = rng or random.Random()

    @property
    def most(self) -> int:
        return max(self._retries.values())

    def retries_for(self, cls: ErrorClass) -> int:
        return self._retries[cls]

    def delay(self, retry: int, err: GatewayError | None, same_deployment: bool) -> float:
        """Seconds to wait before retry number `retry` (1, 2, …). The upstream's retry-after
        binds only a retry to the deployment that sent it."""
        after = getattr(err, "retry_after", None)
        if same_deployment and after is not None and after <= self.max_retry_after:
            return after
        return self._rng.uniform(0, min(MAX_BACKOFF, self.backoff * (2 ** (retry - 1))))
