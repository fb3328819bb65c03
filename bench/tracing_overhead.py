"""What tracing costs per request, in CPU: the pipeline with faregate's stage layout
(authenticate, observe, account, route, admit, invoke with one upstream attempt, meter — stubs
that do no work of their own) run in-process without tracing and with it, all stage spans
(`stage_spans_min_ms: 0`, 11 spans a call: the root, 4 before-steps, 1 attempt, 5 after-steps),
only stage steps of 1 ms or more (none here: 2 spans) or no stage spans (`null`: 2 spans).
Two exporters behind the BatchSpanProcessor: one that drops the spans (the span work on the
request path alone) and the real OTLP/HTTP exporter sending to a sink process on loopback
(plus protobuf encoding and HTTP on the exporter thread). CPU is the process's
(`time.process_time`: every thread), spans flushed before the clock stops.

    .venv/bin/python bench/tracing_overhead.py [--calls 5000] [--stream]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import subprocess
import sys
import time
from typing import Any

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from faregate.access.records import MASTER
from faregate.core.call import Call
from faregate.core.pipeline import NoAfter, Pipeline
from faregate.telemetry.tracing import Tracing

RESPONSE = {"id": "chatcmpl-1", "model": "gpt-4o-mini", "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}}


class Dep:
    id, provider, litellm_provider = "gpt-4o-mini#0", "openai", "openai"
    upstream_model = "gpt-4o-mini"
    api_base = "http://127.0.0.1:8000/v1"


SINK = """
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
class H(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers["content-length"]))
        self.send_response(200); self.send_header("content-length", "0"); self.end_headers()
    def log_message(self, *a): pass
s = HTTPServer(("127.0.0.1", 0), H); print(s.server_address[1], flush=True); s.serve_forever()
"""


class Before(NoAfter):
    def __init__(self, name: str) -> None:
        self.name = name

    async def before(self, call: Call) -> bool:
        return call.cache == "hit"  # some work: an after-only stage's `return False` gets no span


class AfterOnly:
    def __init__(self, name: str) -> None:
        self.name = name

    async def before(self, call: Call) -> bool:
        return False

    async def after(self, call: Call) -> None:
        return None


class Both(AfterOnly):
    async def before(self, call: Call) -> bool:  # type: ignore[override]
        return call.cache == "hit"


class Invoke(AfterOnly):
    def __init__(self, tracing: Tracing | None, stream: bool) -> None:
        super().__init__("invoke")
        self.tracing, self.stream = tracing, stream

    async def before(self, call: Call) -> bool:
        if self.tracing is None:
            self._call(call)
        else:
            with self.tracing.attempt(call, Dep()):  # type: ignore[arg-type]
                self._call(call)
        return False

    def _call(self, call: Call) -> None:
        call.deployment = Dep()  # type: ignore[assignment]
        call.attempts += 1
        if self.stream:
            call.first_token_at = time.perf_counter()
            call.stream = _chunks(call)
        else:
            call.response, call.usage = RESPONSE, RESPONSE["usage"]


async def _chunks(call: Call) -> Any:
    for i in range(20):
        finish = "stop" if i == 19 else None
        choice = {"index": 0, "delta": {"content": "x"}, "finish_reason": finish}
        yield {"id": "c", "model": "gpt-4o-mini", "choices": [choice]}
    call.usage = RESPONSE["usage"]


class Drop(SpanExporter):
    def export(self, spans: Any) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def pipeline(tracing: Tracing | None, stream: bool) -> Pipeline:
    return Pipeline([Before("authenticate"), AfterOnly("observe"), AfterOnly("account"),
                     Before("route"),
                     Both("admit"), Invoke(tracing, stream), AfterOnly("meter")], tracing=tracing)


async def per_call(p: Pipeline, calls: int, stream: bool) -> float:
    """CPU seconds per call, every thread, spans exported before the clock stops."""
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 16,
            "temperature": 0.2, "stream": stream}
    gc.collect()
    start = time.process_time()
    for i in range(calls):
        call = Call(request_id=str(i), endpoint="chat", body=body, headers={}, principal=MASTER)
        await p.run(call)
        if call.stream is not None:
            async for _ in call.stream:
                pass
    if p.tracing is not None:
        p.tracing.provider.force_flush()
    return (time.process_time() - start) / calls * 1e6


async def measure(args: argparse.Namespace, endpoint: str) -> None:
    setups: dict[str, Pipeline] = {"off": pipeline(None, args.stream)}
    for exporter in ("drop", "otlp"):
        for minimum in (0.0, 1.0, None):
            make = Drop() if exporter == "drop" else OTLPSpanExporter(endpoint=endpoint)
            tracing = Tracing.with_exporters([make], stage_spans_min_ms=minimum)
            setups[f"{exporter}, stage_spans_min_ms: {minimum}"] = pipeline(tracing, args.stream)
    best: dict[str, float] = {}
    for name, p in setups.items():
        await per_call(p, 1000, args.stream)  # warm up
        best[name] = min([await per_call(p, args.calls, args.stream) for _ in range(3)])
    kind = "stream (20 chunks)" if args.stream else "non-stream"
    print(f"{kind} call, 7 stub stages, CPU per call (best of 3 x {args.calls}):")
    for name, us in best.items():
        extra = "" if name == "off" else f"   (+{us - best['off']:.0f} us for tracing)"
        print(f"  {name:36} {us:7.1f} us{extra}")
    for p in setups.values():
        if p.tracing is not None:
            p.tracing.provider.shutdown()


def main() -> None:
    os.environ.setdefault("OTEL_BSP_MAX_QUEUE_SIZE", "1000000")  # a tight loop: no span dropped
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=5000)
    ap.add_argument("--stream", action="store_true")
    args = ap.parse_args()
    sink = subprocess.Popen([sys.executable, "-c", SINK], stdout=subprocess.PIPE, text=True)
    try:
        port = sink.stdout.readline().strip()  # type: ignore[union-attr]
        asyncio.run(measure(args, f"http://127.0.0.1:{port}/v1/traces"))
    finally:
        sink.kill()


if __name__ == "__main__":
    main()
