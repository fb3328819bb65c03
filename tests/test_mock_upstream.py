"""faregate.mock: the mock upstream, driven by the official openai and anthropic SDKs.

Each test talks HTTP to a real MockUpstream on a free loopback port; per-request behaviour
is set with `x-mock-*` headers, live behaviour with POST /mock/settings.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import re
import signal
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import aiohttp
import anthropic
import openai
import pytest
import pytest_asyncio

from faregate.mock import MockSettings, MockUpstream

HI = [{"role": "user", "content": "hello there"}]
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}, "unused": {"type": "string"}},
        "required": ["city", "days"]}}},
    {"type": "function", "function": {"name": "get_time", "parameters": {
        "type": "object", "properties": {"tz": {"type": "string"}, "utc": {"type": "boolean"}, "tags": {"type": "array"},
                                         "opts": {"type": "object"}, "n": {"type": "number"}},
        "required": ["tz", "utc", "tags", "opts", "n"]}}},
]
A_TOOL = {"name": "get_weather", "description": "weather",
          "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


@pytest_asyncio.fixture(scope="module")
async def mock() -> AsyncIterator[MockUpstream]:
    upstream = MockUpstream(MockSettings(), protocol="both")
    await upstream.start()
    yield upstream
    await upstream.stop()


@pytest.fixture
def oai(mock: MockUpstream) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=mock.url + "/v1", api_key="x", max_retries=0, timeout=10)


@pytest.fixture
def ant(mock: MockUpstream) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=mock.url, api_key="x", max_retries=0, timeout=10)


async def http(method: str, url: str, body: object = None, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as session, session.request(method, url, json=body, headers=headers) as resp:
        return resp.status, await resp.read()


# ---------------------------------------------------------------- OpenAI chat

async def test_chat_completion(oai: openai.AsyncOpenAI) -> None:
    resp = await oai.chat.completions.create(model="gpt-4o-mini", messages=[
        {"role": "system", "content": "be brief"}, {"role": "user", "content": [{"type": "text", "text": "hello there"}]}])
    assert resp.object == "chat.completion" and resp.id.startswith("chatcmpl-") and resp.model == "gpt-4o-mini"
    assert resp.system_fingerprint and abs(resp.created - time.time()) < 5
    choice = resp.choices[0]
    assert choice.message.role == "assistant" and choice.message.content == "Mock reply to: hello there"
    assert choice.finish_reason == "stop" and choice.index == 0
    u = resp.usage
    assert (u.prompt_tokens, u.completion_tokens, u.total_tokens) == (4, 5, 9)  # "be brief" + "hello there"
    assert u.prompt_tokens_details.cached_tokens == 0 and u.completion_tokens_details.reasoning_tokens == 0


async def test_max_tokens_stop_n_json_and_logprobs(oai: openai.AsyncOpenAI) -> None:
    resp = await oai.chat.completions.create(model="m", messages=HI, max_completion_tokens=2)
    assert resp.choices[0].message.content == "Mock reply" and resp.choices[0].finish_reason == "length"
    assert resp.usage.completion_tokens == 2
    resp = await oai.chat.completions.create(model="m", messages=HI, stop=["xyz", " to:"])
    assert resp.choices[0].message.content == "Mock reply" and resp.choices[0].finish_reason == "stop"
    resp = await oai.chat.completions.create(model="m", messages=HI, n=3, response_format={"type": "json_object"},
                                             logprobs=True, top_logprobs=2)
    assert [c.index for c in resp.choices] == [0, 1, 2]
    assert json.loads(resp.choices[2].message.content) == {"mock": "Mock reply to: hello there"}
    assert resp.usage.completion_tokens == 3 * 5
    lp = resp.choices[0].logprobs.content
    assert "".join(e.token for e in lp) == resp.choices[0].message.content
    assert lp[0].logprob == -0.1 and bytes(lp[0].bytes) == lp[0].token.encode() and len(lp[0].top_logprobs) == 2


async def test_tokens_override_and_omit_usage(oai: openai.AsyncOpenAI) -> None:
    resp = await oai.chat.completions.create(model="m", messages=HI, extra_headers={"x-mock-tokens": "12"})
    assert resp.usage.completion_tokens == 12
    assert resp.choices[0].message.content.startswith("Mock reply to: hello there Mock reply")
    assert len(resp.choices[0].message.content.split()) == 12
    resp = await oai.chat.completions.create(model="m", messages=HI, extra_headers={"x-mock-omit-usage": "1"})
    assert resp.usage is None


async def test_chat_stream(oai: openai.AsyncOpenAI) -> None:
    chunks = [c async for c in await oai.chat.completions.create(model="gpt-4o-mini", messages=HI, stream=True)]
    assert all(c.object == "chat.completion.chunk" and c.model == "gpt-4o-mini" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Mock reply to: hello there"
    assert len(chunks) == 1 + 5 + 1  # role, one chunk per token, finish
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks)


async def test_chat_stream_include_usage(oai: openai.AsyncOpenAI) -> None:
    stream = await oai.chat.completions.create(model="m", messages=HI, stream=True, stream_options={"include_usage": True},
                                               logprobs=True)
    chunks = [c async for c in stream]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 5
    assert chunks[-1].usage.total_tokens == chunks[-1].usage.prompt_tokens + 5
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert [c.choices[0].logprobs.content[0].token for c in chunks[1:6]] == ["Mock", " reply", " to:", " hello", " there"]
    stream = await oai.chat.completions.create(model="m", messages=HI, stream=True, stream_options={"include_usage": True},
                                               extra_headers={"x-mock-omit-usage": "1"})
    assert all(c.usage is None and c.choices for c in [c async for c in stream])


async def test_stream_wire_format_ends_with_done(mock: MockUpstream) -> None:
    status, raw = await http("POST", mock.url + "/v1/chat/completions",
                             {"model": "m", "messages": HI, "stream": True, "stream_options": {"include_usage": True}})
    assert status == 200
    events = raw.decode().split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    usage = json.loads(events[-3][len("data: "):])
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 5


# ---------------------------------------------------------------- tools

async def test_tool_calls(oai: openai.AsyncOpenAI) -> None:
    resp = await oai.chat.completions.create(model="m", messages=HI, tools=TOOLS)
    msg = resp.choices[0].message
    assert resp.choices[0].finish_reason == "tool_calls" and msg.content is None
    assert [c.function.name for c in msg.tool_calls] == ["get_weather", "get_time"]
    assert all(c.id.startswith("call_") and c.type == "function" for c in msg.tool_calls)
    assert json.loads(msg.tool_calls[0].function.arguments) == {"city": "mock", "days": 1}
    assert json.loads(msg.tool_calls[1].function.arguments) == {"tz": "mock", "utc": True, "tags": [], "opts": {}, "n": 1}

    resp = await oai.chat.completions.create(model="m", messages=HI, tools=TOOLS, parallel_tool_calls=False)
    assert [c.function.name for c in resp.choices[0].message.tool_calls] == ["get_weather"]
    resp = await oai.chat.completions.create(model="m", messages=HI, tools=TOOLS,
                                             tool_choice={"type": "function", "function": {"name": "get_time"}})
    assert [c.function.name for c in resp.choices[0].message.tool_calls] == ["get_time"]
    resp = await oai.chat.completions.create(model="m", messages=HI, tools=TOOLS, tool_choice="none")
    assert resp.choices[0].message.content == "Mock reply to: hello there" and not resp.choices[0].message.tool_calls

    call = msg.tool_calls[0]
    follow = await oai.chat.completions.create(model="m", tools=TOOLS, messages=[
        *HI, {"role": "assistant", "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"}])
    assert follow.choices[0].finish_reason == "stop"
    assert follow.choices[0].message.content == "Mock reply to: hello there"


async def test_tool_calls_streamed(oai: openai.AsyncOpenAI) -> None:
    stream = await oai.chat.completions.create(model="m", messages=HI, tools=TOOLS, stream=True)
    args: dict[int, list[str]] = {}
    names: dict[int, str] = {}
    ids: dict[int, str] = {}
    finish = None
    async for chunk in stream:
        for choice in chunk.choices:
            for tc in choice.delta.tool_calls or []:
                if tc.function.name:
                    names[tc.index], ids[tc.index] = tc.function.name, tc.id
                    assert tc.function.arguments == "" and tc.type == "function"
                else:
                    assert tc.id is None and tc.function.name is None
                    args.setdefault(tc.index, []).append(tc.function.arguments)
            finish = choice.finish_reason or finish
    assert names == {0: "get_weather", 1: "get_time"} and all(i.startswith("call_") for i in ids.values())
    assert all(len(parts) >= 2 for parts in args.values())
    assert json.loads("".join(args[0])) == {"city": "mock", "days": 1}
    assert json.loads("".join(args[1]))["tz"] == "mock"
    assert finish == "tool_calls"


# ---------------------------------------------------------------- legacy completions, embeddings, models

async def test_legacy_completions(oai: openai.AsyncOpenAI) -> None:
    resp = await oai.completions.create(model="gpt-3.5-turbo-instruct", prompt="once upon a time", max_tokens=3)
    assert resp.object == "text_completion" and resp.id.startswith("cmpl-")
    assert resp.choices[0].text == "Mock reply to:" and resp.choices[0].finish_reason == "length"
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (4, 3)
    stream = await oai.completions.create(model="m", prompt="once", max_tokens=50, stream=True,
                                          stream_options={"include_usage": True})
    chunks = [c async for c in stream]
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "Mock reply to: once"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 4


async def test_embeddings(oai: openai.AsyncOpenAI, mock: MockUpstream) -> None:
    resp = await oai.embeddings.create(model="text-embedding-3-small", input=["a b", "c"])
    assert resp.object == "list" and resp.model == "text-embedding-3-small"
    assert [d.index for d in resp.data] == [0, 1] and all(d.object == "embedding" for d in resp.data)
    vec = resp.data[0].embedding
    assert len(vec) == 8 and math.isclose(sum(v * v for v in vec), 1.0, rel_tol=1e-5)
    assert resp.data[0].embedding != resp.data[1].embedding
    assert (resp.usage.prompt_tokens, resp.usage.total_tokens) == (3, 3)
    again = await oai.embeddings.create(model="e", input="a b", dimensions=16)
    assert len(again.data[0].embedding) == 16
    # base64: float32 little endian, the same vector as the float encoding
    raw = await oai.embeddings.with_raw_response.create(model="e", input="a b", encoding_format="base64")
    b64 = json.loads(raw.text)["data"][0]["embedding"]
    assert list(struct.unpack("<8f", base64.b64decode(b64))) == vec
    # the SDK's default (it asks for base64 and decodes) agrees, and token arrays work
    assert (await oai.embeddings.create(model="e", input="a b")).data[0].embedding == vec
    tokens = await oai.embeddings.create(model="e", input=[[1, 2, 3]])
    assert tokens.usage.prompt_tokens == 3


async def test_models(oai: openai.AsyncOpenAI, ant: anthropic.AsyncAnthropic) -> None:
    ids = [m.id async for m in oai.models.list()]
    assert "gpt-4o-mini" in ids
    assert (await oai.models.retrieve("gpt-4o-mini")).object == "model"
    with pytest.raises(openai.NotFoundError):
        await oai.models.retrieve("nope")
    page = await ant.models.list()
    assert "claude-haiku-4-5" in [m.id for m in page.data] and page.data[0].type == "model"


async def test_azure_deployment(mock: MockUpstream) -> None:
    az = openai.AsyncAzureOpenAI(azure_endpoint=mock.url, api_version="2024-10-21", api_key="k", max_retries=0)
    resp = await az.chat.completions.create(model="my-deployment", messages=HI)
    assert resp.model == "my-deployment" and resp.choices[0].message.content == "Mock reply to: hello there"
    emb = await az.embeddings.create(model="my-embedder", input="x")
    assert emb.model == "my-embedder" and len(emb.data[0].embedding) == 8
    req = mock.requests[-1]
    assert req["path"] == "/openai/deployments/my-embedder/embeddings" and req["query"]["api-version"] == "2024-10-21"
    status, _ = await http("POST", mock.url + "/openai/deployments/d/chat/completions", {"messages": HI})
    assert status == 400  # no api-version


# ---------------------------------------------------------------- errors and disconnects

async def test_openai_errors_via_headers(oai: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as exc:
        await oai.chat.completions.create(model="m", messages=HI, extra_headers={"x-mock-status": "429"})
    assert exc.value.response.headers["retry-after"] == "1" and exc.value.code == "rate_limit_exceeded"
    with pytest.raises(openai.BadRequestError) as exc:
        await oai.chat.completions.create(model="m", messages=HI, extra_headers={
            "x-mock-status": "400", "x-mock-error-code": "context_length_exceeded"})
    assert exc.value.code == "context_length_exceeded" and exc.value.type == "invalid_request_error"
    with pytest.raises(openai.InternalServerError) as exc:
        await oai.chat.completions.create(model="m", messages=HI, stream=True, extra_headers={"x-mock-status": "503"})
    assert exc.value.status_code == 503 and exc.value.type == "server_error"
    with pytest.raises(openai.NotFoundError):
        await oai.embeddings.create(model="e", input="x", extra_headers={"x-mock-status": "404"})
    with pytest.raises(openai.BadRequestError) as exc:
        await oai.chat.completions.create(model="m", messages=HI, extra_headers={"x-mock-latency-ms": "soon"})
    assert "x-mock-latency-ms" in exc.value.message


async def test_anthropic_errors_via_headers(ant: anthropic.AsyncAnthropic) -> None:
    kwargs = {"model": "claude-haiku-4-5", "max_tokens": 10, "messages": HI}
    with pytest.raises(anthropic.RateLimitError) as exc:
        await ant.messages.create(**kwargs, extra_headers={"x-mock-status": "429"})
    assert exc.value.body["type"] == "error" and exc.value.body["error"]["type"] == "rate_limit_error"
    assert exc.value.response.headers["retry-after"] == "1"
    with pytest.raises(anthropic.APIStatusError) as exc:
        await ant.messages.create(**kwargs, extra_headers={"x-mock-status": "529"})
    assert exc.value.status_code == 529 and exc.value.body["error"]["type"] == "overloaded_error"
    with pytest.raises(anthropic.InternalServerError) as exc:
        await ant.messages.create(**kwargs, stream=True, extra_headers={"x-mock-status": "500"})
    assert exc.value.body["error"]["type"] == "api_error"
    with pytest.raises(anthropic.BadRequestError) as exc:
        await ant.messages.create(model="c", max_tokens=0, messages=HI)
    assert "max_tokens" in exc.value.body["error"]["message"]


async def test_error_rate_setting(oai: openai.AsyncOpenAI, mock: MockUpstream) -> None:
    status, raw = await http("POST", mock.url + "/mock/settings", {"error_rate": 1.0, "error_status": 502, "seed": 3})
    assert status == 200 and json.loads(raw)["error_rate"] == 1.0
    try:
        with pytest.raises(openai.InternalServerError) as exc:
            await oai.chat.completions.create(model="m", messages=HI)
        assert exc.value.status_code == 502
        await http("POST", mock.url + "/mock/settings", {"error_rate": 0.5})
        outcomes = []
        for _ in range(20):
            try:
                await oai.chat.completions.create(model="m", messages=HI)
                outcomes.append(True)
            except openai.InternalServerError:
                outcomes.append(False)
        assert 0 < sum(outcomes) < 20
    finally:
        status, raw = await http("DELETE", mock.url + "/mock/settings")
    assert status == 200 and json.loads(raw)["error_rate"] == 0.0
    status, raw = await http("POST", mock.url + "/mock/settings", {"no_such_knob": 1})
    assert status == 400 and "no_such_knob" in json.loads(raw)["error"]


async def test_require_api_key() -> None:
    async with MockUpstream(MockSettings(require_api_key="sk-right")) as up:
        with pytest.raises(openai.AuthenticationError) as exc:
            await openai.AsyncOpenAI(base_url=up.url + "/v1", api_key="sk-wrong", max_retries=0).models.list()
        assert exc.value.code == "invalid_api_key" and "sk-right" not in str(exc.value.body)
        with pytest.raises(anthropic.AuthenticationError) as aexc:
            await anthropic.AsyncAnthropic(base_url=up.url, api_key="sk-wrong", max_retries=0).messages.create(
                model="c", max_tokens=5, messages=HI)
        assert aexc.value.body["error"]["type"] == "authentication_error"
        ok = await openai.AsyncOpenAI(base_url=up.url + "/v1", api_key="sk-right").chat.completions.create(model="m", messages=HI)
        assert ok.choices[0].message.content
        msg = await anthropic.AsyncAnthropic(base_url=up.url, api_key="sk-right").messages.create(
            model="c", max_tokens=5, messages=HI)
        assert msg.content[0].text


async def test_disconnect_mid_stream(oai: openai.AsyncOpenAI, ant: anthropic.AsyncAnthropic) -> None:
    got: list[str] = []
    with pytest.raises(openai.APIConnectionError):
        stream = await oai.chat.completions.create(model="m", messages=HI, stream=True,
                                                   extra_headers={"x-mock-disconnect-after": "3"})
        async for chunk in stream:
            got.append(chunk.choices[0].delta.content)
    assert got == ["", "Mock", " reply"]  # exactly 3 chunks, then the connection dropped
    seen: list[str] = []
    with pytest.raises(Exception) as exc:  # noqa: B017 - this SDK lets the transport's error through
        async with ant.messages.stream(model="c", max_tokens=50, messages=HI,
                                       extra_headers={"x-mock-disconnect-after": "4"}) as astream:
            async for event in astream:
                seen.append(event.type)
    assert isinstance(exc.value, anthropic.APIConnectionError) or "incomplete chunked read" in str(exc.value)
    assert seen[0] == "message_start" and "message_stop" not in seen
    with pytest.raises(openai.APIConnectionError):  # non-stream: the socket closes before any response
        await oai.chat.completions.create(model="m", messages=HI, extra_headers={"x-mock-disconnect-after": "0"})


# ---------------------------------------------------------------- Anthropic

async def test_anthropic_message(ant: anthropic.AsyncAnthropic) -> None:
    msg = await ant.messages.create(model="claude-haiku-4-5", max_tokens=100, system="be brief",
                                    messages=[{"role": "user", "content": [{"type": "text", "text": "hello there"}]}])
    assert msg.type == "message" and msg.role == "assistant" and msg.id.startswith("msg_")
    assert msg.model == "claude-haiku-4-5" and msg.content[0].type == "text"
    assert msg.content[0].text == "Mock reply to: hello there"
    assert msg.stop_reason == "end_turn" and msg.stop_sequence is None
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (4, 5)
    assert msg.usage.cache_read_input_tokens == 0 and msg.usage.cache_creation_input_tokens == 0
    msg = await ant.messages.create(model="c", max_tokens=2, messages=HI)
    assert msg.stop_reason == "max_tokens" and msg.content[0].text == "Mock reply" and msg.usage.output_tokens == 2
    msg = await ant.messages.create(model="c", max_tokens=50, messages=HI, stop_sequences=["hello"])
    assert msg.stop_reason == "stop_sequence" and msg.stop_sequence == "hello"
    assert msg.content[0].text == "Mock reply to: "
    count = await ant.messages.count_tokens(model="c", messages=HI)
    assert count.input_tokens == 2


async def test_anthropic_stream_event_sequence(ant: anthropic.AsyncAnthropic, mock: MockUpstream) -> None:
    async with ant.messages.stream(model="c", max_tokens=100, messages=HI) as stream:
        text = "".join([t async for t in stream.text_stream])
        final = await stream.get_final_message()
    assert text == "Mock reply to: hello there"
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 5 and final.usage.input_tokens == 2
    # the exact wire sequence, ping included (the SDK drops pings)
    status, raw = await http("POST", mock.url + "/v1/messages",
                             {"model": "c", "max_tokens": 100, "messages": HI, "stream": True})
    assert status == 200
    names = re.findall(r"^event: (\w+)$", raw.decode(), re.M)
    assert names == ["message_start", "content_block_start", "ping", *["content_block_delta"] * 5,
                     "content_block_stop", "message_delta", "message_stop"]
    datas = [json.loads(d) for d in re.findall(r"^data: (.*)$", raw.decode(), re.M)]
    assert [d["type"] for d in datas] == names
    assert datas[-2]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert datas[-2]["usage"]["output_tokens"] == 5


async def test_anthropic_tools(ant: anthropic.AsyncAnthropic) -> None:
    msg = await ant.messages.create(model="c", max_tokens=100, tools=[A_TOOL], messages=HI)
    assert msg.stop_reason == "tool_use"
    (block,) = msg.content
    assert block.type == "tool_use" and block.id.startswith("toolu_") and block.name == "get_weather"
    assert block.input == {"city": "mock"}
    follow = await ant.messages.create(model="c", max_tokens=100, tools=[A_TOOL], messages=[
        *HI, {"role": "assistant", "content": [block.model_dump()]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "sunny"}]}])
    assert follow.stop_reason == "end_turn" and follow.content[0].text == "Mock reply to: hello there"
    none = await ant.messages.create(model="c", max_tokens=100, tools=[A_TOOL], tool_choice={"type": "none"}, messages=HI)
    assert none.stop_reason == "end_turn"
    other = {**A_TOOL, "name": "other"}
    forced = await ant.messages.create(model="c", max_tokens=100, tools=[A_TOOL, other],
                                       tool_choice={"type": "tool", "name": "other"}, messages=HI)
    assert [b.name for b in forced.content] == ["other"]


async def test_anthropic_tools_streamed(ant: anthropic.AsyncAnthropic) -> None:
    partials: list[str] = []
    async with ant.messages.stream(model="c", max_tokens=100, tools=[A_TOOL], messages=HI) as stream:
        async for event in stream:
            if event.type == "content_block_start":
                assert event.content_block.type == "tool_use" and event.content_block.input == {}
            if event.type == "content_block_delta":
                assert event.delta.type == "input_json_delta"
                partials.append(event.delta.partial_json)
        final = await stream.get_final_message()
    assert len(partials) >= 2 and json.loads("".join(partials)) == {"city": "mock"}
    assert final.stop_reason == "tool_use" and final.content[0].input == {"city": "mock"}


# ---------------------------------------------------------------- timing

async def test_latency_knobs(oai: openai.AsyncOpenAI) -> None:
    t0 = time.perf_counter()
    await oai.chat.completions.create(model="m", messages=HI, extra_headers={"x-mock-latency-ms": "200"})
    assert time.perf_counter() - t0 >= 0.19
    t0 = time.perf_counter()
    stream = await oai.chat.completions.create(model="m", messages=HI, stream=True, extra_headers={
        "x-mock-ttft-ms": "150", "x-mock-itl-ms": "40", "x-mock-tokens": "6"})
    arrivals = []
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.perf_counter() - t0)
    assert len(arrivals) == 6
    assert arrivals[0] >= 0.14
    assert arrivals[-1] - arrivals[0] >= 5 * 0.04 * 0.9
    assert arrivals[-1] < 2.0


# ---------------------------------------------------------------- recording, settings, metrics, protocols

async def test_request_recording(oai: openai.AsyncOpenAI, mock: MockUpstream) -> None:
    await http("DELETE", mock.url + "/mock/requests")
    await oai.chat.completions.create(model="gpt-4o-mini", messages=HI, temperature=0.3, extra_headers={"x-trace": "t1"})
    await oai.models.list()
    status, raw = await http("GET", mock.url + "/mock/requests")
    reqs = json.loads(raw)
    assert status == 200 and [r["method"] for r in reqs] == ["POST", "GET"]
    first = reqs[0]
    assert first["path"] == "/v1/chat/completions" and first["query"] == {}
    assert first["body"] == {"model": "gpt-4o-mini", "messages": HI, "temperature": 0.3}
    headers = {k.lower(): v for k, v in first["headers"].items()}
    assert headers["authorization"] == "Bearer x" and headers["x-trace"] == "t1"
    assert reqs[1]["path"] == "/v1/models" and reqs[1]["body"] is None
    await http("DELETE", mock.url + "/mock/requests")
    assert json.loads((await http("GET", mock.url + "/mock/requests"))[1]) == []


async def test_metrics(oai: openai.AsyncOpenAI, mock: MockUpstream) -> None:
    status, raw = await http("POST", mock.url + "/mock/settings", {"num_requests_waiting": 10, "kv_cache_usage_perc": 0.95})
    assert status == 200
    try:
        slow = asyncio.ensure_future(oai.chat.completions.create(model="m", messages=HI, extra_headers={"x-mock-latency-ms": "300"}))
        await asyncio.sleep(0.1)
        text = (await http("GET", mock.url + "/metrics"))[1].decode()
        await slow
    finally:
        await http("DELETE", mock.url + "/mock/settings")
    assert "# TYPE vllm:num_requests_running gauge" in text
    assert re.search(r'^vllm:num_requests_running\{model_name="[^"]+"\} 1\.0$', text, re.M)
    assert re.search(r'^vllm:num_requests_waiting\{model_name="[^"]+"\} 10\.0$', text, re.M)
    assert re.search(r'^vllm:kv_cache_usage_perc\{model_name="[^"]+"\} 0\.95$', text, re.M)
    text = (await http("GET", mock.url + "/metrics"))[1].decode()
    assert re.search(r"^vllm:num_requests_running\{.*\} 0\.0$", text, re.M)


async def test_protocol_selection() -> None:
    async with MockUpstream(protocol="openai") as up:
        assert (await http("POST", up.url + "/v1/messages", {"model": "c", "max_tokens": 5, "messages": HI}))[0] == 404
        assert (await http("POST", up.url + "/v1/chat/completions", {"model": "m", "messages": HI}))[0] == 200
    async with MockUpstream(protocol="anthropic") as up:
        status, raw = await http("POST", up.url + "/v1/chat/completions", {"model": "m", "messages": HI})
        assert status == 404 and json.loads(raw)["type"] == "error"
        assert (await http("POST", up.url + "/v1/messages", {"model": "c", "max_tokens": 5, "messages": HI}))[0] == 200
        assert json.loads((await http("GET", up.url + "/v1/models"))[1])["data"][0]["type"] == "model"


def test_cli_workers_share_one_port() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "faregate.mock", "--port", "0", "--workers", "2", "--protocol", "openai",
                             "--tokens", "3"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        line = proc.stdout.readline()
        match = re.search(r"listening on (http://127\.0\.0\.1:\d+) \(protocol=openai\)", line)
        assert match, line
        client = openai.OpenAI(base_url=match.group(1) + "/v1", api_key="x", max_retries=0, timeout=5)
        for _ in range(4):
            assert client.chat.completions.create(model="m", messages=HI).usage.completion_tokens == 3
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
