"""Whole responses: canonical `chat.completion` ⇄ Anthropic `message`."""

from __future__ import annotations

import time
import uuid
from typing import Any

from faregate.translate.anthropic_blocks import join_text
from faregate.translate.anthropic_common import (
    anthropic_usage_to_chat,
    chat_usage_to_anthropic,
    dump_arguments,
    finish_reason,
    load_arguments,
    message_id,
    stop_reason,
    tool_use_id,
)


def chat_response_to_messages(resp: dict[str, Any], model: str) -> dict[str, Any]:
    """A canonical chat.completion -> an Anthropic message (for the `/v1/messages` front end).

    Content is the text block (if any text) then one tool_use block per tool call; a refusal
    with no text becomes the text. `model` is what the client asked for. `stop_sequence` is
    always null: OpenAI does not say which stop sequence matched.
    """
    choices = resp.get("choices") or [{}]
    choice = choices[0] or {}
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    text = join_text(message.get("content"), "")
    if not text and isinstance(message.get("refusal"), str):
        text = message["refusal"]
    if text:
        content.append({"type": "text", "text": text})
    calls = message.get("tool_calls") or ()
    for call in calls:
        fn = call.get("function") or {}
        content.append({"type": "tool_use", "id": call.get("id") or tool_use_id(), "name": fn.get("name") or "",
                        "input": load_arguments(fn.get("arguments"))})
    return {
        "id": message_id(resp.get("id")),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(choice.get("finish_reason"), bool(calls)),
        "stop_sequence": None,
        "usage": chat_usage_to_anthropic(resp.get("usage")),
    }


def messages_response_to_chat(resp: dict[str, Any], model: str) -> dict[str, Any]:
    """An Anthropic message -> a canonical chat.completion (for the `anthropic` provider).

    Text blocks are joined into `content` (None when there is none), tool_use blocks become
    `tool_calls`; thinking and server-tool blocks are dropped. The id stays Anthropic's.
    """
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in resp.get("content") or ():
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "tool_use":
            calls.append({"id": block.get("id") or tool_use_id(), "type": "function",
                          "function": {"name": block.get("name") or "", "arguments": dump_arguments(block.get("input"))}})
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None, "refusal": None}
    if calls:
        message["tool_calls"] = calls
    return {
        "id": resp.get("id") or "msg_" + uuid.uuid4().hex,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason(resp.get("stop_reason")),
                     "logprobs": None}],
        "usage": anthropic_usage_to_chat(resp.get("usage")),
    }
