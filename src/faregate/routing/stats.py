"""What this process saw of each deployment: requests in flight, latency and time-to-first-token
averages, recent usage, the last error — passive health from real traffic, read by the routing
strategies and by `GET /health/deployments`.

Everything is O(1) per request and in-process: each replica routes on what it saw itself (the
shared view across replicas is the circuit breaker's job, in routing/breaker.py). Averages are
exponentially weighted (EWMA, weight `ALPHA` for the newest sample), so a deployment that slows
down is noticed within a few requests and one outlier does not swing it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

ALPHA = 0.2  # weight of the newest sample in the moving averages
_BUCKETS = 6  # usage over the last minute, in 10-second buckets


@dataclass(slots=True)
class DeploymentStats:
    in_flight: int = 0
    requests: int = 0
    failures: int = 0
    ewma_ttft: float | None = None  # seconds to first chunk (streams)
    ewma_latency_per_token: float | None = None  # seconds per output token (non-stream)
    ewma_latency: float | None = None  # seconds per request (any)
    last_error: str | None = None  # error code and message of the last failure (no secrets)
    last_error_at: float | None = None  # wall clock
    last_ok_at: float | None = None
    last_probe: dict[str, object] | None = None  # the last active probe: ok, ms, at, error
    # requests and tokens of the last minute, for usage-based routing (10 s buckets)
    _slot: list[int] = field(default_factory=lambda: [0] * _BUCKETS)
    _reqs: list[int] = field(default_factory=lambda: [0] * _BUCKETS)
    _toks: list[int] = field(default_factory=lambda: [0] * _BUCKETS)
    _past_slot: int = -1
    _past: tuple[int, int] = (0, 0)

    def _bucket(self, now: float) -> int:
        slot = int(now // 10)
        i = slot % _BUCKETS
        if self._slot[i] != slot:
            self._slot[i], self._reqs[i], self._toks[i] = slot, 0, 0
        return i

    def started(self, now: float | None = None) -> None:
        self.in_flight += 1
        self.requests += 1
        self._reqs[self._bucket(time.time() if now is None else now)] += 1

    def finished(self, ok: bool, *, latency: float | None = None, ttft: float | None = None,
                 output_tokens: int = 0, tokens: int = 0, error: str | None = None) -> None:
        self.in_flight = max(0, self.in_flight - 1)
        now = time.time()
        if tokens:
            self._toks[self._bucket(now)] += tokens
        if not ok:
            self.failures += 1
            self.last_error, self.last_error_at = error, now
            return
        self.last_ok_at = now
        if latency is not None:
            self.ewma_latency = _ewma(self.ewma_latency, latency)
            if ttft is None and output_tokens > 0:
                self.ewma_latency_per_token = _ewma(self.ewma_latency_per_token, latency / output_tokens)
        if ttft is not None:
            self.ewma_ttft = _ewma(self.ewma_ttft, ttft)

    def probed(self, ok: bool, seconds: float, error: str | None) -> None:
        """An active probe's outcome (routing/probes.py): reported apart from real traffic."""
        self.last_probe = {"ok": ok, "ms": round(seconds * 1000, 3), "at": time.time(), "error": error}
        if not ok:
            self.last_error, self.last_error_at = error, time.time()

    def abandoned(self) -> None:
        """The attempt ended without a verdict (the client left): it is just no longer in flight."""
        self.in_flight = max(0, self.in_flight - 1)

    def minute_usage(self, now: float | None = None) -> tuple[int, int]:
        """(requests, tokens) in the last minute (six 10-second buckets)."""
        slot = int((time.time() if now is None else now) // 10)
        if slot != self._past_slot:  # the five earlier buckets' sum, once per 10 s
            slots, r, t = self._slot, self._reqs, self._toks
            past = [i for i in range(_BUCKETS) if slot - _BUCKETS < slots[i] < slot]
            self._past = (sum(r[i] for i in past), sum(t[i] for i in past))
            self._past_slot = slot
        i = slot % _BUCKETS
        if self._slot[i] == slot:
            return self._past[0] + self._reqs[i], self._past[1] + self._toks[i]
        return self._past

    def snapshot(self) -> dict[str, object]:
        reqs, toks = self.minute_usage()
        return {"in_flight": self.in_flight, "requests": self.requests, "failures": self.failures,
                "ewma_ttft_ms": _ms(self.ewma_ttft), "ewma_latency_ms": _ms(self.ewma_latency),
                "ewma_ms_per_output_token": _ms(self.ewma_latency_per_token),
                "requests_last_minute": reqs, "tokens_last_minute": toks,
                "last_error": self.last_error, "last_error_at": self.last_error_at, "last_ok_at": self.last_ok_at,
                "last_probe": self.last_probe}


def _ewma(old: float | None, new: float) -> float:
    return new if old is None else old + ALPHA * (new - old)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)
