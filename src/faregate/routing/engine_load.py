"""Load of self-hosted engines (vLLM, SGLang, TGI), scraped from their Prometheus `/metrics`.

A self-hosted deployment with a metrics URL is polled every `scrape_interval`. When its queue
(requests waiting) or its KV-cache usage goes above the thresholds it is *overloaded*: the router
sends new requests to the group's overflow deployments until both are back at or below their
recover levels (hysteresis, so the decision does not flap around one threshold).

If no scrape has succeeded for `stale_after` seconds, the load is *unknown* and the deployment
counts as NOT overloaded. A broken metrics endpoint must not send all traffic to the paid APIs;
a dead engine is handled by retries and fallbacks. Until then a failed scrape keeps the last
state, because an overloaded engine is often slow to answer `/metrics` too.

    monitor = EngineMonitor({"llama#0": ("http://gpu1:8000/metrics", EngineThresholds(max_waiting=16))})
    await monitor.start()
    monitor.overloaded("llama#0")    # sync, O(1): read on every request
    monitor.snapshot()               # for a health endpoint
    await monitor.close()

The metrics URL comes from the operator's config, never from a client. Only http and https are
accepted. Credentials in it (`http://user:pass@host/metrics`) are sent as basic auth and never
logged or shown. Reading the page itself (metric names per engine): routing/engine_metrics.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from faregate.core.tasks import stop_task
from faregate.routing.engine_metrics import FLAVORS, EngineMetrics, parse_metrics

__all__ = [
    "FLAVORS", "EngineLoad", "EngineMetrics", "EngineMonitor", "EngineThresholds", "ScrapeError",
    "MAX_METRICS_BYTES", "MAX_SCRAPE_TIMEOUT", "check_metrics_url", "parse_metrics", "redact_url",
]

log = logging.getLogger("faregate.routing")

MAX_SCRAPE_TIMEOUT = 2.0  # seconds; a scrape also never takes longer than its interval
MAX_METRICS_BYTES = 16 * 1024 * 1024


# --------------------------------------------------------------------------- state, hysteresis

@dataclass(frozen=True, slots=True)
class EngineLoad:
    """What is known of one engine's load after the last scrape."""

    waiting: int | None = None
    running: int | None = None
    kv_usage: float | None = None  # 0..1; None: unknown or not reported
    scraped_at: float | None = None  # time.monotonic() of the last successful scrape
    error: str | None = None  # the last scrape's error; None when it succeeded
    overloaded: bool = False
    flavor: str | None = None  # the engine the page was read as


