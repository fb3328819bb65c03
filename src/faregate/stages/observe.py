"""observe (after-step only, outermost but authenticate): the finished call's Prometheus metrics
(telemetry/metrics.py) — requests, latency, overhead, TTFT, inter-token latency, tokens, cost,
savings, rate-limit refusals — and, when on, the OpenTelemetry GenAI histograms
(telemetry/genai_metrics.py). It runs last on the way back, so it sees what account recorded."""

from __future__ import annotations

from typing import Any

from faregate.core.call import Call
from faregate.telemetry.metrics import Metrics


class Observe:
    name = "observe"

    def __init__(self, metrics: Metrics, genai: Any = None) -> None:
        self.metrics = metrics
        self.genai = genai  # GenAIMetrics, or None (off)

    async def before(self, call: Call) -> bool:
        return False

    async def after(self, call: Call) -> None:
        self.metrics.observe(call)
        if self.genai is not None:
            self.genai.record(call)
