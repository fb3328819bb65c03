"""Spend anomaly alerts, checked in the background (never on the request path).

Three detectors run on every `AlertMonitor.check()`: a user's spend spike over the last hour,
a feature whose cost per call doubled week over week (both from the ledger, SQLAlchemy Core,
portable between SQLite and PostgreSQL), and budget thresholds (from a callable the gateway
supplies). Each alert is delivered at most once per its window — across replicas when a Redis
client is given — as a WARNING on `faregate.alerts`, Prometheus metrics and an optional
Slack-compatible webhook. See docs/alerts.md.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import statistics
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, Counter, Gauge

if TYPE_CHECKING:  # SQLAlchemy is imported at the first check, off the start-up path
    from sqlalchemy.ext.asyncio import AsyncEngine

    from faregate.config.schema import AlertSettings, SloSettings

log = logging.getLogger("faregate.alerts")

KINDS = ("user_spend_spike", "feature_cost_doubled", "budget_threshold", "slo_violation")
_NANO = Decimal(1_000_000_000)
_HOURS_7D = 168
_MIN_CALLS = 20
_HOUR, _WEEK = dt.timedelta(hours=1), dt.timedelta(days=7)
_TTL_HOUR, _TTL_WEEK, _TTL_PERIOD, _TTL_LIFETIME = 2 * 3600, 8 * 86400, 32 * 86400, 3650 * 86400
_WEBHOOK_TIMEOUT = 5.0
_REDIS_PREFIX = "faregate:alert:"


def _metric(cls: type, name: str, doc: str) -> Any:
    """One metric object per process, even if this module is imported twice (reload, two paths)."""
    try:
        return cls(name, doc, ["kind"])
    except ValueError:  # already registered
        return REGISTRY._names_to_collectors[name]  # type: ignore[attr-defined]


ALERTS_SENT = _metric(Counter, "faregate_spend_alerts_total", "Spend alerts delivered, by kind.")
ALERTS_ACTIVE = _metric(Gauge, "faregate_spend_alerts_active",
                        "Subjects in alert at the latest check, by kind.")
for _kind in KINDS:  # every kind shows up as 0 before its first alert
    ALERTS_SENT.labels(kind=_kind)
    ALERTS_ACTIVE.labels(kind=_kind)


@dataclass(frozen=True)
class BudgetStatus:
    """One key/user/team budget as the gateway counts it."""

    scope: str  # "key:key_ab12", "user:alice", "team:ml" — never a key secret
    spent_nusd: int
    budget_nusd: int
    period_start: str  # the period's id: "2026-11-23", "2026-W48", "2026-11" or "lifetime"


@dataclass(frozen=True)
class Alert:
    kind: str
    subject: str  # user id, feature name or budget scope
    value: Decimal  # spike: USD in the last hour; feature: USD per call; budget: spent / budget
    threshold: Decimal  # what `value` crossed, same unit
    window: str  # the dedupe window: "2026-11-25T10Z", "2026-W48", the budget's period_start
    message: str

    def payload(self) -> dict[str, Any]:
        fields = {"kind": self.kind, "subject": self.subject, "value": str(self.value),
                  "threshold": str(self.threshold), "window": self.window}
        return {"text": f":rotating_light: faregate {self.kind}: {self.message}", "alert": fields}


BudgetSource = Callable[[], Awaitable[list[BudgetStatus]]]
_Found = tuple[Alert, str, int]  # the alert, its dedupe key, the key's lifetime in seconds


def _usd(nano: int | Decimal) -> Decimal:
    """USD to the nano-dollar (a cost per call or a median is not a whole nano-dollar)."""
    return (Decimal(nano) / _NANO).quantize(Decimal("1e-9"))


def _fmt_usd(nano: int | Decimal) -> str:
    return f"${_usd(nano).normalize():f}"  # "$0.3", "$0.0000025"


def _clean(text: str) -> str:
    """Ids come from configs and headers: keep a log line one line."""
    return "".join(c if c.isprintable() else "?" for c in text)[:200]


class AlertMonitor:
    def __init__(self, settings: AlertSettings,
                 engine: AsyncEngine | Callable[[], Awaitable[AsyncEngine]], *,
                 budget_status: BudgetSource | None = None, redis: Any = None,
                 slo: SloSettings | None = None) -> None:
        self.settings = settings
        is_engine = hasattr(engine, "connect")  # an AsyncEngine, or a coroutine function
        self._engine: AsyncEngine | None = engine if is_engine else None  # type: ignore[assignment]
        self._engine_factory = None if is_engine else engine
        self.budget_status = budget_status
        self.slo = slo
        self.redis = redis  # a redis.asyncio.Redis, shared by replicas; None: in-process only
        self._seen: dict[str, dt.datetime] = {}  # dedupe key -> expiry
        self._session: Any = None  # aiohttp.ClientSession, opened at the first webhook

    async def _get_engine(self) -> AsyncEngine:
        if self._engine is None:
            assert self._engine_factory is not None
            self._engine = await self._engine_factory()
        return self._engine

    # -- detectors: each returns every subject in alert now, deduped or not ----------------

    async def _user_spikes(self, now: dt.datetime) -> list[_Found]:
        from sqlalchemy import case, func, select

        from faregate.storage.tables import requests

        t, hour_start = requests.c, now - _HOUR
        query = (select(t.user_id, func.sum(t.cost_nusd),
                        func.sum(case((t.created_at >= hour_start, t.cost_nusd), else_=0)))
                 .where(t.user_id.is_not(None), t.created_at >= now - _WEEK, t.created_at < now)
                 .group_by(t.user_id))
        async with (await self._get_engine()).connect() as conn:
            rows = [(u, int(w or 0), int(h or 0)) for u, w, h in (await conn.execute(query)).all()]
        if not rows:
            return []
        median_7d = statistics.median(Decimal(w) for _, w, _ in rows)  # nano-USD, maybe x.5
        factor = Decimal(str(self.settings.user_spike_factor))
        floor = self.settings.min_spend_usd * _NANO
        threshold = max(factor * median_7d / _HOURS_7D, floor)
        window = now.strftime("%Y-%m-%dT%HZ")
        found = []
        for user, _, hour in rows:
            # hour > factor * median / 168, kept exact by multiplying out the division
            if hour * _HOURS_7D > factor * median_7d and hour > floor:
                msg = (f"user {user} spent {_fmt_usd(hour)} in the last hour; threshold "
                       f"{_fmt_usd(threshold)} ({factor}x the median user's hourly average "
                       f"{_fmt_usd(median_7d / _HOURS_7D)} over 7 days)")
                alert = Alert("user_spend_spike", user, _usd(hour), _usd(threshold), window, msg)
                found.append((alert, f"user_spend_spike|{user}|{window}", _TTL_HOUR))
        return found

    async def _feature_costs(self, now: dt.datetime) -> list[_Found]:
        from sqlalchemy import case, func, select

        from faregate.storage.tables import requests

        t, mid = requests.c, now - _WEEK
        recent = t.created_at >= mid
        query = (select(t.feature,
                        func.sum(case((recent, t.cost_nusd), else_=0)),
                        func.sum(case((recent, 1), else_=0)),
                        func.sum(case((recent, 0), else_=t.cost_nusd)),
                        func.sum(case((recent, 0), else_=1)))
                 .where(t.feature.is_not(None), t.created_at >= mid - _WEEK, t.created_at < now)
                 .group_by(t.feature))
        async with (await self._get_engine()).connect() as conn:
            rows = (await conn.execute(query)).all()
        factor = Decimal(str(self.settings.feature_cost_factor))
        iso = now.isocalendar()
        window = f"{iso.year}-W{iso.week:02d}"
        found = []
        for feature, cost_now, n_now, cost_before, n_before in rows:
            cost_now, n_now = int(cost_now or 0), int(n_now or 0)
            cost_before, n_before = int(cost_before or 0), int(n_before or 0)
            if n_now < _MIN_CALLS or n_before < _MIN_CALLS or cost_before <= 0:
                continue
            # cost_now / n_now >= factor * cost_before / n_before, exactly
            if cost_now * n_before >= factor * cost_before * n_now:
                per_now, per_before = Decimal(cost_now) / n_now, Decimal(cost_before) / n_before
                msg = (f"feature {feature} cost {_fmt_usd(per_now)} per call over the last 7 days "
                       f"({n_now} calls), {(per_now / per_before).quantize(Decimal('0.01'))}x the "
                       f"{_fmt_usd(per_before)} of the 7 days before ({n_before} calls)")
                alert = Alert("feature_cost_doubled", feature, _usd(per_now),
                              _usd(factor * per_before), window, msg)
                found.append((alert, f"feature_cost_doubled|{feature}|{window}", _TTL_WEEK))
        return found

    async def _budgets(self) -> list[_Found]:
        if self.budget_status is None:
            return []
        found = []
        for b in await self.budget_status():
            if b.budget_nusd <= 0:
                continue
            used = Decimal(b.spent_nusd) / b.budget_nusd
            ttl = _TTL_LIFETIME if b.period_start == "lifetime" else _TTL_PERIOD
            for frac in sorted({Decimal(str(x)) for x in self.settings.budget_thresholds}):
                if b.spent_nusd >= frac * b.budget_nusd:
                    msg = (f"{b.scope} spent {_fmt_usd(b.spent_nusd)} of its "
                           f"{_fmt_usd(b.budget_nusd)} budget ({used:.0%}) in the period from "
                           f"{b.period_start}; threshold {frac:.0%}")
                    alert = Alert("budget_threshold", b.scope, used.quantize(Decimal("0.0001")),
                                  frac, b.period_start, msg)
                    found.append((alert, f"budget_threshold|{b.scope}|{frac}|{b.period_start}", ttl))
        return found

    async def _slo(self, now: dt.datetime) -> list[_Found]:
        if self.slo is None or not self.slo.targets:
            return []
        from faregate.telemetry.slo import violations

        hour = now.strftime("%Y-%m-%dT%HZ")
        return [(Alert("slo_violation", subject, actual, goal, hour, message), f"slo_violation|{subject}|{hour}", _TTL_HOUR)
                for subject, _, actual, goal, message in await violations(await self._get_engine(), self.slo, now)]

    # -- delivery --------------------------------------------------------------------------

    async def _claim(self, key: str, ttl: int, now: dt.datetime) -> bool:
        """True for exactly one caller per key (per process, or per Redis when given)."""
        if self.redis is not None:
            try:
                return bool(await self.redis.set(_REDIS_PREFIX + key, 1, nx=True, ex=ttl))
            except Exception as exc:  # fail open: a duplicate alert beats a lost one
                log.error("alert dedupe in Redis failed (%s); deduping in this process only",
                          type(exc).__name__)
        if len(self._seen) > 10_000:
            self._seen = {k: exp for k, exp in self._seen.items() if exp > now}
        exp = self._seen.get(key)
        if exp is not None and exp > now:
            return False
        self._seen[key] = now + dt.timedelta(seconds=ttl)
        return True

    async def _deliver(self, alert: Alert) -> None:
        log.warning("spend alert %s subject=%s value=%s threshold=%s window=%s: %s", alert.kind,
                    _clean(alert.subject), alert.value, alert.threshold, alert.window,
                    _clean(alert.message))
        ALERTS_SENT.labels(kind=alert.kind).inc()
        if self.settings.webhook_url:
            await self._post(alert)

    async def _post(self, alert: Alert) -> None:
        import aiohttp

        try:
            if self._session is None:
                self._session = aiohttp.ClientSession(
                    timeout=aiohttp.ClientTimeout(total=_WEBHOOK_TIMEOUT))
            async with self._session.post(self.settings.webhook_url, json=alert.payload()) as resp:
                if resp.status >= 400:
                    log.error("alert webhook answered %d for %s", resp.status, alert.kind)
        except Exception as exc:  # the URL may hold a token: never logged
            log.error("alert webhook failed for %s: %s", alert.kind, type(exc).__name__)

    # -- the public surface ----------------------------------------------------------------

    async def check(self, now: dt.datetime | None = None) -> list[Alert]:
        """Run the detectors once; deliver and return the alerts not delivered before."""
        now = dt.datetime.now(dt.UTC) if now is None else now
        now = now.replace(tzinfo=dt.UTC) if now.tzinfo is None else now.astimezone(dt.UTC)
        detectors: list[tuple[str, Callable[[], Awaitable[list[_Found]]]]] = [
            ("user_spend_spike", lambda: self._user_spikes(now)),
            ("feature_cost_doubled", lambda: self._feature_costs(now)),
            ("budget_threshold", self._budgets),
            ("slo_violation", lambda: self._slo(now)),
        ]
        sent = []
        for kind, detector in detectors:
            try:
                found = await detector()
            except Exception:  # one broken detector does not silence the others
                log.exception("spend alert check %s failed", kind)
                continue
            ALERTS_ACTIVE.labels(kind=kind).set(len({a.subject for a, _, _ in found}))
            for alert, key, ttl in found:
                if await self._claim(key, ttl, now):
                    await self._deliver(alert)
                    sent.append(alert)
        return sent

    async def run(self) -> None:
        """Check every `interval_seconds` until cancelled; an error is logged, never fatal."""
        if not self.settings.enabled:
            return
        while True:
            try:
                await self.check()
            except Exception:
                log.exception("spend alert check failed")
            await asyncio.sleep(self.settings.interval_seconds)

    async def close(self) -> None:
        """Close the webhook session. The engine and the Redis client belong to the caller."""
        if self._session is not None:
            await self._session.close()
            self._session = None
