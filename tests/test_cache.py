"""Response caching end to end: a gateway process with the exact and semantic layers in front
of the mock upstream (whose reply names the question it answered, so a wrong hit shows)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from decimal import Decimal

import httpx
import pytest

from tests.conftest import MASTER_KEY, Server, free_port, stop
from tests.gateways import create_key, http, launch_gateway
from tests.test_access import ledger

IN_PRICE, OUT_PRICE = "0.000001", "0.000004"


def cache_config(mock: str, extra: str = "") -> str:
    return f"""
model_list:
  - model_name: chat
    litellm_params: {{model: openai/gpt-4o-mini, api_base: "{mock}/v1", api_key: os.environ/TEST_UPSTREAM_KEY,
                      input_cost_per_token: {IN_PRICE}, output_cost_per_token: {OUT_PRICE}}}
  - model_name: exact-only
    litellm_params: {{model: openai/gpt-4o-mini, api_base: "{mock}/v1", api_key: os.environ/TEST_UPSTREAM_KEY}}
  - model_name: short-lived
    litellm_params: {{model: openai/gpt-4o-mini, api_base: "{mock}/v1", api_key: os.environ/TEST_UPSTREAM_KEY}}
  - model_name: repeatable
    litellm_params: {{model: openai/gpt-4o-mini, api_base: "{mock}/v1", api_key: os.environ/TEST_UPSTREAM_KEY}}
  - model_name: uncached
    litellm_params: {{model: openai/gpt-4o-mini, api_base: "{mock}/v1", api_key: os.environ/TEST_UPSTREAM_KEY}}
  - model_name: embed
    litellm_params: {{model: openai/text-embedding-3-small, api_base: "{mock}/v1", api_key: os.environ/TEST_UPSTREAM_KEY}}
general_settings:
  master_key: os.environ/TEST_MASTER_KEY
limits:
  key_refresh_seconds: 0.5
cache:
  mode: semantic
  scope: team
  ttl: 600
  similarity_threshold: 0.8
  groups:
    exact-only: {{mode: exact}}
    short-lived: {{mode: exact, ttl: 1}}
    repeatable: {{mode: exact, requests: deterministic}}
    uncached: {{mode: "off"}}
    embed: {{mode: exact}}
{extra}"""


@pytest.fixture(scope="module")
def gw(mock_upstream: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = launch_gateway(tmp_path_factory.mktemp("cache"), cache_config(mock_upstream.url))
    _wait_semantic(server)
    yield server
    stop(server.proc)


def _wait_semantic(gw: Server, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, _, stats = http("GET", f"{gw.url}/admin/cache")
        if stats["layers"].get("semantic", {}).get("ready"):
            return
        time.sleep(0.1)
    raise AssertionError(f"the semantic layer never got ready: {stats}")


def ask(gw: Server, text: str, *, model: str = "chat", key: str | None = None,
        headers: dict[str, str] | None = None, **extra: object) -> tuple[int, dict[str, str], dict]:
    body = {"model": model, "messages": [{"role": "user", "content": text}], **extra}
    return http("POST", f"{gw.url}/v1/chat/completions", body, key=key or MASTER, headers=headers)


def answer(body: dict) -> str:
    return body["choices"][0]["message"]["content"]


def stored(gw: Server, layer: str, at_least: int, timeout: float = 5) -> None:
    """Semantic entries are added off the request path: wait until the layer holds them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, _, stats = http("GET", f"{gw.url}/admin/cache")
        if stats["layers"][layer]["entries"] >= at_least:
            return
        time.sleep(0.05)
    raise AssertionError(f"{layer} layer never held {at_least} entries: {stats}")


MASTER = MASTER_KEY


def test_exact_hit_is_served_without_the_upstream_and_costs_nothing(gw: Server, mock_requests) -> None:
    status, h1, first = ask(gw, "What is the boiling point of water at sea level?", model="exact-only", temperature=0)
    assert status == 200 and h1["x-faregate-cache"] == "miss"
    status, h2, second = ask(gw, "What is the boiling point of water at sea level?", model="exact-only", temperature=0)
    assert status == 200 and h2["x-faregate-cache"] == "hit-exact"
    assert second == first
    assert len(mock_requests()) == 1  # only the miss reached the upstream
    assert h2["x-faregate-cost-usd"] == "0"


def test_any_output_parameter_changes_the_key(gw: Server, mock_requests) -> None:
    text = "List three primary colours."
    assert ask(gw, text, model="exact-only", temperature=0)[1]["x-faregate-cache"] == "miss"
    assert ask(gw, text, model="exact-only", temperature=0, user="someone")[1]["x-faregate-cache"] == "hit-exact"
    for params in ({"temperature": 0.5}, {"temperature": 0, "max_tokens": 7}, {"temperature": 0, "seed": 3},
                   {"temperature": 0, "stop": ["x"]}, {"temperature": 0, "response_format": {"type": "json_object"}}):
        assert ask(gw, text, model="exact-only", **params)[1]["x-faregate-cache"] == "miss", params
    assert len(mock_requests()) == 6


