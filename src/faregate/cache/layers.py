"""`ResponseCache`: the exact layer and the semantic layer behind one find / store / purge,
built from the config. The pipeline stage (stages/cache.py) and the admin API use only this."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from faregate.cache.keys import SEP
from faregate.cache.policy import CachePolicy, GroupCache
from faregate.cache.store import Entry, MemoryStore, Purge, RedisStore
from faregate.config.schema import CacheSettings
from faregate.telemetry.metrics import metrics

if TYPE_CHECKING:  # numpy and the semantic layer load only when a group uses it
    import numpy as np

    from faregate.cache.semantic import SemanticCache

log = logging.getLogger("faregate.cache")


@dataclass(slots=True)
class Found:
    outcome: str  # hit-exact | hit-semantic | miss
    entry: Entry | None = None
    similarity: float | None = None
    vector: np.ndarray | None = None  # the last user turn's, kept for the store after a miss


@dataclass(slots=True)
class Counters:
    """Per layer, since start (this process)."""

    lookups: int = 0
    hits: int = 0
    stores: int = 0
    errors: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"lookups": self.lookups, "hits": self.hits, "stores": self.stores, "errors": self.errors}


@dataclass(slots=True)
class Stats:
    exact: Counters = field(default_factory=Counters)
    semantic: Counters = field(default_factory=Counters)


class ResponseCache:
    def __init__(self, settings: CacheSettings, redis: Any = None, load_embedder: Any = None) -> None:
        self.settings = settings
        self.policy = CachePolicy(settings)
        self.scope = settings.scope
        shared = redis is not None and settings.backend in ("auto", "redis")
        if settings.backend == "redis" and redis is None:
            raise ValueError("cache.backend is 'redis' but no redis_url is configured")
        max_ttl = max([settings.ttl or 0.0, *(g.ttl or 0.0 for g in settings.groups.values())])
        self.exact: MemoryStore | RedisStore = (
            RedisStore(redis, "x", max_ttl) if shared else MemoryStore(settings.max_entries, settings.max_bytes))
        self.semantic: SemanticCache | None = None
        if self.policy.semantic:
            from faregate.cache.semantic import SemanticCache

            self.semantic = SemanticCache(
                load_embedder or _local_embedder(settings.embedder_threads),
                max_entries=settings.max_entries, max_bytes=settings.max_bytes,
                store=RedisStore(redis, "s", max_ttl) if shared else None, make_verifier=_verifier)
        self.stats = Stats()
        self.shared = shared
        self.metrics = metrics()

    async def start(self) -> None:
        if self.semantic is not None:
            await self.semantic.start()

    async def close(self) -> None:
        if self.semantic is not None:
            await self.semantic.close()

    async def find(self, key: str, parts: tuple[str, str] | None, group: GroupCache,
                   max_age: float | None) -> Found:
        now = time.time()
        stats = self.stats
        requests = self.metrics.cache
        stats.exact.lookups += 1
        entry = await self.exact.get(key)
        if entry is not None and entry.fresh(now, max_age):
            stats.exact.hits += 1
            requests.labels("exact", "hit").inc()
            return Found("hit-exact", entry)
        requests.labels("exact", "miss").inc()
        if parts is None or self.semantic is None or not self.semantic.ready:
            return Found("miss")
        stats.semantic.lookups += 1
        match, vector = await self.semantic.lookup(parts[0], parts[1], group.threshold, group.verify, max_age)
        if match is None:
            requests.labels("semantic", "miss").inc()
            return Found("miss", vector=vector)
        stats.semantic.hits += 1
        requests.labels("semantic", "hit").inc()
        return Found("hit-semantic", match.entry, match.similarity, vector)

    def bypassed(self) -> None:
        self.metrics.cache.labels("none", "bypass").inc()

    async def store(self, key: str, parts: tuple[str, str] | None, vector: np.ndarray | None,
                    entry: Entry) -> bool:
        """Store a fresh answer under its exact key (and its meaning); False if too large."""
        entry.size = len(entry.dumps())
        if entry.size > self.settings.max_entry_bytes:
            return False
        await self.exact.put(key, entry)
        self.stats.exact.stores += 1
        if parts is not None and self.semantic is not None and self.semantic.ready:
            await self.semantic.add(f"{parts[0]}{SEP}{entry.created:.6f}", parts[0], parts[1], vector,
                                    Entry(entry.response, entry.created, entry.expires, entry.deployment,
                                          entry.cost_nusd, size=entry.size))
            self.stats.semantic.stores += 1
        return True

    async def purge(self, what: Purge) -> dict[str, int]:
        out = {"exact": await self.exact.purge(what)}
        if self.semantic is not None:
            out["semantic"] = await self.semantic.purge(what)
        return out

    async def describe(self) -> dict[str, Any]:
        try:
            entries, size = await self.exact.size()
        except Exception as exc:  # the backend is unreachable: say so, keep the counters
            log.warning("cache stats: %s: %s", type(exc).__name__, exc)
            entries = size = None
        layers: dict[str, Any] = {"exact": {"entries": entries, "bytes": size, **self.stats.exact.as_dict()}}
        if self.semantic is not None:
            s = self.semantic
            layers["semantic"] = {"entries": len(s), "ready": s.ready, "rejected_by_verifier": s.rejected,
                                  "evictions": s.evictions, **self.stats.semantic.as_dict()}
        for layer in layers.values():
            layer["hit_rate"] = round(layer["hits"] / layer["lookups"], 4) if layer["lookups"] else None
        return {"backend": "redis" if self.shared else "memory", "scope": self.scope, "layers": layers}


def _local_embedder(threads: int) -> Any:
    def load(loop: Any) -> Any:
        from faregate.cache.embedder import LocalEmbedder

        return LocalEmbedder(threads=threads)

    return load


def _verifier(embedder: Any) -> Any:
    from faregate.cache.verify import Verifier

    return Verifier(word_vectors=embedder.embed)
