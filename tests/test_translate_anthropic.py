"""Anthropic Messages ⇄ canonical (OpenAI chat) translation: pure functions, no servers.

Produced Anthropic messages/events are checked with the official `anthropic` SDK's types and its
stream accumulator; produced canonical responses/chunks with the `openai` SDK's types.
"""

from __future__ import annotations

import copy
from typing import Any

import anthropic.types as at
import openai.types.chat as ot
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from openai.lib.streaming.chat import ChatCompletionStreamState
from pydantic import TypeAdapter

from faregate.core.errors import GatewayError
from faregate.translate.anthropic_request import chat_request_to_messages, messages_request_to_chat
from faregate.translate.anthropic_response import (
    chat_response_to_messages,
    messages_response_to_chat,
)
from faregate.translate.anthropic_stream import ChatStreamToMessages, MessagesStreamToChat
from faregate.wire.anthropic import MESSAGES_REQUEST, validate_messages_request
from faregate.wire.openai import validate_request

STREAM_EVENT = TypeAdapter(at.RawMessageStreamEvent)
PNG = "iVBORw0KGgo="
WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
A_TOOL = {"name": "get_weather", "description": "weather", "input_schema": WEATHER_SCHEMA}
O_TOOL = {"type": "function", "function": {"name": "get_weather", "description": "weather", "parameters": WEATHER_SCHEMA}}


def areq(**kw: Any) -> dict[str, Any]:
    return {"model": "claude", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}], **kw}


