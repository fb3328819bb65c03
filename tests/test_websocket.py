"""WS /v1/chat/ws: streamed chat over a WebSocket, several requests per socket."""

from __future__ import annotations

import json

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.conftest import MASTER_KEY, Server


def ws_url(gateway: Server) -> str:
    return gateway.url.replace("http://", "ws://") + "/v1/chat/ws"


def collect(ws) -> tuple[str, list[dict]]:
    frames = []
    while True:
        frame = json.loads(ws.recv(timeout=20))
        frames.append(frame)
        if frame["type"] in ("done", "error"):
            break
    text = "".join(c["delta"].get("content") or "" for f in frames if f["type"] == "chunk" for c in f["data"]["choices"])
    return text, frames


def test_two_requests_on_one_socket(gateway: Server) -> None:
    with connect(ws_url(gateway), additional_headers={"Authorization": f"Bearer {MASTER_KEY}"}) as ws:
        for prompt in ("first", "second"):
            ws.send(json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]}))
            text, frames = collect(ws)
            assert text == f"Mock reply to: {prompt}"
            assert frames[-1]["type"] == "done" and frames[-1]["usage"]["completion_tokens"] == 4


def test_error_keeps_socket_open(gateway: Server) -> None:
    with connect(ws_url(gateway), additional_headers={"x-api-key": MASTER_KEY}) as ws:
        ws.send(json.dumps({"model": "nope", "messages": [{"role": "user", "content": "x"}]}))
        _, frames = collect(ws)
        assert frames[-1]["type"] == "error" and frames[-1]["error"]["code"] == "model_not_found"
        ws.send("{not json")
        _, frames = collect(ws)
        assert frames[-1]["error"]["code"] == "invalid_json"
        ws.send(json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "ok"}]}))
        text, _ = collect(ws)
        assert text == "Mock reply to: ok"


def test_bad_key_refuses_handshake(gateway: Server) -> None:
    with pytest.raises(InvalidStatus) as exc, connect(ws_url(gateway), additional_headers={"Authorization": "Bearer nope"}):
        pass
    assert exc.value.response.status_code == 403
