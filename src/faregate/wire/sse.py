"""Server-sent events: encode for clients, decode from upstreams (WHATWG event-stream rules)."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import orjson

DONE = b"data: [DONE]\n\n"


def encode(data: Any) -> bytes:
    """One `data:` event (OpenAI style)."""
    return b"data: " + orjson.dumps(data) + b"\n\n"


def encode_event(event: str, data: Any) -> bytes:
    """One named event (Anthropic style)."""
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


async def decode(lines: AsyncIterable[bytes]) -> AsyncIterator[tuple[str | None, bytes]]:
    """Yield (event name, data bytes) per event from an iterable of raw lines.

    Multi-line `data:` fields are joined with '\\n'; comments (`:`) and `id`/`retry` are ignored.
    """
    event: str | None = None
    data: list[bytes] = []
    async for raw in lines:
        line = raw.rstrip(b"\r\n")
        if not line:
            if data:
                yield event, b"\n".join(data)
            event, data = None, []
            continue
        if line.startswith(b"data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(b" ") else value)
        elif line.startswith(b"event:"):
            event = line[6:].strip().decode()
        # ':' comments, id:, retry: are of no use to a proxy
    if data:
        yield event, b"\n".join(data)
