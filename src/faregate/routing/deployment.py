"""A `Deployment`: one upstream model endpoint, resolved from a `model_list` entry.

LiteLLM's `model: provider/name` is split into the provider (which translator speaks to it)
and the upstream model name. Known OpenAI-compatible hosts get their default `api_base`, so
`openrouter/…`, `groq/…`, `together_ai/…` work as LiteLLM users expect.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from faregate.config.schema import Config, ModelEntry
from faregate.routing.stats import DeploymentStats

# LiteLLM provider prefix -> (faregate provider, default api_base or None)
_OPENAI_COMPATIBLE: dict[str, str | None] = {
    "openai": "https://api.openai.com/v1",
    "text-completion-openai": "https://api.openai.com/v1",
    "custom_openai": None,
    "hosted_vllm": None,
    "vllm": None,
    "openai_like": None,
    "llamacpp": None,
    "lm_studio": None,
    "sglang": None,
    "huggingface": None,
    "tgi": None,
    "ollama": "http://localhost:11434/v1",
    "ollama_chat": "http://localhost:11434/v1",
    "openrouter": "https://openrouter.ai/api/v1",
    "groq": "https://api.groq.com/openai/v1",
    "together_ai": "https://api.together.xyz/v1",
    "deepseek": "https://api.deepseek.com/v1",
    "mistral": "https://api.mistral.ai/v1",
    "fireworks_ai": "https://api.fireworks.ai/inference/v1",
    "deepinfra": "https://api.deepinfra.com/v1/openai",
    "perplexity": "https://api.perplexity.ai",
    "xai": "https://api.x.ai/v1",
    "cerebras": "https://api.cerebras.ai/v1",
}
_OTHERS: dict[str, tuple[str, str | None]] = {
    "anthropic": ("anthropic", "https://api.anthropic.com"),
    "azure": ("azure", None),
    "local": ("local", None),
}


def split_model(model: str) -> tuple[str, str]:
    """'openai/gpt-4o' -> ('openai', 'gpt-4o'); bare names are inferred like LiteLLM does."""
    prefix, sep, rest = model.partition("/")
    if sep and (prefix in _OPENAI_COMPATIBLE or prefix in _OTHERS):
        return prefix, rest
    if model.startswith("claude"):
        return "anthropic", model
    return "openai", model


@dataclass(slots=True, eq=False)
class Deployment:
    id: str  # "<group>#<index in model_list>"; stable, safe for logs and metric labels
    group: str
    provider: str  # "openai" | "azure" | "anthropic" | "local"
    litellm_provider: str  # the prefix as written, e.g. "hosted_vllm"
    upstream_model: str
    api_base: str | None
    api_version: str | None
    weight: float
    timeout: float
    stream_idle_timeout: float
    rpm: int | None = None
    tpm: int | None = None
    input_cost_per_token: Decimal | None = None
    output_cost_per_token: Decimal | None = None
    model_info: dict[str, Any] = field(default_factory=dict)
    entry: ModelEntry | None = field(default=None, repr=False)
    _api_key: str | None = field(default=None, repr=False)
    order: int = 1  # priority tier: a higher one is used only when no lower one can serve
    connect_timeout: float | None = None
    first_byte_timeout: float | None = None  # headers (non-stream) / first chunk (stream)
    max_parallel: int | None = None  # requests in flight to it from one replica
    max_input_tokens: int | None = None  # its context window for prompts, when known
    stats: DeploymentStats = field(default_factory=DeploymentStats, repr=False)
    hash_seed: int = 0  # CRC-32 of the id, for sticky routing (set by the router)

    @property
    def api_key(self) -> str | None:
        return self._api_key

    def __repr__(self) -> str:  # never print the key
        return f"Deployment(id={self.id!r}, provider={self.provider!r}, model={self.upstream_model!r})"


def build_deployments(config: Config) -> list[Deployment]:
    out: list[Deployment] = []
    router_timeout = config.router_settings.timeout
    for index, entry in enumerate(config.model_list):
        p = entry.litellm_params
        prefix, upstream = split_model(p.model)
        if prefix in _OTHERS:
            provider, default_base = _OTHERS[prefix]
        else:
            provider, default_base = "openai", _OPENAI_COMPATIBLE[prefix]
        out.append(
            Deployment(
                id=f"{entry.model_name}#{index}",
                group=entry.model_name,
                provider=provider,
                litellm_provider=prefix,
                upstream_model=upstream,
                api_base=(p.api_base or default_base or None),
                api_version=p.api_version,
                weight=p.weight,
                timeout=p.timeout or router_timeout or config.server.default_timeout,
                stream_idle_timeout=p.stream_timeout or config.server.stream_idle_timeout,
                rpm=p.rpm,
                tpm=p.tpm,
                input_cost_per_token=p.input_cost_per_token,
                output_cost_per_token=p.output_cost_per_token,
                model_info=dict(entry.model_info),
                entry=entry,
                _api_key=p.api_key.get_secret_value() if p.api_key else None,
                order=p.order,
                connect_timeout=p.connect_timeout,
                first_byte_timeout=p.first_byte_timeout,
                max_parallel=p.max_parallel_requests,
                max_input_tokens=_int(entry.model_info.get("max_input_tokens")),
            )
        )
    return out


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None


def deployment_problems(config: Config) -> list[str]:
    """What the schema cannot see, each with its YAML path (no provider is built)."""
    problems: list[str] = []
    for i, dep in enumerate(build_deployments(config)):
        where = f"model_list[{i}].litellm_params"
        if dep.provider in ("openai", "azure") and not dep.api_base:
            problems.append(f"{where}: deployment '{dep.id}' needs litellm_params.api_base "
                            f"('{dep.litellm_provider}/' has no default address)")
        if dep.provider == "azure" and not dep.api_version:
            problems.append(f"{where}: deployment '{dep.id}' needs litellm_params.api_version for Azure")
    return problems
