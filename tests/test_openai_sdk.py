"""The official openai SDK, unchanged, through faregate to the mock upstream."""

from __future__ import annotations

import base64
import json

import openai
import pytest

from tests.conftest import MASTER_KEY, UPSTREAM_KEY, Server


@pytest.fixture(scope="module")
def client(gateway: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=MASTER_KEY, max_retries=0, timeout=20)


def test_chat_completion(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hello there"}])
    assert resp.choices[0].message.content == "Mock reply to: hello there"
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage.completion_tokens > 0 and resp.usage.prompt_tokens > 0


def test_chat_params_reach_the_upstream(client: openai.OpenAI, mock_requests) -> None:
    client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], temperature=0.2, top_p=0.9, n=2,
        stop=["\n"], seed=7, logprobs=True, top_logprobs=2, user="end-user-1", max_completion_tokens=20,
        response_format={"type": "json_object"},
    )
    (req,) = mock_requests()
    body = req["body"]
    assert body["model"] == "gpt-4o-mini"
    for field, value in {"temperature": 0.2, "top_p": 0.9, "n": 2, "stop": ["\n"], "seed": 7, "logprobs": True,
                         "top_logprobs": 2, "user": "end-user-1", "max_completion_tokens": 20}.items():
        assert body[field] == value, field
    assert body["response_format"] == {"type": "json_object"}
    # the upstream gets the gateway's credential, never the client's
    assert req["headers"].get("Authorization", req["headers"].get("authorization")) == f"Bearer {UPSTREAM_KEY}"


def test_n_choices_and_json_mode(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}], n=3,
                                          response_format={"type": "json_object"})
    assert [c.index for c in resp.choices] == [0, 1, 2]
    assert json.loads(resp.choices[0].message.content) == {"mock": "Mock reply to: x"}


def test_streaming(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "stream me"}], stream=True)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Mock reply to: stream me"
    assert chunks[-1].choices[0].finish_reason == "stop"
    # the gateway asked the upstream for usage; the client did not, so it never sees it
    assert all(c.usage is None for c in chunks)


def test_streaming_include_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "count"}],
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == 4  # "Mock", " reply", " to:", " count"


def test_stream_asks_upstream_for_usage(client: openai.OpenAI, mock_requests) -> None:
    list(client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "u"}], stream=True))
    (req,) = mock_requests()
    assert req["body"]["stream_options"] == {"include_usage": True}


TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "weather",
                                      "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]}}},
]


def test_tool_calls(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "weather?"}],
                                          tools=TOOLS, tool_choice="auto")
    calls = resp.choices[0].message.tool_calls
    assert resp.choices[0].finish_reason == "tool_calls"
    assert [c.function.name for c in calls] == ["get_weather", "get_time"]  # parallel tool calls
    assert json.loads(calls[0].function.arguments) == {"city": "mock"}


def test_tool_calls_streamed(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "weather?"}],
                                            tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_time"}},
                                            parallel_tool_calls=False, stream=True)
    args: dict[int, str] = {}
    names: dict[int, str] = {}
    finish = None
    for chunk in stream:
        for choice in chunk.choices:
            for tc in choice.delta.tool_calls or []:
                args[tc.index] = args.get(tc.index, "") + (tc.function.arguments or "")
                if tc.function.name:
                    names[tc.index] = tc.function.name
            finish = choice.finish_reason or finish
    assert names == {0: "get_time"}
    assert json.loads(args[0]) == {"tz": "mock"}
    assert finish == "tool_calls"


def test_tool_result_round_trip(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(model="gpt-4o-mini", tools=TOOLS, messages=[
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ])
    assert resp.choices[0].finish_reason == "stop"
    assert resp.choices[0].message.content


def test_embeddings(client: openai.OpenAI) -> None:
    resp = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert [d.index for d in resp.data] == [0, 1]
    assert len(resp.data[0].embedding) == 8
    assert resp.usage.prompt_tokens > 0


def test_embeddings_base64(client: openai.OpenAI, gateway: Server) -> None:
    raw = client.embeddings.with_raw_response.create(model="text-embedding-3-small", input="a", encoding_format="base64")
    data = json.loads(raw.text)["data"][0]["embedding"]
    assert len(base64.b64decode(data)) == 8 * 4


def test_legacy_completions(client: openai.OpenAI) -> None:
    resp = client.completions.create(model="gpt-4o-mini", prompt="once upon", max_tokens=5)
    assert resp.choices[0].text
    stream = client.completions.create(model="gpt-4o-mini", prompt="once upon", max_tokens=5, stream=True)
    assert "".join(c.choices[0].text for c in stream if c.choices)


def test_models(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert {"gpt-4o-mini", "claude-haiku", "azure-gpt", "text-embedding-3-small", "flaky"} <= set(ids)
    assert client.models.retrieve("claude-haiku").id == "claude-haiku"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


def test_azure_deployment(client: openai.OpenAI, mock_requests) -> None:
    resp = client.chat.completions.create(model="azure-gpt", messages=[{"role": "user", "content": "az"}])
    assert resp.choices[0].message.content == "Mock reply to: az"
    (req,) = mock_requests()
    assert req["path"] == "/openai/deployments/my-gpt-deployment/chat/completions"
    assert req["query"]["api-version"] == "2024-10-21"
    assert {k.lower(): v for k, v in req["headers"].items()}["api-key"] == UPSTREAM_KEY


def test_openai_client_reaches_anthropic_upstream(client: openai.OpenAI, mock_requests) -> None:
    resp = client.chat.completions.create(model="claude-haiku", max_tokens=50, messages=[
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "hi claude"}])
    assert resp.choices[0].message.content == "Mock reply to: hi claude"
    assert resp.usage.prompt_tokens > 0
    (req,) = mock_requests()
    assert req["path"] == "/v1/messages"
    assert req["body"]["system"] == "be brief" and req["body"]["model"] == "claude-haiku-4-5"


def test_openai_client_streams_from_anthropic_upstream_with_tools(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(model="claude-haiku", messages=[{"role": "user", "content": "weather?"}],
                                            tools=TOOLS[:1], stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    args = "".join(tc.function.arguments or "" for c in chunks for ch in c.choices for tc in (ch.delta.tool_calls or []))
    assert json.loads(args) == {"city": "mock"}
    assert chunks[-1].usage.total_tokens > 0


def test_response_carries_its_exact_cost(client: openai.OpenAI) -> None:
    from decimal import Decimal

    import genai_prices

    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "price me"}])
    usage = raw.parse().usage
    expected = genai_prices.calc_price(genai_prices.Usage(input_tokens=usage.prompt_tokens, output_tokens=usage.completion_tokens),
                                       "gpt-4o-mini", provider_id="openai").total_price
    assert Decimal(raw.headers["x-faregate-cost-usd"]) == expected.quantize(Decimal("1e-9"))
