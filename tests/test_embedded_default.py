"""`faregate serve` with no config: the bundled local model answers real text, no keys needed."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import openai
import pytest

from tests.conftest import Server, free_port, start_process, stop


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("home")
    port = free_port()
    log = home / "gateway.log"
    # cwd without faregate.yaml, HOME isolated: exactly what a new user gets
    proc = start_process([sys.executable, "-m", "faregate", "serve", "--port", str(port)],
                         f"http://127.0.0.1:{port}/health/ready", log, env={"HOME": str(home)}, timeout=120)
    yield Server(f"http://127.0.0.1:{port}", proc, log)
    stop(proc)


def test_startup_log_says_gateway_is_open(embedded: Server) -> None:
    assert "no master key set: the gateway is OPEN" in embedded.output()


def test_local_model_answers(embedded: Server) -> None:
    client = openai.OpenAI(base_url=f"{embedded.url}/v1", api_key="unused", max_retries=0, timeout=120)
    assert [m.id for m in client.models.list()] == ["smollm2"]
    resp = client.chat.completions.create(model="smollm2", max_tokens=12, temperature=0,
                                          messages=[{"role": "user", "content": "What is the capital of France?"}])
    text = resp.choices[0].message.content
    assert text and any(ch.isalpha() for ch in text)
    assert 0 < resp.usage.completion_tokens <= 12
    assert resp.usage.prompt_tokens > 5  # the chat template wraps the question


def test_local_model_streams(embedded: Server) -> None:
    client = openai.OpenAI(base_url=f"{embedded.url}/v1", api_key="unused", max_retries=0, timeout=120)
    chunks = list(client.chat.completions.create(model="smollm2", max_tokens=8, stream=True,
                                                 stream_options={"include_usage": True},
                                                 messages=[{"role": "user", "content": "Say hello."}]))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert chunks[-1].usage.completion_tokens <= 8

