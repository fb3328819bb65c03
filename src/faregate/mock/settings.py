"""Behaviour knobs of the mock upstream, and their per-request header overrides.

`MockSettings` holds the live, process-wide behaviour (patched at runtime through
`POST /mock/settings`). `resolve_knobs` folds the `x-mock-*` request headers over it into
the `Knobs` of one request; headers always win.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field, fields
from typing import Any

DEFAULT_MODELS = (
    "gpt-4o-mini",
    "gpt-4o",
    "gpt-3.5-turbo-instruct",
    "text-embedding-3-small",
    "claude-haiku-4-5",
    "claude-sonnet-4-5",
)

# Per-request override headers.
H_LATENCY = "x-mock-latency-ms"
H_TTFT = "x-mock-ttft-ms"
H_ITL = "x-mock-itl-ms"
H_STATUS = "x-mock-status"
H_ERROR_CODE = "x-mock-error-code"
H_TOKENS = "x-mock-tokens"
H_DISCONNECT = "x-mock-disconnect-after"
H_OMIT_USAGE = "x-mock-omit-usage"

METRICS_FLAVORS = ("vllm", "sglang", "tgi")  # which engine's metric names /metrics uses


@dataclass
class MockSettings:
    """What the mock does. Every field can be patched live with `POST /mock/settings`."""

    latency_ms: float = 0.0  # non-stream: total delay before the response
    ttft_ms: float = 0.0  # stream: delay before the headers and the first content chunk
    itl_ms: float = 0.0  # stream: delay between content chunks
    error_rate: float = 0.0  # 0..1 share of requests answered with `error_status`
    error_status: int = 500
    seed: int | None = None  # seeds the RNG behind `error_rate`
    tokens: int | None = None  # output exactly this many tokens (reply words repeated)
    require_api_key: str | None = None  # Bearer / api-key (OpenAI, Azure) or x-api-key (Anthropic)
    disconnect_after: int | None = None  # stream: close after N events; non-stream: close at once
    omit_usage: bool = False  # never send usage
    num_requests_waiting: int = 0  # /metrics gauge
    num_requests_running: int = 0  # /metrics gauge, added to the requests in flight
    kv_cache_usage_perc: float = 0.0  # /metrics gauge, 0..1
    metrics_model_name: str = "mock"  # `model_name` label on /metrics
    metrics_flavor: str = "vllm"  # /metrics names: "vllm", "sglang" or "tgi"
    embedding_dimensions: int = 8  # default when the request has no `dimensions`
    models: list[str] = field(default_factory=lambda: list(DEFAULT_MODELS))  # GET /v1/models
    system_fingerprint: str = "fp_mock0000"
    record_requests: bool = True  # keep the last 200 API requests for GET /mock/requests

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def patch(self, values: dict[str, Any]) -> None:
        """Apply a partial update; raises ValueError (nothing applied) on an unknown key or bad value."""
        if not isinstance(values, dict):
            raise ValueError("settings must be a JSON object")
        coerced = {}
        for key, value in values.items():
            kind = _FIELD_KINDS.get(key)
            if kind is None:
                raise ValueError(f"unknown setting {key!r}")
            coerced[key] = _coerce(key, kind, value)
        flavor = coerced.get("metrics_flavor", self.metrics_flavor)
        if flavor not in METRICS_FLAVORS:
            raise ValueError(f"metrics_flavor must be one of {', '.join(METRICS_FLAVORS)}, got {flavor!r}")
        for key, value in coerced.items():
            setattr(self, key, value)


def _coerce(key: str, kind: str, value: Any) -> Any:
    optional = kind.endswith("?")
    kind = kind.rstrip("?")
    if value is None:
        if optional:
            return None
        raise ValueError(f"{key} must not be null")
    try:
        if kind == "float":
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if kind == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            return int(value)
        if kind == "bool":
            if isinstance(value, str):
                return value.strip().lower() in ("1", "true", "yes", "on")
            return bool(value)
        if kind == "str":
            if not isinstance(value, str):
                raise TypeError
            return value
        if kind == "list":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise TypeError
            return list(value)
    except (TypeError, ValueError):
        pass
    raise ValueError(f"{key} must be {'an ' if kind == 'int' else 'a '}{kind}{' or null' if optional else ''}")


_FIELD_KINDS = {
    "latency_ms": "float", "ttft_ms": "float", "itl_ms": "float", "error_rate": "float",
    "error_status": "int", "seed": "int?", "tokens": "int?", "require_api_key": "str?",
    "disconnect_after": "int?", "omit_usage": "bool", "num_requests_waiting": "int",
    "num_requests_running": "int", "kv_cache_usage_perc": "float", "metrics_model_name": "str",
    "metrics_flavor": "str", "embedding_dimensions": "int",
    "models": "list", "system_fingerprint": "str", "record_requests": "bool",
}
assert set(_FIELD_KINDS) == {f.name for f in fields(MockSettings)}


class Knobs:
    """The resolved behaviour of one request (times in seconds)."""

    __slots__ = ("latency", "ttft", "itl", "status", "error_code", "tokens", "disconnect_after", "omit_usage")

    def __init__(self, latency: float, ttft: float, itl: float, status: int | None, error_code: str | None,
                 tokens: int | None, disconnect_after: int | None, omit_usage: bool) -> None:
        self.latency = latency
        self.ttft = ttft
        self.itl = itl
        self.status = status
        self.error_code = error_code
        self.tokens = tokens
        self.disconnect_after = disconnect_after
        self.omit_usage = omit_usage


def _header_number(headers: Any, name: str, default: float | None, integer: bool = False) -> Any:
    raw = headers.get(name)
    if raw is None:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        raise ValueError(f"header {name} must be a number, got {raw!r}") from None
    if value < 0:
        raise ValueError(f"header {name} must not be negative")
    return value


def resolve_knobs(s: MockSettings, headers: Any, rng: random.Random) -> Knobs:
    """Settings overlaid with the request's `x-mock-*` headers. Raises ValueError on a bad header."""
    latency = _header_number(headers, H_LATENCY, s.latency_ms)
    ttft = _header_number(headers, H_TTFT, s.ttft_ms)
    itl = _header_number(headers, H_ITL, s.itl_ms)
    tokens = _header_number(headers, H_TOKENS, s.tokens, integer=True)
    disconnect = _header_number(headers, H_DISCONNECT, s.disconnect_after, integer=True)
    status = _header_number(headers, H_STATUS, None, integer=True)
    if status is not None and status < 400:
        status = None
    elif status is None and s.error_rate > 0 and rng.random() < s.error_rate:
        status = s.error_status
    omit = headers.get(H_OMIT_USAGE)
    omit_usage = s.omit_usage if omit is None else omit.strip().lower() in ("1", "true", "yes", "on")
    return Knobs(latency / 1000.0, ttft / 1000.0, itl / 1000.0, status, headers.get(H_ERROR_CODE),
                 tokens, disconnect, omit_usage)
