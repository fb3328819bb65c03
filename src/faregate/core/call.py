"""`Call`: one client request on its one-way trip through the pipeline.

Stages read and fill its fields; nothing else carries per-request state. Timing fields are
`time.perf_counter()` seconds. `upstream_wait` accumulates every second spent waiting on an
upstream (headers, body, each stream chunk), so `overhead = elapsed - upstream_wait` is the
gateway's own cost.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from faregate.access.records import Principal
    from faregate.accounting.pricing import Cost, Tokens
    from faregate.core.errors import GatewayError
    from faregate.routing.deployment import Deployment

Endpoint = Literal["chat", "completions", "embeddings"]


@dataclass(slots=True, eq=False)
class Call:
    request_id: str
    endpoint: Endpoint
    # The canonical request: OpenAI's JSON shape for `endpoint`, validated, client fields only.
    body: dict[str, Any]
    headers: Mapping[str, str]
    client_protocol: Literal["openai", "anthropic"] = "openai"
    started: float = field(default_factory=time.perf_counter)
    received_at: float = field(default_factory=time.time)  # wall clock, for the ledger
    client_request_id: str | None = None  # the client's own id for this request, if it sent one

    # authenticate
    principal: Principal | None = None  # who is calling (master, anonymous or a key); never the secret

    # admit: what was reserved (limits, budgets), released on the way back
    admission: Any = None
    prompt_estimate: int | None = None  # prompt tokens counted locally, when a limit needed them
    key_spend_nusd: int | None = None  # the key's spend in its budget period, after this call

    # cache: the outcome (hit-exact | hit-semantic | miss | bypass; None: caching is off), what
    # a hit saved, and what to store on the way back (the stage's own plan)
    cache: str | None = None
    cache_similarity: float | None = None
    saved_nusd: int = 0
    cache_plan: Any = None
    chunks: list[dict[str, Any]] | None = None  # a stream's chunks, kept when the cache will store it

    # route / invoke
    deployment: Deployment | None = None
    deployment_hold: Any = None  # TPM charged to the deployment's own limit, settled by invoke
    attempts: int = 0
    upstream_wait: float = 0.0
    timeout: float | None = None  # the client's x-faregate-timeout (capped), seconds per attempt
    attempt_started: float | None = None  # perf_counter at the served attempt's start
    queue_slot: Any = None  # the gateway's fair-queue slot, when max_in_flight is set
    deployment_slot: Any = None  # the deployment's, when it has max_parallel_requests

    # the outcome: exactly one of `response` / `stream` is set on success
    response: dict[str, Any] | None = None
    stream: AsyncIterator[dict[str, Any]] | None = None
    usage: dict[str, Any] | None = None
    usage_estimated: bool = False  # the upstream reported none: `usage` was counted locally
    stream_text: list[str] | None = None  # streamed output text, to count when no usage comes
    tokens: Tokens | None = None  # set by the meter stage once usage is known
    cost: Cost | None = None  # set by the meter stage once usage is known
    first_token_at: float | None = None
    finished_at: float | None = None
    error: GatewayError | None = None
    trace: Any = None  # the call's spans (telemetry/tracing.py), only while tracing is on

    @property
    def model(self) -> str:
        return self.body.get("model", "")

    @property
    def status(self) -> int:
        """The HTTP status the client got: a stream's 200 went out with its first byte, so a
        later failure shows in `error`, not here."""
        err = self.error
        return 200 if (err is None or self.stream is not None) else err.status

    @property
    def streaming(self) -> bool:
        return bool(self.body.get("stream"))

    @property
    def client_wants_usage(self) -> bool:
        opts = self.body.get("stream_options")
        return bool(opts and opts.get("include_usage"))

    def overhead_seconds(self, now: float | None = None) -> float:
        end = now if now is not None else time.perf_counter()
        return max(0.0, end - self.started - self.upstream_wait)
