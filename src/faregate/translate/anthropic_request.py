"""Requests: Anthropic Messages ⇄ canonical chat (OpenAI Chat Completions), as plain dicts.

`messages_request_to_chat` serves the `/v1/messages` front end (its input is already validated
by `wire/anthropic.py`); `chat_request_to_messages` serves the `anthropic` upstream provider
(its input is a validated canonical request).
"""

from __future__ import annotations

import re
from typing import Any

from faregate.core.errors import GatewayError
from faregate.translate.anthropic_blocks import (
    block_to_parts,
    content_to_blocks,
    join_text,
    tool_result_content,
)
from faregate.translate.anthropic_common import dump_arguments, load_arguments, tool_use_id

# Anthropic requires max_tokens; OpenAI clients often leave it out.
DEFAULT_MAX_TOKENS = 4096

_THINKING = ("thinking", "redacted_thinking")
_CHOICE_TO_CHAT: dict[str, str] = {"auto": "auto", "any": "required", "none": "none"}
_CHOICE_TO_ANTHROPIC: dict[str, str] = {"auto": "auto", "required": "any", "none": "none"}
_TOOL_ID_BAD = re.compile(r"[^a-zA-Z0-9_-]")


def _bad(message: str, param: str) -> GatewayError:
    return GatewayError(400, message, param=param, code="invalid_request")


# === Anthropic -> canonical (front end) ======================================================

def _user_to_chat(content: str | list[dict[str, Any]], param: str, out: list[dict[str, Any]]) -> None:
    """Append the canonical messages for one Anthropic user turn: a `tool` message per
    tool_result (in order), then one user message with the remaining content, if any."""
    if isinstance(content, str):
        out.append({"role": "user", "content": content})
        return
    parts: list[dict[str, Any]] = []
    tool_results = 0
    for j, block in enumerate(content):
        if block["type"] == "tool_result":
            text, images = tool_result_content(block)
            out.append({"role": "tool", "tool_call_id": block["tool_use_id"], "content": text})
            parts.extend(images)
            tool_results += 1
        else:
            parts.extend(block_to_parts(block, f"{param}.content[{j}]"))
    if parts or not tool_results:
        if len(parts) == 1 and parts[0]["type"] == "text":
            out.append({"role": "user", "content": parts[0]["text"]})
        else:
            out.append({"role": "user", "content": parts or ""})


def _assistant_to_chat(content: str | list[dict[str, Any]], param: str) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        kind = block["type"]
        if kind == "text":
            texts.append(block["text"])
        elif kind == "tool_use":
            calls.append({"id": block["id"], "type": "function",
                          "function": {"name": block["name"], "arguments": dump_arguments(block["input"])}})
        elif kind not in _THINKING:  # thinking is the upstream's own state: not replayed elsewhere
            raise _bad(f"'{param}.content[{j}]': a {kind} block is not valid in an assistant message.",
                       f"{param}.content[{j}]")
    # Text blocks of one answer are consecutive pieces (citations split them): join with "".
    msg: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else (None if calls else "")}
    if calls:
        msg["tool_calls"] = calls
    return msg


def _tool_to_chat(tool: dict[str, Any], param: str) -> dict[str, Any]:
    kind = tool.get("type")
    if kind not in (None, "custom"):
        raise _bad(f"'{param}.type': server tool {kind!r} is not supported by this gateway; "
                   "only custom tools (name, description, input_schema) are.", f"{param}.type")
    fn: dict[str, Any] = {"name": tool["name"]}
    if tool.get("description"):
        fn["description"] = tool["description"]
    fn["parameters"] = tool.get("input_schema") or {"type": "object", "properties": {}}
    return {"type": "function", "function": fn}


