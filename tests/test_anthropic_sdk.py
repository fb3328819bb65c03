"""The official anthropic SDK, unchanged, through faregate — to Anthropic and OpenAI upstreams."""

from __future__ import annotations

import anthropic
import pytest

from tests.conftest import MASTER_KEY, Server

TOOL = {"name": "get_weather", "description": "weather",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


@pytest.fixture(scope="module")
def client(gateway: Server) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key=MASTER_KEY, max_retries=0, timeout=20)


@pytest.mark.parametrize("model", ["claude-haiku", "gpt-4o-mini"])
def test_message(client: anthropic.Anthropic, model: str) -> None:
    msg = client.messages.create(model=model, max_tokens=100, system="be brief",
                                 messages=[{"role": "user", "content": "hello"}])
    assert msg.type == "message" and msg.role == "assistant"
    assert msg.content[0].text == "Mock reply to: hello"
    assert msg.stop_reason == "end_turn"
    assert msg.usage.input_tokens > 0 and msg.usage.output_tokens == 4
    assert msg.model == model


@pytest.mark.parametrize("model", ["claude-haiku", "gpt-4o-mini"])
def test_max_tokens_stop_reason(client: anthropic.Anthropic, model: str) -> None:
    msg = client.messages.create(model=model, max_tokens=2, messages=[{"role": "user", "content": "a long one"}])
    assert msg.stop_reason == "max_tokens"
    assert msg.usage.output_tokens == 2


@pytest.mark.parametrize("model", ["claude-haiku", "gpt-4o-mini"])
def test_stream_event_sequence(client: anthropic.Anthropic, model: str) -> None:
    with client.messages.stream(model=model, max_tokens=100, messages=[{"role": "user", "content": "stream"}]) as stream:
        events = [e.type for e in stream]
        final = stream.get_final_message()
    assert events[0] == "message_start"
    assert events[1] == "content_block_start"
    assert "content_block_delta" in events
    assert events[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert final.content[0].text == "Mock reply to: stream"
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 4


@pytest.mark.parametrize("model", ["claude-haiku", "gpt-4o-mini"])
def test_tool_use_and_result(client: anthropic.Anthropic, model: str) -> None:
    msg = client.messages.create(model=model, max_tokens=100, tools=[TOOL],
                                 messages=[{"role": "user", "content": "weather in Oslo?"}])
    assert msg.stop_reason == "tool_use"
    block = next(b for b in msg.content if b.type == "tool_use")
    assert block.name == "get_weather" and block.input == {"city": "mock"}
    follow = client.messages.create(model=model, max_tokens=100, tools=[TOOL], messages=[
        {"role": "user", "content": "weather in Oslo?"},
        {"role": "assistant", "content": [b.model_dump() for b in msg.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "sunny"}]},
    ])
    assert follow.stop_reason == "end_turn" and follow.content[0].type == "text"


@pytest.mark.parametrize("model", ["claude-haiku", "gpt-4o-mini"])
def test_tool_use_streamed(client: anthropic.Anthropic, model: str) -> None:
    with client.messages.stream(model=model, max_tokens=100, tools=[TOOL],
                                messages=[{"role": "user", "content": "weather?"}]) as stream:
        final = stream.get_final_message()
    block = next(b for b in final.content if b.type == "tool_use")
    assert block.input == {"city": "mock"}
    assert final.stop_reason == "tool_use"


def test_errors_take_anthropic_shape(client: anthropic.Anthropic, gateway: Server) -> None:
    with pytest.raises(anthropic.NotFoundError) as exc:
        client.messages.create(model="nope", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert exc.value.body["type"] == "error"
    assert exc.value.body["error"]["type"] == "not_found_error"
    bad = anthropic.Anthropic(base_url=gateway.url, api_key="wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        bad.messages.create(model="claude-haiku", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    with pytest.raises(anthropic.BadRequestError) as exc:
        client.messages.create(model="claude-haiku", max_tokens=0, messages=[{"role": "user", "content": "x"}])
    assert exc.value.body["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in exc.value.body["error"]["message"]


def test_upstream_rate_limit_maps_to_sdk_error(client: anthropic.Anthropic, mock_settings) -> None:
    mock_settings(error_rate=1.0, error_status=429)
    with pytest.raises(anthropic.RateLimitError):
        client.messages.create(model="claude-haiku", max_tokens=5, messages=[{"role": "user", "content": "x"}])
