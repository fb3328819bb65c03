"""The bare proxy: the floor any Python gateway stands on (raw ASGI on granian, 1 worker).

Checks the key, parses the JSON (orjson), rewrites the model and forwards with one shared
aiohttp ClientSession; streams are passed through chunk by chunk. Nothing else.

    BARE_UPSTREAM=http://127.0.0.1:9000/v1 python bench/bare_proxy.py --port 4100
"""

import os

import aiohttp
import orjson

UPSTREAM = os.environ.get("BARE_UPSTREAM", "http://127.0.0.1:9000/v1") + "/chat/completions"
KEY = b"Bearer " + os.environ.get("BARE_KEY", "sk-bench-master").encode()
MODEL = os.environ.get("BARE_MODEL", "bench-model")
UP_HEADERS = {"authorization": "Bearer " + os.environ.get("BARE_UPSTREAM_KEY", "sk-upstream"),
              "content-type": "application/json"}
session: aiohttp.ClientSession | None = None


async def app(scope, receive, send):
    global session
    if scope["type"] == "lifespan":  # nothing to set up: the session is made lazily on the loop
        while True:
            msg = await receive()
            await send({"type": msg["type"] + ".complete"})
            if msg["type"] == "lifespan.shutdown":
                return
    if scope["method"] == "GET":  # /health
        await send({"type": "http.response.start", "status": 200, "headers": []})
        return await send({"type": "http.response.body", "body": b"ok"})
    if dict(scope["headers"]).get(b"authorization") != KEY:
        await send({"type": "http.response.start", "status": 401, "headers": []})
        return await send({"type": "http.response.body", "body": b'{"error":"bad key"}'})
    body, more = b"", True
    while more:
        msg = await receive()
        body, more = body + msg.get("body", b""), msg.get("more_body", False)
    req = orjson.loads(body)
    req["model"] = MODEL
    if session is None:
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    async with session.post(UPSTREAM, data=orjson.dumps(req), headers=UP_HEADERS) as r:
        ctype = r.headers.get("content-type", "application/json").encode()
        await send({"type": "http.response.start", "status": r.status, "headers": [(b"content-type", ctype)]})
        if not req.get("stream"):
            return await send({"type": "http.response.body", "body": await r.read()})
        async for chunk in r.content.iter_any():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})


if __name__ == "__main__":
    import argparse
    from pathlib import Path

    from granian import Granian
    from granian.constants import Interfaces, Loops

    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=4100)
    p.add_argument("--workers", type=int, default=1)
    a = p.parse_args()
    # The same server settings as `faregate serve`, so only the application differs.
    Granian("bare_proxy:app", address="127.0.0.1", port=a.port, interface=Interfaces.ASGI, workers=a.workers,
            loop=Loops.uvloop, log_access=False, backlog=2048, websockets=False,
            working_dir=Path(__file__).resolve().parent).serve()
