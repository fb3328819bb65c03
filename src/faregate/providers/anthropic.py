"""Anthropic Messages API upstream: canonical ⇄ Anthropic translation over the shared transport.

Usage keeps Anthropic's prompt-cache fields: `cache_read_input_tokens` becomes
`prompt_tokens_details.cached_tokens`, `cache_creation_input_tokens` is kept as is.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, ClassVar

from faregate.providers.base import Provider
from faregate.providers.transport import Transport, event_json
from faregate.translate.anthropic_request import chat_request_to_messages
from faregate.translate.anthropic_response import messages_response_to_chat
from faregate.translate.anthropic_stream import MessagesStreamToChat

if TYPE_CHECKING:
    from faregate.core.call import Call
    from faregate.routing.deployment import Deployment

ANTHROPIC_VERSION = "2023-06-01"


class AnthropicProvider(Provider):
    name: ClassVar[str] = "anthropic"

    def __init__(self, deployment: Deployment, transport: Transport) -> None:
        super().__init__(deployment, transport)
        base = (deployment.api_base or "https://api.anthropic.com").rstrip("/")
        self._url = base + "/messages" if base.endswith("/v1") else base + "/v1/messages"
        self._headers = {"content-type": "application/json", "anthropic-version": ANTHROPIC_VERSION}
        if deployment.api_key:
            self._headers["x-api-key"] = deployment.api_key

    async def chat(self, call: Call) -> dict[str, Any]:
        payload = chat_request_to_messages(call.body, self.deployment.upstream_model)
        payload.pop("stream", None)
        resp = await self.transport.post_json(call, self.deployment, self._url, self._headers, payload, self.timeouts(call))
        return messages_response_to_chat(resp, self.deployment.upstream_model)

    def chat_stream(self, call: Call) -> AsyncIterator[dict[str, Any]]:
        return self._stream(call)

    async def _stream(self, call: Call) -> AsyncIterator[dict[str, Any]]:
        payload = chat_request_to_messages(call.body, self.deployment.upstream_model)
        payload["stream"] = True
        translator = MessagesStreamToChat(self.deployment.upstream_model)
        events = self.transport.post_sse(call, self.deployment, self._url, self._headers, payload, self.timeouts(call))
        async with aclosing(events):
            async for event, data in events:
                doc = event_json(self.deployment, data)
                for chunk in translator.feed(event or doc.get("type"), doc):
                    yield chunk
