"""Load gauges of self-hosted engines (vLLM, SGLang, TGI), read from their Prometheus text page.

`parse_metrics(text, flavor)` keeps only the few gauge lines it needs (an engine's page has
hundreds of histogram lines) and returns an `EngineMetrics`: requests waiting and running
(summed over label sets) and KV-cache usage (the max). routing/engine_load.py polls the pages
and decides from these values when an engine is overloaded.

    parse_metrics(page)            # EngineMetrics(flavor="vllm", waiting=12, running=7, kv_usage=0.93)
    parse_metrics(page, "sglang")  # ValueError if the page has none of SGLang's gauges
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

FLAVORS = ("auto", "vllm", "sglang", "tgi")

# engine -> (waiting gauges, running gauges, KV-cache usage gauges, 0..1). Waiting and running
# are summed over label sets (several models or engines behind one endpoint); KV usage is the max.
# vLLM renamed gpu_cache_usage_perc to kv_cache_usage_perc (V1); both are read.
_GAUGES: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "vllm": (("vllm:num_requests_waiting",), ("vllm:num_requests_running",),
             ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")),
    "sglang": (("sglang:num_queue_reqs",), ("sglang:num_running_reqs",), ("sglang:token_usage",)),
    "tgi": (("tgi_queue_size",), ("tgi_batch_current_size",), ()),  # TGI has no KV-cache gauge
}
_WANTED = tuple(sorted({n for names in _GAUGES.values() for group in names for n in group}))
_WANTED_SET = frozenset(_WANTED)


@dataclass(frozen=True, slots=True)
class EngineMetrics:
    """The load gauges of one scrape (None: the engine does not report it)."""

    flavor: str  # "vllm" | "sglang" | "tgi"
    waiting: int | None
    running: int | None
    kv_usage: float | None  # 0..1


def parse_metrics(text: str, flavor: str = "auto") -> EngineMetrics:
    """Read the load gauges from a Prometheus text page. `flavor="auto"` picks the engine by the
    names present (vLLM, then SGLang, then TGI). Raises ValueError when the page has none of the
    flavor's gauges or a wanted line does not parse."""
    if flavor not in FLAVORS:
        raise ValueError(f"flavor must be one of {', '.join(FLAVORS)}, got {flavor!r}")
    # An engine's page has hundreds of histogram lines; only the few gauge lines are parsed.
    kept = [line for line in text.splitlines() if line.startswith(_WANTED) and _line_name(line) in _WANTED_SET]
    values: dict[str, list[float]] = {}
    try:
        for family in text_string_to_metric_families("\n".join(kept) + "\n"):
            for sample in family.samples:
                if sample.name in _WANTED_SET and math.isfinite(sample.value):
                    values.setdefault(sample.name, []).append(float(sample.value))
    except Exception as exc:  # the parser raises ValueError, IndexError, ... on bad lines
        raise ValueError(f"bad metrics line: {exc}") from None
    if flavor == "auto":
        flavor = next((f for f, groups in _GAUGES.items() if any(n in values for g in groups for n in g)), "")
        if not flavor:
            raise ValueError("no vLLM, SGLang or TGI load gauges on the metrics page")
    waiting_names, running_names, kv_names = _GAUGES[flavor]
    if not any(n in values for n in waiting_names + running_names + kv_names):
        raise ValueError(f"no {flavor} load gauges on the metrics page (e.g. {waiting_names[0]})")

    def total(names: tuple[str, ...]) -> int | None:
        found = [v for n in names for v in values.get(n, ())]
        return round(sum(found)) if found else None

    kv = [v for n in kv_names for v in values.get(n, ())]
    return EngineMetrics(flavor, total(waiting_names), total(running_names), max(kv) if kv else None)


def _line_name(line: str) -> str:
    end = len(line)
    for ch in "{ \t":
        i = line.find(ch)
        if 0 <= i < end:
            end = i
    return line[:end]
