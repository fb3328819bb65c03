"""OpenAI wire format: chat completions, legacy completions, embeddings (and their Azure routes)."""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiohttp import web

from faregate.mock.content import (
    Generated,
    embedding,
    embedding_base64,
    embedding_inputs,
    fragments,
    generate,
    last_user_text,
    logprob_entry,
    pick_tools,
    prompt_tokens,
    rand_id,
    tool_arguments,
    tool_call_tokens,
    top_count,
)
from faregate.mock.responses import SSEPlan, openai_error, respond_json, stream_sse
from faregate.mock.settings import Knobs
from faregate.mock.state import MockState, api_handler

DONE = b"data: [DONE]\n\n"
_FINISH = {"stop": "stop", "length": "length", "stop_sequence": "stop"}


def usage(prompt: int, completion: int) -> dict[str, Any]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}


def _int_param(body: dict[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ValueError(name)
    return value


def _missing(name: str) -> web.Response:
    return openai_error(400, f"Missing required parameter: '{name}'.", param=name, code="missing_required_parameter")


def _bad_param(name: str) -> web.Response:
    return openai_error(400, f"Invalid value for '{name}'.", param=name, code="invalid_value")


def _chunk_framing(meta: dict[str, Any], include_usage: bool) -> tuple[bytes, bytes]:
    """`data: {...meta,"choices":[` and its closing, so a chunk is head + choices + tail."""
    head = b"data: " + orjson.dumps(meta)[:-1] + b',"choices":['
    return head, (b'],"usage":null}\n\n' if include_usage else b"]}\n\n")


def _usage_chunk(head: bytes, prompt: int, completion: int) -> bytes:
    return head + b'],"usage":' + orjson.dumps(usage(prompt, completion)) + b"}\n\n"


def _tool_calls(body: dict[str, Any], messages: list[Any]) -> list[tuple[str, Any]] | None:
    """(name, arguments JSON) of the calls to make, or None to answer with text."""
    tools = [(t["function"]["name"], t["function"].get("parameters")) for t in body.get("tools") or ()
             if isinstance(t, dict) and isinstance(t.get("function"), dict) and isinstance(t["function"].get("name"), str)]
    choice = body.get("tool_choice")
    last = messages[-1]
    if not tools or choice == "none" or not isinstance(last, dict) or last.get("role") != "user":
        return None
    forced = None
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        forced = choice["function"].get("name")
    parallel = body.get("parallel_tool_calls") is not False
    return [(name, orjson.dumps(tool_arguments(schema)).decode()) for name, schema in pick_tools(tools, forced, parallel)]


def add_routes(app: web.Application, state: MockState) -> None:
    settings = state.settings

    async def chat(request: web.Request, body: dict[str, Any], knobs: Knobs, model: str | None = None) -> web.StreamResponse:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return _missing("messages")
        model = model or body.get("model")
        if not isinstance(model, str) or not model:
            return _missing("model")
        try:
            n = _int_param(body, "n", 1, 1, 128)
            max_tokens = body.get("max_completion_tokens")
            if max_tokens is None:
                max_tokens = body.get("max_tokens")
            if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1):
                raise ValueError("max_tokens")
        except ValueError as exc:
            return _bad_param(str(exc))
        calls = _tool_calls(body, messages)
        prompt = prompt_tokens(messages, tools=body.get("tools"))
        gen: Generated | None = None
        if calls is None:
            fmt = body.get("response_format")
            json_mode = isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema")
            gen = generate(last_user_text(messages), tokens=knobs.tokens, max_tokens=max_tokens,
                           stop=body.get("stop"), json_mode=json_mode)
            per_choice = len(gen.tokens)
            finish = _FINISH[gen.finish]
        else:
            per_choice = sum(tool_call_tokens(name, args) for name, args in calls)
            finish = "tool_calls"
        top = top_count(body.get("top_logprobs")) if body.get("logprobs") is True else -1
        created = int(time.time())
        cid = rand_id("chatcmpl-", 29)
        fingerprint = settings.system_fingerprint

        if body.get("stream") is not True:
            choices = []
            for i in range(n):
                if gen is not None:
                    message: dict[str, Any] = {"role": "assistant", "content": gen.text, "refusal": None, "annotations": []}
                    logprobs = None if top < 0 else {"content": [logprob_entry(t, top) for t in gen.tokens], "refusal": None}
                else:
                    message = {"role": "assistant", "content": None, "refusal": None, "annotations": [], "tool_calls": [
                        {"id": rand_id("call_"), "type": "function", "function": {"name": name, "arguments": args}}
                        for name, args in calls]}
                    logprobs = None
                choices.append({"index": i, "message": message, "logprobs": logprobs, "finish_reason": finish})
            doc: dict[str, Any] = {"id": cid, "object": "chat.completion", "created": created, "model": model,
                                   "choices": choices}
            if not knobs.omit_usage:
                doc["usage"] = usage(prompt, per_choice * n)
            doc["service_tier"] = "default"
            doc["system_fingerprint"] = fingerprint
            return await respond_json(request, doc, knobs)

        opts = body.get("stream_options")
        include_usage = isinstance(opts, dict) and opts.get("include_usage") is True and not knobs.omit_usage
        head, tail = _chunk_framing({"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                                     "service_tier": "default", "system_fingerprint": fingerprint}, include_usage)
        plan = SSEPlan()
        dumps = orjson.dumps
        if gen is not None:
            plan.add(head + b",".join(dumps({"index": i, "delta": {"role": "assistant", "content": "", "refusal": None},
                                             "logprobs": None, "finish_reason": None}) for i in range(n)) + tail)
            for tok in gen.tokens:
                lp = None if top < 0 else {"content": [logprob_entry(tok, top)], "refusal": None}
                for i in range(n):
                    plan.add(head + dumps({"index": i, "delta": {"content": tok}, "logprobs": lp, "finish_reason": None}) + tail,
                             paced=i == 0)
        else:
            for i in range(n):
                for k, (name, args) in enumerate(calls):
                    delta: dict[str, Any] = {"tool_calls": [{"index": k, "id": rand_id("call_"), "type": "function",
                                                             "function": {"name": name, "arguments": ""}}]}
                    if k == 0:
                        delta = {"role": "assistant", "content": None, **delta, "refusal": None}
                    plan.add(head + dumps({"index": i, "delta": delta, "logprobs": None, "finish_reason": None}) + tail,
                             paced=i == 0)
                    for frag in fragments(args):
                        plan.add(head + dumps({"index": i, "delta": {"tool_calls": [{"index": k, "function": {"arguments": frag}}]},
                                               "logprobs": None, "finish_reason": None}) + tail, paced=i == 0)
        plan.add(head + b",".join(dumps({"index": i, "delta": {}, "logprobs": None, "finish_reason": finish})
                                  for i in range(n)) + tail)
        if include_usage:
            plan.add(_usage_chunk(head, prompt, per_choice * n))
        plan.add(DONE)
        return await stream_sse(request, plan, knobs)

    async def completions(request: web.Request, body: dict[str, Any], knobs: Knobs, model: str | None = None) -> web.StreamResponse:
        model = model or body.get("model")
        if not isinstance(model, str) or not model:
            return _missing("model")
        raw = body.get("prompt", "")
        if isinstance(raw, str):
            prompts = [raw]
        elif isinstance(raw, list) and raw and all(isinstance(p, int) and not isinstance(p, bool) for p in raw):
            prompts = [" ".join(map(str, raw))]
        elif isinstance(raw, list) and raw:
            prompts = [p if isinstance(p, str) else " ".join(map(str, p)) if isinstance(p, list) else "" for p in raw]
        else:
            return _bad_param("prompt")
        try:
            n = _int_param(body, "n", 1, 1, 128)
            max_tokens = _int_param(body, "max_tokens", 16, 0, 1 << 30)
            lp_count = _int_param(body, "logprobs", -1, 0, 5)
        except ValueError as exc:
            return _bad_param(str(exc))
        gens = [generate(p, tokens=knobs.tokens, max_tokens=max_tokens, stop=body.get("stop")) for p in prompts]
        prompt = max(sum(len(p.split()) for p in prompts), 1)
        completion = sum(len(g.tokens) for g in gens) * n
        created = int(time.time())
        cid = rand_id("cmpl-", 29)
        echo = body.get("echo") is True

        def legacy_logprobs(tokens: list[str], offset: int) -> dict[str, Any] | None:
            if lp_count < 0:
                return None
            offsets, pos = [], offset
            for t in tokens:
                offsets.append(pos)
                pos += len(t)
            tops = [{t: -0.1, **{f"{t}{i}": -0.1 - i for i in range(1, lp_count)}} for t in tokens] if lp_count else []
            return {"tokens": tokens, "token_logprobs": [-0.1] * len(tokens), "top_logprobs": tops, "text_offset": offsets}

        if body.get("stream") is not True:
            choices = []
            for p, (text_in, g) in enumerate(zip(prompts, gens, strict=True)):
                start = len(text_in) if echo else 0
                for j in range(n):
                    choices.append({"text": (text_in if echo else "") + g.text, "index": p * n + j,
                                    "logprobs": legacy_logprobs(g.tokens, start), "finish_reason": _FINISH[g.finish]})
            doc: dict[str, Any] = {"id": cid, "object": "text_completion", "created": created, "model": model,
                                   "system_fingerprint": settings.system_fingerprint, "choices": choices}
            if not knobs.omit_usage:
                doc["usage"] = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
            return await respond_json(request, doc, knobs)

        opts = body.get("stream_options")
        include_usage = isinstance(opts, dict) and opts.get("include_usage") is True and not knobs.omit_usage
        head, tail = _chunk_framing({"id": cid, "object": "text_completion", "created": created, "model": model,
                                     "system_fingerprint": settings.system_fingerprint}, include_usage)
        plan = SSEPlan()
        for p, (text_in, g) in enumerate(zip(prompts, gens, strict=True)):
            for j in range(n):
                index = p * n + j
                if echo:
                    plan.add(head + orjson.dumps({"text": text_in, "index": index, "logprobs": None, "finish_reason": None}) + tail)
                for tok in g.tokens:
                    plan.add(head + orjson.dumps({"text": tok, "index": index, "logprobs": legacy_logprobs([tok], 0),
                                                  "finish_reason": None}) + tail, paced=index == 0)
                plan.add(head + orjson.dumps({"text": "", "index": index, "logprobs": None,
                                              "finish_reason": _FINISH[g.finish]}) + tail)
        if include_usage:
            plan.add(head + b'],"usage":' + orjson.dumps(
                {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}) + b"}\n\n")
        plan.add(DONE)
        return await stream_sse(request, plan, knobs)

    async def embeddings(request: web.Request, body: dict[str, Any], knobs: Knobs, model: str | None = None) -> web.StreamResponse:
        model = model or body.get("model")
        if not isinstance(model, str) or not model:
            return _missing("model")
        inputs = embedding_inputs(body.get("input"))
        if inputs is None:
            return openai_error(400, "'input' must be a non-empty string, array of strings or array of token arrays.",
                                param="input", code="invalid_value")
        try:
            dims = _int_param(body, "dimensions", settings.embedding_dimensions, 1, 16384)
        except ValueError:
            return _bad_param("dimensions")
        fmt = body.get("encoding_format") or "float"
        if fmt not in ("float", "base64"):
            return _bad_param("encoding_format")
        data = []
        for i, (key, _) in enumerate(inputs):
            vec = embedding(key, dims)
            data.append({"object": "embedding", "index": i, "embedding": embedding_base64(vec) if fmt == "base64" else vec})
        doc: dict[str, Any] = {"object": "list", "data": data, "model": model}
        if not knobs.omit_usage:
            total = sum(count for _, count in inputs)
            doc["usage"] = {"prompt_tokens": total, "total_tokens": total}
        return await respond_json(request, doc, knobs)

    def azure(impl: Any) -> Any:
        async def handler(request: web.Request, body: dict[str, Any], knobs: Knobs) -> web.StreamResponse:
            if "api-version" not in request.query:
                return openai_error(400, "Missing required query parameter 'api-version'.", param="api-version",
                                    code="missing_required_parameter")
            return await impl(request, body, knobs, model=request.match_info["deployment"])
        return handler

    r = app.router
    r.add_post("/v1/chat/completions", api_handler(state, "openai", chat))
    r.add_post("/v1/completions", api_handler(state, "openai", completions))
    r.add_post("/v1/embeddings", api_handler(state, "openai", embeddings))
    azure_base = "/openai/deployments/{deployment}"
    r.add_post(azure_base + "/chat/completions", api_handler(state, "openai", azure(chat)))
    r.add_post(azure_base + "/completions", api_handler(state, "openai", azure(completions)))
    r.add_post(azure_base + "/embeddings", api_handler(state, "openai", azure(embeddings)))

