"""faregate.mock: a real HTTP mock LLM upstream speaking the OpenAI and Anthropic wire formats.

Deterministic replies ("Mock reply to: <last user text>"), tool calls, embeddings, streaming,
programmable latency / errors / disconnects (settings, or per-request `x-mock-*` headers),
vLLM-, SGLang- or TGI-style /metrics, and request recording for tests. See `faregate.mock.server`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MockSettings", "MockUpstream", "build_app", "run"]


def __getattr__(name: str) -> Any:  # lazy: `faregate mock-upstream --help` must not load aiohttp
    if name == "MockSettings":
        from faregate.mock.settings import MockSettings

        return MockSettings
    if name in ("MockUpstream", "build_app", "run"):
        from faregate.mock import server

        return getattr(server, name)
    raise AttributeError(name)
