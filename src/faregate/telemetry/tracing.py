"""OpenTelemetry traces: one trace per request, by the GenAI semantic conventions.

A call's root span (`chat gpt-4o-mini`, kind SERVER; `text_completion …`, `embeddings …`)
starts when the request arrived and ends once its after-steps ran — for a stream, when the
stream ended — so it carries the final usage, cost, cache outcome and error. Each pipeline
stage runs in a child span (`faregate.stage.admit`; its after-step in
`faregate.stage.admit.after`) and each upstream attempt in a CLIENT span
(`chat <upstream model>`) under the invoke stage. A client's W3C `traceparent`/`tracestate`
is continued. Spans leave through a BatchSpanProcessor and the OTLP/HTTP exporter, configured
by the standard OTEL_* variables; `close()` flushes them at shutdown.

Off (the default: no OTLP endpoint set), `from_settings` returns None, OpenTelemetry is not
even imported (~110 ms and the `otel` extra) and the pipeline runs no tracing code. The spans
themselves are made in telemetry/spans.py, imported only when tracing is on. Message content is
recorded only when opted in, and then through `redact` (telemetry/content.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from faregate.telemetry.content import mask_sensitive

if TYPE_CHECKING:
    from faregate.core.call import Call
    from faregate.routing.deployment import Deployment

log = logging.getLogger("faregate.tracing")

CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
_ENDPOINT_ENVS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
_TRUE = frozenset({"1", "true", "yes", "on"})
_CONTENT_ON = _TRUE | {"span_only", "span_and_event"}  # opentelemetry-util-genai's modes too

# ------------------------------------------------------------------------------- settings

def _setting(config: Any, name: str, default: Any = None) -> Any:
    """`config.tracing.<name>` (a schema section or, before the schema has one, a dict)."""
    section = getattr(config, "tracing", None) if config is not None else None
    if isinstance(section, Mapping):
        return section.get(name, default)
    return getattr(section, name, default)


class Tracing:
    """This process's tracer provider and the hooks the pipeline calls, only when tracing is on:
    `start(call)` (the root span, on `call.trace`), `wrap(stage)` (once per stage, at start-up),
    `attempt(call, deployment)` (a context manager around one upstream attempt) and `end(call)`
    (after the last after-step). `close()` flushes at shutdown."""

    def __init__(self, provider: Any, *, capture_content: bool = False,
                 stage_spans_min_ms: float | None = 0.0,
                 redact: Callable[[str], str] | None = None) -> None:
        from faregate import __version__
        from faregate.telemetry.spans import Spans  # imports OpenTelemetry

        self.provider = provider
        self.capture_content = capture_content
        # Stage spans: every step's (0), only steps at least this long or failing, or none (None).
        self.stage_spans_min_ms = stage_spans_min_ms
        self.redact = redact or mask_sensitive  # every text of recorded content goes through it
        self.spans = Spans(provider.get_tracer("faregate", __version__),
                           capture_content=capture_content, redact=self.redact,
                           stage_spans_min_ms=stage_spans_min_ms)
        self.start: Callable[[Call], None] = self.spans.start
        self.end: Callable[[Call], None] = self.spans.end
        self.wrap: Callable[[Any], Any] = self.spans.wrap
        self.attempt: Callable[[Call, Deployment], AbstractContextManager[Any]] = self.spans.attempt

    @classmethod
    def from_settings(cls, config: Any = None, *, env: Mapping[str, str] | None = None,
                      redact: Callable[[str], str] | None = None) -> Tracing | None:
        """Tracing when the config's `tracing.enabled` is true, or (unset) when an OTLP endpoint
        variable is set; None otherwise, and always with OTEL_SDK_DISABLED=true or
        OTEL_TRACES_EXPORTER=none. The exporter, sampler, batch sizes and service name come from
        the standard OTEL_* variables (service name default: "faregate"); `env` (default
        os.environ) decides on or off, the exporter itself reads os.environ."""
        env = os.environ if env is None else env
        wanted = _setting(config, "enabled")
        named = env.get("OTEL_TRACES_EXPORTER") or "otlp"
        exporters = {e.strip().lower() for e in named.split(",")}
        disabled = (env.get("OTEL_SDK_DISABLED") or "").strip().lower() in _TRUE
        if disabled or exporters <= {"none", ""}:
            return None
        if wanted is None:
            wanted = any(env.get(name) for name in _ENDPOINT_ENVS) or "console" in exporters
        if not wanted:
            return None
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter
        except ImportError as exc:
            msg = "tracing is on but OpenTelemetry is not installed: pip install 'faregate[otel]'"
            if _setting(config, "enabled"):
                raise RuntimeError(msg) from exc
            log.error("%s (traces are off)", msg)
            return None
        chosen = [OTLPSpanExporter() if name == "otlp" else ConsoleSpanExporter()
                  for name in sorted(exporters) if name in ("otlp", "console")]
        capture = bool(_setting(config, "capture_content")) or (
            (env.get(CAPTURE_CONTENT_ENV) or "").strip().lower() in _CONTENT_ON)
        return cls.with_exporters(chosen, capture_content=capture, redact=redact,
                                  stage_spans_min_ms=_setting(config, "stage_spans_min_ms", 0.0))

    @classmethod
    def with_exporters(cls, exporters: list[Any], *, batch: bool = True, **kwargs: Any) -> Tracing:
        """A tracer provider (resource from OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES, sampler
        from OTEL_TRACES_SAMPLER) sending to `exporters`, in batches (OTEL_BSP_* variables)."""
        from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

        from faregate import __version__

        resource = Resource.create({SERVICE_VERSION: __version__})
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: "faregate"}))
        provider = TracerProvider(resource=resource)
        for exporter in exporters:
            processor = BatchSpanProcessor if batch else SimpleSpanProcessor
            provider.add_span_processor(processor(exporter))
        return cls(provider, **kwargs)

    async def close(self) -> None:
        """Export every span still queued, then stop the exporter (at gateway shutdown)."""
        def flush() -> None:
            self.provider.force_flush(10_000)
            self.provider.shutdown()

        await asyncio.to_thread(flush)
