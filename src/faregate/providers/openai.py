"""OpenAI and every OpenAI-compatible server (vLLM, TGI, Ollama, llama.cpp, OpenRouter…).

The canonical schema *is* OpenAI's, so translation is small: set the upstream model name, ask
for stream usage when the client did not (the gateway meters every request), and check that
what comes back has the expected shape.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, ClassVar

from faregate.core.errors import scrub
from faregate.providers.base import Provider
from faregate.providers.transport import Transport, UpstreamError, event_json

if TYPE_CHECKING:
    from faregate.core.call import Call
    from faregate.routing.deployment import Deployment


class OpenAIProvider(Provider):
    name: ClassVar[str] = "openai"

    def __init__(self, deployment: Deployment, transport: Transport) -> None:
        super().__init__(deployment, transport)
        if not deployment.api_base:
            raise ValueError(f"deployment '{deployment.id}' needs litellm_params.api_base")
        self._base = deployment.api_base.rstrip("/")
        self._headers = self._auth_headers()
        self._headers["content-type"] = "application/json"

    # --- hooks Azure overrides -------------------------------------------------------------
    def _auth_headers(self) -> dict[str, str]:
        key = self.deployment.api_key
        return {"authorization": f"Bearer {key}"} if key else {}

    def _url(self, path: str) -> str:
        return f"{self._base}/{path}"

    # --- helpers ---------------------------------------------------------------------------
    def _payload(self, call: Call, *, stream: bool) -> dict[str, Any]:
        payload = dict(call.body)
        payload["model"] = self.deployment.upstream_model
        if stream:
            payload["stream_options"] = {**(payload.get("stream_options") or {}), "include_usage": True}
        return payload

    async def _stream(self, call: Call, path: str) -> AsyncIterator[dict[str, Any]]:
        events = self.transport.post_sse(call, self.deployment, self._url(path), self._headers,
                                         self._payload(call, stream=True), self.timeouts(call))
        async with aclosing(events):
            async for _event, data in events:
                if data == b"[DONE]":
                    continue  # read on to the end of the body so the connection returns to the pool
                chunk = event_json(self.deployment, data)
                if "error" in chunk and "choices" not in chunk:
                    err = chunk["error"]
                    msg = err.get("message", "error") if isinstance(err, dict) else str(err)
                    raise UpstreamError(502, f"Upstream '{self.deployment.id}' failed mid-stream: {scrub(str(msg))}",
                                        kind="status", retryable=False, code="upstream_error")
                yield chunk

    # --- endpoints -------------------------------------------------------------------------
    async def chat(self, call: Call) -> dict[str, Any]:
        return await self.transport.post_json(call, self.deployment, self._url("chat/completions"),
                                              self._headers, self._payload(call, stream=False), self.timeouts(call))

    def chat_stream(self, call: Call) -> AsyncIterator[dict[str, Any]]:
        return self._stream(call, "chat/completions")

    async def completions(self, call: Call) -> dict[str, Any]:
        return await self.transport.post_json(call, self.deployment, self._url("completions"),
                                              self._headers, self._payload(call, stream=False), self.timeouts(call))

    def completions_stream(self, call: Call) -> AsyncIterator[dict[str, Any]]:
        return self._stream(call, "completions")

    async def embeddings(self, call: Call) -> dict[str, Any]:
        return await self.transport.post_json(call, self.deployment, self._url("embeddings"),
                                              self._headers, self._payload(call, stream=False), self.timeouts(call))


class AzureOpenAIProvider(OpenAIProvider):
    """Azure OpenAI: per-deployment URLs, `api-version` query, `api-key` header."""

    name: ClassVar[str] = "azure"

    def __init__(self, deployment: Deployment, transport: Transport) -> None:
        if not deployment.api_version:
            raise ValueError(f"deployment '{deployment.id}' needs litellm_params.api_version for Azure")
        super().__init__(deployment, transport)

    def _auth_headers(self) -> dict[str, str]:
        key = self.deployment.api_key
        return {"api-key": key} if key else {}

    def _url(self, path: str) -> str:
        d = self.deployment
        return f"{self._base}/openai/deployments/{d.upstream_model}/{path}?api-version={d.api_version}"
