"""OpenTelemetry GenAI metrics, exported over OTLP beside the Prometheus ones.

The semantic conventions' histograms, made by the semconv package's own factories:
- `gen_ai.client.token.usage` (tokens per upstream call, `gen_ai.token.type` input | output),
- `gen_ai.client.operation.duration` (seconds waiting on the upstream per call),
- `gen_ai.server.request.duration` (the whole request as the client saw it),
- `gen_ai.server.time_to_first_token`, `gen_ai.server.time_per_output_token` (streams),
with `gen_ai.operation.name`, `gen_ai.provider.name`, `gen_ai.request.model` (the model group),
`gen_ai.response.model` and `error.type` as attributes — bounded, like the Prometheus labels.

On when `tracing.metrics` is true or, unset, when an OTLP endpoint variable is set and
OTEL_METRICS_EXPORTER is not `none` (the OpenTelemetry default); off with OTEL_SDK_DISABLED.
Exporter, interval (OTEL_METRIC_EXPORT_INTERVAL) and resource come from the OTEL_* variables.
Recorded by the observe stage with the Prometheus metrics, once per finished call.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from faregate.telemetry.metrics import error_type, model_label

if TYPE_CHECKING:
    from faregate.core.call import Call

log = logging.getLogger("faregate.telemetry")
_ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
_OPERATIONS = {"chat": "chat", "completions": "text_completion", "embeddings": "embeddings"}


class GenAIMetrics:
    def __init__(self, provider: Any) -> None:
        from opentelemetry.semconv._incubating.metrics import gen_ai_metrics as m

        self.provider = provider
        meter = provider.get_meter("faregate")
        self.tokens = m.create_gen_ai_client_token_usage(meter)
        self.operation = m.create_gen_ai_client_operation_duration(meter)
        self.request = m.create_gen_ai_server_request_duration(meter)
        self.ttft = m.create_gen_ai_server_time_to_first_token(meter)
        self.tpot = m.create_gen_ai_server_time_per_output_token(meter)

    @classmethod
    def from_settings(cls, config: Any = None, env: Mapping[str, str] | None = None) -> GenAIMetrics | None:
        env = os.environ if env is None else env
        tracing = getattr(config, "tracing", None)
        wanted = getattr(tracing, "metrics", None)
        if (env.get("OTEL_SDK_DISABLED") or "").strip().lower() == "true":
            return None
        if wanted is None:
            exporter = (env.get("OTEL_METRICS_EXPORTER") or "otlp").strip().lower()
            wanted = exporter != "none" and any(env.get(name) for name in _ENDPOINTS)
        if not wanted:
            return None
        try:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
            from opentelemetry.sdk.metrics import MeterProvider
            from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
            from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        except ImportError:
            log.error("OpenTelemetry metrics are on but not installed: pip install 'faregate[otel]'")
            return None
        resource = Resource.create({})
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: "faregate"}))
        reader = PeriodicExportingMetricReader(OTLPMetricExporter())
        return cls(MeterProvider(resource=resource, metric_readers=[reader]))

    def record(self, call: Call) -> None:
        """One finished call's samples (requests refused before routing carry no provider)."""
        dep, err = call.deployment, call.error
        attrs: dict[str, Any] = {"gen_ai.operation.name": _OPERATIONS.get(call.endpoint, call.endpoint),
                                 "gen_ai.request.model": model_label(call)}
        if dep is not None:
            attrs["gen_ai.provider.name"] = dep.provider
            attrs["gen_ai.response.model"] = dep.upstream_model
        if err is not None:
            attrs["error.type"] = error_type(err)
        end = call.finished_at or call.started
        self.request.record(end - call.started, attrs)
        if dep is None:
            return
        self.operation.record(call.upstream_wait, attrs)
        tokens = call.tokens
        if tokens is not None:
            self.tokens.record(tokens.input, {**attrs, "gen_ai.token.type": "input"})
            self.tokens.record(tokens.output, {**attrs, "gen_ai.token.type": "output"})
        if call.streaming and call.first_token_at is not None:
            self.ttft.record(call.first_token_at - call.started, attrs)
            if tokens is not None and tokens.output > 1:
                self.tpot.record((end - call.first_token_at) / (tokens.output - 1), attrs)

    async def close(self) -> None:
        """Export what was recorded since the last interval, then stop (gateway shutdown)."""
        await asyncio.to_thread(self.provider.shutdown)
