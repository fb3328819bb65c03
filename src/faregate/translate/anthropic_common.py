"""What the Anthropic translations share: stop reasons, usage, ids and tool-argument JSON."""

from __future__ import annotations

import uuid
from typing import Any

import orjson

# Anthropic stop_reason -> OpenAI finish_reason.
STOP_TO_FINISH: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# OpenAI finish_reason -> Anthropic stop_reason.
FINISH_TO_STOP: dict[str, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def finish_reason(stop_reason: str | None) -> str:
    return STOP_TO_FINISH.get(stop_reason or "", "stop")


def stop_reason(finish: str | None, has_tool_use: bool) -> str:
    """Anthropic stop_reason for a canonical finish_reason.

    Some OpenAI-compatible servers end a tool-calling turn with "stop"; Anthropic clients loop
    on `tool_use`, so a turn that produced tool_use blocks and stopped normally says so.
    """
    reason = FINISH_TO_STOP.get(finish or "", "end_turn")
    if has_tool_use and reason == "end_turn":
        return "tool_use"
    return reason


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def anthropic_usage_to_chat(usage: dict[str, Any] | None) -> dict[str, Any]:
    """Anthropic usage -> OpenAI usage. prompt_tokens counts every input token (Anthropic's
    input_tokens excludes the cached ones); `cache_creation_input_tokens` is kept as an extra key
    so metering can price cache writes."""
    usage = usage or {}
    fresh = _int(usage.get("input_tokens"))
    read = _int(usage.get("cache_read_input_tokens"))
    created = _int(usage.get("cache_creation_input_tokens"))
    output = _int(usage.get("output_tokens"))
    prompt = fresh + read + created
    return {
        "prompt_tokens": prompt,
        "completion_tokens": output,
        "total_tokens": prompt + output,
        "prompt_tokens_details": {"cached_tokens": read},
        "cache_creation_input_tokens": created,
    }


def chat_usage_to_anthropic(usage: dict[str, Any] | None) -> dict[str, int]:
    """OpenAI usage -> Anthropic usage: input_tokens excludes cache reads and cache writes, as
    Anthropic's does (its total input is the sum of the three)."""
    usage = usage or {}
    details = usage.get("prompt_tokens_details")
    read = _int(details.get("cached_tokens")) if isinstance(details, dict) else 0
    created = _int(usage.get("cache_creation_input_tokens"))
    return {
        "input_tokens": max(0, _int(usage.get("prompt_tokens")) - read - created),
        "output_tokens": _int(usage.get("completion_tokens")),
        "cache_creation_input_tokens": created,
        "cache_read_input_tokens": read,
    }


def message_id(chat_id: Any) -> str:
    """An Anthropic message id ("msg_…") for a canonical completion id."""
    if not isinstance(chat_id, str) or not chat_id:
        return "msg_" + uuid.uuid4().hex
    if chat_id.startswith("msg_"):
        return chat_id
    return "msg_" + chat_id.removeprefix("chatcmpl-")


def tool_use_id() -> str:
    return "toolu_" + uuid.uuid4().hex[:24]


def dump_arguments(value: Any) -> str:
    """Tool input -> OpenAI `arguments` string (compact JSON, UTF-8 kept as is)."""
    return orjson.dumps(value if value is not None else {}).decode()


def load_arguments(arguments: Any) -> dict[str, Any]:
    """OpenAI `arguments` -> Anthropic tool `input`, which must be an object: {} when the string
    is empty, not JSON, or not an object (a model's malformed call must not fail the turn)."""
    if isinstance(arguments, dict):
        return arguments
    if not isinstance(arguments, str | bytes) or not arguments:
        return {}
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}