def test_ledger_records_the_hit_at_zero_cost_with_the_saving(gw: Server) -> None:
    text = "Name the largest planet in the solar system."
    _, h1, _ = ask(gw, text)
    _, h2, _ = ask(gw, text)
    assert h2["x-faregate-cache"] == "hit-exact"
    miss, hit = ledger(gw.db, h1["x-request-id"]), ledger(gw.db, h2["x-request-id"])
    assert miss["cache"] == "miss" and miss["cost_nusd"] > 0 and miss["saved_nusd"] == 0
    assert hit["cache"] == "hit-exact" and hit["cost_nusd"] == 0 and hit["deployment"] is None
    expected = Decimal(IN_PRICE) * miss["input_tokens"] + Decimal(OUT_PRICE) * miss["output_tokens"]
    assert hit["saved_nusd"] == miss["cost_nusd"] == int(expected * 10**9)
    assert hit["input_tokens"] == hit["output_tokens"] == 0  # nothing billed upstream
    time.sleep(1.2)  # the sink flushes within a second
    _, _, report = http("GET", f"{gw.url}/admin/spend?group_by=model")
    row = next(r for r in report["rows"] if r["group"] == "chat")
    assert row["cache_hits"] >= 1 and Decimal(row["saved_usd"]) >= Decimal(hit["saved_nusd"]) / 10**9


def test_ttl_expires_entries(gw: Server) -> None:
    assert ask(gw, "ttl question", model="short-lived")[1]["x-faregate-cache"] == "miss"
    assert ask(gw, "ttl question", model="short-lived")[1]["x-faregate-cache"] == "hit-exact"
    time.sleep(1.1)
    assert ask(gw, "ttl question", model="short-lived")[1]["x-faregate-cache"] == "miss"


def test_deterministic_only_groups_bypass_sampled_requests(gw: Server) -> None:
    assert ask(gw, "roll a die", model="repeatable", temperature=0.9)[1]["x-faregate-cache"] == "bypass"
    assert ask(gw, "roll a die", model="repeatable", temperature=0.9)[1]["x-faregate-cache"] == "bypass"
    assert ask(gw, "roll a die", model="repeatable", seed=7)[1]["x-faregate-cache"] == "miss"
    assert ask(gw, "roll a die", model="repeatable", seed=7)[1]["x-faregate-cache"] == "hit-exact"
    assert "x-faregate-cache" not in ask(gw, "roll a die", model="uncached")[1]


def test_no_store_no_cache_off_and_refresh_are_honoured(gw: Server, mock_requests) -> None:
    text, m = "Which ocean is the deepest?", "exact-only"
    assert ask(gw, text, model=m, headers={"cache-control": "no-store"})[1]["x-faregate-cache"] == "miss"
    assert ask(gw, text, model=m, headers={"x-faregate-cache": "off"})[1]["x-faregate-cache"] == "bypass"
    assert ask(gw, text, model=m)[1]["x-faregate-cache"] == "miss"  # nothing was stored so far
    assert ask(gw, text, model=m)[1]["x-faregate-cache"] == "hit-exact"
    assert ask(gw, text, model=m, headers={"cache-control": "no-cache"})[1]["x-faregate-cache"] == "bypass"
    assert ask(gw, text, model=m, headers={"x-faregate-cache": "refresh"})[1]["x-faregate-cache"] == "bypass"
    assert ask(gw, text, model=m, headers={"cache-control": "max-age=0"})[1]["x-faregate-cache"] == "miss"
    assert ask(gw, text, model=m, headers={"cache-control": "max-age=600"})[1]["x-faregate-cache"] == "hit-exact"
    assert len(mock_requests()) == 6


def test_bad_cache_directives_are_400s(gw: Server) -> None:
    for headers in ({"x-faregate-cache": "sometimes"}, {"cache-control": "max-age=soon"}):
        status, _, body = ask(gw, "hello", headers=headers)
        assert status == 400 and body["error"]["code"] == "invalid_cache_directive", body
        assert body["error"]["param"] in headers


