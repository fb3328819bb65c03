"""faregate's overhead benchmark: the same load, in the same run, sent

  (a) directly to a fixed-latency upstream (the mock upstream, 50 ms),
  (b) through a bare proxy (bench/bare_proxy.py: raw ASGI on granian + one aiohttp session),
  (c) through faregate (1 worker, auth on): with the master key, then with a virtual key held to
      RPM, TPM, parallel and budget limits on key, user and team ("faregate+key"),
  (d) through LiteLLM's proxy (1 worker, same config; in its own venv bench/.litellm-venv),

by a load generator in its own process (bench/loadgen.py). (a)-(c) are measured in interleaved rounds
(each target once per round), so the machine's drift falls on all of them alike. Also measured: max RPS at 200
connections, faregate's start-up time and idle RSS, and streaming TTFT / tokens/s. Ends with
the targets and PASS/FAIL. See bench/README.md.

    .venv/bin/python bench/overhead.py                 # full run (~3-4 min, + LiteLLM install once)
    .venv/bin/python bench/overhead.py --quick --skip-litellm
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# bench/ is not a package: its modules import each other by name, from this directory.
_BENCH_DIR = str(Path(__file__).resolve().parent)
if _BENCH_DIR not in sys.path:
    sys.path.insert(0, _BENCH_DIR)

from common import log  # noqa: E402
from measure import Run, Target  # noqa: E402
from procs import Server, busy_cpu_seconds, own_cpu_seconds  # noqa: E402
from profiling import profile_faregate  # noqa: E402
from report import render  # noqa: E402
from targets import (  # noqa: E402
    STREAM_ITL_MS,
    STREAM_TOKENS,
    STREAM_TTFT_MS,
    bench_litellm,
    start_bare,
    start_faregate,
    start_mock,
    write_config,
)

STARTUP_RUNS = 3  # faregate's start-up is measured this many times (the median is reported)
MAX_WARMUP_S = 1.0  # warm-up of the max-RPS runs


def parse_args(argv: list[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds measured per latency/stream run (default 10)")
    ap.add_argument("--connections", type=int, default=25, help="connections of the latency runs (default 25)")
    ap.add_argument("--max-connections", type=int, default=200, help="connections of the max-RPS runs (default 200)")
    ap.add_argument("--stream-connections", type=int, default=10, help="concurrent streams (default 10)")
    ap.add_argument("--skip-litellm", action="store_true", help="do not install / run LiteLLM")
    ap.add_argument("--skip-key", action="store_true", help="do not measure faregate again with a limited virtual key")
    ap.add_argument("--max-repeats", type=int, default=None,
                    help="rounds of max-RPS runs (default 5; 1 with --quick); each target's median is kept")
    ap.add_argument("--latency-repeats", type=int, default=None,
                    help="latency runs per target; the row is the run with the median p99 (default 3, --quick 1)")
    ap.add_argument("--quick", action="store_true", help="short durations: a smoke run (numbers are rough)")
    ap.add_argument("--json", metavar="FILE", help="write all results to FILE")
    ap.add_argument("--latency-ms", type=float, default=50.0, help="mock upstream latency (default 50)")
    ap.add_argument("--mock-workers", type=int, default=2, help="mock upstream processes (default 2)")
    ap.add_argument("--max-loadgen", choices=["auto", "wrk", "python"], default="auto",
                    help="client of the max-RPS runs: wrk (if installed; default) or loadgen.py")
    ap.add_argument("--no-pin", action="store_true", help="do not pin processes to cores with taskset")
    ap.add_argument("--profile", metavar="FILE", help="after the measurements, py-spy record faregate's worker "
                    "under max load for 10 s into FILE (speedscope) and print its top functions")
    ap.add_argument("--keep-logs", action="store_true", help="keep the servers' logs (always kept on errors)")
    return ap, ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    ap, args = parse_args(argv)
    if args.quick:  # --duration still applies if given
        duration, warmup, max_duration = (3.0 if args.duration == 10.0 else args.duration), 1.0, 2.0
    else:
        duration, warmup, max_duration = args.duration, 2.0, max(3.0, args.duration / 2)

    repeats = args.latency_repeats or (1 if args.quick else 3)
    ncpu = os.cpu_count() or 1
    pin = not args.no_pin and shutil.which("taskset") is not None and ncpu >= 2
    srv_cpu, gen_cpu = ("0", "1") if pin else (None, None)
    have_wrk = shutil.which("wrk") is not None
    if args.max_loadgen == "wrk" and not have_wrk:
        ap.error("--max-loadgen wrk: wrk is not installed (apt-get install -y wrk)")
    use_wrk = have_wrk and args.max_loadgen != "python"
    logdir = Path(tempfile.mkdtemp(prefix="faregate-bench-"))
    results: dict[str, Any] = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": {"cpus": ncpu, "python": platform.python_version(), "platform": platform.platform(),
                    "pinning": f"servers on cpu {srv_cpu}; loadgen and mock upstream on cpu {gen_cpu}" if pin else "none"},
        "settings": {"duration_s": duration, "warmup_s": warmup, "connections": args.connections,
                     "max_connections": args.max_connections, "max_duration_s": max_duration,
                     "stream_connections": args.stream_connections, "upstream_latency_ms": args.latency_ms,
                     "latency_repeats": repeats,
                     "stream_ttft_ms": STREAM_TTFT_MS, "stream_itl_ms": STREAM_ITL_MS, "stream_tokens": STREAM_TOKENS,
                     "mock_workers": args.mock_workers, "max_rps_client": "wrk (1 thread)" if use_wrk else "loadgen.py"},
        "latency": {}, "max_rps": {}, "stream": {}, "startup": {}, "notes": [],
    }
    if not use_wrk:
        results["notes"].append("max-RPS runs used loadgen.py: it shares a core with the mock upstream and can be "
                                "the bottleneck; install wrk (apt-get install -y wrk) for a higher harness ceiling")
    errors_seen: list[str] = []
    run = Run(connections=args.connections, duration=duration, warmup=warmup, max_connections=args.max_connections,
              max_duration=max_duration, max_warmup=MAX_WARMUP_S, stream_connections=args.stream_connections,
              use_wrk=use_wrk, srv_cpu=srv_cpu, gen_cpu=gen_cpu, logdir=logdir, results=results,
              errors_seen=errors_seen, latency_repeats=repeats,
              max_repeats=args.max_repeats or (1 if args.quick else 5))
    interrupted = False

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    t_begin = time.perf_counter()
    busy0, own0 = busy_cpu_seconds(), own_cpu_seconds()
    results["machine"]["loadavg_at_start"] = Path("/proc/loadavg").read_text().split()[0]
    try:
        upstream = start_mock(run, args.latency_ms, args.mock_workers)
        config = write_config(logdir, upstream)
        targets = [Target("direct", f"{upstream}/chat/completions", None, None), start_bare(run, upstream),
                   *start_faregate(run, config, STARTUP_RUNS, with_key=not args.skip_key)]
        run.measure_all(targets)
        if args.profile:
            fg = targets[2]
            profile_faregate(fg.server, fg.url, args.profile, run)  # type: ignore[arg-type]
        for t in targets:
            if t.server is not None:
                t.server.stop()
        if args.skip_litellm:
            results["notes"].append("LiteLLM skipped (--skip-litellm)")
        else:
            bench_litellm(run, config)
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: stopping the servers")
    except Exception as exc:  # noqa: BLE001 - report, clean up, exit non-zero
        errors_seen.append(f"benchmark aborted: {type(exc).__name__}: {exc}")
        log(f"aborted: {exc}")
    finally:
        Server.stop_all()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    results["wall_s"] = round(time.perf_counter() - t_begin, 1)
    foreign = busy_cpu_seconds() - busy0 - (own_cpu_seconds() - own0)
    results["machine"]["other_processes_cpu_pct"] = round(100 * max(foreign, 0.0) / results["wall_s"], 1)
    results["errors_seen"] = errors_seen
    report = render(results)
    print(report)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        log(f"results written to {args.json}")
    if errors_seen or interrupted or args.keep_logs:
        log(f"server logs kept in {logdir}")
    else:
        shutil.rmtree(logdir, ignore_errors=True)
    if interrupted:
        return 130
    return 1 if any(e.startswith("benchmark aborted") for e in errors_seen) else 0


if __name__ == "__main__":
    raise SystemExit(main())
