"""OpenTelemetry traces end to end: gateway processes export over OTLP/HTTP to a real receiver
in this test (protobuf bodies decoded with opentelemetry-proto), in front of the mock upstream.

Checked: one trace per request (root `chat gpt-4o-mini`, kind SERVER) with its stage spans and
one CLIENT span per upstream attempt (a retry: two); GenAI attributes, usage included; a
client's `traceparent` continued; a stream's root span ending with the stream; no secret in any
exported byte; message content absent by default and redacted when opted in; spans flushed at
SIGTERM. Plus the redaction hook and the on/off rules, in-process.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("opentelemetry.sdk.trace")
pytest.importorskip("opentelemetry.exporter.otlp.proto.http")
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (  # noqa: E402
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (  # noqa: E402
    ExportTraceServiceRequest,
)

from faregate.core.call import Call  # noqa: E402
from faregate.core.errors import GatewayError  # noqa: E402
from faregate.core.pipeline import Pipeline  # noqa: E402
from faregate.telemetry.content import mask_sensitive  # noqa: E402
from faregate.telemetry.tracing import Tracing  # noqa: E402
from tests.conftest import MASTER_KEY, UPSTREAM_KEY, Server, free_port, stop  # noqa: E402
from tests.gateways import chat, launch_gateway  # noqa: E402

SERVER, CLIENT = 2, 3  # OTLP Span.SpanKind
STATUS_ERROR = 2


class Receiver:
    """An OTLP/HTTP receiver: POST /v1/traces and /v1/metrics, protobuf bodies (gzip or not).
    Spans accumulate; of each metric the latest histogram data points are kept (cumulative)."""

    def __init__(self) -> None:
        self.raw: list[bytes] = []
        self.spans: list[dict[str, Any]] = []
        self.metrics: dict[str, list[Any]] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                receiver.add(self.path, body)
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, path: str, body: bytes) -> None:
        if path == "/v1/metrics":  # the gateway's OpenTelemetry metrics: tests/test_genai_metrics.py
            req = ExportMetricsServiceRequest.FromString(body)
            with self.lock:
                for rm in req.resource_metrics:
                    for sm in rm.scope_metrics:
                        for m in sm.metrics:
                            self.metrics[m.name] = list(m.histogram.data_points)
            return
        assert path == "/v1/traces", path
        req = ExportTraceServiceRequest.FromString(body)
        spans = [_span(s, rs.resource) for rs in req.resource_spans
                 for ss in rs.scope_spans for s in ss.spans]
        with self.lock:
            self.raw.append(body)
            self.spans.extend(spans)

    def wait(self, found: Callable[[list[dict[str, Any]]], Any], timeout: float = 15.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                result = found(list(self.spans))
            if result or time.monotonic() > deadline:
                return result
            time.sleep(0.05)

    def root(self, request_id: str, timeout: float = 15.0) -> dict[str, Any]:
        def find(spans: list[dict[str, Any]]) -> Any:
            return next((s for s in spans
                         if s["attrs"].get("faregate.request_id") == request_id), None)

        root = self.wait(find, timeout)
        assert root is not None, f"no root span for {request_id}"
        return root

    def trace(self, request_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """(root span, every span of its trace): the root ends last, so all are in by then."""
        root = self.root(request_id)
        with self.lock:
            return root, [s for s in self.spans if s["trace_id"] == root["trace_id"]]


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


def _span(s: Any, resource: Any) -> dict[str, Any]:
    return {"name": s.name, "trace_id": s.trace_id.hex(), "span_id": s.span_id.hex(),
            "parent": s.parent_span_id.hex(), "kind": s.kind, "start": s.start_time_unix_nano,
            "end": s.end_time_unix_nano, "attrs": {a.key: _value(a.value) for a in s.attributes},
            "status": s.status.code, "events": [(e.name, e.time_unix_nano) for e in s.events],
            "trace_state": s.trace_state,
            "resource": {a.key: _value(a.value) for a in resource.attributes}}


def _config(mock: str, dead: str) -> str:
    key = "api_key: os.environ/TEST_UPSTREAM_KEY"
    return f"""