def test_semantic_hit_on_a_paraphrase_and_miss_on_a_near_miss(gw: Server) -> None:
    original = "How do I reset my password?"
    assert ask(gw, original)[1]["x-faregate-cache"] == "miss"
    stored(gw, "semantic", 1)
    status, h, body = ask(gw, "How can I reset my password?")
    assert status == 200 and h["x-faregate-cache"] == "hit-semantic", h
    assert 0.8 <= float(h["x-faregate-cache-similarity"]) < 1
    assert original in answer(body)  # the answer to the cached question
    for near_miss in ("How do I reset my username?", "How do I change my password?"):
        _, h, body = ask(gw, near_miss)
        assert h["x-faregate-cache"] == "miss", (near_miss, h)
        assert near_miss in answer(body)


def test_semantic_matches_need_the_same_system_prompt_and_earlier_turns(gw: Server) -> None:
    def convo(system: str, earlier: str, last: str) -> dict:
        return {"model": "chat", "messages": [{"role": "system", "content": system},
                                              {"role": "user", "content": earlier},
                                              {"role": "assistant", "content": "Sure."},
                                              {"role": "user", "content": last}]}
    url = f"{gw.url}/v1/chat/completions"
    assert http("POST", url, convo("Be brief.", "I use a Mac.", "How do I take a screenshot?"), key=MASTER)[1]["x-faregate-cache"] == "miss"
    stored(gw, "semantic", 1)
    assert http("POST", url, convo("Be brief.", "I use a Mac.", "How can I take a screenshot?"), key=MASTER)[1]["x-faregate-cache"] == "hit-semantic"
    assert http("POST", url, convo("Be brief.", "I use Windows.", "How can I take a screenshot?"), key=MASTER)[1]["x-faregate-cache"] == "miss"
    assert http("POST", url, convo("Be verbose.", "I use a Mac.", "How can I take a screenshot?"), key=MASTER)[1]["x-faregate-cache"] == "miss"


def test_no_hit_across_teams(gw: Server) -> None:
    red_a = create_key(gw, team="red")["key"]
    red_b = create_key(gw, team="red")["key"]
    blue = create_key(gw, team="blue")["key"]
    time.sleep(0.8)  # keys reach the directory within key_refresh_seconds
    text = "What is our refund policy for annual plans?"
    assert ask(gw, text, key=red_a)[1]["x-faregate-cache"] == "miss"
    assert ask(gw, text, key=red_b)[1]["x-faregate-cache"] == "hit-exact"  # the same team shares
    assert ask(gw, text, key=blue)[1]["x-faregate-cache"] == "miss"
    stored(gw, "semantic", 1)
    assert ask(gw, "What's our refund policy for annual plans?", key=blue)[1]["x-faregate-cache"] == "hit-semantic"


def _stream(gw: Server, text: str, model: str = "chat", usage: bool = False) -> tuple[dict[str, str], list[dict]]:
    body = {"model": model, "messages": [{"role": "user", "content": text}], "stream": True}
    if usage:
        body["stream_options"] = {"include_usage": True}
    with httpx.stream("POST", f"{gw.url}/v1/chat/completions", json=body, timeout=30,
                      headers={"authorization": f"Bearer {MASTER}"}) as resp:
        assert resp.status_code == 200
        lines = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
        headers = dict(resp.headers)
    assert lines[-1] == "[DONE]"
    return headers, [json.loads(x) for x in lines[:-1]]


