"""The config file's schema.

The LiteLLM sections (`model_list`, `router_settings`, `general_settings`, `litellm_settings`,
`environment_variables`) are read as LiteLLM writes them, so an existing LiteLLM `config.yaml`
loads unchanged; keys faregate does not use yet are kept and reported by `faregate config check`
as ignored. faregate's own sections (`server`, `local_model`) reject unknown keys so typos fail.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from faregate.logs.settings import RequestLogSettings


class _Open(BaseModel):
    """A LiteLLM section: unknown keys are allowed (and listed as ignored)."""

    model_config = ConfigDict(extra="allow")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EngineOverload(_Strict):
    max_waiting: int | None = Field(default=8, ge=0, description="Queued requests above which the engine is overloaded.")
    max_kv_usage: float | None = Field(default=0.9, gt=0, le=1, description="KV-cache use (0..1) above which it is overloaded.")
    recover_waiting: int | None = Field(default=None, ge=0, description="Back in use at or below this queue (default: half of max_waiting).")
    recover_kv_usage: float | None = Field(default=None, ge=0, le=1, description="… and at or below this KV-cache use (default: max_kv_usage - 0.1).")
    scrape_interval: float = Field(default=2.0, gt=0, le=60)
    engine: Literal["auto", "vllm", "sglang", "tgi"] = "auto"


class LiteLLMParams(_Open):
    model: str = Field(description="'provider/upstream-model', e.g. 'openai/gpt-4o', 'anthropic/claude-sonnet-4-5', 'local/smollm2'.")
    api_base: str | None = None
    api_key: SecretStr | None = None
    api_version: str | None = None
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    timeout: float | None = Field(default=None, gt=0)
    stream_timeout: float | None = Field(default=None, gt=0)
    weight: float = Field(default=1.0, ge=0)
    order: int = Field(default=1, ge=1, description="Priority tier (LiteLLM's `order`): deployments of a higher order serve only when none of a lower one can — e.g. self-hosted engines 1, managed APIs 2.")
    connect_timeout: float | None = Field(default=None, gt=0, description="Seconds to open a connection (default: server.connect_timeout).")
    first_byte_timeout: float | None = Field(default=None, gt=0, description="Seconds until the response headers (non-stream) or the first stream chunk.")
    max_parallel_requests: int | None = Field(default=None, ge=1, description="Requests in flight to this deployment, per replica; more wait in a fair queue.")
    metrics_url: str | None = Field(default=None, description="Self-hosted engine's Prometheus endpoint (vLLM, SGLang), scraped for queue depth and KV-cache use.")
    overload: EngineOverload | None = Field(default=None, description="When a self-hosted engine counts as overloaded (needs metrics_url).")
    input_cost_per_token: Decimal | None = Field(default=None, ge=0)
    output_cost_per_token: Decimal | None = Field(default=None, ge=0)
    # `local` provider only
    model_path: str | None = None
    n_threads: int | None = Field(default=None, ge=1)
    n_ctx: int | None = Field(default=None, ge=256)

    @field_validator("model")
    @classmethod
    def _model_not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must name the upstream model, e.g. 'openai/gpt-4o-mini'")
        return v


class ModelEntry(_Open):
    model_name: str = Field(min_length=1, description="The model group name clients ask for.")
    litellm_params: LiteLLMParams
    model_info: dict[str, Any] = Field(default_factory=dict)


class BreakerConfig(_Strict):
    error_rate: float = Field(default=0.5, gt=0, le=1, description="Open when this share of the window's requests failed…")
    min_requests: int = Field(default=10, ge=1, description="…and the window holds at least this many.")
    window_seconds: float = Field(default=30.0, gt=0)
    half_open_probes: int = Field(default=1, ge=1, description="Requests let through to test a deployment after its cooldown.")


class RetryBudgetConfig(_Strict):
    ratio: float = Field(default=0.2, ge=0, le=10, description="Retries may be at most this share of the requests of the last window.")
    min_per_second: float = Field(default=1.0, ge=0, description="Retries always allowed per second, however little traffic.")
    window_seconds: float = Field(default=10.0, gt=0, le=600)


class RouterSettings(_Open):
    routing_strategy: str = Field(default="weighted", description="weighted | least-busy | latency-based | cost-based | usage-based (LiteLLM's simple-shuffle, latency-based-routing, cost-based-routing, usage-based-routing[-v2] accepted).")
    group_strategies: dict[str, str] = Field(default_factory=dict, description="Per model group: {group: strategy}.")
    sticky_by: Literal["user", "conversation", "key"] | None = Field(default=None, description="Keep one user's / conversation's / key's requests on one deployment while it is healthy.")
    num_retries: int = Field(default=2, ge=0, le=10)
    # LiteLLM's names: {"TimeoutErrorRetries": 3, "RateLimitErrorRetries": 3, ...}
    retry_policy: dict[str, int] = Field(default_factory=dict, description="Retries per error class, overriding num_retries: TimeoutErrorRetries, RateLimitErrorRetries, InternalServerErrorRetries, AuthenticationErrorRetries, BadRequestErrorRetries, ContentPolicyViolationErrorRetries.")
    retry_budget: RetryBudgetConfig = Field(default_factory=RetryBudgetConfig)
    allowed_fails: int = Field(default=5, ge=1, description="Consecutive failures that open a deployment's breaker (LiteLLM's name).")
    cooldown_time: float = Field(default=30.0, gt=0, description="Seconds a breaker stays open before probing (LiteLLM's name).")
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    # LiteLLM shape: [{"gpt-4o": ["gpt-4o-mini", "claude"]}]
    fallbacks: list[dict[str, list[str]]] = Field(default_factory=list)
    context_window_fallbacks: list[dict[str, list[str]]] = Field(default_factory=list)
    content_policy_fallbacks: list[dict[str, list[str]]] = Field(default_factory=list)
    default_fallbacks: list[str] = Field(default_factory=list)
    timeout: float | None = Field(default=None, gt=0, description="Default total timeout (s) per upstream attempt.")
    max_request_timeout: float = Field(default=600.0, gt=0, description="Cap on a client's x-faregate-timeout header (s).")
    retry_backoff_seconds: float = Field(default=0.05, ge=0, le=30)
    max_retry_after_seconds: float = Field(default=10.0, ge=0, description="Longest upstream retry-after honoured before retrying (longer: fall back instead).")
    max_in_flight: int | None = Field(default=None, ge=1, description="Requests in flight per replica; more wait in a fair queue.")
    health_check_interval: float | None = Field(default=None, ge=1, description="Seconds between active probes of every deployment (a one-token request each; off by default).")
    max_queue: int = Field(default=1000, ge=0, description="Requests waiting per queue; beyond it: 429.")
    max_queue_wait_seconds: float = Field(default=10.0, gt=0, description="Longest wait in a queue; beyond it: 429.")

    @field_validator("routing_strategy")
    @classmethod
    def _known_strategy(cls, v: str) -> str:
        return _strategy(v)

    @field_validator("group_strategies")
    @classmethod
    def _known_strategies(cls, v: dict[str, str]) -> dict[str, str]:
        return {g: _strategy(s) for g, s in v.items()}

    @field_validator("retry_policy")
    @classmethod
    def _known_policy(cls, v: dict[str, int]) -> dict[str, int]:
        from faregate.routing.retries import POLICY_NAMES

        for name, n in v.items():
            if name not in POLICY_NAMES:
                raise ValueError(f"unknown retry_policy entry '{name}' (one of: {', '.join(POLICY_NAMES)})")
            if not isinstance(n, int) or not 0 <= n <= 10:
                raise ValueError(f"retry_policy.{name} must be an integer from 0 to 10")
        return v


def _strategy(name: str) -> str:
    from faregate.routing.strategies import ALIASES, STRATEGIES

    if name in STRATEGIES or name in ALIASES:
        return ALIASES.get(name, name)
    raise ValueError(f"unknown routing strategy '{name}' (one of: {', '.join(STRATEGIES)}; or LiteLLM's "
                     f"{', '.join(ALIASES)})")


class GeneralSettings(_Open):
    master_key: SecretStr | None = None
    secret_key: SecretStr | None = Field(default=None, description="Server secret for hashing virtual keys (HMAC-SHA256). Also FAREGATE_SECRET_KEY. Default: derived from the master key. Every replica needs the same one.")


class ServerSettings(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=4000, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    connect_timeout: float = Field(default=5.0, gt=0)
    default_timeout: float = Field(default=600.0, gt=0, description="Total timeout (s) per upstream attempt when neither deployment nor router sets one.")
    stream_idle_timeout: float = Field(default=120.0, gt=0, description="Longest gap (s) allowed between two stream chunks.")
    max_connections_per_host: int = Field(default=512, ge=1)
    shutdown_timeout: float = Field(default=30.0, ge=0, le=1785, description="After SIGTERM, seconds in-flight calls may take to finish before they are ended (503); then sinks flush and the process exits. FAREGATE_SHUTDOWN_TIMEOUT overrides it.")
    data_dir: Path = Field(default_factory=lambda: Path.home() / ".faregate")
    log_level: Literal["debug", "info", "warning", "error"] = "info"


class LocalModelSettings(_Strict):
    """Defaults for `local/...` deployments (each deployment may override in litellm_params)."""

    n_threads: int = Field(default=1, ge=1, description="Generation threads. 1 is the safe default: 2 threads collapse under CPU contention on small machines.")
    n_ctx: int = Field(default=2048, ge=256)
    max_queue: int = Field(default=64, ge=1, description="Requests waiting for the model beyond this get 429.")


class LimitSettings(_Strict):
    """How RPM/TPM/parallel limits and budgets are enforced (see docs/access.md)."""

    rpm_strategy: Literal["auto", "moving-window", "sliding-window"] = Field(default="auto", description="moving-window (auto) is exact; sliding-window weighs the previous minute's count (approximate; one counter instead of one entry per request on Redis).")
    default_max_tokens: int = Field(default=4096, ge=1, description="Output tokens a request without max_tokens reserves against TPM limits and budgets until it settles.")
    conversation_max_requests: int | None = Field(default=None, ge=1, description="Default cap on requests per x-faregate-conversation-id (keys/users/teams may set their own).")
    conversation_max_cost_usd: Decimal | None = Field(default=None, gt=0, description="Default cap on spend per conversation id.")
    conversation_window_seconds: int = Field(default=86400, ge=60, description="How long a conversation's request count and spend are remembered.")
    fail_open: bool = Field(default=True, description="If Redis cannot be reached, admit requests (and log) rather than refuse them all. False: answer 503.")
    key_refresh_seconds: float = Field(default=2.0, gt=0, le=300, description="How often each replica re-reads keys/users/teams changed by another replica (with Redis, changes also arrive at once by pub/sub).")


class AlertSettings(_Strict):
    """Spend anomaly alerts (see docs/alerts.md)."""

    enabled: bool = True
    interval_seconds: float = Field(default=60.0, ge=1)
    webhook_url: str | None = Field(default=None, description="Slack-compatible incoming webhook (POST {'text': ...}).")
    user_spike_factor: float = Field(default=10.0, gt=1, description="Alert when a user's spend in the last hour exceeds this many times the median user's.")
    feature_cost_factor: float = Field(default=2.0, gt=1, description="Alert when a feature's cost per call this week is this many times last week's.")
    budget_thresholds: list[float] = Field(default_factory=lambda: [0.8, 1.0], description="Fractions of a key's budget that raise an alert.")
    min_spend_usd: Decimal = Field(default=Decimal("0.01"), ge=0, description="Spend below this never raises a spike alert (noise floor).")


class TracingSettings(_Strict):
    """OpenTelemetry traces (docs/observability.md); endpoint, headers, sampler and service name
    come from the standard OTEL_* environment variables."""

    enabled: bool | None = Field(default=None, description="null: on when OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set; true: on; false: off.")
    capture_content: bool = Field(default=False, description="Record prompts and answers (redacted) on the root span; also OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true.")
    metrics: bool | None = Field(default=None, description="OpenTelemetry GenAI metrics over OTLP (gen_ai.client.token.usage, …). null: on when an OTLP endpoint variable is set and OTEL_METRICS_EXPORTER is not 'none'.")
    stage_spans_min_ms: float | None = Field(default=0.0, ge=0, description="Stage spans: 0 every stage; >0 only stages at least this long or failed (about a third of the cost); null none (root and attempt spans only).")


class SloTarget(_Strict):
    """Latency objectives for one model group (or every group: '*'), over a window."""

    model: str = Field(default="*", description="A model group, or '*' for each group on its own.")
    endpoint: Literal["chat", "completions", "embeddings"] | None = None
    window_seconds: float = Field(default=3600.0, gt=0, le=30 * 86400)
    min_requests: int = Field(default=20, ge=1, description="Fewer successful requests in the window: no verdict.")
    ttft_p50_ms: float | None = Field(default=None, gt=0)
    ttft_p95_ms: float | None = Field(default=None, gt=0)
    ttft_p99_ms: float | None = Field(default=None, gt=0)
    latency_p50_ms: float | None = Field(default=None, gt=0)
    latency_p95_ms: float | None = Field(default=None, gt=0)
    latency_p99_ms: float | None = Field(default=None, gt=0)

    def objectives(self) -> dict[str, float]:
        return {k: v for k, v in self.model_dump().items() if k.endswith("_ms") and v is not None}


class SloSettings(_Strict):
    """Latency SLOs (see docs/observability.md); checked by the alert monitor each interval."""

    targets: list[SloTarget] = Field(default_factory=list)


class CacheLayer(_Strict):
    """Cache settings a model group may override (see docs/caching.md)."""

    mode: Literal["off", "exact", "semantic"] | None = Field(default=None, description="off | exact | semantic (semantic answers exact matches too).")
    requests: Literal["deterministic", "all"] | None = Field(default=None, description="Which requests are cached: deterministic (temperature 0 or a seed set) or all.")
    ttl: float | None = Field(default=None, gt=0, description="Seconds an entry may be served.")
    similarity_threshold: float | None = Field(default=None, gt=0, le=1, description="Cosine similarity a semantic candidate needs (before verification).")
    verify: bool | None = Field(default=None, description="Semantic candidates must also pass the same-intent check (numbers, negations, antonyms, entities, unmatched words).")


class CacheSettings(CacheLayer):
    """Response caching, top level; `groups` overrides per model group."""

    mode: Literal["off", "exact", "semantic"] | None = "off"
    requests: Literal["deterministic", "all"] | None = "all"
    ttl: float | None = Field(default=3600.0, gt=0)
    similarity_threshold: float | None = Field(default=0.75, gt=0, le=1, description="Measured on bench/data/cache_pairs.jsonl with verify on: precision 1.0, 66 % of paraphrases served. With verify off use ≥ 0.9.")
    verify: bool | None = True
    scope: Literal["key", "team", "global"] = Field(default="team", description="Who shares entries: one key, one team (a key without a team: itself), or everyone.")
    backend: Literal["auto", "memory", "redis"] = Field(default="auto", description="auto: Redis when redis_url is set (shared by replicas), else in-process.")
    max_entries: int = Field(default=10_000, ge=1, description="Entries kept per layer (in-process; LRU eviction).")
    max_bytes: int = Field(default=256 * 1024 * 1024, ge=1024, description="Bytes of responses kept per layer (in-process; LRU eviction).")
    max_entry_bytes: int = Field(default=1024 * 1024, ge=256, description="Responses larger than this are not cached.")
    embedder: str = Field(default="local", description="'local' (all-MiniLM-L6-v2 int8, bundled) or the name of a model group serving embeddings.")
    embedder_threads: int = Field(default=1, ge=1, le=16)
    groups: dict[str, CacheLayer] = Field(default_factory=dict, description="Per model group overrides: {group: {mode, requests, ttl, similarity_threshold, verify}}.")


class Config(_Open):
    model_list: list[ModelEntry] = Field(default_factory=list)
    router_settings: RouterSettings = Field(default_factory=RouterSettings)
    general_settings: GeneralSettings = Field(default_factory=GeneralSettings)
    litellm_settings: dict[str, Any] = Field(default_factory=dict)
    environment_variables: dict[str, str] = Field(default_factory=dict)
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default SQLite under server.data_dir. Also FAREGATE_DATABASE_URL / DATABASE_URL.")
    redis_url: str | None = Field(default=None, description="Redis for state shared by replicas (limits, budget reservations). Also FAREGATE_REDIS_URL. Unset: in-process.")
    server: ServerSettings = Field(default_factory=ServerSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    slo: SloSettings = Field(default_factory=SloSettings)
    request_log: RequestLogSettings = Field(default_factory=RequestLogSettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    local_model: LocalModelSettings = Field(default_factory=LocalModelSettings)

    @model_validator(mode="before")
    @classmethod
    def _litellm_cache(cls, data: Any) -> Any:
        """LiteLLM's `litellm_settings.cache` / `cache_params` become `cache` (unless set)."""
        if isinstance(data, dict) and "cache" not in data:
            ls = data.get("litellm_settings") or {}
            if isinstance(ls, dict) and ls.get("cache"):
                data = {**data, "cache": litellm_cache(ls.get("cache_params") or {})}
        return data

    @model_validator(mode="after")
    def _cache_groups_exist(self) -> Config:
        groups = {m.model_name for m in self.model_list}
        if self.cache.embedder != "local" and self.cache.embedder not in groups:
            raise ValueError(f"cache.embedder '{self.cache.embedder}' is neither 'local' nor a model_name in model_list")
        unknown = sorted(set(self.cache.groups) - groups)
        if unknown:
            raise ValueError(f"cache.groups names model groups not in model_list: {', '.join(unknown)}")
        return self

    def ignored_keys(self) -> list[str]:
        """YAML paths of keys faregate read but does not act on (yet)."""
        out = [f"{k}" for k in (self.model_extra or {})]
        out += [f"router_settings.{k}" for k in (self.router_settings.model_extra or {})]
        out += [f"general_settings.{k}" for k in (self.general_settings.model_extra or {})]
        out += [f"litellm_settings.{k}" for k in self.litellm_settings if k not in ("cache", "cache_params")]
        for i, m in enumerate(self.model_list):
            out += [f"model_list[{i}].litellm_params.{k}" for k in (m.litellm_params.model_extra or {})]
        return out


def litellm_cache(params: dict[str, Any]) -> dict[str, Any]:
    """LiteLLM's cache_params as faregate's `cache` section: `type` local | redis |
    redis-semantic | qdrant-semantic | s3 | disk picks the layer and backend (faregate keeps
    its semantic entries itself; s3/disk become in-process); ttl and similarity_threshold carry
    over. Connection fields (host, port, password) are not read: faregate uses redis_url."""
    kind = str(params.get("type") or "local")
    out: dict[str, Any] = {"mode": "semantic" if "semantic" in kind else "exact",
                           "backend": "redis" if kind.startswith("redis") else "memory"}
    if params.get("ttl") is not None:
        out["ttl"] = params["ttl"]
    if params.get("similarity_threshold") is not None:
        out["similarity_threshold"] = params["similarity_threshold"]
    return out


def embedded_default() -> dict[str, Any]:
    """The config `faregate serve` uses with no file: the bundled local model, nothing else."""
    return {
        "model_list": [
            {
                "model_name": "smollm2",
                "litellm_params": {"model": "local/smollm2-135m-instruct"},
                "model_info": {"description": "SmolLM2-135M-Instruct, bundled, runs on CPU"},
            }
        ]
    }
