"""Closed-loop load generator for OpenAI-style chat completions (aiohttp client on uvloop).

Runs in its own process and prints one JSON object on stdout.

    python bench/loadgen.py --url http://127.0.0.1:4000/v1/chat/completions --key sk-... \
        --mode closed --connections 25 --duration 10 --warmup 2
    python bench/loadgen.py --url ... --mode stream --connections 10 --duration 10

closed: C workers, each with its own keep-alive connection, send the next request as soon as
the previous one is answered. Only requests that *complete* inside the measured window
(after --warmup, for --duration seconds) count; latency = send -> full body read.

stream: the same with "stream": true; per stream it records TTFT (send -> first chunk whose
delta.content is non-empty), the decode rate (content chunks after the first / time from the
first to the last content chunk), the end-to-end tokens/s and the chunk count.

An error is any exception (connect, timeout, reset) or any status other than 200; the first
few distinct error texts are reported.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time

import aiohttp
import orjson


def pct(sorted_vals: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_vals:
        return None
    k = max(0, min(len(sorted_vals) - 1, int(round(q / 100.0 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[k]


def summary_ms(values_s: list[float]) -> dict[str, float | None]:
    v = sorted(values_s)
    out: dict[str, float | None] = {}
    for name, q in (("p50", 50), ("p90", 90), ("p99", 99)):
        x = pct(v, q)
        out[name] = None if x is None else round(x * 1000, 3)
    out["mean"] = round(sum(v) / len(v) * 1000, 3) if v else None
    out["max"] = round(v[-1] * 1000, 3) if v else None
    return out


class Errors:
    def __init__(self) -> None:
        self.count = 0
        self.samples: dict[str, int] = {}

    def add(self, text: str) -> None:
        self.count += 1
        if text in self.samples or len(self.samples) < 8:
            self.samples[text] = self.samples.get(text, 0) + 1


def request_body(model: str, stream: bool, max_tokens: int) -> bytes:
    return orjson.dumps({
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Say hello to the benchmark in one short sentence, please."},
        ],
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "stream": stream,
    })


async def run(args: argparse.Namespace) -> dict:
    stream = args.mode == "stream"
    body = request_body(args.model, stream, args.max_tokens)
    headers = {"content-type": "application/json"}
    if args.key:
        headers["authorization"] = f"Bearer {args.key}"
    connector = aiohttp.TCPConnector(limit=args.connections, limit_per_host=args.connections,
                                     keepalive_timeout=120, ttl_dns_cache=None)
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    session = aiohttp.ClientSession(connector=connector, timeout=timeout, skip_auto_headers=("User-Agent",))
    clock = time.perf_counter
    errors = Errors()
    latencies: list[float] = []
    ttfts: list[float] = []
    decode_tps: list[float] = []
    e2e_tps: list[float] = []
    chunks: list[int] = []

    begin = clock()
    start = begin + args.warmup
    end = start + args.duration

    async def one_plain() -> None:
        t0 = clock()
        try:
            async with session.post(args.url, data=body, headers=headers) as r:
                data = await r.read()
                status = r.status
        except Exception as exc:  # noqa: BLE001 - every failure is an error sample
            t1 = clock()
            if start <= t1 < end:
                errors.add(f"{type(exc).__name__}: {exc}"[:200])
            return
        t1 = clock()
        if start <= t1 < end:
            if status == 200 and data[:1] == b"{":
                latencies.append(t1 - t0)
            else:
                errors.add(f"HTTP {status}: {data[:160].decode('utf-8', 'replace')}")

    async def one_stream() -> None:
        t0 = clock()
        first = last = None
        n = 0
        try:
            async with session.post(args.url, data=body, headers=headers) as r:
                status = r.status
                if status != 200:
                    data = await r.read()
                else:
                    data = b""
                    async for line in r.content:
                        if not line.startswith(b"data:"):
                            continue
                        payload = line[5:].strip()
                        if payload == b"[DONE]":
                            break
                        try:
                            obj = orjson.loads(payload)
                            choices = obj.get("choices")
                            content = choices[0].get("delta", {}).get("content") if choices else None
                        except (orjson.JSONDecodeError, AttributeError, IndexError):
                            content = None
                        if content:
                            now = clock()
                            if first is None:
                                first = now
                            last = now
                            n += 1
        except Exception as exc:  # noqa: BLE001
            t1 = clock()
            if start <= t1 < end:
                errors.add(f"{type(exc).__name__}: {exc}"[:200])
            return
        t1 = clock()
        if not (start <= t1 < end):
            return
        if status != 200:
            errors.add(f"HTTP {status}: {data[:160].decode('utf-8', 'replace')}")
            return
        if first is None:
            errors.add("stream had no content chunk")
            return
        latencies.append(t1 - t0)
        ttfts.append(first - t0)
        chunks.append(n)
        if n > 1 and last > first:
            decode_tps.append((n - 1) / (last - first))
        e2e_tps.append(n / (t1 - t0))

    one = one_stream if stream else one_plain

    async def worker() -> None:
        while clock() < end:
            await one()

    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    try:
        await asyncio.gather(*(worker() for _ in range(args.connections)))
    finally:
        await session.close()
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    wall = clock() - begin

    ok = len(latencies)
    result = {
        "mode": args.mode,
        "url": args.url,
        "connections": args.connections,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "count": ok,
        "errors": errors.count,
        "error_samples": errors.samples,
        "rps": round((ok + errors.count) / args.duration, 2),
        "ok_rps": round(ok / args.duration, 2),
        "latency_ms": summary_ms(latencies),
        "loadgen_cpu_pct": round(100.0 * cpu / wall, 1) if wall > 0 else None,
    }
    if stream:
        result["ttft_ms"] = summary_ms(ttfts)
        dt = sorted(decode_tps)
        et = sorted(e2e_tps)
        result["decode_tps"] = {"p50": pct(dt, 50), "p10": pct(dt, 10), "mean": sum(dt) / len(dt) if dt else None}
        result["e2e_tps"] = {"p50": pct(et, 50), "mean": sum(et) / len(et) if et else None}
        result["chunks_p50"] = pct(sorted(chunks), 50)
        for k in ("decode_tps", "e2e_tps"):
            result[k] = {a: (None if b is None else round(b, 2)) for a, b in result[k].items()}
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True, help="full URL of the chat completions endpoint")
    p.add_argument("--key", default="", help="bearer key (none: no Authorization header)")
    p.add_argument("--model", default="bench-model")
    p.add_argument("--mode", choices=["closed", "stream"], default="closed")
    p.add_argument("--connections", type=int, default=25)
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds run first and not counted")
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--timeout", type=float, default=30.0, help="per-request total timeout (s)")
    args = p.parse_args(argv)
    try:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            result = runner.run(run(args))
    except ImportError:
        result = asyncio.run(run(args))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
