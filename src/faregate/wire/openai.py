"""OpenAI request schemas (chat, legacy completions, embeddings) and their validation.

Schemas are `TypedDict`s validated by pydantic-core, so a valid body stays the same plain dict
(no model objects on the hot path) and an invalid one gets a 400 naming the field. Fields the
schema does not list are kept only when they cannot pick a URL or a credential (`safe_extras`).
"""

from __future__ import annotations

import re
from typing import Any, Literal, Required

from pydantic import ConfigDict, TypeAdapter, ValidationError
from typing_extensions import TypedDict  # pydantic needs this one on Python < 3.12

from faregate.core.errors import GatewayError

_OPEN = ConfigDict(extra="allow")


class FunctionCall(TypedDict, total=False):
    __pydantic_config__ = _OPEN  # type: ignore[misc]
    name: Required[str]
    arguments: str


class ToolCall(TypedDict, total=False):
    __pydantic_config__ = _OPEN  # type: ignore[misc]
    id: Required[str]
    type: str
    function: Required[FunctionCall]


class Message(TypedDict, total=False):
    __pydantic_config__ = _OPEN  # type: ignore[misc]
    role: Required[Literal["system", "developer", "user", "assistant", "tool", "function"]]
    content: str | list[dict[str, Any]] | None
    name: str
    tool_calls: list[ToolCall]
    tool_call_id: str


class FunctionDef(TypedDict, total=False):
    __pydantic_config__ = _OPEN  # type: ignore[misc]
    name: Required[str]
    description: str
    parameters: dict[str, Any]
    strict: bool | None


class Tool(TypedDict, total=False):
    __pydantic_config__ = _OPEN  # type: ignore[misc]
    type: Required[str]
    function: FunctionDef


class StreamOptions(TypedDict, total=False):
    __pydantic_config__ = _OPEN  # type: ignore[misc]
    include_usage: bool


class ChatRequest(TypedDict, total=False):
    __pydantic_config__ = _OPEN  # type: ignore[misc]
    model: Required[str]
    messages: Required[list[Message]]
    stream: bool | None
    stream_options: StreamOptions | None
    max_tokens: int | None
    max_completion_tokens: int | None
    temperature: float | None
    top_p: float | None
    n: int | None
    stop: str | list[str] | None
    seed: int | None
    presence_penalty: float | None
    frequency_penalty: float | None
    logit_bias: dict[str, float] | None
    logprobs: bool | None
    top_logprobs: int | None
    user: str | None
    tools: list[Tool] | None
    tool_choice: str | dict[str, Any] | None
    parallel_tool_calls: bool | None
    response_format: dict[str, Any] | None
    metadata: dict[str, Any] | None


class CompletionRequest(TypedDict, total=False):
    __pydantic_config__ = _OPEN  # type: ignore[misc]
    model: Required[str]
    prompt: Required[str | list[str] | list[int] | list[list[int]]]
    stream: bool | None
    stream_options: StreamOptions | None
    max_tokens: int | None
    temperature: float | None
    top_p: float | None
    n: int | None
    stop: str | list[str] | None
    seed: int | None
    echo: bool | None
    logprobs: int | None
    suffix: str | None
    user: str | None


class EmbeddingRequest(TypedDict, total=False):
    __pydantic_config__ = _OPEN  # type: ignore[misc]
    model: Required[str]
    input: Required[str | list[str] | list[int] | list[list[int]]]
    encoding_format: Literal["float", "base64"]
    dimensions: int
    user: str


# Numeric bounds checked after the structural validation (cheaper than Annotated constraints
# on every field, and the messages are ours).
_BOUNDS: dict[str, tuple[float, float]] = {
    "max_tokens": (1, 10_000_000),
    "max_completion_tokens": (1, 10_000_000),
    "n": (1, 128),
    "temperature": (0, 2),
    "top_p": (0, 1),
    "top_logprobs": (0, 20),
    "presence_penalty": (-2, 2),
    "frequency_penalty": (-2, 2),
}

