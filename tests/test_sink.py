"""BatchSink: batches on time and size, keeps rows through failed writes, flushes on close."""

from __future__ import annotations

import asyncio

from faregate.sinks.batch import BatchSink


class Store:
    def __init__(self, fail_times: int = 0) -> None:
        self.batches: list[list[dict]] = []
        self.fail_times = fail_times

    async def __call__(self, rows: list[dict]) -> None:
        if self.fail_times:
            self.fail_times -= 1
            raise ConnectionError("database down")
        self.batches.append(list(rows))


async def test_rows_are_written_within_the_interval() -> None:
    store = Store()
    sink = BatchSink("t", store, interval=0.05)
    sink.start()
    sink.put({"n": 1})
    sink.put({"n": 2})
    await asyncio.sleep(0.15)
    assert store.batches == [[{"n": 1}, {"n": 2}]]
    await sink.close()


async def test_a_full_batch_is_written_at_once() -> None:
    store = Store()
    sink = BatchSink("t", store, interval=60, max_batch=3)
    sink.start()
    for n in range(7):
        sink.put({"n": n})
    await asyncio.sleep(0.05)
    assert [len(b) for b in store.batches] == [3, 3, 1] or [len(b) for b in store.batches] == [3, 3]
    await sink.close()
    assert [r["n"] for b in store.batches for r in b] == list(range(7))


async def test_failed_writes_keep_rows_in_order() -> None:
    store = Store(fail_times=2)
    sink = BatchSink("t", store, interval=0.02)
    sink.start()
    for n in range(5):
        sink.put({"n": n})
    await asyncio.sleep(0.3)
    sink.put({"n": 5})
    await sink.close()
    assert [r["n"] for b in store.batches for r in b] == list(range(6))
    assert sink.written == 6 and sink.pending == 0


async def test_close_flushes_everything_left() -> None:
    store = Store()
    sink = BatchSink("t", store, interval=60)
    sink.start()
    for n in range(2500):
        sink.put({"n": n})
    await sink.close()
    assert sum(len(b) for b in store.batches) == 2500
