"""Start extra gateway processes with their own config and database (access and scale-out
tests), and talk to their admin API."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.conftest import MASTER_KEY, UPSTREAM_KEY, Server, free_port, start_process


def launch_gateway(tmp: Path, config: str, env: dict[str, str] | None = None, name: str = "gw") -> Server:
    cfg = tmp / f"{name}.yaml"
    cfg.write_text(config)
    port = free_port()
    log = tmp / f"{name}.log"
    db = tmp / f"{name}.db"
    full_env = {"TEST_UPSTREAM_KEY": UPSTREAM_KEY, "TEST_MASTER_KEY": MASTER_KEY,
                "FAREGATE_DATABASE_URL": f"sqlite:///{db}", **(env or {})}
    proc = start_process([sys.executable, "-m", "faregate", "serve", "--config", str(cfg), "--port", str(port)],
                         f"http://127.0.0.1:{port}/health/ready", log, env=full_env, timeout=60)
    return Server(f"http://127.0.0.1:{port}", proc, log, db)


def http(method: str, url: str, body: Any = None, key: str | None = MASTER_KEY,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    """(status, headers, parsed JSON body) — errors included, never raised."""
    data = json.dumps(body).encode() if body is not None else None
    h = {"content-type": "application/json", **(headers or {})}
    if key is not None:
        h["authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw, status, hdrs = resp.read(), resp.status, resp.headers
    except urllib.error.HTTPError as exc:
        raw, status, hdrs = exc.read(), exc.code, exc.headers
    text = raw.decode()
    try:
        parsed = json.loads(text) if text else None
    except ValueError:
        parsed = text
    return status, {k.lower(): v for k, v in hdrs.items()}, parsed


def create_key(gw: Server, **fields: Any) -> dict[str, Any]:
    status, _, body = http("POST", f"{gw.url}/admin/keys", fields)
    assert status == 201, body
    return body


def chat(gw: Server, key: str, *, model: str = "gpt-4o-mini", max_tokens: int | None = 16,
         headers: dict[str, str] | None = None, **extra: Any) -> tuple[int, dict[str, str], Any]:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return http("POST", f"{gw.url}/v1/chat/completions", body, key=key, headers=headers)
