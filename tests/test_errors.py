"""Every error class: right status, OpenAI shape, the SDK's exception type, no secrets."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import openai
import pytest

from tests.conftest import MASTER_KEY, UPSTREAM_KEY, Server

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def client(gateway: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=MASTER_KEY, max_retries=0, timeout=20)


def raw_post(gateway: Server, path: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict, dict]:
    req = urllib.request.Request(gateway.url + path, data=body, method="POST",
                                 headers={"content-type": "application/json", "authorization": f"Bearer {MASTER_KEY}", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


def test_wrong_key_is_401(gateway: Server) -> None:
    bad = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as exc:
        bad.chat.completions.create(model="gpt-4o-mini", messages=HI)
    assert exc.value.code == "invalid_api_key"
    assert "sk-wrong" not in str(exc.value.body)


def test_missing_key_is_401(gateway: Server) -> None:
    status, _, body = raw_post(gateway, "/v1/chat/completions", b"{}", headers={"authorization": ""})
    assert status == 401 and body["error"]["type"] == "authentication_error"


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as exc:
        client.chat.completions.create(model="gpt-9", messages=HI)
    assert exc.value.code == "model_not_found"
    assert exc.value.param == "model"


def test_invalid_field_is_400_naming_it(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "robot", "content": "x"}])
    assert exc.value.param == "messages[0].role"
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="gpt-4o-mini", messages=HI, temperature=7)
    assert exc.value.param == "temperature"


def test_missing_field_is_400(gateway: Server) -> None:
    status, _, body = raw_post(gateway, "/v1/chat/completions", b'{"model": "gpt-4o-mini"}')
    assert status == 400
    assert body["error"] == {"message": "Missing required field 'messages'.", "type": "invalid_request_error",
                             "param": "messages", "code": "missing_required_parameter"}


@pytest.mark.parametrize("body", [b"{not json", b"[1,2]", b"", b'"text"', b"\xff\xfe"])
def test_malformed_json_is_400(gateway: Server, body: bytes) -> None:
    status, _, doc = raw_post(gateway, "/v1/chat/completions", body)
    assert status == 400
    assert doc["error"]["type"] == "invalid_request_error"


def test_body_too_large_is_413(gateway: Server) -> None:
    big = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * 300_000}]}).encode()
    status, _, doc = raw_post(gateway, "/v1/chat/completions", big)
    assert status == 413 and doc["error"]["code"] == "request_too_large"


def test_unknown_route_is_openai_shaped_404(gateway: Server) -> None:
    status, _, doc = raw_post(gateway, "/v1/nope", b"{}")
    assert status == 404 and doc["error"]["code"] == "not_found"


def test_upstream_429_passes_through_with_retry_after(client: openai.OpenAI, mock_settings) -> None:
    mock_settings(error_rate=1.0, error_status=429)
    with pytest.raises(openai.RateLimitError) as exc:
        client.chat.completions.create(model="gpt-4o-mini", messages=HI)
    assert exc.value.response.headers["retry-after"]


def test_upstream_500_becomes_502(client: openai.OpenAI, mock_settings) -> None:
    mock_settings(error_rate=1.0, error_status=500)
    with pytest.raises(openai.InternalServerError) as exc:
        client.chat.completions.create(model="gpt-4o-mini", messages=HI)
    assert exc.value.status_code == 502
    assert exc.value.code == "upstream_error"


def test_upstream_400_passes_through(client: openai.OpenAI, mock_settings) -> None:
    mock_settings(error_rate=1.0, error_status=400)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="gpt-4o-mini", messages=HI)


def test_upstream_timeout_is_504(client: openai.OpenAI, mock_settings) -> None:
    mock_settings(latency_ms=1500)
    with pytest.raises(openai.InternalServerError) as exc:
        client.chat.completions.create(model="slow", messages=HI)
    assert exc.value.status_code == 504 and exc.value.code == "upstream_timeout"


def test_dead_deployment_is_retried_on_a_live_one(client: openai.OpenAI) -> None:
    for _ in range(6):  # whichever deployment the weighted pick starts with
        resp = client.chat.completions.create(model="flaky", messages=HI)
        assert resp.choices[0].message.content == "Mock reply to: hi"


def test_dead_group_falls_back(client: openai.OpenAI) -> None:
    resp = client.chat.completions.with_raw_response.create(model="dead-primary", messages=HI)
    assert resp.parse().choices[0].message.content == "Mock reply to: hi"


def test_client_api_base_never_changes_the_destination(gateway: Server, mock_requests) -> None:
    body = {"model": "gpt-4o-mini", "messages": HI, "api_base": "http://169.254.169.254/latest",
            "base_url": "http://evil.example", "api_key": "sk-client-chosen", "extra_headers": {"x": "y"},
            "custom_field": 1}
    status, _, doc = raw_post(gateway, "/v1/chat/completions", json.dumps(body).encode())
    assert status == 200 and doc["choices"][0]["message"]["content"] == "Mock reply to: hi"
    (req,) = mock_requests()  # it reached the configured upstream, with the configured key
    sent = req["body"]
    for field in ("api_base", "base_url", "api_key", "extra_headers"):
        assert field not in sent
    assert sent["custom_field"] == 1  # harmless extras pass through
    assert "sk-client-chosen" not in json.dumps(req["headers"])


def test_request_id_is_minted_and_client_id_echoed(gateway: Server) -> None:
    body = json.dumps({"model": "gpt-4o-mini", "messages": HI}).encode()
    _, headers, _ = raw_post(gateway, "/v1/chat/completions", body, {"x-client-request-id": "my-id-42"})
    assert headers["x-client-request-id"] == "my-id-42"
    ours = headers["x-request-id"]
    assert ours != "my-id-42" and len(ours) == 32
    # the same client id twice still gives two requests (two ledger rows), never a collision
    _, again, _ = raw_post(gateway, "/v1/chat/completions", body, {"x-request-id": "my-id-42"})
    assert again["x-client-request-id"] == "my-id-42" and again["x-request-id"] != ours
    _, headers, _ = raw_post(gateway, "/v1/chat/completions", body, {"x-request-id": "bad id\twith tab"})
    assert "x-client-request-id" not in headers
    _, headers, _ = raw_post(gateway, "/v1/chat/completions", body)
    assert len(headers["x-request-id"]) == 32
    assert float(headers["x-faregate-overhead-ms"]) >= 0
    _, headers, _ = raw_post(gateway, "/v1/chat/completions", b"{bad")
    assert headers["x-request-id"] and "x-faregate-overhead-ms" in headers


def test_secrets_never_in_responses_or_logs(client: openai.OpenAI, gateway: Server, mock_settings) -> None:
    mock_settings(error_rate=1.0, error_status=401)  # upstream complains about the gateway's key
    with pytest.raises(openai.APIStatusError) as exc:
        client.chat.completions.create(model="gpt-4o-mini", messages=HI)
    assert exc.value.status_code == 502 and exc.value.code == "upstream_auth_failed"
    log = gateway.output()
    for secret in (UPSTREAM_KEY, MASTER_KEY):
        assert secret not in json.dumps(exc.value.body)
        assert secret not in log


def test_streamed_upstream_disconnect_ends_with_error_event(client: openai.OpenAI, mock_settings) -> None:
    mock_settings(disconnect_after=3)
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "a b c d e f"}], stream=True)
    got = []
    with pytest.raises(openai.APIError):
        for chunk in stream:
            got.extend(c.delta.content or "" for c in chunk.choices)
    assert 0 < len(got) <= 3


def _mock_running(mock_url: str) -> float:
    with urllib.request.urlopen(f"{mock_url}/metrics", timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith("vllm:num_requests_running"):
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError("no vllm:num_requests_running in /metrics")


def test_client_disconnect_cancels_the_upstream_stream(gateway: Server, mock_upstream: Server, mock_settings) -> None:
    import http.client
    import time

    mock_settings(itl_ms=300, tokens=100)  # a 30-second stream if nobody stops it
    deadline = time.monotonic() + 5
    while _mock_running(mock_upstream.url) and time.monotonic() < deadline:  # earlier tests' leftovers
        time.sleep(0.05)
    conn = http.client.HTTPConnection("127.0.0.1", int(gateway.url.rsplit(":", 1)[1]), timeout=10)
    conn.request("POST", "/v1/chat/completions", json.dumps({"model": "gpt-4o-mini", "messages": HI, "stream": True}),
                 {"authorization": f"Bearer {MASTER_KEY}", "content-type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.readline().startswith(b"data: ")  # the stream is flowing
    assert _mock_running(mock_upstream.url) == 1
    conn.sock.close()  # the client goes away mid-stream
    conn.close()
    deadline = time.monotonic() + 3
    while _mock_running(mock_upstream.url) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _mock_running(mock_upstream.url) == 0  # the upstream request was cancelled, not read to the end