@dataclass(frozen=True, slots=True)
class EngineThresholds:
    """When a deployment counts as overloaded, and how it is scraped. A None threshold is not
    checked; recover levels default to half of `max_waiting` (rounded down) and to
    `max_kv_usage - 0.1`. Raises ValueError on inconsistent values."""

    max_waiting: int | None = 8  # overloaded when more requests than this wait
    max_kv_usage: float | None = 0.9  # overloaded when KV-cache usage is above this (0..1)
    recover_waiting: int | None = None  # recovered when waiting <= this ...
    recover_kv_usage: float | None = None  # ... and KV usage <= this
    scrape_interval: float = 2.0
    stale_after: float = 10.0  # no successful scrape for this long: load unknown, not overloaded
    flavor: str = "auto"  # "auto" | "vllm" | "sglang" | "tgi"

    def __post_init__(self) -> None:
        if self.flavor not in FLAVORS:
            raise ValueError(f"flavor must be one of {', '.join(FLAVORS)}, got {self.flavor!r}")
        if not (isinstance(self.scrape_interval, int | float) and self.scrape_interval > 0):
            raise ValueError("scrape_interval must be a positive number of seconds")
        if not (isinstance(self.stale_after, int | float) and self.stale_after > self.scrape_interval):
            raise ValueError("stale_after must be longer than scrape_interval")
        if self.max_waiting is not None and self.max_waiting < 0:
            raise ValueError("max_waiting must not be negative")
        if self.max_kv_usage is not None and not 0 < self.max_kv_usage <= 1:
            raise ValueError("max_kv_usage must be a fraction in (0, 1]")
        recover_waiting, recover_kv = self.recover_waiting, self.recover_kv_usage
        if self.max_waiting is None:
            if recover_waiting is not None:
                raise ValueError("recover_waiting needs max_waiting")
        elif recover_waiting is None:
            recover_waiting = self.max_waiting // 2
        elif not 0 <= recover_waiting <= self.max_waiting:
            raise ValueError("recover_waiting must be between 0 and max_waiting")
        if self.max_kv_usage is None:
            if recover_kv is not None:
                raise ValueError("recover_kv_usage needs max_kv_usage")
        elif recover_kv is None:
            recover_kv = max(0.0, round(self.max_kv_usage - 0.1, 9))
        elif not 0 <= recover_kv <= self.max_kv_usage:
            raise ValueError("recover_kv_usage must be between 0 and max_kv_usage")
        object.__setattr__(self, "recover_waiting", recover_waiting)
        object.__setattr__(self, "recover_kv_usage", recover_kv)

    @property
    def scrape_timeout(self) -> float:
        return min(MAX_SCRAPE_TIMEOUT, self.scrape_interval)

    def trip_reason(self, waiting: int | None, kv: float | None) -> str | None:
        """Why these values are above the thresholds, or None if they are not."""
        reasons = []
        if self.max_waiting is not None and waiting is not None and waiting > self.max_waiting:
            reasons.append(f"waiting {waiting} > {self.max_waiting}")
        if self.max_kv_usage is not None and kv is not None and kv > self.max_kv_usage:
            reasons.append(f"KV cache {kv:.0%} > {self.max_kv_usage:.0%}")
        return ", ".join(reasons) or None

    def recovered(self, waiting: int | None, kv: float | None) -> bool:
        """Both values at or below their recover levels (an unknown value does not hold it back)."""
        return ((self.recover_waiting is None or waiting is None or waiting <= self.recover_waiting)
                and (self.recover_kv_usage is None or kv is None or kv <= self.recover_kv_usage))

    def stale(self, state: EngineLoad | None, now: float) -> bool:
        """No successful scrape within `stale_after`."""
        return state is None or state.scraped_at is None or now - state.scraped_at > self.stale_after

    def update(self, state: EngineLoad | None, waiting: int | None, running: int | None, kv: float | None,
               now: float | None = None, flavor: str | None = None) -> EngineLoad:
        """The state after a successful scrape. Overloaded when a value is above its threshold;
        once overloaded, it stays so until both are at or below their recover levels. A stale
        previous state starts over (not overloaded)."""
        now = time.monotonic() if now is None else now
        was = state is not None and state.overloaded and not self.stale(state, now)
        if self.trip_reason(waiting, kv) is not None:
            overloaded = True
        else:
            overloaded = was and not self.recovered(waiting, kv)
        return EngineLoad(waiting, running, kv, now, None, overloaded, flavor)

    def failed(self, state: EngineLoad | None, error: str, now: float | None = None) -> EngineLoad:
        """The state after a failed scrape: the last values are kept, and so is `overloaded`
        until the state is stale; then the load is unknown and the deployment not overloaded."""
        now = time.monotonic() if now is None else now
        if state is None:
            return EngineLoad(error=error)
        overloaded = state.overloaded and not self.stale(state, now)
        return EngineLoad(state.waiting, state.running, state.kv_usage, state.scraped_at, error, overloaded,
                          state.flavor)


# ------------------------------------------------------------------------------------- URLs

def check_metrics_url(url: str) -> None:
    """Raises ValueError unless `url` is an absolute http(s) URL with a host."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        _ = parts.port  # raises ValueError on a bad port
    except (TypeError, ValueError, AttributeError):
        raise ValueError(f"metrics URL is not a URL: {redact_url(str(url))!r}") from None
    if parts.scheme not in ("http", "https") or not host:
        raise ValueError(f"metrics URL must be an http:// or https:// URL with a host, got {redact_url(url)!r}")


def redact_url(url: str) -> str:
    """`url` fit for logs: without user, password, query and fragment."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc.rpartition("@")[2]
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    except ValueError:
        return "<invalid URL>"


