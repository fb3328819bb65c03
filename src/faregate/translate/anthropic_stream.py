"""Streams: canonical `chat.completion.chunk`s ⇄ Anthropic Messages events, one object per stream.

Both translators are stateful and synchronous: feed each item as it arrives, send what comes out.

Anthropic's order, produced by `ChatStreamToMessages` and expected by `MessagesStreamToChat`:
message_start, then per content block content_block_start, content_block_delta…,
content_block_stop, then message_delta (stop_reason + usage), message_stop.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from faregate.core.errors import GatewayError, scrub
from faregate.translate.anthropic_common import (
    anthropic_usage_to_chat,
    chat_usage_to_anthropic,
    dump_arguments,
    finish_reason,
    stop_reason,
    tool_use_id,
)

Event = tuple[str, dict[str, Any]]

_BLOCK_STOP = "content_block_stop"
_BLOCK_START = "content_block_start"
_BLOCK_DELTA = "content_block_delta"


class ChatStreamToMessages:
    """Canonical chunks -> Anthropic (event name, data) pairs, for the `/v1/messages` front end.

    `feed` emits message_start with the first chunk (input usage from that chunk if it has any,
    else 0), a text block for content deltas and one tool_use block per tool call index, closing
    the open block when another starts. `finish` closes the last block and emits message_delta
    (stop_reason; usage with output_tokens and the final input/cache counts, which OpenAI only
    reports at the end) and message_stop. Only choice 0 is translated.
    """

    __slots__ = ("model", "message_id", "_started", "_finished", "_next", "_open", "_text_open",
                 "_tools", "_last_tool", "_finish", "_usage")

    def __init__(self, model: str, message_id: str) -> None:
        self.model = model
        self.message_id = message_id
        self._started = False
        self._finished = False
        self._next = 0  # index of the next content block
        self._open: int | None = None  # index of the open block
        self._text_open = False
        self._tools: dict[Any, int] = {}  # OpenAI tool_call index -> block index
        self._last_tool: Any = None
        self._finish: str | None = None
        self._usage: dict[str, Any] | None = None

    def _message_start(self, usage: Any) -> Event:
        counts = chat_usage_to_anthropic(usage if isinstance(usage, dict) else None)
        message = {"id": self.message_id, "type": "message", "role": "assistant", "model": self.model,
                   "content": [], "stop_reason": None, "stop_sequence": None, "usage": counts}
        return "message_start", {"type": "message_start", "message": message}

    def _close(self, out: list[Event]) -> None:
        if self._open is not None:
            out.append((_BLOCK_STOP, {"type": _BLOCK_STOP, "index": self._open}))
            self._open = None
            self._text_open = False

    def _open_block(self, out: list[Event], block: dict[str, Any]) -> int:
        self._close(out)
        index = self._next
        self._next += 1
        self._open = index
        out.append((_BLOCK_START, {"type": _BLOCK_START, "index": index, "content_block": block}))
        return index

    def _tool_delta(self, call: dict[str, Any], out: list[Event]) -> None:
        key = call.get("index")
        if key is None:  # servers that omit the index: a new id is a new call
            key = call.get("id") or self._last_tool
        fn = call.get("function") or {}
        index = self._tools.get(key)
        if index is None:
            block = {"type": "tool_use", "id": call.get("id") or tool_use_id(), "name": fn.get("name") or "",
                     "input": {}}
            index = self._tools[key] = self._open_block(out, block)
        self._last_tool = key
        args = fn.get("arguments")
        if args:
            # A fragment for a call whose block was already closed (a server interleaving calls)
            # still goes to that block's index: clients accumulate input_json by index.
            out.append((_BLOCK_DELTA, {"type": _BLOCK_DELTA, "index": index,
                                       "delta": {"type": "input_json_delta", "partial_json": args}}))

    def feed(self, chunk: dict[str, Any]) -> list[Event]:
        out: list[Event] = []
        usage = chunk.get("usage")
        if not self._started:
            self._started = True
            out.append(self._message_start(usage))
        if usage:
            self._usage = usage
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            text = delta.get("content") or delta.get("refusal")
            if text and isinstance(text, str):
                if not self._text_open:
                    self._open_block(out, {"type": "text", "text": ""})
                    self._text_open = True
                out.append((_BLOCK_DELTA, {"type": _BLOCK_DELTA, "index": self._open,
                                           "delta": {"type": "text_delta", "text": text}}))
            calls = delta.get("tool_calls")
            if calls:
                for call in calls:
                    self._tool_delta(call, out)
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
        return out

    def finish(self) -> list[Event]:
        if self._finished:
            return []
        self._finished = True
        out: list[Event] = []
        if not self._started:
            self._started = True
            out.append(self._message_start(None))
        self._close(out)
        counts = chat_usage_to_anthropic(self._usage)
        usage = {"output_tokens": counts["output_tokens"], "input_tokens": counts["input_tokens"],
                 "cache_creation_input_tokens": counts["cache_creation_input_tokens"],
                 "cache_read_input_tokens": counts["cache_read_input_tokens"]}
        delta = {"stop_reason": stop_reason(self._finish, bool(self._tools)), "stop_sequence": None}
        out.append(("message_delta", {"type": "message_delta", "delta": delta, "usage": usage}))
        out.append(("message_stop", {"type": "message_stop"}))
        return out


class MessagesStreamToChat:
    """Anthropic stream events -> canonical chunks, for the `anthropic` provider.

    message_start -> a chunk with role "assistant" and content ""; text_delta -> content;
    a tool_use block -> a tool_calls delta (index counting tool blocks from 0, id, name,
    arguments "") then its input_json fragments; message_delta -> a chunk with finish_reason;
    message_stop -> the usage chunk (`choices: []`). `error` raises a 502 `GatewayError`.
    ping, content_block_stop, thinking and citation deltas produce nothing.
    """

    __slots__ = ("model", "_id", "_created", "_started", "_tools", "_usage")

    def __init__(self, model: str) -> None:
        self.model = model
        self._id = "msg_" + uuid.uuid4().hex  # replaced by message_start's id
        self._created = int(time.time())
        self._started = False
        self._tools: dict[Any, int] = {}  # Anthropic block index -> OpenAI tool_call index
        self._usage: dict[str, Any] = {}

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        if not self._started:
            self._started = True
            delta = {"role": "assistant", **delta}
        return {"id": self._id, "object": "chat.completion.chunk", "created": self._created, "model": self.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}

    def _add_usage(self, usage: Any) -> None:
        if isinstance(usage, dict):
            for key, value in usage.items():
                if isinstance(value, int) and not isinstance(value, bool):
                    self._usage[key] = value  # Anthropic's counts are cumulative: overwrite

    def feed(self, event: str | None, data: dict[str, Any]) -> list[dict[str, Any]]:
        kind = event or data.get("type")
        if kind == "content_block_delta":
            delta = data.get("delta") or {}
            dtype = delta.get("type")
            if dtype == "text_delta":
                text = delta.get("text")
                return [self._chunk({"content": text})] if text else []
            if dtype == "input_json_delta":
                tool = self._tools.get(data.get("index"))
                fragment = delta.get("partial_json")
                if tool is None or not fragment:
                    return []
                return [self._chunk({"tool_calls": [{"index": tool, "function": {"arguments": fragment}}]})]
            return []
        if kind == "content_block_start":
            block = data.get("content_block") or {}
            btype = block.get("type")
            if btype == "tool_use":
                tool = self._tools[data.get("index")] = len(self._tools)
                given = block.get("input")
                call = {"index": tool, "id": block.get("id") or tool_use_id(), "type": "function",
                        "function": {"name": block.get("name") or "", "arguments": dump_arguments(given) if given else ""}}
                return [self._chunk({"tool_calls": [call]})]
            if btype == "text" and block.get("text"):
                return [self._chunk({"content": block["text"]})]
            return []
        if kind == "message_start":
            message = data.get("message") or {}
            if isinstance(message.get("id"), str) and message["id"]:
                self._id = message["id"]
            self._add_usage(message.get("usage"))
            return [self._chunk({"content": ""})]
        if kind == "message_delta":
            self._add_usage(data.get("usage"))
            reason = (data.get("delta") or {}).get("stop_reason")
            return [self._chunk({}, finish_reason(reason))]
        if kind == "message_stop":
            return [{"id": self._id, "object": "chat.completion.chunk", "created": self._created,
                     "model": self.model, "choices": [], "usage": anthropic_usage_to_chat(self._usage)}]
        if kind == "error":
            err = data.get("error") or {}
            etype = err.get("type") or "error"
            message = scrub(str(err.get("message") or "no message"))
            raise GatewayError(502, f"The Anthropic upstream failed mid-stream ({etype}): {message}",
                               type="api_error", code="upstream_error")
        return []  # ping, content_block_stop, unknown events