model_list:
  - model_name: gpt-4o-mini
    litellm_params: {{model: openai/gpt-4o-mini, api_base: "{mock}/v1", {key}}}
  # the dead deployment is tried first (order 1): a retry lands on the live one
  - model_name: retry
    litellm_params: {{model: openai/gpt-4o-mini, api_base: "{dead}/v1", {key}, order: 1}}
  - model_name: retry
    litellm_params: {{model: openai/gpt-4o-mini, api_base: "{mock}/v1", {key}, order: 2}}
router_settings:
  num_retries: 2
  retry_backoff_seconds: 0.01
  allowed_fails: 100000
  breaker: {{min_requests: 100000}}
  retry_budget: {{min_per_second: 1000}}
general_settings:
  master_key: os.environ/TEST_MASTER_KEY
"""


def _launch(tmp: Path, mock: Server, receiver: Receiver, name: str, **env: str) -> Server:
    config = _config(mock.url, f"http://127.0.0.1:{free_port()}")
    return launch_gateway(tmp, config, env={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
                                            "OTEL_BSP_SCHEDULE_DELAY": "100", **env}, name=name)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


@pytest.fixture(scope="module")
def gw(mock_upstream: Server, receiver: Receiver,
       tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = _launch(tmp_path_factory.mktemp("tracing"), mock_upstream, receiver, "gw")
    yield server
    stop(server.proc)


def _children(spans: list[dict[str, Any]], parent: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in spans if s["parent"] == parent["span_id"]]


# --------------------------------------------------------------------------- end to end

def test_a_chat_request_is_one_trace_with_stage_spans_and_an_attempt_span(
        gw: Server, receiver: Receiver) -> None:
    status, headers, _ = chat(gw, MASTER_KEY, temperature=0.2, top_p=0.9)
    assert status == 200
    root, spans = receiver.trace(headers["x-request-id"])
    assert root["name"] == "chat gpt-4o-mini" and root["kind"] == SERVER and root["parent"] == ""
    a = root["attrs"]
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.request.model"] == "gpt-4o-mini"
    assert a["gen_ai.provider.name"] == "openai" and a["gen_ai.response.model"]
    assert a["gen_ai.response.id"] and a["gen_ai.response.finish_reasons"] == ["stop"]
    assert a["gen_ai.request.max_tokens"] == 16 and a["gen_ai.request.temperature"] == 0.2
    assert a["gen_ai.request.top_p"] == 0.9
    assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
    assert a["faregate.key_id"] == "master" and a["faregate.deployment"] == "gpt-4o-mini#0"
    assert a["faregate.attempts"] == 1 and a["http.response.status_code"] == 200
    assert "faregate.cost_usd" in a and root["status"] != STATUS_ERROR
    assert root["resource"]["service.name"] == "faregate"
    stages = {s["name"]: s for s in _children(spans, root)}
    for name in ("authenticate", "route", "admit", "invoke"):
        assert f"faregate.stage.{name}" in stages, sorted(stages)
    for name in ("meter", "invoke", "admit", "account"):
        assert f"faregate.stage.{name}.after" in stages, sorted(stages)
    assert "faregate.stage.account" not in stages  # an after-only stage: no before-span
    (attempt,) = [s for s in spans if s["kind"] == CLIENT]
    assert attempt["name"] == "chat gpt-4o-mini"
    assert attempt["parent"] == stages["faregate.stage.invoke"]["span_id"]
    assert attempt["attrs"]["server.address"] == "127.0.0.1"
    assert attempt["attrs"]["faregate.attempt"] == 1
    # usage is on the root only: a backend summing a trace's spans counts it once
    assert not any(k.startswith("gen_ai.usage.") for k in attempt["attrs"])
    assert root["start"] <= stages["faregate.stage.authenticate"]["start"]
    assert attempt["end"] <= root["end"]
    assert len({s["trace_id"] for s in spans}) == 1


def test_a_retry_shows_one_client_span_per_attempt(gw: Server, receiver: Receiver) -> None:
    status, headers, _ = chat(gw, MASTER_KEY, model="retry")
    assert status == 200
    root, spans = receiver.trace(headers["x-request-id"])
    attempts = sorted((s for s in spans if s["kind"] == CLIENT),
                      key=lambda s: s["attrs"]["faregate.attempt"])
    assert [s["attrs"]["faregate.attempt"] for s in attempts] == [1, 2]
    failed, served = attempts
    assert failed["status"] == STATUS_ERROR
    assert failed["attrs"]["error.type"] == "upstream_connection_error"
    assert failed["attrs"]["faregate.deployment"] == "retry#1"
    assert served["attrs"]["faregate.deployment"] == "retry#2"
    assert served["status"] != STATUS_ERROR and "error.type" not in served["attrs"]
    assert root["name"] == "chat retry" and root["attrs"]["faregate.attempts"] == 2
    assert root["status"] != STATUS_ERROR


def test_a_refused_request_ends_its_trace_with_the_error(gw: Server, receiver: Receiver) -> None:
    status, headers, _ = chat(gw, MASTER_KEY, model="no-such-model")
    assert status == 404
    root, spans = receiver.trace(headers["x-request-id"])
    assert root["status"] == STATUS_ERROR and root["attrs"]["error.type"] == "model_not_found"
    assert root["attrs"]["http.response.status_code"] == 404
    route = next(s for s in spans if s["name"] == "faregate.stage.route")
    assert route["status"] == STATUS_ERROR
    assert not any(s["name"] == "faregate.stage.invoke" for s in spans)


def test_a_client_traceparent_is_continued(gw: Server, receiver: Receiver) -> None:
    trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    status, headers, _ = chat(gw, MASTER_KEY, headers={"traceparent": f"00-{trace_id}-{parent}-01",
                                                      "tracestate": "vendor=abc"})
    assert status == 200
    root, spans = receiver.trace(headers["x-request-id"])
    assert root["trace_id"] == trace_id and root["parent"] == parent
    assert "vendor=abc" in root["trace_state"]
    assert all(s["trace_id"] == trace_id for s in spans) and len(spans) > 5


def test_a_streams_root_span_ends_with_the_stream_and_carries_its_usage(
        gw: Server, receiver: Receiver, mock_settings: Callable[..., Any]) -> None:
    mock_settings(tokens=6, itl_ms=40)
    status, headers, text = chat(gw, MASTER_KEY, stream=True)
    assert status == 200 and "[DONE]" in text
    root, spans = receiver.trace(headers["x-request-id"])
    a = root["attrs"]
    assert a["gen_ai.request.stream"] is True and a["gen_ai.usage.output_tokens"] == 6
    assert a["gen_ai.response.finish_reasons"] == ["stop"] and a["gen_ai.response.id"]
    invoke = next(s for s in spans if s["name"] == "faregate.stage.invoke")
    (attempt,) = [s for s in spans if s["kind"] == CLIENT]
    assert root["end"] - invoke["end"] >= 150e6  # 5 gaps of 40 ms after the first chunk
    assert attempt["end"] >= invoke["end"] + 150e6 and attempt["end"] <= root["end"]
    ttfc = a["gen_ai.response.time_to_first_chunk"]
    assert 0 < ttfc < (root["end"] - root["start"]) / 1e9
    assert 0 < attempt["attrs"]["gen_ai.response.time_to_first_chunk"] < ttfc
    assert [name for name, _ in root["events"]] == ["faregate.first_chunk"]
    assert root["start"] < root["events"][0][1] <= invoke["end"]
    after = next(s for s in spans if s["name"] == "faregate.stage.meter.after")
    assert after["start"] >= invoke["end"] + 150e6  # after-steps ran at the stream's end


def test_a_client_leaving_mid_stream_ends_the_attempt_and_root_spans(
        gw: Server, receiver: Receiver, mock_settings: Callable[..., Any]) -> None:
    mock_settings(tokens=50, itl_ms=50)
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with httpx.stream("POST", f"{gw.url}/v1/chat/completions", json=body, timeout=30,
                      headers={"authorization": f"Bearer {MASTER_KEY}"}) as resp:
        rid = resp.headers["x-request-id"]
        for line in resp.iter_lines():
            if line.startswith("data: "):
                break  # leave after the first chunk
    root, spans = receiver.trace(rid)
    (attempt,) = [s for s in spans if s["kind"] == CLIENT]
    for span in (root, attempt):
        assert span["status"] == STATUS_ERROR
        assert span["attrs"]["error.type"] == "client_closed_request"
    assert (root["end"] - root["start"]) / 1e9 < 1.5  # not the 2.5 s the whole stream takes


def test_no_secret_and_no_content_in_exported_spans_by_default(gw: Server,
                                                               receiver: Receiver) -> None:
    marker = "zebra-quartz-7781"
    status, headers, _ = chat(gw, MASTER_KEY, messages=[{"role": "user", "content": marker}])
    assert status == 200
    receiver.trace(headers["x-request-id"])
    with receiver.lock:
        raw, spans = b"".join(receiver.raw), list(receiver.spans)
    assert len(spans) > 20
    for secret in (MASTER_KEY, UPSTREAM_KEY, marker):
        assert secret.encode() not in raw, secret
    content = ("gen_ai.input.messages", "gen_ai.output.messages")
    assert not any(name in s["attrs"] for s in spans for name in content)


def test_content_is_recorded_redacted_when_opted_in(mock_upstream: Server, receiver: Receiver,
                                                    tmp_path: Path) -> None:
    gw = _launch(tmp_path, mock_upstream, receiver, "content",
                 OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT="true")
    try:
        prompt = ("Mail jane.doe@example.com or call +1 415 555 0100, card 4111 1111 1111 1111, "
                  "key sk-live-abcdefghijklmnop1234, plain words kept")
        status, headers, _ = chat(gw, MASTER_KEY, max_tokens=None,
                                  messages=[{"role": "user", "content": prompt}])
        assert status == 200
        root, _ = receiver.trace(headers["x-request-id"])
    finally:
        stop(gw.proc)
    (message,) = json.loads(root["attrs"]["gen_ai.input.messages"])
    text = message["parts"][0]["content"]
    assert message["role"] == "user" and message["parts"][0]["type"] == "text"
    assert text == "Mail [email] or call [phone], card [card], key [api-key], plain words kept"
    (answer,) = json.loads(root["attrs"]["gen_ai.output.messages"])  # the mock echoes the prompt
    assert "[email]" in answer["parts"][0]["content"] and answer["finish_reason"] == "stop"
    with receiver.lock:
        raw = b"".join(receiver.raw)
    for leaked in ("jane.doe@example.com", "4111 1111 1111 1111", "415 555 0100", "sk-live-abcdef"):
        assert leaked.encode() not in raw, leaked


def test_spans_are_flushed_at_sigterm(mock_upstream: Server, receiver: Receiver,
                                      tmp_path: Path) -> None:
    # A 10-minute batch delay: only the shutdown flush can export these spans in time.
    gw = _launch(tmp_path, mock_upstream, receiver, "sigterm", OTEL_BSP_SCHEDULE_DELAY="600000")
    try:
        ids = [chat(gw, MASTER_KEY)[1]["x-request-id"] for _ in range(5)]
    finally:
        stop(gw.proc)  # SIGTERM at once
    assert gw.proc.returncode == 0, gw.output()[-2000:]
    for rid in ids:
        assert receiver.root(rid, timeout=2)["name"] == "chat gpt-4o-mini"


# ---------------------------------------------------------------------------- in-process

def test_mask_sensitive_masks_keys_contacts_and_cards_but_not_ordinary_numbers() -> None:
    assert mask_sensitive("Authorization: Bearer abcdefgh12345678") == "Authorization: [api-key]"
    assert mask_sensitive("use sk-proj-AbCdEf0123456789 now") == "use [api-key] now"
    assert mask_sensitive("write to a.b+c@mail.example.org.") == "write to [email]."
    assert mask_sensitive("card 4111-1111-1111-1111 ok") == "card [card] ok"
    assert mask_sensitive("call (415) 555-0100 or +44 20 7946 0958") == "call [phone] or [phone]"
    kept = "ref 1234 5678 9012 3456 (not Luhn) on 2024-05-17, 17/05/2024, 42 items, 3.14, 1,234,567"
    assert mask_sensitive(kept) == kept


def test_tracing_is_on_only_when_configured() -> None:
    assert Tracing.from_settings(None, env={}) is None
    on = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}
    assert Tracing.from_settings(None, env={**on, "OTEL_SDK_DISABLED": "true"}) is None
    assert Tracing.from_settings(None, env={**on, "OTEL_TRACES_EXPORTER": "none"}) is None

    class Config:
        tracing: Any = {"enabled": False}

    assert Tracing.from_settings(Config(), env=on) is None
    Config.tracing = {"enabled": True, "capture_content": True}
    tracing = Tracing.from_settings(Config(), env={})
    assert tracing is not None and tracing.capture_content
    tracing.provider.shutdown()
    tracing = Tracing.from_settings(None, env=on)
    assert tracing is not None and not tracing.capture_content
    tracing.provider.shutdown()


async def test_a_stage_span_threshold_keeps_only_slow_or_failed_steps() -> None:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    class Stage:
        def __init__(self, name: str, sleep: float = 0.0, fail: bool = False) -> None:
            self.name, self.sleep, self.fail = name, sleep, fail

        async def before(self, call: Call) -> bool:
            await asyncio.sleep(self.sleep)
            if self.fail:
                raise GatewayError(429, "slow down", type="rate_limit_error",
                                   code="rate_limit_exceeded")
            return False

        async def after(self, call: Call) -> None:
            pass

    memory = InMemorySpanExporter()
    tracing = Tracing.with_exporters([memory], batch=False, stage_spans_min_ms=5)
    stages = [Stage("fast"), Stage("slow", sleep=0.02), Stage("refuses", fail=True)]
    pipeline = Pipeline(stages, tracing=tracing)
    with pytest.raises(GatewayError):
        await pipeline.run(Call(request_id="r", endpoint="chat", body={"model": "m"}, headers={}))
    spans = {s.name: s for s in memory.get_finished_spans()}
    assert set(spans) == {"chat m", "faregate.stage.slow", "faregate.stage.refuses"}
    assert spans["faregate.stage.slow"].end_time - spans["faregate.stage.slow"].start_time >= 15e6
    assert spans["faregate.stage.refuses"].attributes["error.type"] == "rate_limit_exceeded"
    assert spans["chat m"].attributes["error.type"] == "rate_limit_exceeded"
    root = spans.pop("chat m")
    assert all(s.parent.span_id == root.context.span_id for s in spans.values())
    tracing.provider.shutdown()

    off = Tracing.with_exporters([memory], batch=False, stage_spans_min_ms=None)
    stage = Stage("fast")
    assert Pipeline([stage], tracing=off).stages[0] is stage  # no stage spans: the stage itself
    off.provider.shutdown()


async def test_without_tracing_the_pipeline_keeps_its_stages_and_never_traces() -> None:
    class Stage:
        name = "s"

        async def before(self, call: Call) -> bool:
            call.response = {"ok": True}
            return True

        async def after(self, call: Call) -> None:
            pass

    stage = Stage()
    pipeline = Pipeline([stage])
    assert pipeline.stages[0] is stage and pipeline.tracing is None
    call = Call(request_id="r", endpoint="chat", body={"model": "m"}, headers={"traceparent": "x"})
    await pipeline.run(call)
    assert call.trace is None and call.response == {"ok": True}
