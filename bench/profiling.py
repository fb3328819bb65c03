"""--profile: py-spy records faregate's worker under max load; its samples are summarised by
package and by function (own time of the event-loop thread)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from common import BENCH, MASTER_KEY, PY, log
from measure import Run, write_wrk_script
from procs import Server, pinned, thread_cpu_seconds


def profile_faregate(fg: Server, url: str, out_file: str, run: Run) -> None:
    """py-spy record faregate's worker for 10 s under max load; summarise own time by package and function."""
    results = run.results
    spy = shutil.which("py-spy") or str(Path(PY).with_name("py-spy"))
    if not Path(spy).exists():
        results["notes"].append("--profile: py-spy is not installed (pip install py-spy)")
        return
    workers = [p for p in fg.pids() if p != fg.pid]
    target = workers[-1] if workers else fg.pid
    log(f"profiling faregate worker {target} with py-spy for 10 s under {run.max_connections} connections")
    # py-spy and the client stay off the server's core
    if run.use_wrk:
        cmd = ["wrk", "-t1", f"-c{run.max_connections}", "-d13s", "--timeout", "30s",
               "-s", str(write_wrk_script(run.logdir, MASTER_KEY)), url]
    else:
        cmd = [PY, str(BENCH / "loadgen.py"), "--url", url, "--key", MASTER_KEY, "--mode", "closed",
               "--connections", str(run.max_connections), "--duration", "12", "--warmup", "1"]
    gen = subprocess.Popen(pinned(cmd, run.gen_cpu), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                           start_new_session=True)
    try:
        time.sleep(1.5)
        cpu0, t0 = thread_cpu_seconds(target), time.perf_counter()
        spy_out = subprocess.run(pinned([spy, "record", "-o", out_file, "--pid", str(target), "--duration", "10",
                                         "--format", "speedscope", "--rate", "200", "--nonblocking"], run.gen_cpu),
                                 capture_output=True, text=True, timeout=60)
        main_cpu = (thread_cpu_seconds(target) - cpu0) / (time.perf_counter() - t0)
        out, _ = gen.communicate(timeout=30)
    finally:
        if gen.poll() is None:
            os.killpg(gen.pid, signal.SIGKILL)
            gen.wait()
    if spy_out.returncode != 0 or not Path(out_file).exists():
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
    results["profile"] = {"file": out_file, "rps": rps, "main_thread_cpu_pct": round(100 * main_cpu, 1),
                          **summarise_profile(Path(out_file))}
    if rps:  # own time per request of each package, on the Python (event loop) thread
        for row in results["profile"]["by_package"]:
            row["us_per_req"] = round(row["pct"] / 100 * main_cpu / rps * 1e6)


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
