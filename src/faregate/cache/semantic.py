"""The semantic layer: answer a chat whose last user turn means the same as a cached one's.

A lookup embeds the turn, scans its partition (cache/keys.py: same tenant, model group, system
prompt, parameters and earlier turns) for the closest entries above the threshold, and serves
the best one that also passes the same-intent check (cache/verify.py). All index work runs on
one thread of its own, in order, so the event loop never waits on numpy or the model and the
index needs no locks.

With Redis, responses are stored there (cache/store.py) and every add or purge is appended to
the stream `fg:cache:s:log`; each replica replays that stream at start and then follows it, so
all of them index the same entries (Debian's Redis has no vector search). The log is trimmed to
about twice `max_entries`: a replica started later does not see entries older than that.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from faregate.cache.index import VectorIndex
from faregate.cache.store import Entry, Purge, RedisStore
from faregate.core.tasks import stop_task

log = logging.getLogger("faregate.cache")
LOG = "fg:cache:s:log"


@dataclass(slots=True)
class _Meta:
    partition: str
    text: str
    created: float
    expires: float
    entry: Entry | None  # in-process mode: the response itself; with Redis it lives there


@dataclass(frozen=True, slots=True)
class Match:
    key: str
    entry: Entry
    similarity: float


class SemanticCache:
    def __init__(self, load_embedder: Callable[[asyncio.AbstractEventLoop], Any], *, max_entries: int, max_bytes: int,
                 store: RedisStore | None = None, make_verifier: Callable[[Any], Any] | None = None) -> None:
        self._load_embedder = load_embedder
        self._make_verifier = make_verifier
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.store = store  # None: in-process
        self.embedder: Any = None
        self.verifier: Any = None
        self.ready = False
        self.bytes = 0
        self.rejected = 0  # candidates above the threshold the verifier turned down
        self.evictions = 0
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="faregate-cache")
        self._indexes: dict[str, VectorIndex] = {}
        self._meta: OrderedDict[str, _Meta] = OrderedDict()
        self._memo: OrderedDict[str, np.ndarray] = OrderedDict()
        self._follow: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._meta)

    async def start(self) -> None:
        """Load the embedder (seconds; lookups are misses until then), then follow Redis."""
        try:
            await self._run(self._load, asyncio.get_running_loop())
        except Exception as exc:  # the exact layer keeps working
            log.error("semantic cache disabled: %s", exc)
            return
        self.ready = True
        if self.store is not None:
            self._follow = asyncio.create_task(self._follow_log())

    def _load(self, loop: asyncio.AbstractEventLoop) -> None:
        self.embedder = self._load_embedder(loop)
        if self._make_verifier is not None:
            self.verifier = self._make_verifier(self.embedder)

    async def close(self) -> None:
        if self._follow is not None:
            await stop_task(self._follow)
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    # -- lookups and adds (the work runs on the cache thread) --

    async def lookup(self, partition: str, text: str, threshold: float, verify: bool,
                     max_age: float | None) -> tuple[Match | None, np.ndarray]:
        """The best fresh, verified entry above `threshold` (or None), and the turn's vector."""
        vector, found = await self._run(self._search, partition, text, threshold, verify, max_age)
        for key, similarity, entry in found:
            if entry is None and self.store is not None:
                entry = await self.store.get(key)
                if entry is None:  # expired or purged in Redis
                    await self._run(self._drop, key)
                    continue
            if entry is not None:
                return Match(key, entry, similarity), vector
        return None, vector

    async def add(self, key: str, partition: str, text: str, vector: np.ndarray | None, entry: Entry) -> None:
        entry.text = text
        if vector is None:
            vector = await self._run(self._embed, text)
        if self.store is not None:
            await self.store.put(key, entry)
            await self.store.redis.xadd(LOG, {"op": "add", "k": key, "p": partition, "t": text, "c": entry.created,
                                              "e": entry.expires, "v": vector.tobytes()},
                                        maxlen=2 * self.max_entries, approximate=True)
        await self._run(self._add, key, partition, text, vector, entry)

    async def purge(self, what: Purge) -> int:
        if self.store is None:
            return await self._run(self._purge, what)
        removed = await self.store.purge(what)
        await self.store.redis.xadd(LOG, {"op": "purge", "s": what.scope or "", "g": what.group or "",
                                          "b": "" if what.before is None else what.before},
                                    maxlen=2 * self.max_entries, approximate=True)
        await self._run(self._purge, what)
        return removed

    def _embed(self, text: str) -> np.ndarray:
        vector = self._memo.get(text)
        if vector is None:
            vector = self.embedder.embed([text])[0]
            self._memo[text] = vector
            if len(self._memo) > 2048:
                self._memo.popitem(last=False)
        return vector

    def _search(self, partition: str, text: str, threshold: float, verify: bool,
                max_age: float | None) -> tuple[np.ndarray, list[tuple[str, float, Entry | None]]]:
        vector = self._embed(text)
        index = self._indexes.get(partition)
        if index is None:
            return vector, []
        now = time.time()
        found = []
        for key, similarity in index.search(vector, k=4):
            if similarity < threshold:
                break
            meta = self._meta[key]
            if now >= meta.expires:
                self._drop(key)
                continue
            if max_age is not None and now - meta.created > max_age:
                continue
            if verify and self.verifier is not None and not self.verifier.check(text, meta.text).ok:
                self.rejected += 1
                continue
            self._meta.move_to_end(key)
            found.append((key, similarity, meta.entry))
        return vector, found

    def _add(self, key: str, partition: str, text: str, vector: np.ndarray, entry: Entry | None) -> None:
        if key in self._meta:
            self._drop(key)
        index = self._indexes.get(partition)
        if index is None:
            index = self._indexes[partition] = VectorIndex(len(vector))
        index.add(key, vector)
        local = entry if self.store is None else None
        self._meta[key] = _Meta(partition, text, entry.created if entry else 0.0, entry.expires if entry else 0.0, local)
        self.bytes += local.size if local else 0
        while len(self._meta) > self.max_entries or self.bytes > self.max_bytes:
            self._drop(next(iter(self._meta)))
            self.evictions += 1

    def _drop(self, key: str) -> None:
        meta = self._meta.pop(key, None)
        if meta is None:
            return
        if meta.entry is not None:
            self.bytes -= meta.entry.size
        index = self._indexes[meta.partition]
        index.remove(key)
        if not len(index):
            del self._indexes[meta.partition]

    def _purge(self, what: Purge) -> int:
        doomed = [k for k, m in self._meta.items() if what.matches(k, m.created)]
        for key in doomed:
            self._drop(key)
        return len(doomed)

    # -- following the other replicas' adds and purges --

    async def _follow_log(self) -> None:
        assert self.store is not None
        redis, last = self.store.redis, "0-0"
        while True:
            try:
                batches = await redis.xread({LOG: last}, count=500, block=1000)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away: keep serving from what is indexed
                log.warning("semantic cache: cannot follow %s: %s", LOG, exc)
                await asyncio.sleep(1.0)
                continue
            for _, messages in batches or ():
                for msg_id, fields in messages:
                    last = msg_id
                    await self._run(self._apply, {k.decode() if isinstance(k, bytes) else k: v for k, v in fields.items()})

    def _apply(self, f: dict[str, Any]) -> None:
        op = f.get("op", b"").decode() if isinstance(f.get("op"), bytes) else f.get("op")
        if op == "add":
            expires = float(f["e"])
            if expires > time.time():
                entry = Entry({}, float(f["c"]), expires, None, 0, f["t"].decode())
                self._add(f["k"].decode(), f["p"].decode(), entry.text or "",
                          np.frombuffer(f["v"], dtype=np.float32).copy(), entry)
        elif op == "purge":
            before = f["b"].decode()
            self._purge(Purge(scope=f["s"].decode() or None, group=f["g"].decode() or None,
                              before=float(before) if before else None))
