"""cache: answer from the response cache (short-circuit), and on the way back store a fresh
answer.

Lookup runs after admit (a cached answer still counts against the caller's RPM; its TPM and
budget reservations settle at 0 because a hit costs nothing) and before invoke. A hit sets the
response (or a replayed stream), costs $0 and records `saved_nusd`: what the upstream call
would have cost at the serving deployment's price today. A miss leaves a plan; after a
successful call the answer is stored under the exact key and, for semantic groups, by the
meaning of its last user turn. The cache never fails a request: if its backend is unreachable,
the lookup is a miss and the store is skipped (logged).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from faregate.accounting.ledger import nano_usd
from faregate.accounting.pricing import PriceBook, Tokens
from faregate.cache.keys import deterministic, exact_key, scope_of, semantic_parts
from faregate.cache.layers import Found, ResponseCache
from faregate.cache.policy import GroupCache, directive
from faregate.cache.replay import assemble, replay
from faregate.cache.store import Entry
from faregate.core.call import Call

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger("faregate.cache")


@dataclass(slots=True)
class _Plan:
    key: str
    parts: tuple[str, str] | None
    vector: np.ndarray | None
    group: GroupCache


class Cache:
    name = "cache"

    def __init__(self, cache: ResponseCache, prices: PriceBook) -> None:
        self.cache = cache
        self.prices = prices

    async def before(self, call: Call) -> bool:
        cache = self.cache
        group = cache.policy.group(call.model)
        if group.mode == "off":
            return False
        wanted = directive(call.headers)
        if not (wanted.read or wanted.store) or (group.requests == "deterministic" and not deterministic(call.body)):
            call.cache = "bypass"
            cache.bypassed()
            return False
        scope = scope_of(call.principal, cache.scope)
        key = exact_key(scope, call.endpoint, call.body)
        parts = (semantic_parts(scope, call.body)
                 if group.mode == "semantic" and call.endpoint == "chat" and cache.semantic is not None else None)
        found = Found("bypass")
        if wanted.read:
            try:
                found = await cache.find(key, parts, group, wanted.max_age)
            except Exception as exc:  # an unreachable backend is a miss, never an error
                cache.stats.exact.errors += 1
                log.warning("cache lookup failed (%s: %s); treated as a miss", type(exc).__name__, exc)
                found = Found("miss")
        call.cache = found.outcome
        if found.entry is not None:
            self._serve(call, found)
            return True
        if found.outcome == "bypass":
            cache.bypassed()
        if wanted.store:
            call.cache_plan = _Plan(key, parts, found.vector, group)
            if call.streaming:
                call.chunks = []
        return False

    def _serve(self, call: Call, found: Found) -> None:
        entry = found.entry
        assert entry is not None
        call.cache_similarity = found.similarity
        tokens = Tokens.from_usage(entry.response.get("usage"))
        cost = self.prices.cost(entry.deployment, tokens) if entry.deployment is not None else None
        call.saved_nusd = nano_usd(cost.total_usd) if cost is not None and cost.priced else entry.cost_nusd
        if call.streaming:
            call.first_token_at = time.perf_counter()
            call.stream = replay(call.endpoint, entry.response, call.client_wants_usage)
        else:
            call.response = entry.response

    async def after(self, call: Call) -> None:
        plan: _Plan | None = call.cache_plan
        if plan is None or call.error is not None or call.deployment is None:
            return
        response: dict[str, Any] | None = call.response
        if response is None and call.chunks is not None:
            response = assemble(call.endpoint, call.chunks, call.usage)
        if response is None or not _complete(response):
            return
        now = time.time()
        entry = Entry(response, now, now + plan.group.ttl, call.deployment.id,
                      nano_usd(call.cost.total_usd) if call.cost else 0)
        try:
            await self.cache.store(plan.key, plan.parts, plan.vector, entry)
        except Exception as exc:
            self.cache.stats.exact.errors += 1
            log.warning("cache store failed (%s: %s)", type(exc).__name__, exc)


def _complete(response: dict[str, Any]) -> bool:
    """Worth serving again: every choice finished (a content filter's cut is not cached)."""
    choices = response.get("choices")
    if choices is None:  # embeddings
        return bool(response.get("data"))
    return bool(choices) and all(c.get("finish_reason") not in (None, "content_filter") for c in choices)
