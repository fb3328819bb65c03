"""Cached entries: in-process (LRU with TTL, an entry and a byte bound) or in Redis (shared by
replicas; TTL per entry, bounded by Redis's own maxmemory policy).

An entry key is `scope␟model group␟hash` (cache/keys.py), so purges by tenant or model group
read the key alone. In Redis every entry is one string (`fg:cache:<layer>:<key>`, orjson,
expiring with the entry) plus a member of one sorted set per layer scored by creation time,
which purges walk.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from faregate.cache.keys import split_key


@dataclass(slots=True)
class Entry:
    response: dict[str, Any]  # the canonical (OpenAI-shaped) response, usage included
    created: float  # epoch seconds
    expires: float
    deployment: str | None  # what served it: prices the saving of a later hit
    cost_nusd: int  # what it cost then (used when that deployment is gone)
    text: str | None = None  # semantic entries: the user turn it answered
    size: int = 0

    def dumps(self) -> bytes:
        return orjson.dumps({"r": self.response, "c": self.created, "e": self.expires,
                             "d": self.deployment, "n": self.cost_nusd, "t": self.text})

    @classmethod
    def loads(cls, raw: bytes) -> Entry:
        d = orjson.loads(raw)
        return cls(d["r"], d["c"], d["e"], d["d"], d["n"], d.get("t"), len(raw))

    def fresh(self, now: float, max_age: float | None) -> bool:
        return now < self.expires and (max_age is None or now - self.created <= max_age)


@dataclass(frozen=True, slots=True)
class Purge:
    """Which entries a purge removes: all of them, or those matching every given field."""

    scope: str | None = None
    group: str | None = None
    before: float | None = None  # created before this epoch second

    def matches(self, key: str, created: float) -> bool:
        if self.before is not None and created >= self.before:
            return False
        if self.scope is None and self.group is None:
            return True
        scope, group = split_key(key)
        return (self.scope is None or scope == self.scope) and (self.group is None or group == self.group)


class MemoryStore:
    """Least recently used goes first when either bound is reached."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
        self.evictions = 0
        self._entries: OrderedDict[str, Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> Entry | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if time.time() >= entry.expires:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry

    async def put(self, key: str, entry: Entry) -> None:
        if not entry.size:
            entry.size = len(entry.dumps())
        if key in self._entries:
            self._drop(key)
        self._entries[key] = entry
        self.bytes += entry.size
        while len(self._entries) > self.max_entries or self.bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))
            self.evictions += 1

    async def purge(self, what: Purge) -> int:
        doomed = [k for k, e in self._entries.items() if what.matches(k, e.created)]
        for key in doomed:
            self._drop(key)
        return len(doomed)

    async def size(self) -> tuple[int, int]:
        return len(self._entries), self.bytes

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key)
        self.bytes -= entry.size


class RedisStore:
    """The same operations on Redis; `max_ttl` trims the index of entries Redis expired."""

    def __init__(self, redis: Any, layer: str, max_ttl: float) -> None:
        self.redis = redis
        self.prefix = f"fg:cache:{layer}:"
        self.index = f"fg:cache:{layer}:index"
        self.max_ttl = max_ttl
        self.evictions = 0
        self._puts = 0

    async def get(self, key: str) -> Entry | None:
        raw = await self.redis.get(self.prefix + key)
        return None if raw is None else Entry.loads(raw)

    async def put(self, key: str, entry: Entry) -> None:
        raw = entry.dumps()
        entry.size = len(raw)
        ttl_ms = max(1, int((entry.expires - entry.created) * 1000))
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(self.prefix + key, raw, px=ttl_ms)
        pipe.zadd(self.index, {key: entry.created})
        self._puts += 1
        if self._puts % 100 == 1:  # now and then, forget index members Redis has expired
            pipe.zremrangebyscore(self.index, "-inf", time.time() - self.max_ttl)
        await pipe.execute()

    async def delete(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        if keys:
            pipe = self.redis.pipeline(transaction=False)
            pipe.delete(*(self.prefix + k for k in keys))
            pipe.zrem(self.index, *keys)
            await pipe.execute()

    async def purge(self, what: Purge) -> int:
        removed = 0
        batch: list[str] = []
        async for member, created in self.redis.zscan_iter(self.index, count=1000):
            key = member.decode() if isinstance(member, bytes) else member
            if what.matches(key, created):
                batch.append(key)
                if len(batch) >= 500:
                    removed += len(batch)
                    await self.delete(batch)
                    batch = []
        removed += len(batch)
        await self.delete(batch)
        return removed

    async def size(self) -> tuple[int, int | None]:
        await self.redis.zremrangebyscore(self.index, "-inf", time.time() - self.max_ttl)
        return int(await self.redis.zcard(self.index)), None
