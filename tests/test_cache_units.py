"""The cache's pieces on their own: keys, directives, the in-process store's LRU and TTL, the
vector index, stream assembly and replay."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from faregate.cache.index import VectorIndex
from faregate.cache.keys import deterministic, exact_key, scope_of, semantic_parts, split_key
from faregate.cache.policy import CachePolicy, directive
from faregate.cache.replay import assemble, replay
from faregate.cache.store import Entry, MemoryStore, Purge
from faregate.config.schema import CacheSettings, Config
from faregate.core.errors import GatewayError


def body(**extra: object) -> dict:
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], **extra}


def test_exact_key_ignores_only_fields_that_cannot_change_the_answer() -> None:
    base = exact_key("global", "chat", body(temperature=0))
    for same in (body(temperature=0, stream=True), body(temperature=0, user="u"),
                 body(temperature=0, metadata={"a": 1}), body(temperature=0, stream_options={"include_usage": True})):
        assert exact_key("global", "chat", same) == base
    for other in (body(temperature=0.1), body(temperature=0, tools=[{"type": "function", "function": {"name": "f"}}]),
                  body(temperature=0, n=2), body(temperature=0, brand_new_knob=1)):
        assert exact_key("global", "chat", other) != base
    assert exact_key("team:a", "chat", body(temperature=0)) != base
    assert exact_key("global", "completions", body(temperature=0)) != base
    assert split_key(base) == ("global", "m")


def test_scope_of_each_setting() -> None:
    from faregate.access.records import ANONYMOUS

    assert scope_of(ANONYMOUS, "global") == "global"
    assert scope_of(ANONYMOUS, "team") == "key:anonymous"
    assert scope_of(None, "key") == "key:anonymous"


def test_semantic_parts_partition_by_everything_but_the_last_user_turn() -> None:
    p1, text = semantic_parts("s", {"model": "m", "messages": [{"role": "system", "content": "x"},
                                                               {"role": "user", "content": "reset my password"}]})
    assert text == "reset my password"
    p2, _ = semantic_parts("s", {"model": "m", "messages": [{"role": "system", "content": "x"},
                                                            {"role": "user", "content": "something else"}]})
    p3, _ = semantic_parts("s", {"model": "m", "messages": [{"role": "system", "content": "y"},
                                                            {"role": "user", "content": "reset my password"}]})
    assert p1 == p2 != p3
    assert semantic_parts("s", {"model": "m", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "x"}}]}]}) is None
    assert semantic_parts("s", {"model": "m", "messages": [{"role": "assistant", "content": "hi"}]}) is None
    assert semantic_parts("s", {"model": "m", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]})[1] == "a\nb"


def test_deterministic() -> None:
    assert deterministic({"temperature": 0}) and deterministic({"seed": 1, "temperature": 1})
    assert not deterministic({}) and not deterministic({"temperature": 0.2})


def test_directives() -> None:
    assert directive({}).read and directive({}).store
    d = directive({"cache-control": "no-store, max-age=30"})
    assert d.read and not d.store and d.max_age == 30
    assert not directive({"cache-control": "no-cache"}).read
    off = directive({"x-faregate-cache": "off"})
    assert not off.read and not off.store
    assert not directive({"x-faregate-cache": "refresh"}).read
    for bad in ({"x-faregate-cache": "maybe"}, {"cache-control": "max-age=-1"}, {"cache-control": "max-age=x"}):
        with pytest.raises(GatewayError) as err:
            directive(bad)
        assert err.value.status == 400


def test_group_settings_override_the_top_level() -> None:
    policy = CachePolicy(CacheSettings(mode="exact", ttl=60, groups={"g": {"mode": "semantic", "similarity_threshold": 0.9}}))
    g, other = policy.group("g"), policy.group("other")
    assert (g.mode, g.ttl, g.threshold) == ("semantic", 60, 0.9)
    assert (other.mode, other.threshold) == ("exact", 0.75)
    assert policy.enabled and policy.semantic
    assert not CachePolicy(CacheSettings()).enabled


def test_litellm_cache_settings_map_onto_cache() -> None:
    c = Config.model_validate({"litellm_settings": {"cache": True, "cache_params": {
        "type": "redis-semantic", "ttl": 120, "similarity_threshold": 0.9}}})
    assert (c.cache.mode, c.cache.backend, c.cache.ttl, c.cache.similarity_threshold) == ("semantic", "redis", 120, 0.9)
    assert Config.model_validate({"litellm_settings": {"cache": True}}).cache.mode == "exact"
    assert Config.model_validate({}).cache.mode == "off"
    assert "litellm_settings.cache" not in Config.model_validate({"litellm_settings": {"cache": True}}).ignored_keys()


def _entry(n: int, ttl: float = 60, size: int = 0) -> Entry:
    now = time.time()
    return Entry({"n": n, "pad": "x" * size}, now, now + ttl, None, 0)


def test_memory_store_evicts_least_recently_used_by_count_and_bytes() -> None:
    async def go() -> None:
        store = MemoryStore(max_entries=3, max_bytes=10_000)
        for i in range(3):
            await store.put(f"s\x1fg\x1f{i}", _entry(i))
        assert await store.get("s\x1fg\x1f0") is not None  # 0 is now the most recent
        await store.put("s\x1fg\x1f3", _entry(3))
        assert await store.get("s\x1fg\x1f1") is None and len(store) == 3 and store.evictions == 1
        await store.put("s\x1fg\x1fbig", _entry(9, size=9_800))
        assert store.bytes <= 10_000 and await store.get("s\x1fg\x1fbig") is not None
        assert len(store) < 3

    asyncio.run(go())


def test_memory_store_expires_and_purges() -> None:
    async def go() -> None:
        store = MemoryStore(max_entries=100, max_bytes=10**6)
        await store.put("a\x1fg1\x1f1", _entry(1, ttl=0.05))
        await store.put("a\x1fg2\x1f2", _entry(2))
        await store.put("b\x1fg1\x1f3", _entry(3))
        await asyncio.sleep(0.06)
        assert await store.get("a\x1fg1\x1f1") is None
        assert await store.purge(Purge(scope="a")) == 1
        assert await store.purge(Purge(before=time.time() - 3600)) == 0
        assert await store.purge(Purge(group="g1")) == 1
        assert len(store) == 0

    asyncio.run(go())


def test_entry_freshness_and_round_trip() -> None:
    e = _entry(1, ttl=10)
    assert e.fresh(time.time(), None) and not e.fresh(time.time() + 11, None)
    assert not e.fresh(e.created + 5, max_age=2)
    again = Entry.loads(e.dumps())
    assert again.response == e.response and again.expires == e.expires


def test_vector_index_search_add_remove() -> None:
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(50, 8)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    index = VectorIndex(8, capacity=2)
    for i, v in enumerate(vecs):
        index.add(str(i), v)
    assert len(index) == 50
    best = index.search(vecs[7], k=3)
    assert best[0][0] == "7" and best[0][1] == pytest.approx(1.0, abs=1e-5)
    assert [s for _, s in best] == sorted((s for _, s in best), reverse=True)
    assert index.remove("7") and not index.remove("7")
    assert "7" not in index and index.search(vecs[7], k=1)[0][0] != "7"
    assert index.search(vecs[3], k=1)[0][0] == "3"  # the row moved into the hole is still found
    assert len(index.search(vecs[0], k=100)) == 49


def _replayed(endpoint: str, response: dict, usage: bool) -> list[dict]:
    async def go() -> list[dict]:
        return [c async for c in replay(endpoint, response, usage)]

    return asyncio.run(go())


def test_assemble_then_replay_round_trips_text_and_tool_calls() -> None:
    head = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    chunks = [
        {**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]},
        {**head, "choices": [{"index": 0, "delta": {"content": "Hello there, "}, "finish_reason": None}]},
        {**head, "choices": [{"index": 0, "delta": {"content": "friend of mine."}, "finish_reason": None}]},
        {**head, "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "t1", "type": "function",
                                                                     "function": {"name": "get", "arguments": '{"a"'}}]}, "finish_reason": None}]},
        {**head, "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]}, "finish_reason": None}]},
        {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    ]
    usage = {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
    whole = assemble("chat", chunks, usage)
    msg = whole["choices"][0]["message"]
    assert msg["content"] == "Hello there, friend of mine."
    assert msg["tool_calls"] == [{"id": "t1", "type": "function", "function": {"name": "get", "arguments": '{"a": 1}'}}]
    assert whole["usage"] == usage and whole["object"] == "chat.completion"
    again = _replayed("chat", whole, usage=True)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in again if c["choices"]) == msg["content"]
    assert again[-1] == {**head, "choices": [], "usage": usage}
    assert again[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert assemble("chat", chunks[:-1], usage) is None  # never finished: not stored


def test_replay_of_a_text_completion() -> None:
    response = {"id": "x", "object": "text_completion", "created": 1, "model": "m",
                "choices": [{"index": 0, "text": "one two three four five six", "finish_reason": "length"}]}
    chunks = _replayed("completions", response, usage=False)
    assert "".join(c["choices"][0]["text"] for c in chunks) == "one two three four five six"
    assert len(chunks) == 3 and chunks[-1]["choices"][0]["finish_reason"] == "length"
