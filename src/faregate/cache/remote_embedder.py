"""`GroupEmbedder`: the semantic cache's embeddings from a model group behind this gateway (an
OpenAI, Azure or vLLM embeddings deployment) instead of the bundled MiniLM.

The semantic layer calls `embed` on its own thread; the request runs on the event loop through
the gateway's own pipeline as the master principal, so it is routed, retried, priced and
ledgered like any other call (feature `semantic-cache`).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import numpy as np

from faregate.access.records import MASTER
from faregate.core.call import Call

HEADERS = {"x-faregate-feature": "semantic-cache"}


class GroupEmbedder:
    def __init__(self, group: str, run: Callable[[Call], Awaitable[None]],
                 loop: asyncio.AbstractEventLoop, timeout: float = 30.0) -> None:
        self.group = group
        self.name = f"group:{group}"
        self._run = run
        self._loop = loop
        self._timeout = timeout

    async def _call(self, texts: list[str]) -> dict[str, Any]:
        call = Call(request_id=f"cache-embed-{uuid.uuid4().hex}", endpoint="embeddings",
                    body={"model": self.group, "input": texts}, headers=HEADERS, principal=MASTER)
        await self._run(call)
        return call.response or {}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """float32 (len(texts), dim), rows L2-normalised. Blocks its (non-loop) thread."""
        if not texts:
            return np.zeros((0, 1), dtype=np.float32)
        future = asyncio.run_coroutine_threadsafe(self._call(list(texts)), self._loop)
        data = sorted(future.result(self._timeout).get("data") or (), key=lambda d: d.get("index", 0))
        if len(data) != len(texts):
            raise RuntimeError(f"embeddings group '{self.group}' answered {len(data)} vectors for {len(texts)} texts")
        vectors = np.asarray([d["embedding"] for d in data], dtype=np.float32)
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
