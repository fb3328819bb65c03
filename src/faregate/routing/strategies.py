"""How a deployment is chosen among a group's healthy candidates.

A strategy is one small object with `pick(candidates, call) -> Deployment`. The router hands it
only deployments that may be used now (not tried yet for this call, breaker not open, engine not
overloaded, in the best available `order` tier), never an empty list, and counts on it being
cheap: it runs for every attempt of every request (bench/routing.py: < 50 µs for 100).

- `weighted` (default; LiteLLM's `simple-shuffle`): random, in proportion to `weight`.
- `least-busy`: fewest requests in flight from this replica.
- `latency-based`: lowest moving average of time to first token (streams) or of latency per
  output token (otherwise); deployments not measured yet go first, so each gets measured.
- `cost-based`: cheapest price per token (input + output) — unpriced deployments last.
- `usage-based`: most headroom left under the deployment's own `rpm`/`tpm` this minute.

Ties (within `TIE` of the best score) are broken by weight, so equal deployments share load.
Sticky routing (`router_settings.sticky_by`) sits in front of any strategy: rendezvous hashing
of the request's user, conversation or key over the candidates sends one conversation to one
deployment while it stays healthy — and when it does not, only its conversations move.
"""

from __future__ import annotations

import random
import time
import zlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from faregate.core.call import Call
    from faregate.routing.deployment import Deployment

TIE = 0.10  # scores within 10 % of the best are equally good

STRATEGIES = ("weighted", "least-busy", "latency-based", "cost-based", "usage-based")
# LiteLLM's names for the same strategies
ALIASES = {"simple-shuffle": "weighted", "least-busy": "least-busy", "latency-based-routing": "latency-based",
           "cost-based-routing": "cost-based", "usage-based-routing": "usage-based",
           "usage-based-routing-v2": "usage-based"}


class Strategy(Protocol):
    name: str

    def pick(self, candidates: Sequence[Deployment], call: Call | None) -> Deployment: ...


def weighted_choice(candidates: Sequence[Deployment], rng: random.Random) -> Deployment:
    if len(candidates) == 1:
        return candidates[0]
    total = 0.0
    for d in candidates:
        total += d.weight
    if total <= 0:
        return candidates[int(rng.random() * len(candidates))]
    point = rng.random() * total
    for d in candidates:
        point -= d.weight
        if point < 0:
            return d
    return candidates[-1]


class Weighted:
    name = "weighted"

    def __init__(self, rng: random.Random | None = None) -> None:
        self.rng = rng or random.Random()

    def pick(self, candidates: Sequence[Deployment], call: Call | None) -> Deployment:
        return weighted_choice(candidates, self.rng)


class _Scored:
    """Lowest score wins; None (not measured) counts as best; ties broken by weight."""

    name = "scored"

    def __init__(self, rng: random.Random | None = None) -> None:
        self.rng = rng or random.Random()

    def score(self, d: Deployment, call: Call | None) -> float | None:
        raise NotImplementedError

    def pick(self, candidates: Sequence[Deployment], call: Call | None) -> Deployment:
        if len(candidates) == 1:
            return candidates[0]
        scores = [self.score(d, call) for d in candidates]
        unknown = [d for d, s in zip(candidates, scores, strict=True) if s is None]
        if unknown:
            return weighted_choice(unknown, self.rng)
        best = min(scores)  # type: ignore[type-var]
        bound = best + abs(best) * TIE
        return weighted_choice([d for d, s in zip(candidates, scores, strict=True) if s <= bound], self.rng)  # type: ignore[operator]


class LeastBusy(_Scored):
    name = "least-busy"

    def score(self, d: Deployment, call: Call | None) -> float:
        return float(d.stats.in_flight)

    def pick(self, candidates: Sequence[Deployment], call: Call | None) -> Deployment:
        if len(candidates) == 1:
            return candidates[0]
        low = min(d.stats.in_flight for d in candidates)
        return weighted_choice([d for d in candidates if d.stats.in_flight == low], self.rng)


class LatencyBased(_Scored):
    name = "latency-based"

    def score(self, d: Deployment, call: Call | None) -> float | None:
        s = d.stats
        if call is not None and call.streaming:
            return s.ewma_ttft
        return s.ewma_latency_per_token

    def pick(self, candidates: Sequence[Deployment], call: Call | None) -> Deployment:
        # Seconds per token and seconds per request don't compare: requests without output
        # tokens (embeddings) are judged on latency alone, the others per token.
        if (len(candidates) > 1 and (call is None or not call.streaming)
                and all(d.stats.ewma_latency_per_token is None for d in candidates)
                and any(d.stats.ewma_latency is not None for d in candidates)):
            return self._per_request.pick(candidates, call)
        return super().pick(candidates, call)

    def __init__(self, rng: random.Random | None = None) -> None:
        super().__init__(rng)
        self._per_request = _PerRequest(self.rng)


