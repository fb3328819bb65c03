"""The benchmark's processes: free ports, taskset pinning, servers started and stopped as process
groups, and their RSS / CPU time read from /proc (also sampled while a load runs)."""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections import defaultdict
from pathlib import Path

from common import log

CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinned(cmd: list[str], cpus: str | None) -> list[str]:
    """cmd run with taskset on cpus (as is if cpus is None)."""
    return (["taskset", "-c", cpus] if cpus else []) + cmd


# ---------------------------------------------------------------------------- /proc


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


def _stat_ticks(path: str) -> int:
    """utime + stime of a /proc/.../stat file, in clock ticks; 0 if it cannot be read."""
    try:
        with open(path, "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return 0


def cpu_seconds(pids: list[int]) -> float:
    return sum(_stat_ticks(f"/proc/{p}/stat") for p in pids) / CLK_TCK


def thread_cpu_seconds(pid: int) -> float:
    """CPU time of the main thread of pid (the thread running the Python event loop)."""
    return _stat_ticks(f"/proc/{pid}/task/{pid}/stat") / CLK_TCK


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


# ---------------------------------------------------------------------------- servers


class Server:
    """A server process in its own session (so its whole group can be stopped), logging to a file."""

    running: list[Server] = []

    def __init__(self, name: str, cmd: list[str], logdir: Path, cpus: str | None,
                 env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        self.name = name
        self.log_path = logdir / f"{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        full = pinned(cmd, cpus)
        self.spawned_at = time.perf_counter()
        self.proc = subprocess.Popen(full, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True, env=env, cwd=cwd)
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

    def scan_log(self) -> list[str]:
        """Lines of the log that look like errors (with a little context for tracebacks)."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []
        hits = []
        pat = re.compile(r"Traceback|ERROR|CRITICAL|Exception|Error:|exception", re.I)
        for i, line in enumerate(lines):
            if pat.search(line):
                hits.append("\n".join(lines[i:i + 12]) if line.startswith("Traceback") else line)
        return hits[:20]

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
