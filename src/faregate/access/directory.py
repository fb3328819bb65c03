"""The directory: every key, user and team, held in memory so authenticating a request is one
HMAC and one dict lookup (no database on the request path).

It is loaded at start-up and kept fresh three ways: the admin API on this replica writes through
(`put_key`, `put_subject`, …) at once; with Redis, other replicas hear of a change by pub/sub
and re-read at once; and every `key_refresh_seconds` each replica re-reads what changed since
its last read (keys by `updated_at`; users and teams, small tables, in full), which also covers
a missed pub/sub message. A revoked key is therefore refused by every replica within that
interval at worst, at once normally.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from typing import Any

from faregate.access.records import KeyRecord, Limits, Principal, Subject, SubjectKind
from faregate.access.secrets import KeyHasher
from faregate.core.errors import GatewayError

log = logging.getLogger("faregate.access")

CHANNEL = "faregate:directory"
_FIRST_LOAD_WAIT = 30.0  # seconds a request waits for the first load before a 503


class Directory:
    def __init__(self, hasher: KeyHasher | None) -> None:
        self.hasher = hasher
        self._by_hash: dict[str, KeyRecord] = {}
        self._by_id: dict[str, KeyRecord] = {}
        self._subjects: dict[tuple[str, str], Subject] = {}
        self._principals: dict[str, Principal] = {}  # key id -> built principal (cleared on change)
        self._since: dt.datetime | None = None
        self.loaded = False
        self._loaded_event: asyncio.Event | None = None
        self.on_change: list[Any] = []  # async callables run after a refresh (budget seeding)

    async def wait_loaded(self) -> None:
        """Wait for the first load (requests arriving in the first moments after start-up)."""
        if self.loaded:
            return
        if self._loaded_event is None:
            self._loaded_event = asyncio.Event()
        try:
            await asyncio.wait_for(self._loaded_event.wait(), _FIRST_LOAD_WAIT)
        except TimeoutError:
            raise GatewayError(503, "The gateway is starting: its key directory is not loaded yet. Retry shortly.",
                               type="api_error", code="starting", headers={"retry-after": "1"}) from None

    def mark_loaded(self) -> None:
        self.loaded = True
        if self._loaded_event is not None:
            self._loaded_event.set()

    # -- the request path -------------------------------------------------------------------

    def lookup(self, presented: str) -> KeyRecord | None:
        if self.hasher is None:
            return None
        return self._by_hash.get(self.hasher(presented))

    def principal(self, key: KeyRecord) -> Principal:
        p = self._principals.get(key.id)
        if p is None:
            subjects = [key.subject]
            for kind, sid in (("user", key.user_id), ("team", key.team_id)):
                if sid is not None and (s := self._subjects.get((kind, sid))) is not None:
                    subjects.append(s)
            p = self._principals[key.id] = Principal(key.id, key=key, subjects=tuple(subjects))
        return p

    # -- writes (admin API on this replica, and refreshes) ------------------------------------

    def live_subjects(self) -> list[Subject]:
        """Every key that is not revoked, and every user and team."""
        return [k.subject for k in self._by_id.values() if not k.revoked] + list(self._subjects.values())

    def put_key(self, record: KeyRecord) -> None:
        old = self._by_id.get(record.id)
        if old is not None:
            self._by_hash.pop(old.key_hash, None)
        self._by_id[record.id] = record
        if not record.revoked:
            self._by_hash[record.key_hash] = record
        self._principals.pop(record.id, None)

    def put_subject(self, subject: Subject) -> None:
        self._subjects[(subject.kind, subject.id)] = subject
        self._principals.clear()

    def drop_subject(self, kind: SubjectKind, sid: str) -> None:
        self._subjects.pop((kind, sid), None)
        self._principals.clear()

    # -- loading ------------------------------------------------------------------------------

    async def refresh(self, engine: Any) -> None:
        """Read keys changed since the last read, and all users and teams."""
        from sqlalchemy import select

        from faregate.storage.tables import keys, teams, users

        query = select(keys)
        if self._since is not None:
            # Re-read a little overlap: clocks of replicas writing `updated_at` differ slightly.
            query = query.where(keys.c.updated_at >= self._since - dt.timedelta(seconds=5))
        async with engine.connect() as conn:
            key_rows = (await conn.execute(query)).mappings().all()
            subject_rows = {kind: (await conn.execute(select(table))).mappings().all()
                            for kind, table in (("user", users), ("team", teams))}
        newest = self._since
        for row in key_rows:
            self.put_key(KeyRecord.from_row(row))
            updated = _aware(row["updated_at"])
            newest = updated if newest is None or updated > newest else newest
        self._since = newest
        subjects: dict[tuple[str, str], Subject] = {}
        for kind, rows in subject_rows.items():
            for row in rows:
                subjects[(kind, row["id"])] = Subject(kind, row["id"], Limits.from_row(row))  # type: ignore[arg-type]
        if subjects != self._subjects:
            self._subjects = subjects
            self._principals.clear()
        for hook in self.on_change:
            await hook(self)
        self.mark_loaded()

    async def run(self, engine: Any, interval: float, redis: Any = None) -> None:
        """Keep refreshing until cancelled: every `interval`, and at once on a pub/sub notice."""
        wake = asyncio.Event()
        listener = asyncio.create_task(self._listen(redis, wake)) if redis is not None else None
        try:
            while True:
                try:
                    await self.refresh(engine)
                except Exception as exc:  # a database blip must not stop authentication
                    log.warning("directory refresh failed: %s: %s", type(exc).__name__, exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), interval)
                wake.clear()
        finally:
            if listener is not None:
                listener.cancel()

    @staticmethod
    async def _listen(redis: Any, wake: asyncio.Event) -> None:
        while True:
            try:
                async with redis.pubsub() as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("directory pub/sub lost: %s; polling only for 5 s", exc)
                await asyncio.sleep(5)

    async def changed(self, redis: Any) -> None:
        """After a write on this replica: run the refresh hooks (seed a new budget's counter,
        load what new limits need) and tell the other replicas."""
        for hook in self.on_change:
            try:
                await hook(self)
            except Exception as exc:  # the write is done; the next refresh retries the hooks
                log.warning("directory hook failed after a change: %s: %s", type(exc).__name__, exc)
        await self.announce(redis)

    @staticmethod
    async def announce(redis: Any) -> None:
        """Tell other replicas something changed (no-op without Redis)."""
        if redis is not None:
            try:
                await redis.publish(CHANNEL, "changed")
            except Exception as exc:
                log.warning("could not announce a directory change: %s", exc)


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
