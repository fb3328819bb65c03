"""faregate.mock: a real HTTP mock LLM upstream speaking the OpenAI and Anthropic wire formats.

Deterministic replies ("Mock reply to: <last user text>"), tool calls, embeddings, streaming,
programmable latency / errors / disconnects (settings, or per-request `x-mock-*` headers),
vLLM-style /metrics, and request recording for tests. See `faregate.mock.server`.
"""

from faregate.mock.server import MockUpstream, build_app, run
from faregate.mock.settings import MockSettings

__all__ = ["MockSettings", "MockUpstream", "build_app", "run"]