def messages_request_to_chat(req: dict[str, Any]) -> dict[str, Any]:
    """A validated Anthropic Messages request -> canonical chat request.

    Forwarded: model, system (one leading system message), messages, max_tokens, temperature,
    top_p, stop_sequences (-> stop), tools, tool_choice, metadata.user_id (-> user), stream
    (with `stream_options.include_usage`, which the event stream's usage needs). Not forwarded:
    top_k, thinking, service_tier, cache_control markers and unknown fields; thinking blocks
    in the history are dropped.
    """
    messages: list[dict[str, Any]] = []
    system = req.get("system")
    if system:
        text = system if isinstance(system, str) else join_text(system)
        messages.append({"role": "system", "content": text})
    for i, msg in enumerate(req["messages"]):
        if msg["role"] == "user":
            _user_to_chat(msg["content"], f"messages[{i}]", messages)
        else:
            messages.append(_assistant_to_chat(msg["content"], f"messages[{i}]"))

    out: dict[str, Any] = {"model": req["model"], "messages": messages, "max_tokens": req["max_tokens"]}
    for key in ("temperature", "top_p"):
        if req.get(key) is not None:
            out[key] = req[key]
    if req.get("stop_sequences"):
        out["stop"] = list(req["stop_sequences"])
    tools = req.get("tools")
    if tools:
        out["tools"] = [_tool_to_chat(t, f"tools[{i}]") for i, t in enumerate(tools)]
        choice = req.get("tool_choice")
        if choice:
            kind = choice["type"]
            if kind == "tool":
                out["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
            else:
                out["tool_choice"] = _CHOICE_TO_CHAT[kind]
            if choice.get("disable_parallel_tool_use"):
                out["parallel_tool_calls"] = False
    metadata = req.get("metadata")
    if metadata and isinstance(metadata.get("user_id"), str):
        out["user"] = metadata["user_id"]
    if req.get("stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out


# === canonical -> Anthropic (upstream provider) ==============================================

# Canonical fields with no Anthropic equivalent, dropped without error: seed, logprobs,
# top_logprobs, logit_bias, presence_penalty, frequency_penalty, response_format, stream_options
# (Anthropic always reports usage), metadata (OpenAI's stored-completion tags), store,
# service_tier, prediction, modalities, audio, reasoning_effort, verbosity, web_search_options,
# prompt_cache_key, safety_identifier, legacy functions/function_call, and n == 1.

def _tool_id(value: Any) -> str:
    """Anthropic ids must match ^[a-zA-Z0-9_-]+$; other providers' call ids may not. The same
    rewrite applies to tool_use ids and tool_result references, so pairs stay matched."""
    if not isinstance(value, str) or not value:
        return tool_use_id()
    return _TOOL_ID_BAD.sub("_", value)


def _message_blocks(msg: dict[str, Any], param: str) -> tuple[str, list[dict[str, Any]]]:
    role = msg.get("role")
    if role == "user":
        return "user", content_to_blocks(msg.get("content"), f"{param}.content")
    if role == "assistant":
        blocks = content_to_blocks(msg.get("content"), f"{param}.content")
        for call in msg.get("tool_calls") or ():
            fn = call.get("function") or {}
            blocks.append({"type": "tool_use", "id": _tool_id(call.get("id")), "name": fn.get("name") or "",
                           "input": load_arguments(fn.get("arguments"))})
        return "assistant", blocks
    if role == "tool":
        if not msg.get("tool_call_id"):
            raise _bad(f"'{param}.tool_call_id' is required for a tool message.", f"{param}.tool_call_id")
        result: dict[str, Any] = {"type": "tool_result", "tool_use_id": _tool_id(msg["tool_call_id"])}
        text = join_text(msg.get("content"))
        if text:
            result["content"] = text
        return "user", [result]
    raise _bad(f"'{param}.role' {role!r} is not supported by Anthropic upstreams.", f"{param}.role")


def _tool_to_anthropic(tool: dict[str, Any], param: str) -> dict[str, Any]:
    fn = tool.get("function")
    if tool.get("type") != "function" or not isinstance(fn, dict):
        raise _bad(f"'{param}.type': only function tools are supported by Anthropic upstreams.", f"{param}.type")
    out: dict[str, Any] = {"name": fn["name"]}
    if fn.get("description"):
        out["description"] = fn["description"]
    out["input_schema"] = fn.get("parameters") or {"type": "object", "properties": {}}
    return out


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    out: dict[str, Any] | None
    if choice is None:
        out = None
    elif isinstance(choice, str) and choice in _CHOICE_TO_ANTHROPIC:
        out = {"type": _CHOICE_TO_ANTHROPIC[choice]}
    elif isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("function"), dict):
        out = {"type": "tool", "name": choice["function"].get("name")}
    else:
        raise _bad("'tool_choice' must be \"none\", \"auto\", \"required\" or "
                   '{"type": "function", "function": {"name": …}} for Anthropic upstreams.', "tool_choice")
    if parallel is False and (out is None or out["type"] != "none"):
        out = out or {"type": "auto"}
        out["disable_parallel_tool_use"] = True
    return out


def chat_request_to_messages(req: dict[str, Any], upstream_model: str) -> dict[str, Any]:
    """A validated canonical chat request -> Anthropic Messages request for `upstream_model`.

    System and developer messages become the top-level `system` string (wherever they are);
    consecutive same-role turns are merged (tool results and the user text after them become
    one user turn, tool_result blocks first), as Anthropic requires alternating roles.
    """
    n = req.get("n")
    if isinstance(n, int) and n > 1:
        raise _bad("Anthropic upstreams support n=1 only.", "n")
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for i, msg in enumerate(req["messages"]):
        if msg.get("role") in ("system", "developer"):
            text = join_text(msg.get("content"))
            if text:
                system.append(text)
            continue
        role, blocks = _message_blocks(msg, f"messages[{i}]")
        if not blocks:
            continue  # Anthropic refuses empty content
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:
        blocks = turn["content"]
        if turn["role"] == "user" and len(blocks) > 1:
            blocks.sort(key=lambda b: b["type"] != "tool_result")  # stable: results first
        if len(blocks) == 1 and blocks[0]["type"] == "text" and len(blocks[0]) == 2:  # no cache_control
            turn["content"] = blocks[0]["text"]

    out: dict[str, Any] = {"model": upstream_model, "messages": turns,
                           "max_tokens": req.get("max_completion_tokens") or req.get("max_tokens") or DEFAULT_MAX_TOKENS}
    if system:
        out["system"] = "\n".join(system)
    for key in ("temperature", "top_p", "top_k"):
        if req.get(key) is not None:
            out[key] = req[key]
    stop = req.get("stop")
    if stop:
        stops = [stop] if isinstance(stop, str) else list(stop)
        stops = [s for s in stops if isinstance(s, str) and s.strip()]  # Anthropic refuses blank ones
        if stops:
            out["stop_sequences"] = stops
    tools = req.get("tools")
    if tools:
        out["tools"] = [_tool_to_anthropic(t, f"tools[{i}]") for i, t in enumerate(tools)]
        choice = _tool_choice(req.get("tool_choice"), req.get("parallel_tool_calls"))
        if choice is not None:
            out["tool_choice"] = choice
    if isinstance(req.get("user"), str) and req["user"]:
        out["metadata"] = {"user_id": req["user"]}
    if req.get("stream"):
        out["stream"] = True
    return out
