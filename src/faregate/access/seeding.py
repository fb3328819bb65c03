"""Budget counters and the directory: seeding them from the ledger (after each directory
refresh, in the background) and reading them back for the budget alerts.

For every key, user and team with a budget, the counter of its current period is seeded once
per process with the ledger's spend for that period (`Budgets.seed` keeps a counter another
replica already holds). A period that begins later starts from zero, which is right: no row of
it can exist before it begins. So the request path never reads the database for a budget.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from typing import Any

from faregate.access.budget import Budgets, ledger_spend, period_of
from faregate.access.directory import Directory
from faregate.access.records import Subject

log = logging.getLogger("faregate.access")

_COLUMN = {"key": "key_id", "user": "user_id", "team": "team_id"}


async def seed_budgets(directory: Directory, budgets: Budgets, engine: Any) -> None:
    now = dt.datetime.now(dt.UTC)
    subjects: list[Subject] = directory.live_subjects()
    pending: dict[tuple[str, str, dt.datetime | None], list[tuple[Subject, str, int]]] = defaultdict(list)
    for s in subjects:
        if s.limits.budget_nusd is None and s.kind != "key":  # a key's spend is always kept
            continue
        period, start, ttl = period_of(s.limits.budget_period, now)
        counter = f"{s.scope}@{period}"
        if counter in budgets.seeded:
            continue
        pending[(s.kind, period, start)].append((s, counter, ttl))
    for (kind, _, start), items in pending.items():
        spent = await ledger_spend(engine, _COLUMN[kind], [s.id for s, _, _ in items], start)
        for s, counter, ttl in items:
            await budgets.seed(counter, spent.get(s.id, 0), ttl)
            budgets.seeded.add(counter)


async def budget_statuses(directory: Directory, budgets: Budgets, kind: str | None = None) -> list[Any]:
    """Every budget (of one `kind` of subject, when given) and its spend this period, for the
    budget-threshold alerts and the team budget gauge."""
    from faregate.accounting.alerts import BudgetStatus

    now = dt.datetime.now(dt.UTC)
    out = []
    for s in directory.live_subjects():
        if s.limits.budget_nusd is None or (kind is not None and s.kind != kind):
            continue
        period, _, _ = period_of(s.limits.budget_period, now)
        spent = await budgets.spent(f"{s.scope}@{period}")
        out.append(BudgetStatus(s.scope, spent, s.limits.budget_nusd, period))
    return out