def _scrub(message: str, url: str) -> str:
    """An error message with the URL's secrets (userinfo, query) removed."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    secrets = [url, userinfo, parts.password or "", parts.query]
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        message = message.replace(secret, redact_url(url) if secret == url else "***")
    return message


# ---------------------------------------------------------------------------------- monitor

Fetch = Callable[[str], Awaitable[str]]


class ScrapeError(Exception):
    pass


class EngineMonitor:
    """Scrapes each target's metrics on its own interval (one background task) and keeps each
    deployment's `EngineLoad`. `targets`: deployment id -> (metrics URL, thresholds).
    `fetch(url) -> page text` replaces the built-in aiohttp client (tests, custom auth)."""

    def __init__(self, targets: Mapping[str, tuple[str, EngineThresholds | None]], fetch: Fetch | None = None) -> None:
        self._targets: dict[str, tuple[str, EngineThresholds]] = {}
        for deployment_id, (url, thresholds) in targets.items():
            check_metrics_url(url)
            self._targets[deployment_id] = (url, thresholds or EngineThresholds())
        self._fetch = fetch
        self._loads: dict[str, EngineLoad] = {}
        self._overloaded_until: dict[str, float] = {}  # monotonic time the overloaded state goes stale
        self._session: Any = None  # aiohttp.ClientSession when `fetch` is the built-in one
        self._task: asyncio.Task[None] | None = None

    # ---- read side (the router, health)

    def overloaded(self, deployment_id: str) -> bool:
        """Whether new requests should overflow from this deployment. O(1), no I/O."""
        until = self._overloaded_until.get(deployment_id)
        return until is not None and time.monotonic() <= until

    def load(self, deployment_id: str) -> EngineLoad | None:
        return self._loads.get(deployment_id)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Per deployment: status ("pending" | "ok" | "overloaded" | "unknown"), the last values,
        the last error, the thresholds and the (redacted) metrics URL."""
        now = time.monotonic()
        out: dict[str, dict[str, Any]] = {}
        for deployment_id, (url, th) in self._targets.items():
            load = self._loads.get(deployment_id)
            if load is None:
                status = "pending"
            elif th.stale(load, now):
                status = "unknown"
            else:
                status = "overloaded" if self.overloaded(deployment_id) else "ok"
            out[deployment_id] = {
                "status": status,
                "overloaded": status == "overloaded",
                "metrics_url": redact_url(url),
                "flavor": (load.flavor if load else None) or (th.flavor if th.flavor != "auto" else None),
                "waiting": load.waiting if load else None,
                "running": load.running if load else None,
                "kv_usage": load.kv_usage if load else None,
                "last_success_age_s": round(now - load.scraped_at, 3) if load and load.scraped_at is not None else None,
                "error": load.error if load else None,
                "thresholds": {"max_waiting": th.max_waiting, "recover_waiting": th.recover_waiting,
                               "max_kv_usage": th.max_kv_usage, "recover_kv_usage": th.recover_kv_usage,
                               "scrape_interval": th.scrape_interval, "stale_after": th.stale_after},
            }
        return out

    # ---- lifecycle

    async def start(self) -> None:
        """Start the background scraping (first scrape at once). No-op without targets."""
        if self._task is not None or not self._targets:
            return
        if self._fetch is None:
            import aiohttp

            self._session = aiohttp.ClientSession(headers={"Accept": "text/plain"})
            self._fetch = self._http_fetch
        self._task = asyncio.create_task(self._run(), name="faregate-engine-load")

    async def close(self) -> None:
        task, self._task = self._task, None
        await stop_task(task)
        session, self._session = self._session, None
        if session is not None:
            self._fetch = None
            await session.close()

    async def __aenter__(self) -> EngineMonitor:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def refresh(self) -> None:
        """Scrape every target once, now (concurrently). Needs `fetch` or a started monitor."""
        if self._fetch is None:
            raise RuntimeError("EngineMonitor.refresh needs a fetch function or start()")
        await asyncio.gather(*(self._scrape(d) for d in self._targets))

    # ---- scraping

    async def _run(self) -> None:
        now = time.monotonic()
        due = dict.fromkeys(self._targets, now)
        inflight: dict[str, asyncio.Task[None]] = {}
        try:
            while True:
                now = time.monotonic()
                for deployment_id, at in due.items():
                    if at > now:
                        continue
                    interval = self._targets[deployment_id][1].scrape_interval
                    due[deployment_id] = at + interval if at + interval > now else now + interval
                    if deployment_id in inflight:  # still running (it times out within the interval)
                        continue
                    task = asyncio.create_task(self._scrape(deployment_id))
                    inflight[deployment_id] = task
                    task.add_done_callback(lambda _t, d=deployment_id: inflight.pop(d, None))
                await asyncio.sleep(max(0.0, min(due.values()) - time.monotonic()))
        finally:
            pending = list(inflight.values())
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _scrape(self, deployment_id: str) -> None:
        url, th = self._targets[deployment_id]
        fetch = self._fetch
        assert fetch is not None
        error: str
        try:
            async with asyncio.timeout(th.scrape_timeout):
                text = await fetch(url)
            metrics = parse_metrics(text, th.flavor)
        except TimeoutError:
            error = f"timed out after {th.scrape_timeout:g}s"
        except Exception as exc:  # any failure is one failed scrape
            error = _scrub(f"{type(exc).__name__}: {exc}" if not isinstance(exc, ScrapeError) else str(exc), url)
        else:
            prev = self._loads.get(deployment_id)
            self._store(deployment_id, th.update(prev, metrics.waiting, metrics.running, metrics.kv_usage,
                                                  time.monotonic(), metrics.flavor))
            return
        self._store(deployment_id, th.failed(self._loads.get(deployment_id), error, time.monotonic()))

    async def _http_fetch(self, url: str) -> str:
        session = self._session
        assert session is not None
        async with session.get(url) as resp:
            if resp.status != 200:
                raise ScrapeError(f"HTTP {resp.status}")
            chunks, size = [], 0
            async for chunk in resp.content.iter_chunked(65536):
                size += len(chunk)
                if size > MAX_METRICS_BYTES:
                    raise ScrapeError(f"metrics page larger than {MAX_METRICS_BYTES // (1024 * 1024)} MiB")
                chunks.append(chunk)
            return b"".join(chunks).decode(resp.charset or "utf-8", "replace")

    def _store(self, deployment_id: str, new: EngineLoad) -> None:
        url, th = self._targets[deployment_id]
        prev = self._loads.get(deployment_id)
        self._loads[deployment_id] = new
        if new.overloaded and new.scraped_at is not None:
            self._overloaded_until[deployment_id] = new.scraped_at + th.stale_after
        else:
            self._overloaded_until.pop(deployment_id, None)

        was_overloaded = prev is not None and prev.overloaded
        # the router's view: an overloaded state expires once stale, whether a scrape saw it or not
        overflowing = was_overloaded and not th.stale(prev, time.monotonic())
        if new.overloaded and not overflowing:
            log.info("deployment %s overloaded: %s; overflow on", deployment_id,
                     th.trip_reason(new.waiting, new.kv_usage) or "above thresholds")
        elif was_overloaded and not new.overloaded:
            if new.error is None:
                log.info("deployment %s recovered: %s; overflow off", deployment_id, _describe(new))
            else:
                log.warning("deployment %s: no metrics for %gs (%s); load unknown, overflow off",
                            deployment_id, th.stale_after, new.error)
        if new.error is not None and (prev is None or prev.error is None):
            log.warning("deployment %s: metrics scrape of %s failed: %s", deployment_id, redact_url(url), new.error)
        elif new.error is None and prev is not None and prev.error is not None:
            log.info("deployment %s: metrics scrape of %s works again", deployment_id, redact_url(url))


def _describe(load: EngineLoad) -> str:
    parts = []
    if load.waiting is not None:
        parts.append(f"waiting {load.waiting}")
    if load.kv_usage is not None:
        parts.append(f"KV cache {load.kv_usage:.0%}")
    return ", ".join(parts) or "no load gauges"
