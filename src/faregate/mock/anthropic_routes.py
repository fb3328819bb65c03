"""Anthropic wire format: POST /v1/messages (plain and streamed) and /v1/messages/count_tokens."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from faregate.mock.content import (
    Generated,
    fragments,
    generate,
    last_user_text,
    pick_tools,
    prompt_tokens,
    rand_id,
    tool_arguments,
    tool_call_tokens,
)
from faregate.mock.responses import (
    SSEPlan,
    anthropic_error,
    json_response,
    respond_json,
    sse_event,
    stream_sse,
)
from faregate.mock.settings import Knobs
from faregate.mock.state import MockState, api_handler

_STOP_REASON = {"stop": "end_turn", "length": "max_tokens", "stop_sequence": "stop_sequence"}

E_MESSAGE_START = b"message_start"
E_BLOCK_START = b"content_block_start"
E_BLOCK_DELTA = b"content_block_delta"
E_BLOCK_STOP = b"content_block_stop"
E_MESSAGE_DELTA = b"message_delta"
E_MESSAGE_STOP = b"message_stop"
PING = b'event: ping\ndata: {"type":"ping"}\n\n'
MESSAGE_STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'


def _invalid(message: str) -> web.Response:
    return anthropic_error(400, message)


def _is_tool_result_turn(msg: Any) -> bool:
    content = msg.get("content") if isinstance(msg, dict) else None
    return isinstance(content, list) and any(isinstance(b, dict) and b.get("type") == "tool_result" for b in content)


def _tool_calls(body: dict[str, Any], messages: list[Any]) -> list[tuple[str, dict[str, Any]]] | None:
    """(name, input) of the tool_use blocks to answer with, or None to answer with text."""
    tools = [(t["name"], t.get("input_schema")) for t in body.get("tools") or ()
             if isinstance(t, dict) and isinstance(t.get("name"), str)]
    choice = body.get("tool_choice")
    choice = choice if isinstance(choice, dict) else {}
    kind = choice.get("type", "auto")
    last = messages[-1]
    if not tools or kind == "none" or not isinstance(last, dict) or last.get("role") != "user" or _is_tool_result_turn(last):
        return None
    forced = choice.get("name") if kind == "tool" else None
    parallel = choice.get("disable_parallel_tool_use") is not True
    return [(name, tool_arguments(schema)) for name, schema in pick_tools(tools, forced, parallel)]


def _usage(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {"input_tokens": input_tokens, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
            "output_tokens": output_tokens, "service_tier": "standard"}


def _validate(body: dict[str, Any]) -> web.Response | None:
    if not isinstance(body.get("model"), str) or not body["model"]:
        return _invalid("model: Field required")
    messages = body.get("messages")
    if not isinstance(messages, list):
        return _invalid("messages: Field required")
    if not messages:
        return _invalid("messages: at least one message is required")
    return None


def add_routes(app: web.Application, state: MockState) -> None:

    async def messages(request: web.Request, body: dict[str, Any], knobs: Knobs) -> web.StreamResponse:
        problem = _validate(body)
        if problem is not None:
            return problem
        max_tokens = body.get("max_tokens")
        if max_tokens is None:
            return _invalid("max_tokens: Field required")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            return _invalid("max_tokens: Input should be greater than or equal to 1")
        msgs = body["messages"]
        model = body["model"]
        calls = _tool_calls(body, msgs)
        input_tokens = prompt_tokens(msgs, body.get("system"), body.get("tools"))
        gen: Generated | None = None
        stop_sequence = None
        if calls is None:
            gen = generate(last_user_text(msgs), tokens=knobs.tokens, max_tokens=max_tokens,
                           stop=body.get("stop_sequences"))
            stop_reason = _STOP_REASON[gen.finish]
            stop_sequence = gen.stop_sequence
            output_tokens = len(gen.tokens)
        else:
            encoded = [(name, orjson.dumps(args).decode()) for name, args in calls]
            stop_reason = "tool_use"
            output_tokens = sum(tool_call_tokens(name, args) for name, args in encoded)
        mid = rand_id("msg_01", 22)

        if body.get("stream") is not True:
            if gen is not None:
                content: list[dict[str, Any]] = [{"type": "text", "text": gen.text}]
            else:
                content = [{"type": "tool_use", "id": rand_id("toolu_01", 22), "name": name, "input": args}
                           for name, args in calls]
            doc: dict[str, Any] = {"id": mid, "type": "message", "role": "assistant", "model": model, "content": content,
                                   "stop_reason": stop_reason, "stop_sequence": stop_sequence}
            if not knobs.omit_usage:
                doc["usage"] = _usage(input_tokens, output_tokens)
            return await respond_json(request, doc, knobs)

        start: dict[str, Any] = {"id": mid, "type": "message", "role": "assistant", "model": model, "content": [],
                                 "stop_reason": None, "stop_sequence": None}
        if not knobs.omit_usage:
            start["usage"] = _usage(input_tokens, 1)
        plan = SSEPlan()
        plan.add(sse_event(E_MESSAGE_START, {"type": "message_start", "message": start}))
        if gen is not None:
            plan.add(sse_event(E_BLOCK_START, {"type": "content_block_start", "index": 0,
                                               "content_block": {"type": "text", "text": ""}}))
            plan.add(PING)
            head = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":'
            for tok in gen.tokens:
                plan.add(head + orjson.dumps(tok) + b"}}\n\n", paced=True)
            plan.add(sse_event(E_BLOCK_STOP, {"type": "content_block_stop", "index": 0}))
        else:
            for index, (name, args) in enumerate(encoded):
                plan.add(sse_event(E_BLOCK_START, {"type": "content_block_start", "index": index, "content_block": {
                    "type": "tool_use", "id": rand_id("toolu_01", 22), "name": name, "input": {}}}))
                if index == 0:
                    plan.add(PING)
                for frag in fragments(args):
                    plan.add(sse_event(E_BLOCK_DELTA, {"type": "content_block_delta", "index": index,
                                                       "delta": {"type": "input_json_delta", "partial_json": frag}}),
                             paced=True)
                plan.add(sse_event(E_BLOCK_STOP, {"type": "content_block_stop", "index": index}))
        delta: dict[str, Any] = {"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence}}
        if not knobs.omit_usage:
            delta["usage"] = {"output_tokens": output_tokens}
        plan.add(sse_event(E_MESSAGE_DELTA, delta))
        plan.add(MESSAGE_STOP)
        return await stream_sse(request, plan, knobs)

    async def count_tokens(request: web.Request, body: dict[str, Any], knobs: Knobs) -> web.StreamResponse:
        problem = _validate(body)
        if problem is not None:
            return problem
        return json_response({"input_tokens": prompt_tokens(body["messages"], body.get("system"), body.get("tools"))})

    app.router.add_post("/v1/messages", api_handler(state, "anthropic", messages))
    app.router.add_post("/v1/messages/count_tokens", api_handler(state, "anthropic", count_tokens))