def oreq(*messages: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return {"model": "gpt", "messages": list(messages) or [{"role": "user", "content": "hi"}], **kw}


def to_chat(**kw: Any) -> dict[str, Any]:
    """Front end: validate an Anthropic request, translate it, and check it is a valid chat request."""
    return validate_request("chat", messages_request_to_chat(validate_messages_request(areq(**kw))))


def to_anthropic(*messages: dict[str, Any], **kw: Any) -> dict[str, Any]:
    """Provider: translate a chat request and check it passes the Anthropic request schema."""
    return validate_messages_request(chat_request_to_messages(oreq(*messages, **kw), "claude-up"))


def bad(body: Any) -> GatewayError:
    with pytest.raises(GatewayError) as exc:
        validate_messages_request(body)
    assert exc.value.status == 400 and exc.value.code == "invalid_request"
    return exc.value


def chat_completion(message: dict[str, Any], finish: str = "stop", usage: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"id": "chatcmpl-abc", "object": "chat.completion", "created": 1, "model": "gpt",
            "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}],
            "usage": usage or {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}}


def anthropic_message(content: list[dict[str, Any]], stop: str = "end_turn", **usage: int) -> dict[str, Any]:
    return {"id": "msg_01", "type": "message", "role": "assistant", "model": "claude-up", "content": content,
            "stop_reason": stop, "stop_sequence": None, "usage": {"input_tokens": 10, "output_tokens": 3, **usage}}


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, usage: dict[str, Any] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"id": "chatcmpl-abc", "object": "chat.completion.chunk", "created": 1, "model": "gpt",
                           "choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]}
    if usage is not None:
        doc["usage"] = usage
    return doc


def run_chat_stream(chunks: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    t = ChatStreamToMessages("claude", "msg_req1")
    events = [e for c in chunks for e in t.feed(c)] + t.finish()
    for name, data in events:
        assert STREAM_EVENT.validate_python(data).type == name
    return events


def accumulate(events: list[tuple[str, dict[str, Any]]]) -> at.Message:
    snapshot, bufs = None, {}
    for _, data in events:
        snapshot = accumulate_event(event=STREAM_EVENT.validate_python(data), current_snapshot=snapshot, json_bufs=bufs)
    return at.Message.model_validate(snapshot.model_dump())


def run_messages_stream(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    t = MessagesStreamToChat("claude-up")
    chunks = [c for e in events for c in t.feed(e["type"], e)]
    for c in chunks:
        ot.ChatCompletionChunk.model_validate(c)
    return chunks


TEXT_STREAM = [{"role": "assistant", "content": ""}, {"content": "Hel"}, {"content": "lo"}]
TOOL_STREAM = [
    {"role": "assistant", "content": None},
    {"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]},
    {"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]},
    {"tool_calls": [{"index": 0, "function": {"arguments": '"Oslo"}'}}]},
    {"tool_calls": [{"index": 1, "id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}}]},
]
USAGE = {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17, "prompt_tokens_details": {"cached_tokens": 4}}


def anthropic_events(blocks: list[tuple[dict[str, Any], list[dict[str, Any]]]], stop: str) -> list[dict[str, Any]]:
    start = {"id": "msg_01", "type": "message", "role": "assistant", "model": "claude-up", "content": [],
             "stop_reason": None, "stop_sequence": None,
             "usage": {"input_tokens": 7, "output_tokens": 1, "cache_read_input_tokens": 5, "cache_creation_input_tokens": 2}}
    out: list[dict[str, Any]] = [{"type": "message_start", "message": start}, {"type": "ping"}]
    for i, (block, deltas) in enumerate(blocks):
        out.append({"type": "content_block_start", "index": i, "content_block": block})
        out += [{"type": "content_block_delta", "index": i, "delta": d} for d in deltas]
        out.append({"type": "content_block_stop", "index": i})
    out.append({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None}, "usage": {"output_tokens": 9}})
    return out + [{"type": "message_stop"}]


ANTHROPIC_TOOL_EVENTS = anthropic_events([
    ({"type": "text", "text": ""}, [{"type": "text_delta", "text": "Let me check."}]),
    ({"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}},
     [{"type": "input_json_delta", "partial_json": ""}, {"type": "input_json_delta", "partial_json": '{"city": "Os'},
      {"type": "input_json_delta", "partial_json": 'lo"}'}]),
], "tool_use")


# --- request validation ----------------------------------------------------------------------

def test_valid_request_is_a_plain_dict_keeping_unknown_fields() -> None:
    doc = validate_messages_request(areq(system=[{"type": "text", "text": "s", "cache_control": {"type": "ephemeral"}}], x=1))
    assert type(doc) is dict and doc["x"] == 1 and doc["system"][0]["cache_control"] == {"type": "ephemeral"}


@pytest.mark.parametrize(("body", "param", "words"), [
    ({"model": "m", "messages": [{"role": "user", "content": "x"}]}, "max_tokens", "Missing required field"),
    (areq(max_tokens=0), "max_tokens", "greater than or equal to 1"),
    (areq(max_tokens=True), "max_tokens", "valid integer"),
    (areq(messages=[]), "messages", "at least 1 item"),
    (areq(messages=["hi"]), "messages[0]", "valid dictionary"),
    (areq(messages=[{"role": "system", "content": "x"}]), "messages[0].role", "'user' or 'assistant'"),
    (areq(messages=[{"role": "user", "content": 5}]), "messages[0].content", "a valid string or a valid list"),
    (areq(messages=[{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": 1}]}]),
     "messages[0].content[1].text", "valid string"),
    (areq(messages=[{"role": "user", "content": [{"text": "a"}]}]), "messages[0].content[0].type", "Missing"),
    (areq(messages=[{"role": "user", "content": [{"type": "video"}]}]), "messages[0].content[0]", "'tool_result'"),
    (areq(messages=[{"role": "user", "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/bmp", "data": PNG}}]}]),
     "messages[0].content[0].source.media_type", "'image/png'"),
    (areq(tool_choice={"type": "tool"}), "tool_choice.name", "Missing"),
    (areq(system=[{"type": "text"}]), "system[0].text", "Missing"),
])
def test_validation_error_names_the_bad_field(body: dict[str, Any], param: str, words: str) -> None:
    err = bad(body)
    assert err.param == param and param in err.message and words in err.message


def test_non_object_body_is_rejected() -> None:
    assert "JSON object" in bad([1]).message


def test_request_schema_renders_as_json_schema() -> None:
    assert {"model", "max_tokens", "messages"} <= set(MESSAGES_REQUEST.json_schema()["required"])


# --- front end: Anthropic request -> canonical -------------------------------------------------

def test_system_string_becomes_leading_system_message() -> None:
    assert to_chat(system="be brief")["messages"][0] == {"role": "system", "content": "be brief"}


def test_system_blocks_become_one_system_message() -> None:
    system = [{"type": "text", "text": "a"}, {"type": "text", "text": "b", "cache_control": {"type": "ephemeral"}}]
    assert to_chat(system=system)["messages"][0] == {"role": "system", "content": "a\nb"}


def test_tool_use_blocks_become_assistant_tool_calls_and_thinking_is_dropped() -> None:
    msgs = [{"role": "user", "content": "w?"}, {"role": "assistant", "content": [
        {"type": "thinking", "thinking": "hmm", "signature": "sig"}, {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Zürich"}}]}]
    assert to_chat(messages=msgs)["messages"][1] == {"role": "assistant", "content": "Checking.", "tool_calls": [
        {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Zürich"}'}}]}


def test_tool_results_become_tool_messages_before_the_turns_user_text() -> None:
    content = [{"type": "tool_result", "tool_use_id": "t1", "content": "sunny"},
               {"type": "tool_result", "tool_use_id": "t2", "content": [{"type": "text", "text": "rain"}], "is_error": True},
               {"type": "text", "text": "thanks"}]
    assert to_chat(messages=[{"role": "user", "content": content}])["messages"] == [
        {"role": "tool", "tool_call_id": "t1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "t2", "content": "Error: rain"},
        {"role": "user", "content": "thanks"}]


def test_images_a_tool_returned_go_to_the_user_message_after_the_tool_message() -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
    content = [{"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "chart"}, image]}]
    assert to_chat(messages=[{"role": "user", "content": content}])["messages"] == [
        {"role": "tool", "tool_call_id": "t1", "content": "chart"},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]}]


def test_images_become_image_url_parts() -> None:
    content = [{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
               {"type": "image", "source": {"type": "url", "url": "https://x.test/a.jpg"}}, {"type": "text", "text": "?"}]
    assert to_chat(messages=[{"role": "user", "content": content}])["messages"][0]["content"] == [
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": "https://x.test/a.jpg"}}, {"type": "text", "text": "?"}]


def test_pdf_document_becomes_file_part() -> None:
    doc = {"type": "document", "title": "a.pdf", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"}}
    assert to_chat(messages=[{"role": "user", "content": [doc]}])["messages"][0]["content"] == [
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf"}}]


def test_sampling_stop_user_and_max_tokens_are_mapped_and_unknown_fields_dropped() -> None:
    out = to_chat(temperature=0.2, top_p=0.9, top_k=5, stop_sequences=["END"], metadata={"user_id": "u1"}, x=1)
    assert out == {"model": "claude", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}],
                   "temperature": 0.2, "top_p": 0.9, "stop": ["END"], "user": "u1"}


@pytest.mark.parametrize(("choice", "expected"), [
    ({"type": "auto"}, "auto"), ({"type": "any"}, "required"), ({"type": "none"}, "none"),
    ({"type": "tool", "name": "get_weather"}, {"type": "function", "function": {"name": "get_weather"}}),
])
def test_tools_and_tool_choice_map_to_functions(choice: dict[str, Any], expected: Any) -> None:
    out = to_chat(tools=[A_TOOL], tool_choice=choice)
    assert out["tools"] == [O_TOOL] and out["tool_choice"] == expected and "parallel_tool_calls" not in out


def test_disable_parallel_tool_use_sets_parallel_tool_calls_false() -> None:
    assert to_chat(tools=[A_TOOL], tool_choice={"type": "auto", "disable_parallel_tool_use": True})["parallel_tool_calls"] is False


def test_stream_asks_for_usage() -> None:
    out = to_chat(stream=True)
    assert out["stream"] is True and out["stream_options"] == {"include_usage": True}


def test_server_tools_are_rejected_naming_the_tool() -> None:
    with pytest.raises(GatewayError) as exc:
        to_chat(tools=[{"type": "web_search_20250305", "name": "web_search"}])
    assert exc.value.status == 400 and exc.value.param == "tools[0].type"


# --- provider: canonical request -> Anthropic --------------------------------------------------

def test_system_and_developer_messages_become_top_level_system() -> None:
    out = to_anthropic({"role": "system", "content": "a"}, {"role": "user", "content": "hi"},
                       {"role": "developer", "content": [{"type": "text", "text": "b"}]})
    assert out["system"] == "a\nb" and out["messages"] == [{"role": "user", "content": "hi"}]


def test_tool_calls_and_tool_results_become_blocks_in_alternating_turns() -> None:
    out = to_anthropic(
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}},
            {"id": "call.2", "type": "function", "function": {"name": "get_weather", "arguments": "{not json"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call.2", "content": [{"type": "text", "text": "rain"}]},
        {"role": "user", "content": "and tomorrow?"})
    assert out["messages"][1:] == [
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Oslo"}},
            {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"},
                                     {"type": "tool_result", "tool_use_id": "call_2", "content": "rain"},
                                     {"type": "text", "text": "and tomorrow?"}]}]


def test_consecutive_same_role_messages_are_merged() -> None:
    out = to_anthropic({"role": "user", "content": "a"}, {"role": "user", "content": "b"})
    assert out["messages"] == [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]


def test_image_url_parts_become_image_blocks() -> None:
    parts = [{"type": "image_url", "image_url": {"url": f"data:image/jpg;base64,{PNG}"}},
             {"type": "image_url", "image_url": {"url": "https://x.test/a.png", "detail": "low"}}]
    assert to_anthropic({"role": "user", "content": parts})["messages"][0]["content"] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}}]


def test_cache_control_on_a_canonical_part_is_passed_on() -> None:
    part = {"type": "text", "text": "long doc", "cache_control": {"type": "ephemeral"}}
    content = to_anthropic({"role": "user", "content": [part]})["messages"][0]["content"]
    assert content == [{"type": "text", "text": "long doc", "cache_control": {"type": "ephemeral"}}]


def test_unsupported_part_is_rejected_naming_it() -> None:
    with pytest.raises(GatewayError) as exc:
        chat_request_to_messages(oreq({"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}), "c")
    assert exc.value.status == 400 and exc.value.param == "messages[0].content[0].type"


@pytest.mark.parametrize(("fields", "max_tokens"), [
    ({}, 4096), ({"max_tokens": 50}, 50), ({"max_tokens": 50, "max_completion_tokens": 70}, 70)])
def test_max_tokens_comes_from_max_completion_tokens_then_max_tokens_then_default(fields: dict[str, Any], max_tokens: int) -> None:
    assert to_anthropic(**fields)["max_tokens"] == max_tokens


def test_parameters_map_and_openai_only_fields_are_dropped() -> None:
    out = to_anthropic(stop="END", temperature=0.3, top_p=0.8, user="u1", stream=True, seed=1, n=1, logprobs=True,
                       presence_penalty=0.5, response_format={"type": "json_object"}, stream_options={"include_usage": True})
    assert out == {"model": "claude-up", "max_tokens": 4096, "messages": [{"role": "user", "content": "hi"}],
                   "stop_sequences": ["END"], "temperature": 0.3, "top_p": 0.8, "metadata": {"user_id": "u1"}, "stream": True}


@pytest.mark.parametrize(("choice", "parallel", "expected"), [
    ("auto", None, {"type": "auto"}), ("required", None, {"type": "any"}), ("none", False, {"type": "none"}),
    ({"type": "function", "function": {"name": "get_weather"}}, False,
     {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True}),
    (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
])
def test_tools_and_tool_choice_map_to_anthropic(choice: Any, parallel: bool | None, expected: dict[str, Any]) -> None:
    out = to_anthropic(tools=[O_TOOL], tool_choice=choice, parallel_tool_calls=parallel)
    assert out["tools"] == [A_TOOL] and out["tool_choice"] == expected


def test_n_above_one_is_rejected() -> None:
    with pytest.raises(GatewayError) as exc:
        chat_request_to_messages(oreq(n=2), "claude-up")
    assert exc.value.status == 400 and exc.value.param == "n" and "n=1" in exc.value.message


def test_openai_request_round_trip_keeps_messages_and_tools() -> None:
    original = validate_request("chat", oreq(
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "weather in Oslo?"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}, {"role": "user", "content": "thanks"},
        tools=[O_TOOL], tool_choice="required", max_tokens=64, stop=["X"]))
    back = messages_request_to_chat(validate_messages_request(chat_request_to_messages(copy.deepcopy(original), "gpt")))
    assert back == original


def test_anthropic_request_round_trip_keeps_messages() -> None:
    original = validate_messages_request(areq(system="s", tools=[A_TOOL], tool_choice={"type": "tool", "name": "get_weather"}, messages=[
        {"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}]}]))
    assert chat_request_to_messages(messages_request_to_chat(original), "claude") == original


# --- responses ---------------------------------------------------------------------------------

def test_chat_response_becomes_sdk_valid_anthropic_message() -> None:
    msg = at.Message.model_validate(chat_response_to_messages(chat_completion({"content": "Hello"}), "claude"))
    assert (msg.id, msg.model, msg.content[0].text, msg.stop_reason, msg.stop_sequence) == ("msg_abc", "claude", "Hello", "end_turn", None)


def test_chat_tool_calls_become_tool_use_blocks_after_text() -> None:
    calls = [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}},
             {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{bad"}}]
    msg = at.Message.model_validate(chat_response_to_messages(chat_completion({"content": "ok", "tool_calls": calls}, "tool_calls"), "c"))
    assert [b.type for b in msg.content] == ["text", "tool_use", "tool_use"]
    assert (msg.content[1].input, msg.content[2].input, msg.stop_reason) == ({"city": "Oslo"}, {}, "tool_use")


@pytest.mark.parametrize(("finish", "stop"), [
    ("stop", "end_turn"), ("length", "max_tokens"), ("tool_calls", "tool_use"), ("content_filter", "refusal"), (None, "end_turn")])
def test_finish_reason_maps_to_stop_reason(finish: str | None, stop: str) -> None:
    assert chat_response_to_messages(chat_completion({"content": "x"}, finish), "c")["stop_reason"] == stop


@pytest.mark.parametrize(("stop", "finish"), [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("pause_turn", "stop"), ("max_tokens", "length"),
    ("tool_use", "tool_calls"), ("refusal", "content_filter")])
def test_stop_reason_maps_to_finish_reason(stop: str, finish: str) -> None:
    assert messages_response_to_chat(anthropic_message([{"type": "text", "text": "x"}], stop), "c")["choices"][0]["finish_reason"] == finish


def test_anthropic_message_becomes_sdk_valid_chat_completion() -> None:
    content = [{"type": "thinking", "thinking": "t", "signature": "s"}, {"type": "text", "text": "Let me "},
               {"type": "text", "text": "check."}, {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}}]
    done = ot.ChatCompletion.model_validate(messages_response_to_chat(anthropic_message(content, "tool_use"), "claude-up"))
    call = done.choices[0].message.tool_calls[0]
    assert (done.id, done.model, done.choices[0].message.content) == ("msg_01", "claude-up", "Let me check.")
    assert (call.id, call.function.name, call.function.arguments) == ("toolu_1", "get_weather", '{"city":"Oslo"}')


def test_anthropic_cache_usage_becomes_prompt_tokens_and_cached_tokens() -> None:
    usage = messages_response_to_chat(anthropic_message([], cache_read_input_tokens=50, cache_creation_input_tokens=20), "c")["usage"]
    assert usage == {"prompt_tokens": 80, "completion_tokens": 3, "total_tokens": 83,
                     "prompt_tokens_details": {"cached_tokens": 50}, "cache_creation_input_tokens": 20}


def test_chat_cache_usage_becomes_anthropic_cache_fields() -> None:
    usage = {"prompt_tokens": 80, "completion_tokens": 3, "total_tokens": 83,
             "prompt_tokens_details": {"cached_tokens": 50}, "cache_creation_input_tokens": 20}
    assert chat_response_to_messages(chat_completion({"content": "x"}, usage=usage), "c")["usage"] == {
        "input_tokens": 10, "output_tokens": 3, "cache_creation_input_tokens": 20, "cache_read_input_tokens": 50}


# --- streams: canonical chunks -> Anthropic events ----------------------------------------------

def test_chat_text_stream_gives_anthropic_event_order() -> None:
    events = run_chat_stream([chunk(d) for d in TEXT_STREAM] + [chunk({}, "stop"), chunk(usage=USAGE)])
    assert [n for n, _ in events] == ["message_start", "content_block_start", "content_block_delta", "content_block_delta",
                                      "content_block_stop", "message_delta", "message_stop"]
    final = accumulate(events)
    assert (final.id, final.content[0].text, final.stop_reason) == ("msg_req1", "Hello", "end_turn")
    assert (final.usage.input_tokens, final.usage.output_tokens, final.usage.cache_read_input_tokens) == (8, 5, 4)


def test_chat_tool_call_stream_gives_one_tool_use_block_per_index() -> None:
    events = run_chat_stream([chunk(d) for d in TOOL_STREAM] + [chunk({}, "tool_calls")])
    starts = [d for n, d in events if n == "content_block_start"]
    assert [(s["index"], s["content_block"]["id"]) for s in starts] == [(0, "call_1"), (1, "call_2")]
    final = accumulate(events)
    assert [b.input for b in final.content] == [{"city": "Oslo"}, {"city": "Rome"}] and final.stop_reason == "tool_use"


def test_chat_stream_switching_from_text_to_tool_closes_the_text_block() -> None:
    events = run_chat_stream([chunk({"content": "Sure."}), chunk(TOOL_STREAM[1]), chunk({}, "tool_calls")])
    assert [(n, d.get("index")) for n, d in events][1:-2] == [
        ("content_block_start", 0), ("content_block_delta", 0), ("content_block_stop", 0),
        ("content_block_start", 1), ("content_block_stop", 1)]


def test_empty_chat_stream_still_gives_a_complete_message_and_finish_is_idempotent() -> None:
    t = ChatStreamToMessages("claude", "msg_x")
    assert [n for n, _ in t.finish()] == ["message_start", "message_delta", "message_stop"] and t.finish() == []


# --- streams: Anthropic events -> canonical chunks ----------------------------------------------

def test_anthropic_text_stream_gives_content_chunks_role_first() -> None:
    chunks = run_messages_stream(anthropic_events([({"type": "text", "text": ""}, [
        {"type": "text_delta", "text": "Hel"}, {"type": "text_delta", "text": "lo"}])], "max_tokens"))
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [c["choices"][0]["delta"].get("content") for c in chunks[1:3]] == ["Hel", "lo"]
    assert chunks[-2]["choices"][0]["finish_reason"] == "length" and {c["id"] for c in chunks} == {"msg_01"}


def test_anthropic_tool_stream_gives_tool_call_deltas() -> None:
    chunks = run_messages_stream(ANTHROPIC_TOOL_EVENTS)
    state = ChatCompletionStreamState()
    for c in chunks:
        state.handle_chunk(ot.ChatCompletionChunk.model_validate(c))
    done = state.get_final_completion().choices[0]
    call = done.message.tool_calls[0]
    assert (done.message.content, done.finish_reason) == ("Let me check.", "tool_calls")
    assert (call.id, call.function.name, call.function.arguments) == ("toolu_1", "get_weather", '{"city": "Oslo"}')
    assert chunks[2]["choices"][0]["delta"]["tool_calls"][0] == {
        "index": 0, "id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}


def test_anthropic_stream_ends_with_full_usage_chunk() -> None:
    last = run_messages_stream(ANTHROPIC_TOOL_EVENTS)[-1]
    assert last["choices"] == [] and last["usage"] == {"prompt_tokens": 14, "completion_tokens": 9, "total_tokens": 23,
                                                        "prompt_tokens_details": {"cached_tokens": 5}, "cache_creation_input_tokens": 2}


def test_anthropic_error_event_raises_502() -> None:
    t = MessagesStreamToChat("claude-up")
    with pytest.raises(GatewayError) as exc:
        t.feed("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    assert (exc.value.status, exc.value.type, exc.value.code) == (502, "api_error", "upstream_error")
    assert "Overloaded" in exc.value.message


def test_stream_round_trip_rebuilds_the_same_message() -> None:
    chunks = run_messages_stream(ANTHROPIC_TOOL_EVENTS)
    final = accumulate(run_chat_stream(chunks))
    assert [b.type for b in final.content] == ["text", "tool_use"] and final.content[1].input == {"city": "Oslo"}
    assert (final.stop_reason, final.usage.input_tokens, final.usage.output_tokens) == ("tool_use", 7, 9)
    assert (final.usage.cache_read_input_tokens, final.usage.cache_creation_input_tokens) == (5, 2)
