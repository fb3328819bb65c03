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

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator


class _Open(BaseModel):
    """A LiteLLM section: unknown keys are allowed (and listed as ignored)."""

    model_config = ConfigDict(extra="allow")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


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


class RouterSettings(_Open):
    num_retries: int = Field(default=2, ge=0, le=10)
    # LiteLLM shape: [{"gpt-4o": ["gpt-4o-mini", "claude"]}]
    fallbacks: list[dict[str, list[str]]] = Field(default_factory=list)
    timeout: float | None = Field(default=None, gt=0, description="Default total timeout (s) per upstream attempt.")
    retry_backoff_seconds: float = Field(default=0.05, ge=0, le=30)


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
    local_model: LocalModelSettings = Field(default_factory=LocalModelSettings)

    def ignored_keys(self) -> list[str]:
        """YAML paths of keys faregate read but does not act on (yet)."""
        out = [f"{k}" for k in (self.model_extra or {})]
        out += [f"router_settings.{k}" for k in (self.router_settings.model_extra or {})]
        out += [f"general_settings.{k}" for k in (self.general_settings.model_extra or {})]
        out += [f"litellm_settings.{k}" for k in self.litellm_settings]
        for i, m in enumerate(self.model_list):
            out += [f"model_list[{i}].litellm_params.{k}" for k in (m.litellm_params.model_extra or {})]
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
