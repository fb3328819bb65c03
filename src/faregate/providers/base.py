"""The provider contract.

A provider is a pure translator between the canonical request/response (OpenAI Chat
Completions JSON as dicts) and one upstream wire protocol, plus the transport it sends bytes
over. It owns no retries, limits or caching: those are pipeline stages. It adds the seconds it
spends waiting on the upstream to `call.upstream_wait` (the transport does this for HTTP).

Canonical stream chunks are `chat.completion.chunk` / `text_completion` dicts. A provider's
stream MUST end with a usage chunk (`choices: []`, `usage: {...}`) when the upstream can give
usage, whether or not the client asked; the HTTP layer strips it when the client did not.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, ClassVar

from faregate.core.errors import GatewayError
from faregate.providers.timeouts import Timeouts

if TYPE_CHECKING:
    from faregate.core.call import Call
    from faregate.providers.transport import Transport
    from faregate.routing.deployment import Deployment


class Provider:
    name: ClassVar[str] = "base"

    def __init__(self, deployment: Deployment, transport: Transport) -> None:
        self.deployment = deployment
        self.transport = transport
        d = deployment
        connect = d.connect_timeout or transport.connect_timeout
        fb = d.first_byte_timeout if d.first_byte_timeout and d.first_byte_timeout < d.timeout else None
        self._plain_timeouts = Timeouts(total=d.timeout, connect=connect, idle=d.timeout, first_byte=fb)
        self._stream_timeouts = Timeouts(total=d.timeout, connect=connect, idle=d.stream_idle_timeout, first_byte=fb)

    def timeouts(self, call: Call) -> Timeouts:
        """Total, connect, first-byte and idle limits for one attempt (idle = gap between stream
        chunks), shortened to the client's `x-faregate-timeout` when it sent one."""
        t = self._stream_timeouts if call.streaming else self._plain_timeouts
        return t if call.timeout is None else t.capped(call.timeout)

    async def start(self) -> None:
        """Acquire what the provider needs (load a model…). Called once at gateway start-up."""

    async def close(self) -> None:
        """Release it. Called once at shutdown."""

    def ready(self) -> bool:
        return True

    async def chat(self, call: Call) -> dict[str, Any]:
        raise self._unsupported("chat completions")

    def chat_stream(self, call: Call) -> AsyncIterator[dict[str, Any]]:
        raise self._unsupported("streaming chat completions")

    async def completions(self, call: Call) -> dict[str, Any]:
        raise self._unsupported("legacy completions")

    def completions_stream(self, call: Call) -> AsyncIterator[dict[str, Any]]:
        raise self._unsupported("streaming legacy completions")

    async def embeddings(self, call: Call) -> dict[str, Any]:
        raise self._unsupported("embeddings")

    def _unsupported(self, what: str) -> GatewayError:
        return GatewayError(
            400,
            f"Model '{self.deployment.group}' is served by a '{self.name}' deployment, which does not support {what}.",
            code="unsupported_endpoint",
            param="model",
        )