# Fields that must never reach an upstream: they pick where a request goes or with what
# credentials (LiteLLM honours several of these from clients, which is an SSRF and a key leak),
# or they are another gateway's control knobs.
_UNSAFE_EXACT = frozenset({
    "api_base", "base_url", "api_key", "api_version", "extra_headers", "headers", "extra_query",
    "extra_body", "organization", "api_type", "custom_llm_provider", "azure_ad_token",
    "aws_access_key_id", "aws_secret_access_key", "aws_session_token", "aws_region_name",
    "vertex_credentials", "vertex_project", "vertex_location", "mock_response", "fallbacks",
    "num_retries", "timeout", "caching", "proxy", "proxies",
})
_UNSAFE_PATTERN = re.compile(r"(?i)(url|uri|endpoint|host|header|credential|secret|password|api_?key|token_?url|^litellm|^faregate)")

_ADAPTERS: dict[str, TypeAdapter[Any]] = {
    "chat": TypeAdapter(ChatRequest),
    "completions": TypeAdapter(CompletionRequest),
    "embeddings": TypeAdapter(EmbeddingRequest),
}
_KNOWN: dict[str, frozenset[str]] = {
    "chat": frozenset(ChatRequest.__annotations__),
    "completions": frozenset(CompletionRequest.__annotations__),
    "embeddings": frozenset(EmbeddingRequest.__annotations__),
}


def is_unsafe_field(name: str) -> bool:
    return name in _UNSAFE_EXACT or bool(_UNSAFE_PATTERN.search(name))


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("str", "list[dict[str,any]]", "none", "list[str]", "list[int]", "list[list[int]]", "dict[str,any]", "literal['float','base64']"):
            continue  # union branch labels pydantic adds to the location
        else:
            out += f".{part}" if out else str(part)
    return out


def validation_error(exc: ValidationError) -> GatewayError:
    errors = exc.errors(include_url=False)
    # Prefer the error that went deepest (the union branch closest to what the client meant).
    err = max(errors, key=lambda e: len(e["loc"]))
    if err["type"] == "missing":
        err = next(e for e in errors if e["type"] == "missing")
    param = _path(tuple(err["loc"]))
    msg = err["msg"]
    if err["type"] == "missing":
        return GatewayError(400, f"Missing required field '{param}'.", param=param, code="missing_required_parameter")
    return GatewayError(400, f"Invalid value for '{param}': {msg}.", param=param, code="invalid_value")


def validate_request(endpoint: str, body: Any) -> dict[str, Any]:
    """Return the validated body with unsafe extra fields removed, or raise a 400."""
    if not isinstance(body, dict):
        raise GatewayError(400, "The request body must be a JSON object.", code="invalid_json")
    try:
        doc: dict[str, Any] = _ADAPTERS[endpoint].validate_python(body)
    except ValidationError as exc:
        raise validation_error(exc) from None
    known = _KNOWN[endpoint]
    for name in [k for k in doc if k not in known and is_unsafe_field(k)]:
        del doc[name]
    for name, (lo, hi) in _BOUNDS.items():
        value = doc.get(name) if name in known else None  # an unknown field was not type-checked
        if value is not None and not (lo <= value <= hi):
            raise GatewayError(400, f"Invalid value for '{name}': {value} is outside [{lo:g}, {hi:g}].",
                               param=name, code="invalid_value")
    if endpoint == "chat" and not doc["messages"]:
        raise GatewayError(400, "'messages' must contain at least one message.", param="messages", code="invalid_value")
    if not doc["model"]:
        raise GatewayError(400, "'model' must not be empty.", param="model", code="invalid_value")
    return doc


def json_schema(endpoint: str) -> dict[str, Any]:
    """For the OpenAPI document."""
    return _ADAPTERS[endpoint].json_schema(ref_template="#/components/schemas/{model}")


__all__ = ["ChatRequest", "CompletionRequest", "EmbeddingRequest", "is_unsafe_field", "json_schema",
           "validate_request"]
