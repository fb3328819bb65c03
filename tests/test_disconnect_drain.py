"""A client that leaves cancels the upstream request at once; SIGTERM drains, flushes, exits 0.

Real processes throughout: the session's mock upstream (which counts the API requests whose
client went away before the response was finished: GET /mock/stats, and `cancelled_at` in
GET /mock/requests) and gateways started here, each with its own SQLite ledger.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sqlite3
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import MASTER_KEY, Server, stop
from tests.gateways import launch_gateway

AUTH = {"authorization": f"Bearer {MASTER_KEY}"}
CHAT = "/v1/chat/completions"


def config(mock: str, workers: int = 1) -> str:
    return f"""
model_list:
  - model_name: gpt-4o-mini
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: {mock}/v1
      api_key: os.environ/TEST_UPSTREAM_KEY
general_settings:
  master_key: os.environ/TEST_MASTER_KEY
server:
  workers: {workers}
"""


def body(stream: bool = False, max_tokens: int = 64) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens,
            "stream": stream}


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def wait_for(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def rows(db: Path, where: str = "1", args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(f"SELECT * FROM requests WHERE {where}", args)]


def ledger_row(db: Path, where: str, *args: Any, timeout: float = 2.0) -> dict[str, Any]:
    found = wait_for(lambda: rows(db, where, args), timeout, f"a ledger row where {where} {args}")
    assert len(found) == 1, found
    return found[0]


def assert_clean_log(gw: Server) -> None:
    """A client that leaves, or a shutdown, is nothing to log an error or a traceback about."""
    out = gw.output()
    for bad in ("Traceback", "unhandled", "Unhandled", " ERROR ", "[ERROR]", "Killing worker"):
        assert bad not in out, out


@pytest.fixture(scope="module")
def gw(mock_upstream: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = launch_gateway(tmp_path_factory.mktemp("disconnect"), config(mock_upstream.url), name="disconnect")
    yield server
    stop(server.proc)


# ---------------------------------------------------------------- cancel on disconnect


def _drop_raw(gw: Server, client_id: str) -> float:
    """Send a chat request on a raw socket and close it without reading; the time it closed."""
    payload = json.dumps(body()).encode()
    host, port = gw.url.removeprefix("http://").split(":")
    head = (f"POST {CHAT} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
            f"authorization: Bearer {MASTER_KEY}\r\nx-client-request-id: {client_id}\r\n"
            f"content-length: {len(payload)}\r\n\r\n").encode()
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(head + payload)
        time.sleep(0.3)
        closed = time.time()
    return closed


def _drop_by_timeout(gw: Server, client_id: str) -> float:
    """An HTTP client with a 0.3 s read timeout: it gives up and closes the connection."""
    with httpx.Client(base_url=gw.url, timeout=httpx.Timeout(10, read=0.3)) as client, pytest.raises(httpx.ReadTimeout):
        client.post(CHAT, json=body(), headers={**AUTH, "x-client-request-id": client_id})
    return time.time()


@pytest.mark.parametrize("drop", [_drop_raw, _drop_by_timeout], ids=["socket-closed", "client-timeout"])
def test_non_stream_disconnect_cancels_the_upstream_request(gw: Server, mock_upstream: Server, mock_settings,
                                                            mock_requests, drop: Any) -> None:
    mock_settings(latency_ms=5000)
    before = get(f"{mock_upstream.url}/mock/stats")["cancelled"]
    client_id = f"drop-{drop.__name__}-{time.time_ns()}"
    closed = drop(gw, client_id)

    stats = wait_for(lambda: (s := get(f"{mock_upstream.url}/mock/stats"))["cancelled"] > before and s, 1.0,
                     "the mock to see its request cancelled")
    assert stats["cancelled"] == before + 1
    [record] = mock_requests()
    latency = record["cancelled_at"] - closed
    print(f"non-stream cancel latency ({drop.__name__}): {latency * 1000:.1f} ms")
    assert 0 <= latency < 1.0, latency  # the upstream saw the cancellation within 1 s of the drop

    row = ledger_row(gw.db, "client_request_id = ?", client_id)
    assert row["error_code"] == "client_closed_request"
    assert row["status"] == 499
    assert_clean_log(gw)


def test_stream_disconnect_cancels_the_upstream_stream_and_records_what_was_consumed(
        gw: Server, mock_upstream: Server, mock_settings, mock_requests) -> None:
    mock_settings(ttft_ms=10, itl_ms=200, tokens=50)
    before = get(f"{mock_upstream.url}/mock/stats")["cancelled"]
    with httpx.Client(base_url=gw.url, timeout=30) as client, \
            client.stream("POST", CHAT, json=body(stream=True, max_tokens=100), headers=AUTH) as resp:
        assert resp.status_code == 200
        request_id = resp.headers["x-request-id"]
        events = 0
        for line in resp.iter_lines():
            if line.startswith("data: "):
                events += 1
                if events == 2:
                    closed = time.time()
                    break  # leaving the loop closes the line iterator and with it the connection
        resp.close()

    wait_for(lambda: get(f"{mock_upstream.url}/mock/stats")["cancelled"] > before, 1.0,
             "the mock to see its stream cancelled")
    [record] = mock_requests()
    latency = record["cancelled_at"] - closed
    print(f"stream cancel latency: {latency * 1000:.1f} ms")
    assert 0 <= latency < 1.0, latency

    row = ledger_row(gw.db, "request_id = ?", request_id)
    assert row["error_code"] == "client_closed_request"
    assert row["stream"]
    assert 0 < row["output_tokens"] < 50  # what was consumed before the client left, not the full answer
    assert row["usage_estimated"]  # the upstream never sent its usage: counted locally
    assert_clean_log(gw)


# ---------------------------------------------------------------- SIGTERM drain


async def _one(client: httpx.AsyncClient, stream: bool) -> dict[str, Any]:
    try:
        if stream:
            async with client.stream("POST", CHAT, json=body(stream=True, max_tokens=40), headers=AUTH) as resp:
                text = "".join([t async for t in resp.aiter_text()])
                return {"status": resp.status_code, "id": resp.headers.get("x-request-id"), "text": text}
        resp = await client.post(CHAT, json=body(max_tokens=40), headers=AUTH)
        return {"status": resp.status_code, "id": resp.headers.get("x-request-id"), "json": resp.json()}
    except httpx.HTTPError as exc:
        return {"status": None, "error": repr(exc)}


async def _late(url: str) -> Any:
    """A request on a new connection once the workers stopped accepting: "refused", or its status."""
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:
        try:
            return (await client.post(CHAT, json=body(), headers=AUTH)).status_code
        except httpx.ConnectError:
            return "refused"


def _workers_log(gw: Server, what: str, workers: int) -> bool:
    """granian logs "Started worker-N" once a worker accepts, "Stopping worker-N" once it stops."""
    return all(f"{what} worker-{n}" in gw.output() for n in range(1, workers + 1))


async def _load_then_sigterm(gw: Server, mock: str, plain: int, streams: int, workers: int = 1,
                             ) -> tuple[list[dict[str, Any]], Any, float]:
    """`plain` + `streams` calls in flight, then SIGTERM: (results, a request on a new connection
    once the workers stopped accepting, how long the process took to exit after the signal)."""
    loop = asyncio.get_running_loop()
    # Every worker up (a worker still booting when SIGTERM comes misses it: granian then waits
    # for the kill timeout), before the load.
    await loop.run_in_executor(None, wait_for, lambda: _workers_log(gw, "Started", workers), 30.0, "the workers")
    running_before = get(f"{mock}/mock/stats")["running"]
    async with httpx.AsyncClient(base_url=gw.url, timeout=60, limits=httpx.Limits(max_connections=200)) as client:
        tasks = [asyncio.create_task(_one(client, False)) for _ in range(plain)]
        tasks += [asyncio.create_task(_one(client, True)) for _ in range(streams)]
        await loop.run_in_executor(None, wait_for, lambda: get(f"{mock}/mock/stats")["running"]
                                   >= running_before + plain + streams, 10.0, "every call to reach the mock")
        gw.proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        await loop.run_in_executor(None, wait_for, lambda: _workers_log(gw, "Stopping", workers), 5.0,
                                   "the workers to stop accepting")
        late = await _late(gw.url)
        results = await asyncio.gather(*tasks)
        await loop.run_in_executor(None, gw.proc.wait, 60)
        took = time.monotonic() - sent
    return results, late, took


def test_sigterm_drains_in_flight_calls_flushes_the_ledger_and_exits_0(
        mock_upstream: Server, mock_settings, tmp_path: Path) -> None:
    mock_settings(latency_ms=1500, ttft_ms=0, itl_ms=50, tokens=30)  # streams: ~1.5 s
    gw = launch_gateway(tmp_path, config(mock_upstream.url, workers=2), name="drain")
    try:
        results, late, took = asyncio.run(_load_then_sigterm(gw, mock_upstream.url, plain=20, streams=3, workers=2))
    finally:
        stop(gw.proc)

    assert gw.proc.returncode == 0, gw.output()
    assert took < 10, (took, gw.output())  # well inside the 30 s default deadline: it waited for the calls, no more
    assert late == "refused", late
    assert [r["status"] for r in results] == [200] * 23, results
    for r in results[:20]:
        assert r["json"]["choices"][0]["message"]["content"]
    for r in results[20:]:
        assert r["text"].rstrip().endswith("data: [DONE]"), r["text"][-200:]
    ledger = {r["request_id"]: r for r in rows(gw.db)}  # the process is gone: whatever is there was flushed
    assert sorted(ledger) == sorted(r["id"] for r in results)  # one row per completed call
    assert all(r["status"] == 200 and r["error_code"] is None for r in ledger.values())
    assert_clean_log(gw)


def test_sigterm_ends_calls_still_running_at_the_deadline_and_still_flushes(
        mock_upstream: Server, mock_settings, tmp_path: Path) -> None:
    mock_settings(latency_ms=20000, ttft_ms=0, itl_ms=300, tokens=60)  # both far longer than the deadline
    gw = launch_gateway(tmp_path, config(mock_upstream.url), env={"FAREGATE_SHUTDOWN_TIMEOUT": "1"}, name="deadline")
    cancelled_before = get(f"{mock_upstream.url}/mock/stats")["cancelled"]
    try:
        results, late, took = asyncio.run(_load_then_sigterm(gw, mock_upstream.url, plain=2, streams=1))
    finally:
        stop(gw.proc)

    assert gw.proc.returncode == 0, gw.output()
    assert 1 <= took < 5, took  # the deadline, plus the flush; not granian's kill timeout (1 + 15 s)
    assert late == "refused", late
    for r in results[:2]:
        assert r["status"] == 503 and r["json"]["error"]["code"] == "server_shutting_down", r
    stream = results[2]  # cut short: a client must not take it for a complete answer
    assert stream["status"] is None or "[DONE]" not in stream.get("text", ""), stream
    # the upstream requests were cancelled, not left running
    assert get(f"{mock_upstream.url}/mock/stats")["cancelled"] == cancelled_before + 3
    ledger = rows(gw.db)
    assert len(ledger) == 3  # every call has its row, flushed before the exit
    [streamed] = [r for r in ledger if r["stream"]]
    assert streamed["error_code"] == "server_shutting_down" and streamed["output_tokens"] > 0
    assert {r["error_code"] for r in ledger if not r["stream"]} == {"server_shutting_down"}
    assert "Traceback" not in gw.output() and "Killing worker" not in gw.output()
