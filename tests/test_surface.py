"""The rest of the surface: OpenAPI, health probes, the `faregate chat` client."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

from tests.conftest import MASTER_KEY, Server


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_openapi_documents_every_route_with_resolvable_schemas(gateway: Server) -> None:
    status, doc = get(f"{gateway.url}/openapi.json")
    assert status == 200
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/messages", "/v1/models", "/health/ready"):
        assert path in doc["paths"], path
    schemas = doc["components"]["schemas"]
    text = json.dumps(doc)
    refs = {part.split('"')[0] for part in text.split('"$ref": "#/components/schemas/')[1:]}
    assert refs and refs <= set(schemas), refs - set(schemas)
    assert "messages" in schemas["ChatRequest"]["required"]
    with urllib.request.urlopen(f"{gateway.url}/docs", timeout=10) as resp:
        assert b"swagger" in resp.read().lower()


def test_health_probes(gateway: Server) -> None:
    assert get(f"{gateway.url}/health/live") == (200, {"status": "ok"})
    status, doc = get(f"{gateway.url}/health/ready")
    assert status == 200 and doc["status"] == "ready"
    assert doc["deployments"]["gpt-4o-mini#0"] == "ready"


def test_chat_command(gateway: Server) -> None:
    base = [sys.executable, "-m", "faregate", "chat", "hello cli", "--model", "gpt-4o-mini",
            "--base-url", gateway.url, "--api-key", MASTER_KEY]
    out = subprocess.run(base, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.strip() == "Mock reply to: hello cli"
    out = subprocess.run([*base, "--stream"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.strip() == "Mock reply to: hello cli"
    out = subprocess.run([*base[:-1], "wrong-key"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and "error 401" in out.stderr