def _content(chunks: list[dict]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def test_stream_replay_matches_the_original(gw: Server, mock_requests) -> None:
    text = "Explain photosynthesis in one sentence."
    h1, original = _stream(gw, text, model="exact-only", usage=True)
    assert h1["x-faregate-cache"] == "miss"
    h2, replayed = _stream(gw, text, model="exact-only", usage=True)
    assert h2["x-faregate-cache"] == "hit-exact"
    assert _content(replayed) == _content(original) and _content(original)
    assert {c["object"] for c in replayed} == {"chat.completion.chunk"}
    assert replayed[-1]["usage"] == original[-1]["usage"]
    assert [c["choices"][0]["finish_reason"] for c in replayed if c["choices"]][-1] == "stop"
    # a stream's answer serves a plain request too, and the other way round
    _, h3, whole = ask(gw, text, model="exact-only")
    assert h3["x-faregate-cache"] == "hit-exact" and answer(whole) == _content(original)
    _, _, plain = ask(gw, "Explain osmosis in one sentence.", model="exact-only")
    h4, chunks = _stream(gw, "Explain osmosis in one sentence.", model="exact-only")
    assert h4["x-faregate-cache"] == "hit-exact" and _content(chunks) == answer(plain)
    assert all(c["choices"] for c in chunks)  # no usage chunk unless asked for
    assert len(mock_requests()) == 2


def test_embeddings_are_cached_exactly(gw: Server) -> None:
    body = {"model": "embed", "input": ["cache me"]}
    _, h1, first = http("POST", f"{gw.url}/v1/embeddings", body, key=MASTER)
    _, h2, second = http("POST", f"{gw.url}/v1/embeddings", body, key=MASTER)
    assert (h1["x-faregate-cache"], h2["x-faregate-cache"]) == ("miss", "hit-exact")
    assert second == first


def test_anthropic_clients_get_hits_in_their_own_shape(gw: Server) -> None:
    body = {"model": "exact-only", "max_tokens": 32, "messages": [{"role": "user", "content": "Say hello in French."}]}
    headers = {"x-api-key": MASTER, "anthropic-version": "2023-06-01"}
    _, h1, first = http("POST", f"{gw.url}/v1/messages", body, key=None, headers=headers)
    _, h2, second = http("POST", f"{gw.url}/v1/messages", body, key=None, headers=headers)
    assert (h1["x-faregate-cache"], h2["x-faregate-cache"]) == ("miss", "hit-exact")
    assert second["type"] == "message" and second["content"] == first["content"]


def test_admin_stats_and_purge(gw: Server) -> None:
    ask(gw, "purge me", model="exact-only")
    assert ask(gw, "purge me", model="exact-only")[1]["x-faregate-cache"] == "hit-exact"
    status, _, stats = http("GET", f"{gw.url}/admin/cache")
    assert status == 200 and stats["backend"] == "memory" and stats["layers"]["exact"]["hits"] >= 1
    assert http("DELETE", f"{gw.url}/admin/cache?model=exact-only&older_than=3600")[2]["purged"]["exact"] == 0
    status, _, purged = http("DELETE", f"{gw.url}/admin/cache?model=exact-only")
    assert status == 200 and purged["purged"]["exact"] >= 1
    assert ask(gw, "purge me", model="exact-only")[1]["x-faregate-cache"] == "miss"
    key = create_key(gw)["key"]
    assert http("GET", f"{gw.url}/admin/cache", key=key)[0] == 403


def test_an_embeddings_group_can_embed_for_the_semantic_layer(mock_upstream: Server, tmp_path_factory, mock_requests) -> None:
    config = cache_config(mock_upstream.url, "  embedder: embed\n")
    server = launch_gateway(tmp_path_factory.mktemp("cache-embed"), config)
    try:
        _wait_semantic(server)
        text = "Which planet is known as the red planet?"
        assert ask(server, text)[1]["x-faregate-cache"] == "miss"
        stored(server, "semantic", 1)
        # the same words as content parts: another exact key, the same meaning
        parts = [{"type": "text", "text": text}]
        _, h, body = ask(server, parts)  # type: ignore[arg-type]
        assert h["x-faregate-cache"] == "hit-semantic" and float(h["x-faregate-cache-similarity"]) > 0.999
        assert text in answer(body)
        embeds = [r for r in mock_requests() if r["path"].endswith("/embeddings")]
        assert embeds and all(r["body"]["model"] == "text-embedding-3-small" for r in embeds)
        # the embedding calls went through the pipeline: ledgered under their own feature
        time.sleep(1.2)
        _, _, report = http("GET", f"{server.url}/admin/spend?group_by=feature")
        assert any(r["group"] == "semantic-cache" and r["requests"] >= 1 for r in report["rows"]), report
    finally:
        stop(server.proc)


def test_an_unreachable_cache_backend_is_a_miss_not_an_error(mock_upstream: Server, tmp_path_factory) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    config = cache_config(mock_upstream.url).replace("  mode: semantic\n", "  mode: exact\n")
    server = launch_gateway(tmp_path_factory.mktemp("cache-dead"), config, {"FAREGATE_REDIS_URL": dead})
    try:
        for _ in range(2):
            status, h, body = ask(server, "Is the cache up?")
            assert status == 200 and h["x-faregate-cache"] == "miss", body
        _, _, stats = http("GET", f"{server.url}/admin/cache")
        assert stats["backend"] == "redis" and stats["layers"]["exact"]["errors"] >= 2
    finally:
        stop(server.proc)


def test_metrics_count_lookups_and_savings(gw: Server) -> None:
    assert ask(gw, "metrics question")[1]["x-faregate-cache"] == "miss"
    assert ask(gw, "metrics question")[1]["x-faregate-cache"] == "hit-exact"  # priced: it saved something
    ask(gw, "metrics question", headers={"x-faregate-cache": "off"})
    with httpx.Client() as client:
        text = client.get(f"{gw.url}/metrics").text
    samples = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("faregate_")}
    assert samples['faregate_cache_requests_total{layer="exact",outcome="hit"}'] >= 1
    assert samples['faregate_cache_requests_total{layer="exact",outcome="miss"}'] >= 1
    assert samples['faregate_cache_requests_total{layer="none",outcome="bypass"}'] >= 1
    assert samples['faregate_saved_usd_total{cache="hit-exact",model="chat"}'] > 0
