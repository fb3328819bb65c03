"""Retry budget: retries stay a bounded share of recent traffic, on a fake clock."""

from __future__ import annotations

import pytest

from faregate.routing.retry_budget import RetryBudget, RollingPair


class Clock:
    def __init__(self) -> None:
        self.t = 500.0

    def __call__(self) -> float:
        return self.t


def outage(budget: RetryBudget, clock: Clock, seconds: int, rps: int, retries_each: int = 3) -> tuple[int, int]:
    """Every request fails and wants `retries_each` retries; returns (requests, retries sent)."""
    requests = sent = 0
    for tick in range(seconds * rps):
        clock.t = 500.0 + tick / rps
        budget.record_request()
        requests += 1
        for _ in range(retries_each):
            if not budget.try_spend():
                break  # the budget is spent: give up on this request
            sent += 1
    return requests, sent


def test_outage_retries_stay_within_the_ratio() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.2, min_per_second=1.0, window_seconds=10.0, clock=clock)
    requests, sent = outage(budget, clock, seconds=10, rps=100)
    assert requests == 1000
    assert 190 <= sent <= 0.2 * requests + 10  # 20 % of the traffic (+ the minimum), not 300 %
    snap = budget.snapshot()
    assert snap == {"requests": 1000, "retries": sent, "allowed": 200}
    assert not budget.try_spend()


def test_long_outage_keeps_the_ratio_as_the_window_slides() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.2, min_per_second=1.0, window_seconds=10.0, clock=clock)
    requests, sent = outage(budget, clock, seconds=60, rps=100)
    assert requests == 6000 and sent <= 0.2 * requests + 10
    assert sent >= 0.19 * requests  # and the budget keeps refilling


def test_low_traffic_still_gets_the_minimum() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.2, min_per_second=1.0, window_seconds=10.0, clock=clock)
    budget.record_request()  # one request: 20 % of it is no retry at all
    assert [budget.try_spend() for _ in range(12)] == [True] * 10 + [False] * 2
    assert budget.snapshot() == {"requests": 1, "retries": 10, "allowed": 10}


def test_the_window_slides() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.5, min_per_second=0.0, window_seconds=10.0, clock=clock)
    for _ in range(100):
        budget.record_request()
    assert sum(budget.try_spend() for _ in range(80)) == 50
    clock.t += 5
    assert not budget.try_spend()  # still in the window
    clock.t += 5.5
    assert budget.snapshot() == {"requests": 0, "retries": 0, "allowed": 0}  # all forgotten
    assert not budget.try_spend()  # no traffic, no minimum: nothing to retry against
    budget.record_request()
    budget.record_request()
    assert budget.try_spend() and not budget.try_spend()


def test_rolling_pair_drops_buckets_one_by_one() -> None:
    ring = RollingPair(10.0)  # ten 1 s buckets
    for second in range(10):
        ring.add(100.0 + second, a=1, b=second)
    assert ring.totals(109.5) == (10, 45)
    assert ring.totals(110.0) == (9, 45)  # the bucket of second 0 slid out
    assert ring.totals(114.0) == (5, 35)
    assert ring.totals(200.0) == (0, 0)
    with pytest.raises(ValueError):
        RollingPair(0)
