"""faregate's overhead benchmark: the same load, in the same run, sent

  (a) directly to a fixed-latency upstream (the mock upstream, 50 ms),
  (b) through a bare proxy (bench/bare_proxy.py: raw ASGI on granian + one aiohttp session),
  (c) through faregate (1 worker, auth on),
  (d) through LiteLLM's proxy (1 worker, same config; in its own venv bench/.litellm-venv),

by a load generator in its own process (bench/loadgen.py). Also measured: max RPS at 200
connections, faregate's start-up time and idle RSS, and streaming TTFT / tokens/s. Ends with
the targets and PASS/FAIL. See bench/README.md.

    .venv/bin/python bench/overhead.py                 # full run (~3-4 min, + LiteLLM install once)
    .venv/bin/python bench/overhead.py --quick --skip-litellm
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PY = sys.executable
LITELLM_VENV = BENCH / ".litellm-venv"
MASTER_KEY = "sk-bench-master"
MODEL = "bench-model"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# The targets of the issue.
TARGET_P99_RATIO = 1.5       # faregate's added p99 <= 1.5 x the bare proxy's added p99
TARGET_RPS_PCT = 75.0        # faregate's max RPS >= 75 % of the bare proxy's
TARGET_STARTUP_S = 1.5       # spawn -> first /health/live 200
TARGET_IDLE_RSS_MB = 120.0   # after start-up, remote models only
TARGET_TTFT_ADD_MS = 2.0     # streaming: added TTFT
TARGET_TPS_PCT = 98.0        # streaming: % of direct tokens/s kept


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _proc_table() -> dict[int, list[int]]:
    children: dict[int, list[int]] = defaultdict(list)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(b")", 1)[1].split()[1])
        children[ppid].append(int(entry))
    return children


def tree(pid: int) -> list[int]:
    """pid and all its descendants."""
    children = _proc_table()
    out, stack = [], [pid]
    while stack:
        p = stack.pop()
        out.append(p)
        stack.extend(children.get(p, ()))
    return out


def rss_mb(pids: list[int]) -> float:
    total_kb = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total_kb += int(line.split()[1])
                        break
        except OSError:
            pass
    return total_kb / 1024.0


def cpu_seconds(pids: list[int]) -> float:
    ticks = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return ticks / CLK_TCK


def busy_cpu_seconds() -> float:
    """CPU time all processes on the machine spent busy (from /proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / CLK_TCK


def own_cpu_seconds() -> float:
    """CPU time of this process and its reaped children (the servers, loadgen and wrk runs)."""
    import resource

    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        ru = resource.getrusage(who)
        total += ru.ru_utime + ru.ru_stime
    return total


def per_cpu_times() -> dict[str, tuple[int, int]]:
    """{cpu number: (busy ticks, total ticks)} from /proc/stat."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                name, *vals = line.split()
                v = [int(x) for x in vals]
                total = sum(v[:8])
                out[name[3:]] = (total - v[3] - v[4], total)
    return out


class Server:
    """A server process in its own session (so its whole group can be stopped), logging to a file."""

    running: list[Server] = []

    def __init__(self, name: str, cmd: list[str], logdir: Path, cpus: str | None,
                 env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        self.name = name
        self.log_path = logdir / f"{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        full = (["taskset", "-c", cpus] if cpus else []) + cmd
        self.spawned_at = time.perf_counter()
        self.proc = subprocess.Popen(full, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True, env=env, cwd=cwd)
        Server.running.append(self)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def pids(self) -> list[int]:
        return tree(self.proc.pid) if self.proc.poll() is None else []

    def wait_http(self, port: int, path: str, timeout: float, interval: float = 0.005) -> float:
        """Poll GET path until 200; return seconds since spawn. Raises if the process dies or times out."""
        deadline = time.perf_counter() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with code {self.proc.returncode} before it was ready; "
                                   f"log {self.log_path}:\n{self.log_tail()}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
                conn.request("GET", path)
                status = conn.getresponse().status
                conn.close()
                if status == 200:
                    return time.perf_counter() - self.spawned_at
            except (OSError, http.client.HTTPException):
                pass
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{self.name} not ready on :{port}{path} after {timeout:.0f}s; "
                                   f"log {self.log_path}:\n{self.log_tail()}")
            time.sleep(interval)

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM the process group, then SIGKILL whatever is left."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                log(f"{self.name} ignored SIGTERM for {grace:.0f}s: killing it")
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # stragglers of the group (e.g. workers)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        self._log.close()
        if self in Server.running:
            Server.running.remove(self)

    @classmethod
    def stop_all(cls) -> None:
        for s in list(cls.running):
            with contextlib.suppress(Exception):
                s.stop(grace=3.0)


def faregate_cmd() -> list[str]:
    exe = Path(PY).with_name("faregate")
    return [str(exe)] if exe.exists() else [PY, "-m", "faregate"]


# ---------------------------------------------------------------------------- load


class Sampler:
    """Samples the RSS of some process trees while a load runs; measures their CPU time."""

    def __init__(self, procs: dict[str, Server | None], interval: float = 0.25) -> None:
        self.procs = {k: v for k, v in procs.items() if v is not None}
        self.interval = interval
        self.max_rss: dict[str, float] = defaultdict(float)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        for name, srv in self.procs.items():
            self.max_rss[name] = max(self.max_rss[name], rss_mb(srv.pids()))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> Sampler:
        self._cores0 = per_cpu_times()
        self._cpu0 = {k: cpu_seconds(v.pids()) for k, v in self.procs.items()}
        self._t0 = time.perf_counter()
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        wall = time.perf_counter() - self._t0
        self.cpu_pct = {k: round(100 * (cpu_seconds(v.pids()) - self._cpu0[k]) / wall, 1)
                        for k, v in self.procs.items()}
        cores1 = per_cpu_times()
        self.core_busy_pct = {c: round(100 * (cores1[c][0] - b0) / max(1, cores1[c][1] - t0), 1)
                              for c, (b0, t0) in self._cores0.items() if c in cores1}


def run_loadgen(url: str, *, key: str | None, mode: str, connections: int, duration: float, warmup: float,
                cpus: str | None, server: Server | None, mock: Server) -> dict[str, Any]:
    cmd = [PY, str(BENCH / "loadgen.py"), "--url", url, "--mode", mode, "--connections", str(connections),
           "--duration", str(duration), "--warmup", str(warmup), "--model", MODEL]
    if key:
        cmd += ["--key", key]
    if cpus:
        cmd = ["taskset", "-c", cpus] + cmd
    with Sampler({"server": server, "mock": mock}) as sampler:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + warmup + 60)
    if out.returncode != 0:
        raise RuntimeError(f"loadgen failed ({out.returncode}):\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["server_rss_mb"] = round(sampler.max_rss["server"], 1) if server else None
    result["server_cpu_pct"] = sampler.cpu_pct.get("server")
    result["mock_cpu_pct"] = sampler.cpu_pct.get("mock")
    result["core_busy_pct"] = sampler.core_busy_pct
    if server is not None and server.proc.poll() is not None:
        result["server_died"] = f"exit code {server.proc.returncode}"
    return result


WRK_LUA = """\
wrk.method = "POST"
wrk.body = [==[%(body)s]==]
wrk.headers["Content-Type"] = "application/json"
%(auth)s
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKJSON {"requests":%%d,"duration_us":%%d,"p50":%%d,"p90":%%d,"p99":%%d,"mean":%%f,"max":%%d,' ..
    '"connect":%%d,"read":%%d,"write":%%d,"status":%%d,"timeout":%%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def run_wrk(url: str, *, key: str | None, connections: int, duration: float, warmup: float, cpus: str | None,
            server: Server | None, mock: Server, logdir: Path) -> dict[str, Any]:
    """Closed loop with wrk (C, 1 thread): the max-RPS runs, where a Python client would eat the core the
    mock upstream needs. Same request body as loadgen.py; a warm-up run first, not counted."""
    script = write_wrk_script(logdir, key)
    pin = ["taskset", "-c", cpus] if cpus else []

    def wrk(seconds: float) -> dict[str, Any]:
        cmd = pin + ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "30s",
                     "-s", str(script), url]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
        line = next((ln for ln in out.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
        if line is None:
            raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout[-1500:]} {out.stderr[-1500:]}")
        return json.loads(line[len("WRKJSON "):])

    wrk(warmup)
    t0 = time.perf_counter()
    with Sampler({"server": server, "mock": mock}) as sampler:
        w = wrk(duration)
    wall = time.perf_counter() - t0
    secs = w["duration_us"] / 1e6
    errors = {k: w[k] for k in ("connect", "read", "write", "status", "timeout") if w[k]}
    nerr = sum(errors.values())
    result = {
        "mode": "closed", "loadgen": "wrk", "url": url, "connections": connections, "duration_s": round(secs, 3),
        "warmup_s": warmup, "count": w["requests"] - w["status"], "errors": nerr,
        "error_samples": {f"wrk {k} errors": v for k, v in errors.items()},
        "rps": round(w["requests"] / secs, 2), "ok_rps": round((w["requests"] - w["status"]) / secs, 2),
        "latency_ms": {k: round(w[k] / 1000, 3) for k in ("p50", "p90", "p99", "mean", "max")},
        "loadgen_cpu_pct": None,
    }
    result["server_rss_mb"] = round(sampler.max_rss["server"], 1) if server else None
    result["server_cpu_pct"] = sampler.cpu_pct.get("server")
    result["mock_cpu_pct"] = sampler.cpu_pct.get("mock")
    result["core_busy_pct"] = sampler.core_busy_pct
    result["measured_wall_s"] = round(wall, 3)
    if server is not None and server.proc.poll() is not None:
        result["server_died"] = f"exit code {server.proc.returncode}"
    return result


# ---------------------------------------------------------------------------- LiteLLM


def ensure_litellm(log_dir: Path) -> tuple[Path | None, str]:
    """(path of the `litellm` executable, version) or (None, reason)."""
    exe = LITELLM_VENV / "bin" / "litellm"
    py = LITELLM_VENV / "bin" / "python"
    if not exe.exists():
        log(f"creating {LITELLM_VENV} and installing 'litellm[proxy]' from PyPI (once; 1-2 min)")
        install_log = log_dir / "litellm-install.log"
        try:
            with open(install_log, "wb") as f:
                subprocess.run([PY, "-m", "venv", str(LITELLM_VENV)], check=True, stdout=f, stderr=subprocess.STDOUT,
                               timeout=120)
                subprocess.run([str(py), "-m", "pip", "install", "-q", "litellm[proxy]"], check=True, stdout=f,
                               stderr=subprocess.STDOUT, timeout=900)
        except (subprocess.SubprocessError, OSError) as exc:
            tail = install_log.read_text(errors="replace")[-1500:] if install_log.exists() else ""
            shutil.rmtree(LITELLM_VENV, ignore_errors=True)
            return None, f"install failed ({exc}); log tail:\n{tail}"
        if not exe.exists():
            return None, "install finished but bin/litellm is missing"
    try:
        version = subprocess.run([str(py), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
                                 capture_output=True, text=True, timeout=60).stdout.strip()
    except subprocess.SubprocessError:
        version = "?"
    return exe, version or "?"


# ---------------------------------------------------------------------------- formatting


def fmt(x: Any, nd: int = 1) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[fmt(c) if not isinstance(c, str) else c for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(widths[0]) if i == 0 else h.rjust(widths[i]) for i, h in enumerate(headers))
    out = [line, "-" * len(line)]
    for r in cells:
        out.append("  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r)))
    return "\n".join(out)


def signed(x: float | None) -> str:
    return "-" if x is None else f"{x:+.1f}"


# ---------------------------------------------------------------------------- the run


def scan_log(path: Path) -> list[str]:
    """Lines of a server log that look like errors (with a little context for tracebacks)."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    hits = []
    pat = re.compile(r"Traceback|ERROR|CRITICAL|Exception|Error:|exception", re.I)
    for i, line in enumerate(lines):
        if pat.search(line):
            hits.append("\n".join(lines[i:i + 12]) if line.startswith("Traceback") else line)
    return hits[:20]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds measured per latency/stream run (default 10)")
    ap.add_argument("--connections", type=int, default=25, help="connections of the latency runs (default 25)")
    ap.add_argument("--max-connections", type=int, default=200, help="connections of the max-RPS runs (default 200)")
    ap.add_argument("--stream-connections", type=int, default=10, help="concurrent streams (default 10)")
    ap.add_argument("--skip-litellm", action="store_true", help="do not install / run LiteLLM")
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
    args = ap.parse_args(argv)

    if args.quick:
        duration, warmup, max_duration, max_warmup, startup_runs = 3.0, 1.0, 2.0, 1.0, 3
    else:
        duration, warmup, max_duration, max_warmup, startup_runs = args.duration, 2.0, max(3.0, args.duration / 2), 1.0, 3
    if args.quick and args.duration != 10.0:
        duration = args.duration

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
                     "stream_ttft_ms": 100, "stream_itl_ms": 10, "stream_tokens": 50, "mock_workers": args.mock_workers,
                     "max_rps_client": "wrk (1 thread)" if use_wrk else "loadgen.py"},
        "latency": {}, "max_rps": {}, "stream": {}, "startup": {}, "notes": [],
    }
    if not use_wrk:
        results["notes"].append("max-RPS runs used loadgen.py: it shares a core with the mock upstream and can be "
                                "the bottleneck; install wrk (apt-get install -y wrk) for a higher harness ceiling")
    errors_seen: list[str] = []
    interrupted = False

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    t_begin = time.perf_counter()
    busy0, own0 = busy_cpu_seconds(), own_cpu_seconds()
    results["machine"]["loadavg_at_start"] = Path("/proc/loadavg").read_text().split()[0]
    try:
        # -- the upstream ---------------------------------------------------------------
        mock_port = free_port()
        mock = Server("mock", faregate_cmd() + [
            "mock-upstream", "--port", str(mock_port), "--protocol", "openai", "--latency-ms", str(args.latency_ms),
            "--ttft-ms", "100", "--itl-ms", "10", "--tokens", "50", "--workers", str(args.mock_workers)],
            logdir, gen_cpu)
        mock.wait_http(mock_port, "/health", 30)
        upstream = f"http://127.0.0.1:{mock_port}/v1"
        config = logdir / "config.yaml"
        config.write_text(
            "model_list:\n"
            f"  - model_name: {MODEL}\n"
            f"    litellm_params: {{model: openai/{MODEL}, api_base: {upstream}, api_key: sk-upstream}}\n"
            f"general_settings: {{master_key: {MASTER_KEY}}}\n")
        log(f"mock upstream on :{mock_port} ({args.mock_workers} workers); logs in {logdir}")

        def measure(name: str, url: str, key: str | None, server: Server | None) -> None:
            kw = dict(key=key, cpus=gen_cpu, server=server, mock=mock)
            log(f"{name}: latency, {args.connections} connections, {duration:.0f}s (+{warmup:.0f}s warm-up)")
            r = run_loadgen(url, mode="closed", connections=args.connections, duration=duration, warmup=warmup, **kw)
            results["latency"][name] = r
            log(f"{name}: max RPS, {args.max_connections} connections, {max_duration:.0f}s")
            if use_wrk:
                r = run_wrk(url, connections=args.max_connections, duration=max_duration, warmup=max_warmup,
                            logdir=logdir, **kw)
            else:
                r = run_loadgen(url, mode="closed", connections=args.max_connections, duration=max_duration,
                                warmup=max_warmup, **kw)
            results["max_rps"][name] = r
            log(f"{name}: streaming, {args.stream_connections} streams, {duration:.0f}s")
            r = run_loadgen(url, mode="stream", connections=args.stream_connections, duration=duration,
                            warmup=warmup, **kw)
            results["stream"][name] = r
            for kind in ("latency", "max_rps", "stream"):
                rr = results[kind][name]
                if rr["errors"]:
                    errors_seen.append(f"{name} {kind}: {rr['errors']} errors: {rr['error_samples']}")
                if rr.get("server_died"):
                    errors_seen.append(f"{name} {kind}: server died ({rr['server_died']})")

        # -- (a) direct -----------------------------------------------------------------
        measure("direct", f"{upstream}/chat/completions", None, None)

        # -- (b) bare proxy -------------------------------------------------------------
        port = free_port()
        env = dict(os.environ, BARE_UPSTREAM=upstream, BARE_KEY=MASTER_KEY, BARE_MODEL=MODEL)
        bare = Server("bare", [PY, str(BENCH / "bare_proxy.py"), "--port", str(port)], logdir, srv_cpu, env=env)
        try:
            t = bare.wait_http(port, "/health", 30)
            time.sleep(1.0)
            results["startup"]["bare"] = {"ready_s": round(t, 3), "idle_rss_mb": round(rss_mb(bare.pids()), 1)}
            measure("bare", f"http://127.0.0.1:{port}/v1/chat/completions", MASTER_KEY, bare)
        finally:
            bare.stop()

        # -- (c) faregate: start-up x N, then load ---------------------------------------
        times, idle = [], []
        fg_cmd = faregate_cmd() + ["serve", "--config", str(config), "--workers", "1"]
        for i in range(startup_runs):
            port = free_port()
            fg = Server(f"faregate-startup-{i}", fg_cmd + ["--port", str(port)], logdir, srv_cpu)
            try:
                times.append(fg.wait_http(port, "/health/live", 30))
                time.sleep(1.0)
                pids = fg.pids()
                idle.append({"tree_mb": round(rss_mb(pids), 1), "per_process_mb": [round(rss_mb([p]), 1) for p in pids]})
            finally:
                fg.stop()
        results["startup"]["faregate"] = {
            "ready_s_runs": [round(t, 3) for t in times], "ready_s": round(statistics.median(times), 3),
            "idle_rss_mb": statistics.median(x["tree_mb"] for x in idle), "idle_rss_runs": idle}
        log(f"faregate start-up: {results['startup']['faregate']['ready_s_runs']} s; idle RSS {idle[-1]}")
        port = free_port()
        fg = Server("faregate", fg_cmd + ["--port", str(port)], logdir, srv_cpu)
        fg_url = f"http://127.0.0.1:{port}/v1/chat/completions"
        try:
            fg.wait_http(port, "/health/live", 30)
            measure("faregate", fg_url, MASTER_KEY, fg)
            if args.profile:
                profile_faregate(fg, fg_url, args, gen_cpu, use_wrk, logdir, results)
        finally:
            fg.stop()
            results["faregate_log_errors"] = scan_log(fg.log_path)

        # -- (d) LiteLLM ----------------------------------------------------------------
        if args.skip_litellm:
            results["notes"].append("LiteLLM skipped (--skip-litellm)")
        else:
            exe, version = ensure_litellm(logdir)
            if exe is None:
                results["notes"].append(f"LiteLLM skipped: {version}")
                log(f"LiteLLM skipped: {version}")
            else:
                results["litellm_version"] = version
                port = free_port()
                env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_TELEMETRY="False",
                           NO_DOCS="True", PYTHONUNBUFFERED="1")
                env.pop("VIRTUAL_ENV", None)
                ll = Server("litellm", [str(exe), "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
                                        "--num_workers", "1"], logdir, srv_cpu, env=env, cwd=logdir)
                try:
                    log(f"LiteLLM {version}: starting (it takes several seconds)")
                    t = ll.wait_http(port, "/health/liveliness", 120, interval=0.05)
                    time.sleep(1.0)
                    results["startup"]["litellm"] = {"ready_s": round(t, 3), "idle_rss_mb": round(rss_mb(ll.pids()), 1)}
                    measure("litellm", f"http://127.0.0.1:{port}/v1/chat/completions", MASTER_KEY, ll)
                finally:
                    ll.stop()
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


def profile_faregate(fg: Server, url: str, args: argparse.Namespace, gen_cpu: str | None, use_wrk: bool,
                     logdir: Path, results: dict[str, Any]) -> None:
    """py-spy record faregate's worker for 10 s under max load; summarise own time by package and function."""
    spy = shutil.which("py-spy") or str(Path(PY).with_name("py-spy"))
    if not Path(spy).exists():
        results["notes"].append("--profile: py-spy is not installed (pip install py-spy)")
        return
    workers = [p for p in fg.pids() if p != fg.pid]
    target = workers[-1] if workers else fg.pid
    log(f"profiling faregate worker {target} with py-spy for 10 s under {args.max_connections} connections")
    pin = ["taskset", "-c", gen_cpu] if gen_cpu else []  # py-spy and the client stay off the server's core
    if use_wrk:
        cmd = ["wrk", "-t1", f"-c{args.max_connections}", "-d13s", "--timeout", "30s",
               "-s", str(write_wrk_script(logdir, MASTER_KEY)), url]
    else:
        cmd = [PY, str(BENCH / "loadgen.py"), "--url", url, "--key", MASTER_KEY, "--mode", "closed",
               "--connections", str(args.max_connections), "--duration", "12", "--warmup", "1"]
    gen = subprocess.Popen(pin + cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                           start_new_session=True)
    try:
        time.sleep(1.5)
        cpu0, t0 = thread_cpu_seconds(target), time.perf_counter()
        spy_out = subprocess.run(pin + [spy, "record", "-o", args.profile, "--pid", str(target), "--duration", "10",
                                        "--format", "speedscope", "--rate", "200", "--nonblocking"],
                                 capture_output=True, text=True, timeout=60)
        main_cpu = (thread_cpu_seconds(target) - cpu0) / (time.perf_counter() - t0)
        out, _ = gen.communicate(timeout=30)
    finally:
        if gen.poll() is None:
            os.killpg(gen.pid, signal.SIGKILL)
            gen.wait()
    if spy_out.returncode != 0 or not Path(args.profile).exists():
        results["notes"].append(f"--profile: py-spy failed: {(spy_out.stderr or spy_out.stdout)[-500:]}")
        return
    rps = None
    for line in out.splitlines():
        with contextlib.suppress(ValueError, KeyError):
            if line.startswith("WRKJSON "):
                w = json.loads(line[8:])
                rps = w["requests"] / (w["duration_us"] / 1e6)
            elif line.startswith("{"):
                rps = json.loads(line)["rps"]
    results["profile"] = {"file": args.profile, "rps": rps, "main_thread_cpu_pct": round(100 * main_cpu, 1),
                          **summarise_profile(Path(args.profile))}
    if rps:  # own time per request of each package, on the Python (event loop) thread
        for row in results["profile"]["by_package"]:
            row["us_per_req"] = round(row["pct"] / 100 * main_cpu / rps * 1e6)


def write_wrk_script(logdir: Path, key: str | None) -> Path:
    sys.path.insert(0, str(BENCH))
    from loadgen import request_body

    script = logdir / ("post-auth.lua" if key else "post.lua")
    auth = f'wrk.headers["Authorization"] = "Bearer {key}"' if key else ""
    script.write_text(WRK_LUA % {"body": request_body(MODEL, False, 256).decode(), "auth": auth})
    return script


def thread_cpu_seconds(pid: int) -> float:
    """CPU time of the main thread of pid (the thread running the Python event loop)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0


def _package(path: str) -> str:
    m = re.search(r"site-packages/([^/]+)", path)
    if m:
        return m.group(1).removesuffix(".py")
    m = re.search(r"src/faregate/([^/]+)", path)
    if m:
        return "faregate." + m.group(1).removesuffix(".py")
    return "python stdlib / other"


def summarise_profile(path: Path, n: int = 20) -> dict[str, Any]:
    """Own time of the main thread's samples by package and by function (py-spy speedscope file).

    Without --native, time spent in C/Rust code is charged to the Python line that called it
    (e.g. granian's send/receive shows up on starlette's `await send(...)` lines)."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    frames = doc["shared"]["frames"]
    prof = max(doc["profiles"], key=lambda p: sum(1 for s in p["samples"] if s))  # the Python thread
    own: dict[int, float] = defaultdict(float)
    total = 0.0
    for stack, w in zip(prof["samples"], prof["weights"], strict=False):
        if stack:
            total += w
            own[stack[-1]] += w
    site = re.compile(r".*/site-packages/|.*/src/|.*/lib/python3\.\d+/")
    by_pkg: dict[str, float] = defaultdict(float)
    for i, w in own.items():
        by_pkg[_package(frames[i].get("file", ""))] += w
    top = []
    for i, w in sorted(own.items(), key=lambda kv: -kv[1])[:n]:
        f = frames[i]
        top.append({"pct": round(100 * w / total, 1), "function": f["name"],
                    "where": f"{site.sub('', f.get('file', ''))}:{f.get('line', '')}"})
    pkgs = [{"package": k, "pct": round(100 * v / total, 1)} for k, v in sorted(by_pkg.items(), key=lambda kv: -kv[1])]
    return {"samples": len(prof["samples"]), "by_package": pkgs, "top_self": top}


def cpu_us_per_req(x: dict[str, Any]) -> float | None:
    """Server CPU time per request (us), from its CPU% over the run and the RPS: harness-independent."""
    if not x.get("server_cpu_pct") or not x.get("rps"):
        return None
    return round(x["server_cpu_pct"] / 100 / x["rps"] * 1e6, 0)


def render(r: dict[str, Any]) -> str:
    out: list[str] = []
    m, s = r["machine"], r["settings"]
    out.append(f"faregate overhead benchmark — {r['date']}")
    out.append(f"machine: {m['cpus']} CPUs, Python {m['python']}, {m['platform']}; pinning: {m['pinning']}")
    out.append(f"upstream: mock, {s['upstream_latency_ms']:.0f} ms fixed latency, {s['mock_workers']} workers; "
               f"streams: TTFT {s['stream_ttft_ms']} ms, ITL {s['stream_itl_ms']} ms, {s['stream_tokens']} tokens")
    if r.get("litellm_version"):
        out.append(f"LiteLLM: {r['litellm_version']} (litellm[proxy] from PyPI, own venv)")
    lat, mx, st, su = r["latency"], r["max_rps"], r["stream"], r["startup"]
    d = lat.get("direct")

    out.append("")
    out.append(f"Latency at {s['connections']} connections (closed loop, {s['duration_s']:.0f} s measured after "
               f"{s['warmup_s']:.0f} s warm-up)")
    rows = []
    for name, x in lat.items():
        p50, p99 = x["latency_ms"]["p50"], x["latency_ms"]["p99"]
        add50 = None if (d is None or name == "direct" or p50 is None) else p50 - d["latency_ms"]["p50"]
        add99 = None if (d is None or name == "direct" or p99 is None) else p99 - d["latency_ms"]["p99"]
        rows.append([name, p50, x["latency_ms"]["p90"], p99, x["rps"], x["errors"], x["server_rss_mb"],
                     signed(add50), signed(add99), x["server_cpu_pct"], x["mock_cpu_pct"], x["loadgen_cpu_pct"]])
    out.append(table(["target", "p50 ms", "p90 ms", "p99 ms", "RPS", "errors", "RSS MB", "+p50 ms", "+p99 ms",
                      "srv CPU%", "mock CPU%", "gen CPU%"], rows))

    out.append("")
    out.append(f"Max RPS at {s['max_connections']} connections (closed loop, {s['max_duration_s']:.0f} s)")
    bare_rps = mx.get("bare", {}).get("rps")
    rows = []
    for name, x in mx.items():
        pct_bare = None if not bare_rps or name in ("bare", "direct") else 100 * x["rps"] / bare_rps
        rows.append([name, x["rps"], x["latency_ms"]["p50"], x["latency_ms"]["p99"], x["errors"], x["server_rss_mb"],
                     "-" if pct_bare is None else f"{pct_bare:.0f}%", x["server_cpu_pct"], cpu_us_per_req(x),
                     x["mock_cpu_pct"], "/".join(f"{v:.0f}" for v in x.get("core_busy_pct", {}).values()) or "-"])
    out.append(table(["target", "RPS", "p50 ms", "p99 ms", "errors", "RSS MB", "% of bare", "srv CPU%",
                      "srv CPU us/req", "mock CPU%", "cpu0/cpu1 busy%"], rows))
    if "direct" in mx:
        ideal = s["max_connections"] / (s["upstream_latency_ms"] / 1000)
        out.append(f"(client: {s.get('max_rps_client', 'loadgen.py')}; direct = the harness ceiling: the client and "
                   f"the mock alone reach {mx['direct']['rps']:.0f} RPS of the ideal {ideal:.0f}. {m['pinning']}: "
                   f"if cpu1 is not near 100% busy, the harness did not hold a server back.)")

    out.append("")
    out.append(f"Streaming ({s['stream_connections']} concurrent streams, {s['duration_s']:.0f} s)")
    ds = st.get("direct")
    rows = []
    for name, x in st.items():
        ttft50 = x["ttft_ms"]["p50"]
        tps = x["decode_tps"]["p50"]
        add = None if (ds is None or name == "direct" or ttft50 is None) else ttft50 - ds["ttft_ms"]["p50"]
        kept = None if (ds is None or name == "direct" or tps is None or not ds["decode_tps"]["p50"]) \
            else 100 * tps / ds["decode_tps"]["p50"]
        rows.append([name, x["count"], ttft50, x["ttft_ms"]["p99"], signed(add), tps, x["e2e_tps"]["p50"],
                     "-" if kept is None else f"{kept:.1f}%", x["errors"]])
    out.append(table(["target", "streams", "TTFT p50", "TTFT p99", "+TTFT ms", "tok/s p50", "e2e tok/s",
                      "tok/s kept", "errors"], rows))

    out.append("")
    out.append("Start-up (spawn -> first health 200) and idle RSS (whole process tree)")
    rows = []
    for name, x in su.items():
        runs = x.get("ready_s_runs")
        rows.append([name, x["ready_s"], ", ".join(f"{t:.2f}" for t in runs) if runs else "-", x["idle_rss_mb"]])
    out.append(table(["server", "ready s", "runs s", "idle RSS MB"], rows))
    fsu = su.get("faregate")
    if fsu:
        per = fsu["idle_rss_runs"][-1]["per_process_mb"]
        out.append(f"(faregate = granian supervisor + 1 worker: {' + '.join(f'{x:.0f}' for x in per)} MB)")

    # -- targets
    out.append("")
    out.append("Targets")
    checks: list[tuple[str, str, str, bool | None]] = []
    b, f = lat.get("bare"), lat.get("faregate")
    if d and b and f:
        b99 = b["latency_ms"]["p99"] - d["latency_ms"]["p99"]
        f99 = f["latency_ms"]["p99"] - d["latency_ms"]["p99"]
        limit = TARGET_P99_RATIO * max(b99, 0.0)
        checks.append((f"added p99 at {s['connections']} conns <= {TARGET_P99_RATIO}x bare's",
                       f"<= {limit:.1f} ms", f"{f99:.1f} ms (bare {b99:.1f} ms; ratio "
                       f"{(f99 / b99 if b99 > 0 else float('inf')):.2f}x)", f99 <= limit))
    if mx.get("bare") and mx.get("faregate"):
        pct = 100 * mx["faregate"]["rps"] / mx["bare"]["rps"]
        checks.append((f"max RPS at {s['max_connections']} conns >= {TARGET_RPS_PCT:.0f}% of bare's",
                       f">= {TARGET_RPS_PCT:.0f}%", f"{pct:.0f}% ({mx['faregate']['rps']:.0f} / {mx['bare']['rps']:.0f})",
                       pct >= TARGET_RPS_PCT))
        bu, fu = cpu_us_per_req(mx["bare"]), cpu_us_per_req(mx["faregate"])
        if bu and fu:
            checks.append(("  (info) CPU per request, bare / faregate", f">= {TARGET_RPS_PCT:.0f}%",
                           f"{100 * bu / fu:.0f}% ({bu:.0f} / {fu:.0f} us)", None))
    if "faregate" in lat:
        errs = sum(r[k]["faregate"]["errors"] for k in ("latency", "max_rps", "stream") if "faregate" in r[k])
        checks.append(("zero errors through faregate", "0", str(errs), errs == 0))
    if fsu:
        checks.append(("start-up to first /health/live 200 (median of 3)", f"<= {TARGET_STARTUP_S} s",
                       f"{fsu['ready_s']:.2f} s", fsu["ready_s"] <= TARGET_STARTUP_S))
        checks.append(("idle RSS after start-up (remote models only)", f"<= {TARGET_IDLE_RSS_MB:.0f} MB",
                       f"{fsu['idle_rss_mb']:.0f} MB", fsu["idle_rss_mb"] <= TARGET_IDLE_RSS_MB))
    fs = st.get("faregate")
    if ds and fs and fs["ttft_ms"]["p50"] is not None:
        add = fs["ttft_ms"]["p50"] - ds["ttft_ms"]["p50"]
        checks.append(("streaming: added TTFT (p50)", f"<= {TARGET_TTFT_ADD_MS:.0f} ms", f"{add:.1f} ms",
                       add <= TARGET_TTFT_ADD_MS))
        kept = 100 * fs["decode_tps"]["p50"] / ds["decode_tps"]["p50"]
        checks.append(("streaming: tokens/s kept (p50)", f">= {TARGET_TPS_PCT:.0f}%", f"{kept:.1f}%",
                       kept >= TARGET_TPS_PCT))
    rows = [[name, target, measured, "info" if ok is None else "PASS" if ok else "FAIL"]
            for name, target, measured, ok in checks]
    out.append(table(["target", "goal", "measured", "result"], rows))
    r["targets"] = [{"target": a.strip(), "goal": b_, "measured": c, "pass": ok} for a, b_, c, ok in checks]

    pr = r.get("profile") or {}
    if pr.get("top_self"):
        out.append("")
        out.append(f"py-spy: faregate worker at {fmt(pr.get('rps'), 0)} RPS ({s['max_connections']} connections); "
                   f"its event-loop thread used {pr['main_thread_cpu_pct']}% of a core. Own time of that thread "
                   f"(C/Rust time is charged to the calling Python line; {pr['file']}):")
        out.append("  by package: " + ", ".join(
            f"{x['package']} {x['pct']:.0f}%" + (f" ({x['us_per_req']} us/req)" if "us_per_req" in x else "")
            for x in pr["by_package"] if x["pct"] >= 0.5))
        out.append("  top functions:")
        for x in pr["top_self"][:15]:
            out.append(f"  {x['pct']:5.1f}%  {x['function']}  ({x['where']})")
    for note in r["notes"]:
        out.append(f"note: {note}")
    if r.get("faregate_log_errors"):
        out.append("")
        out.append("faregate log lines that look like errors:")
        out.extend("  " + line for line in r["faregate_log_errors"])
    if r["errors_seen"]:
        out.append("")
        out.append("errors:")
        out.extend("  " + e for e in r["errors_seen"])
    out.append(f"\n(wall time {r['wall_s']:.0f} s; load average at start {m.get('loadavg_at_start')}; processes "
               f"outside this benchmark used {m.get('other_processes_cpu_pct')}% of one core meanwhile)")
    return "\n".join(out)


if __name__ == "__main__":
    raise SystemExit(main())
