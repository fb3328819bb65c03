"""Cost and fairness of the admission queue (faregate.routing.fair_queue), in-process.

    .venv/bin/python bench/fair_queue.py [-n 200000] [--slots 8] [--hold-ms 20] [--heavy 50] [--seconds 5] [--jitter 0.5]

1. The fast path: µs per acquire + release with no limit, and with a limit but no contention
   (nobody waits: no Future is created).
2. Fairness: `--slots` slots, each request holds its slot `--hold-ms` on average (asyncio.sleep,
   uniform within ±`--jitter` of it: with equal holds the heavy loops, started together, would
   free their slots in bursts one hold apart, and any newcomer would wait half a hold). A light
   tenant runs one loop (request, hold, a random pause of up to one hold); a heavy tenant runs
   `--heavy` loops back to back. Prints the light tenant's p50/p99 wait alone and next to the
   heavy one, the heavy tenant's own wait, and the cost of one queue slot (mean hold / slots):
   fair queueing should add no more than about that to the light tenant's wait. The same load
   on an asyncio.Semaphore (first come, first served) is shown for reference.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from collections.abc import Awaitable, Callable

from faregate.routing.fair_queue import FairQueue, QueueSettings


async def fast_path(n: int) -> None:
    async def nothing() -> None:
        return None

    t0 = time.perf_counter()
    for _ in range(n):
        await nothing()
    base = (time.perf_counter() - t0) / n * 1e6
    print(f"fast path, {n} acquire + release each (an empty `await` alone: {base:.2f} µs)")
    for label, limit in (("no limit", None), ("limit, no contention", 1_000_000)):
        q = FairQueue(QueueSettings(max_in_flight=limit))
        for style in ("acquire/release", "async with slot()"):
            t0 = time.perf_counter()
            if style == "acquire/release":
                for _ in range(n):
                    q.release(await q.acquire("t"))
            else:
                for _ in range(n):
                    async with q.slot("t"):
                        pass
            us = (time.perf_counter() - t0) / n * 1e6
            print(f"  {label:22s} {style:18s} {us:6.2f} µs")


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


async def fairness(slots: int, hold: float, jitter: float, heavy_loops: int, seconds: float,
                   use: Callable[[str], Awaitable[object]], done: Callable[[object], None]) -> dict[str, list[float]]:
    """Run the light loop (and `heavy_loops` heavy ones) for `seconds`; waits and holds in s."""
    waits: dict[str, list[float]] = {"light": [], "heavy": [], "hold": []}
    stop = False
    rng = random.Random(1)

    async def loop(tenant: str, pause: bool) -> None:
        while not stop:
            t0 = time.perf_counter()
            token = await use(tenant)
            t1 = time.perf_counter()
            await asyncio.sleep(hold * rng.uniform(1 - jitter, 1 + jitter))
            waits["hold"].append(time.perf_counter() - t1)
            done(token)
            waits[tenant].append(t1 - t0)
            if pause:
                await asyncio.sleep(rng.random() * hold)

    tasks = [asyncio.create_task(loop("heavy", False)) for _ in range(heavy_loops)]
    tasks.append(asyncio.create_task(loop("light", True)))
    await asyncio.sleep(seconds)
    stop = True
    await asyncio.gather(*tasks)
    return waits


async def run(args: argparse.Namespace) -> None:
    await fast_path(args.n)
    hold = args.hold_ms / 1000
    print(f"\nfairness: {args.slots} slots, holds of {args.hold_ms:g} ms, {args.seconds:g} s per run, "
          f"±{args.jitter:.0%}, light tenant: 1 loop, heavy tenant: {args.heavy} loops")
    print(f"  {'':34s} {'light p50':>9s} {'light p99':>9s} {'heavy p50':>9s}  (ms; light n)")
    slot_cost = None
    for label, heavy, kind in (("fair queue, light alone", 0, "fair"),
                               (f"fair queue, + heavy x{args.heavy}", args.heavy, "fair"),
                               (f"asyncio.Semaphore, + heavy x{args.heavy}", args.heavy, "fifo")):
        if kind == "fair":
            q = FairQueue(QueueSettings(max_in_flight=args.slots, max_wait_seconds=60))
            w = await fairness(args.slots, hold, args.jitter, heavy, args.seconds, q.acquire, q.release)  # type: ignore[arg-type]
            assert q.in_flight == 0 and q.waiting == 0
        else:
            sem = asyncio.Semaphore(args.slots)

            async def take(_tenant: str, sem: asyncio.Semaphore = sem) -> None:
                await sem.acquire()

            w = await fairness(args.slots, hold, args.jitter, heavy, args.seconds, take, lambda _t, sem=sem: sem.release())
        if heavy and kind == "fair":
            slot_cost = statistics.fmean(w["hold"]) / args.slots
        heavy_p50 = f"{pct(w['heavy'], 50) * 1e3:9.2f}" if w["heavy"] else f"{'-':>9s}"
        print(f"  {label:34s} {pct(w['light'], 50) * 1e3:9.2f} {pct(w['light'], 99) * 1e3:9.2f} "
              f"{heavy_p50}  ({len(w['light'])})")
    if slot_cost is not None:
        print(f"  cost of one queue slot (mean hold {slot_cost * args.slots * 1e3:.2f} ms / "
              f"{args.slots} slots): {slot_cost * 1e3:.2f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=200_000, help="iterations of the fast-path loops")
    ap.add_argument("--slots", type=int, default=8, help="max_in_flight")
    ap.add_argument("--hold-ms", type=float, default=20.0, help="how long each request holds its slot")
    ap.add_argument("--heavy", type=int, default=50, help="the heavy tenant's concurrent loops")
    ap.add_argument("--jitter", type=float, default=0.5, help="holds vary uniformly by ± this fraction")
    ap.add_argument("--seconds", type=float, default=5.0, help="length of each fairness run")
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
