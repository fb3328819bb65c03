"""Real servers for the tests: the mock upstream and the gateway, each its own process.

Both are started once per session on free loopback ports; the gateway reads a LiteLLM-style
config.yaml that points every deployment at the mock. Tests that change the mock's live
behaviour (POST /mock/settings) restore it through the `mock_settings` fixture.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.servers import PostgresServer, RedisServer, start_postgres, start_redis

MASTER_KEY = "sk-test-master-0123456789"


def pytest_configure(config: pytest.Config) -> None:
    # Every default data dir (~/.faregate) in this process and the servers it starts goes to a
    # throwaway HOME: tests never touch the user's own ledger.
    os.environ["HOME"] = tempfile.mkdtemp(prefix="faregate-test-home-")
UPSTREAM_KEY = "sk-upstream-secret-abcdef123456"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read().decode() if proc.stdout else ""
            raise RuntimeError(f"process exited with {proc.returncode}:\n{out}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    log: Path
    db: Path | None = None  # the gateway's SQLite ledger

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start_process(args: list[str], health_url: str, log: Path, env: dict[str, str] | None = None,
                  timeout: float = 30.0) -> subprocess.Popen:
    fh = log.open("wb")
    proc = subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{args} exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
        try:
            with urllib.request.urlopen(health_url, timeout=1) as resp:
                if resp.status == 200:
                    return proc
        except OSError:
            time.sleep(0.05)
    stop(proc)
    raise TimeoutError(f"{health_url} did not answer within {timeout}s:\n{log.read_text(errors='replace')}")


@pytest.fixture(scope="session")
def mock_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    port = free_port()
    log = tmp_path_factory.mktemp("mock") / "mock.log"
    proc = start_process([sys.executable, "-m", "faregate", "mock-upstream", "--port", str(port),
                          "--protocol", "both", "--require-api-key", UPSTREAM_KEY],
                         f"http://127.0.0.1:{port}/health", log)
    yield Server(f"http://127.0.0.1:{port}", proc, log)
    stop(proc)


def gateway_config(mock: str, dead: str) -> str:
    return f"""
# A LiteLLM config.yaml, as a LiteLLM user would have it.
model_list:
  - model_name: gpt-4o-mini
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: {mock}/v1
      api_key: os.environ/TEST_UPSTREAM_KEY
  - model_name: claude-haiku
    litellm_params:
      model: anthropic/claude-haiku-4-5
      api_base: {mock}
      api_key: os.environ/TEST_UPSTREAM_KEY
  - model_name: azure-gpt
    litellm_params:
      model: azure/my-gpt-deployment
      api_base: {mock}
      api_version: "2024-10-21"
      api_key: os.environ/TEST_UPSTREAM_KEY
  - model_name: text-embedding-3-small
    litellm_params:
      model: openai/text-embedding-3-small
      api_base: {mock}/v1
      api_key: ${{TEST_UPSTREAM_KEY}}
  # one dead and one live deployment: retries must land on the live one
  - model_name: flaky
    litellm_params:
      model: openai/flaky-a
      api_base: {dead}/v1
      api_key: os.environ/TEST_UPSTREAM_KEY
      timeout: 2
  - model_name: flaky
    litellm_params:
      model: openai/flaky-b
      api_base: {mock}/v1
      api_key: os.environ/TEST_UPSTREAM_KEY
  # a group whose only deployment is dead, falling back to a live group
  - model_name: dead-primary
    litellm_params:
      model: openai/dead
      api_base: {dead}/v1
      api_key: os.environ/TEST_UPSTREAM_KEY
  - model_name: slow
    litellm_params:
      model: openai/slow
      api_base: {mock}/v1
      api_key: os.environ/TEST_UPSTREAM_KEY
      timeout: 0.5
    model_info:
      mode: chat
router_settings:
  num_retries: 2
  retry_backoff_seconds: 0.01
  fallbacks:
    - dead-primary: [gpt-4o-mini]
  # Tests here provoke upstream failures one after the other on purpose: breakers and the retry
  # budget would carry one test's failures into the next. tests/test_routing.py runs its own.
  allowed_fails: 100000
  breaker: {{min_requests: 100000}}
  retry_budget: {{min_per_second: 1000}}
general_settings:
  master_key: os.environ/TEST_MASTER_KEY
litellm_settings:
  drop_params: true
server:
  max_body_bytes: 200000
"""


@pytest.fixture(scope="session")
def gateway(mock_upstream: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("gateway")
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    config = tmp / "config.yaml"
    config.write_text(gateway_config(mock_upstream.url, dead))
    port = free_port()
    log = tmp / "gateway.log"
    db = tmp / "ledger.db"
    env = {"TEST_UPSTREAM_KEY": UPSTREAM_KEY, "TEST_MASTER_KEY": MASTER_KEY, "FAREGATE_DATABASE_URL": f"sqlite:///{db}"}
    proc = start_process([sys.executable, "-m", "faregate", "serve", "--config", str(config), "--port", str(port)],
                         f"http://127.0.0.1:{port}/health/ready", log, env=env)
    yield Server(f"http://127.0.0.1:{port}", proc, log, db)
    stop(proc)


def _post_json(url: str, body: object | None = None, method: str = "POST") -> object:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else None


@pytest.fixture
def mock_settings(mock_upstream: Server) -> Iterator[callable]:
    """Patch the mock's live settings for one test; restores them afterwards."""
    original = _post_json(f"{mock_upstream.url}/mock/settings", {})

    def patch(**values: object) -> object:
        return _post_json(f"{mock_upstream.url}/mock/settings", values)

    yield patch
    _post_json(f"{mock_upstream.url}/mock/settings", original)


@pytest.fixture
def mock_requests(mock_upstream: Server) -> callable:
    """Clear the mock's request log; the returned function reads what reached the mock since."""
    _post_json(f"{mock_upstream.url}/mock/requests", method="DELETE")

    def read() -> list[dict]:
        with urllib.request.urlopen(f"{mock_upstream.url}/mock/requests", timeout=10) as resp:
            return json.loads(resp.read())

    return read


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server shared by the session (started at first use). Tests sharing it use
    their own keys (or database numbers in the URL)."""
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """A real PostgreSQL shared by the session (started at first use); each test takes its own
    database from `postgres_server.create_database(name)`."""
    server = start_postgres(tmp_path_factory.mktemp("postgres"))
    yield server
    server.stop()
