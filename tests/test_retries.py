"""Retries (routing/retries.py): what class an upstream failure is in, from the errors the transport
builds out of real OpenAI / Anthropic / Azure error bodies, how many retries each class gets
(LiteLLM's retry_policy names), and how long to wait before one."""

from __future__ import annotations

import random
from typing import Any

import aiohttp
import orjson
import pytest

from faregate.config.loader import ConfigError, parse_config
from faregate.core.errors import GatewayError
from faregate.providers.timeouts import Timeouts
from faregate.providers.transport import UpstreamError, _connection, _timeout, status_error
from faregate.routing.deployment import Deployment, build_deployments
from faregate.routing.retries import (
    HEALTH_FAILURES,
    MAX_BACKOFF,
    POLICY_NAMES,
    RetryPolicy,
    classify,
)

DEP: Deployment = build_deployments(parse_config({"model_list": [
    {"model_name": "gpt-4o", "litellm_params": {"model": "openai/gpt-4o", "api_base": "http://h/v1"}}]}))[0]


def upstream(status: int, body: Any, headers: dict[str, str] | None = None) -> UpstreamError:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return status_error(DEP, status, raw, headers or {})


def openai_error(message: str, type: str | None, code: str | None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def anthropic_error(type: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": type, "message": message}}


OPENAI_CONTEXT = openai_error(
    "This model's maximum context length is 128000 tokens. However, your messages resulted in 131072 tokens. "
    "Please reduce the length of the messages.", "invalid_request_error", "context_length_exceeded", "messages")
ANTHROPIC_CONTEXT = anthropic_error("invalid_request_error", "prompt is too long: 215443 tokens > 200000 maximum")
AZURE_FILTER = {"error": {
    "message": "The response was filtered due to the prompt triggering Azure OpenAI's content management policy. "
               "Please modify your prompt and retry. To learn more about our content filtering policies please "
               "read our documentation: https://go.microsoft.com/fwlink/?linkid=2198766",
    "type": None, "param": "prompt", "code": "content_filter", "status": 400,
    "innererror": {"code": "ResponsibleAIPolicyViolation",
                   "content_filter_result": {"hate": {"filtered": True, "severity": "high"},
                                             "violence": {"filtered": False, "severity": "safe"}}}}}
AZURE_FILTER_OLD = {"error": {"code": "ResponsibleAIPolicyViolation", "status": 400,
                              "message": "The prompt was filtered due to triggering Azure OpenAI's content filtering system."}}
OPENAI_SAFETY = openai_error("Your request was rejected as a result of our safety system. Your prompt may contain "
                             "text that is not allowed by our safety system.", "invalid_request_error",
                             "content_policy_violation")
OPENAI_RATE = openai_error("Rate limit reached for gpt-4o in organization org-abc on tokens per min (TPM): "
                           "Limit 30000, Used 29000, Requested 1500. Please try again in 1.2s.", "tokens",
                           "rate_limit_exceeded")
OPENAI_500 = openai_error("The server had an error while processing your request. Sorry about that!",
                          "server_error", None)
OPENAI_401 = openai_error("Incorrect API key provided: sk-proj-abcdefgh12345678. You can find your API key at "
                          "https://platform.openai.com/account/api-keys.", "invalid_request_error", "invalid_api_key")


@pytest.mark.parametrize(("status", "body", "expected"), [
    (400, OPENAI_CONTEXT, "context_window"),
    (400, ANTHROPIC_CONTEXT, "context_window"),
    (400, openai_error("Input is too long for requested model.", None, None), "context_window"),  # vLLM-style
    (400, AZURE_FILTER, "content_policy"),
    (400, AZURE_FILTER_OLD, "content_policy"),
    (400, OPENAI_SAFETY, "content_policy"),
    (429, OPENAI_RATE, "rate_limit"),
    (429, anthropic_error("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit"),
     "rate_limit"),
    (500, OPENAI_500, "server"),
    (503, b"<html><body>Service Unavailable</body></html>", "server"),
    (529, anthropic_error("overloaded_error", "Overloaded"), "server"),
    (401, OPENAI_401, "auth"),
    (403, anthropic_error("permission_error", "Your API key does not have permission to use the specified resource."),
     "auth"),
    (408, b"", "timeout"),
    (400, openai_error("Invalid value for 'temperature': must be between 0 and 2.", "invalid_request_error",
                       "invalid_value", "temperature"), "bad_request"),
    (400, openai_error("max_tokens is too large: 100000. This model supports at most 16384 completion tokens, "
                       "whereas you provided 100000.", "invalid_request_error", "invalid_value", "max_tokens"),
     "bad_request"),  # the answer's length, not the prompt's: no context-window fallback
    (404, openai_error("The model `gpt-5-turbo` does not exist or you do not have access to it.",
                       "invalid_request_error", "model_not_found"), "bad_request"),
    (413, anthropic_error("request_too_large", "Request exceeds the maximum allowed number of bytes."), "bad_request"),
])
def test_classify_upstream_status_errors(status: int, body: Any, expected: str) -> None:
    err = upstream(status, body)
    assert classify(err) == expected
    assert (expected in HEALTH_FAILURES) == (expected in ("timeout", "rate_limit", "server"))


def test_status_errors_keep_upstream_fields_and_scrub_secrets() -> None:
    err = upstream(400, OPENAI_CONTEXT)
    assert (err.status, err.code, err.param, err.upstream_status, err.retryable) == (
        400, "context_length_exceeded", "messages", 400, False)
    auth = upstream(401, OPENAI_401)
    assert (auth.status, auth.code, auth.retryable) == (502, "upstream_auth_failed", True)
    assert "sk-proj-abcdefgh12345678" not in auth.message and "[redacted]" in auth.message
    rate = upstream(429, OPENAI_RATE, {"retry-after": "7"})
    assert (rate.status, rate.retry_after, rate.headers["retry-after"]) == (429, 7.0, "7")
    assert upstream(429, OPENAI_RATE, {"retry-after-ms": "1500", "retry-after": "7"}).retry_after == 1.5
    assert upstream(429, OPENAI_RATE, {"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}).retry_after == 0.0  # past
    assert upstream(503, OPENAI_500, {"retry-after": "2"}).retry_after == 2.0


def test_classify_timeouts_and_connection_errors() -> None:
    timeout = _timeout(DEP, Timeouts(total=30.0, connect=5.0, idle=30.0))
    assert (timeout.kind, classify(timeout)) == ("timeout", "timeout")
    refused = _connection(DEP, aiohttp.ClientConnectionError("Connection refused"))
    assert (refused.kind, classify(refused)) == ("connection", "server")
    reset = _connection(DEP, aiohttp.ServerDisconnectedError())
    assert (reset.kind, classify(reset)) == ("disconnect", "server")
    broken = UpstreamError(502, "Upstream 'x' closed the stream before it ended.", kind="disconnect",
                           retryable=True, code="upstream_disconnected")
    assert classify(broken) == "server"
    bad_json = UpstreamError(502, "Upstream 'x' sent a response that is not JSON.", kind="protocol",
                             retryable=True, code="upstream_bad_response")
    assert classify(bad_json) == "server"


def test_classify_gateway_errors() -> None:
    assert classify(GatewayError(429, "slow down", type="rate_limit_error")) == "rate_limit"
    assert classify(GatewayError(503, "no deployment available")) == "server"
    assert classify(GatewayError(400, "bad field")) == "bad_request"
    assert classify(GatewayError(400, "The prompt is too long for model 'm'.", code="context_length_exceeded")) \
        == "context_window"


# ------------------------------------------------------------------------------------- policy


def test_default_retries_per_class() -> None:
    p = RetryPolicy(3)
    assert {c: p.retries_for(c) for c in ("timeout", "rate_limit", "server", "auth")} == dict.fromkeys(
        ("timeout", "rate_limit", "server", "auth"), 3)
    assert (p.retries_for("bad_request"), p.retries_for("content_policy"), p.retries_for("context_window")) == (0, 0, 0)
    assert p.most == 3
    assert RetryPolicy(0).most == 0


def test_litellm_retry_policy_names() -> None:
    policy = {"TimeoutErrorRetries": 0, "RateLimitErrorRetries": 5, "InternalServerErrorRetries": 1,
              "AuthenticationErrorRetries": 0, "BadRequestErrorRetries": 1, "ContentPolicyViolationErrorRetries": 2}
    assert set(policy) == set(POLICY_NAMES)
    p = RetryPolicy(2, policy)
    assert [p.retries_for(c) for c in ("timeout", "rate_limit", "server", "auth", "bad_request", "content_policy",
                                       "context_window")] == [0, 5, 1, 0, 1, 2, 0]
    assert p.most == 5
    partial = RetryPolicy(2, {"RateLimitErrorRetries": 0})
    assert (partial.retries_for("rate_limit"), partial.retries_for("timeout")) == (0, 2)


def test_unknown_policy_name_is_refused_by_the_config() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config({"router_settings": {"retry_policy": {"RateLimitErrorRetrys": 3}}})
    assert "RateLimitErrorRetries" in str(exc.value.problems)


@pytest.mark.parametrize(("retry", "bound"), [(1, 0.1), (2, 0.2), (3, 0.4), (5, 1.6), (6, MAX_BACKOFF),
                                              (30, MAX_BACKOFF)])
def test_delay_is_full_jitter_bounded_and_capped(retry: int, bound: float) -> None:
    p = RetryPolicy(3, backoff=0.1, rng=random.Random(retry))
    delays = [p.delay(retry, None, same_deployment=False) for _ in range(4000)]
    assert all(0 <= d <= bound for d in delays)
    assert max(delays) > 0.95 * bound and min(delays) < 0.05 * bound  # the full range is used
    assert abs(sum(delays) / len(delays) - bound / 2) < 0.05 * bound  # uniform: mean is half


def test_zero_backoff_means_no_wait() -> None:
    p = RetryPolicy(3, backoff=0.0)
    assert p.delay(1, upstream(500, OPENAI_500), same_deployment=True) == 0.0


def test_retry_after_only_for_same_deployment_and_short_enough() -> None:
    p = RetryPolicy(3, backoff=0.05, max_retry_after=10.0, rng=random.Random(1))
    short = upstream(429, OPENAI_RATE, {"retry-after": "3"})
    assert p.delay(1, short, same_deployment=True) == 3.0
    assert 0 <= p.delay(1, short, same_deployment=False) <= 0.05  # elsewhere: no reason to wait
    at_limit = upstream(429, OPENAI_RATE, {"retry-after": "10"})
    assert p.delay(2, at_limit, same_deployment=True) == 10.0
    too_long = upstream(429, OPENAI_RATE, {"retry-after": "30"})
    assert 0 <= p.delay(2, too_long, same_deployment=True) <= 0.1
    ms = upstream(503, OPENAI_500, {"retry-after-ms": "250"})
    assert p.delay(1, ms, same_deployment=True) == 0.25
    no_header = upstream(429, OPENAI_RATE)
    assert 0 <= p.delay(1, no_header, same_deployment=True) <= 0.05
    assert RetryPolicy(3, max_retry_after=0.0, rng=random.Random(1)).delay(1, short, same_deployment=True) < 0.06


def test_retry_after_as_an_http_date_is_understood() -> None:
    import datetime as dt
    import email.utils

    from faregate.providers.transport import _retry_after

    soon = email.utils.format_datetime(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30), usegmt=True)
    assert 25 <= _retry_after({"retry-after": soon}) <= 31
    assert _retry_after({"retry-after": "2.5"}) == 2.5
    assert _retry_after({"retry-after-ms": "1500"}) == 1.5
    assert _retry_after({"retry-after": "soon"}) is None