class _PerRequest(_Scored):
    def score(self, d: Deployment, call: Call | None) -> float | None:
        return d.stats.ewma_latency


class CostBased(_Scored):
    name = "cost-based"

    def __init__(self, price_of: Callable[[Deployment], float | None], rng: random.Random | None = None) -> None:
        super().__init__(rng)
        self._price_of = price_of
        self._prices: dict[str, float] = {}

    def score(self, d: Deployment, call: Call | None) -> float:
        p = self._prices.get(d.id)
        if p is None:
            price = self._price_of(d)  # None until prices are loaded, or unpriced: not cached
            if price is None:
                return float("inf")
            p = self._prices[d.id] = price
        return p

    def pick(self, candidates: Sequence[Deployment], call: Call | None) -> Deployment:
        if len(candidates) == 1:
            return candidates[0]
        scores = [self.score(d, call) for d in candidates]
        best = min(scores)
        bound = best + abs(best) * TIE if best != float("inf") else best
        return weighted_choice([d for d, s in zip(candidates, scores, strict=True) if s <= bound], self.rng)


class UsageBased(_Scored):
    """Headroom is re-read at most every `REFRESH` seconds (usage per minute does not move
    faster than that), so a pick among 100 deployments stays a few dict lookups."""

    name = "usage-based"
    REFRESH = 0.25

    def __init__(self, rng: random.Random | None = None) -> None:
        super().__init__(rng)
        self._scores: dict[str, float] = {}
        self._read_at = 0.0

    def score(self, d: Deployment, call: Call | None, now: float | None = None) -> float:
        """Minus the share of its own limits left this minute (deployments without limits: -1)."""
        if not (d.rpm or d.tpm):
            return -1.0
        reqs, toks = d.stats.minute_usage(now)
        left = 1.0
        if d.rpm:
            left = min(left, 1.0 - reqs / d.rpm)
        if d.tpm:
            left = min(left, 1.0 - toks / d.tpm)
        return -left

    def pick(self, candidates: Sequence[Deployment], call: Call | None) -> Deployment:
        if len(candidates) == 1:
            return candidates[0]
        now = time.time()
        scores = self._scores
        if now - self._read_at > self.REFRESH:
            scores.clear()
            self._read_at = now
        vals = []
        for d in candidates:
            v = scores.get(d.id)
            if v is None:
                v = scores[d.id] = self.score(d, call, now)
            vals.append(v)
        bound = min(vals) + TIE
        return weighted_choice([d for d, v in zip(candidates, vals, strict=True) if v <= bound], self.rng)


def build_strategy(name: str, price_of: Callable[[Deployment], float | None], rng: random.Random | None = None) -> Strategy:
    name = ALIASES.get(name, name)
    if name == "weighted":
        return Weighted(rng)
    if name == "least-busy":
        return LeastBusy(rng)
    if name == "latency-based":
        return LatencyBased(rng)
    if name == "cost-based":
        return CostBased(price_of, rng)
    if name == "usage-based":
        return UsageBased(rng)
    raise ValueError(f"unknown routing strategy '{name}' (one of: {', '.join(STRATEGIES)}; "
                     f"or LiteLLM's {', '.join(ALIASES)})")


class Sticky:
    """Rendezvous (highest-random-weight) hashing of a request's user, conversation or key over
    the candidates: stable across replicas (CRC-32, not Python's salted hash), and when a
    deployment leaves the candidates only the conversations it held move."""

    def __init__(self, by: str) -> None:
        self.by = by  # "user" | "conversation" | "key"

    def key_of(self, call: Call | None) -> bytes | None:
        if call is None:
            return None
        if self.by == "user":
            v = call.body.get("user")
        elif self.by == "conversation":
            v = call.headers.get("x-faregate-conversation-id")
        else:
            v = call.principal.id if call.principal is not None else None
        return v.encode() if isinstance(v, str) and v else None

    @staticmethod
    def pick(candidates: Sequence[Deployment], key: bytes) -> Deployment:
        # CRC-32 is affine in its start value: crc32(key, seed) would rank deployments by
        # crc(key) XOR c(seed), which spreads keys unevenly. A multiplicative (Fibonacci) mix of
        # crc(key) XOR the deployment's own CRC scores them evenly.
        k = zlib.crc32(key)
        best, best_h = candidates[0], -1
        for d in candidates:
            h = ((k ^ d.hash_seed) * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
            if h > best_h:
                best, best_h = d, h
        return best
