"""The targets the load is sent to: (a) direct to the mock upstream, (b) the bare proxy, (c) faregate and
(d) LiteLLM's proxy (installed once into its own venv, bench/.litellm-venv) — their config, how each
is started, and its run (start-up, then Run.measure)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

from common import BENCH, MASTER_KEY, MODEL, PY, log
from measure import Run, Target, idle_after_start, repeated_startup
from procs import Server, free_port

LITELLM_VENV = BENCH / ".litellm-venv"
# The mock upstream's streams.
STREAM_TTFT_MS = 100
STREAM_ITL_MS = 10
STREAM_TOKENS = 50


def faregate_cmd() -> list[str]:
    exe = Path(PY).with_name("faregate")
    return [str(exe)] if exe.exists() else [PY, "-m", "faregate"]


def chat_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/v1/chat/completions"


def start_mock(run: Run, latency_ms: float, workers: int) -> str:
    """Start the mock upstream (on the load generator's core) into run.mock; return its base URL."""
    mock_port = free_port()
    run.mock = Server("mock", faregate_cmd() + [
        "mock-upstream", "--port", str(mock_port), "--protocol", "openai", "--latency-ms", str(latency_ms),
        "--ttft-ms", str(STREAM_TTFT_MS), "--itl-ms", str(STREAM_ITL_MS), "--tokens", str(STREAM_TOKENS),
        "--workers", str(workers)], run.logdir, run.gen_cpu)
    run.mock.wait_http(mock_port, "/health", 30)
    log(f"mock upstream on :{mock_port} ({workers} workers); logs in {run.logdir}")
    return f"http://127.0.0.1:{mock_port}/v1"


def write_config(logdir: Path, upstream: str) -> Path:
    """The config faregate and LiteLLM both run with: one model on the mock upstream, a master key."""
    config = logdir / "config.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        f"    litellm_params: {{model: openai/{MODEL}, api_base: {upstream}, api_key: sk-upstream}}\n"
        f"general_settings: {{master_key: {MASTER_KEY}}}\n")
    return config


def start_bare(run: Run, upstream: str) -> Target:
    """Start the bare proxy (it stays up while the others are measured: the runs interleave)."""
    port = free_port()
    env = dict(os.environ, BARE_UPSTREAM=upstream, BARE_KEY=MASTER_KEY, BARE_MODEL=MODEL)
    bare = Server("bare", [PY, str(BENCH / "bare_proxy.py"), "--port", str(port)], run.logdir, run.srv_cpu, env=env)
    t = bare.wait_http(port, "/health", 30)
    run.results["startup"]["bare"] = idle_after_start(bare, t)
    return Target("bare", chat_url(port), MASTER_KEY, bare)


def limited_key(base: str) -> str:
    """A virtual key held to every limit faregate has — RPM, TPM, parallel, a daily budget — and
    whose user and team have them too (limits high enough never to refuse the benchmark's load):
    the worst case of the access checks, to compare with the master key's run."""
    def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"authorization": f"Bearer {MASTER_KEY}", "content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    limits = {"rpm": 10_000_000, "tpm": 2_000_000_000, "max_parallel": 100_000, "budget_usd": "1000000",
              "budget_period": "day"}
    post("/admin/users", {"id": "bench-user", **limits})
    post("/admin/teams", {"id": "bench-team", **limits})
    return post("/admin/keys", {"name": "bench", "user": "bench-user", "team": "bench-team", **limits})["key"]


def start_faregate(run: Run, config: Path, startup_runs: int, with_key: bool = True) -> list[Target]:
    """Start-up x startup_runs, then one faregate left running: the master key's target and (with_key)
    a limited virtual key's on it."""
    fg_cmd = faregate_cmd() + ["serve", "--config", str(config), "--workers", "1"]
    # The ledger goes to a throwaway SQLite file, migrated once up front: the start-up runs
    # measure a gateway whose database exists (a first-ever start adds the migration, ~1 s).
    os.environ["FAREGATE_DATABASE_URL"] = f"sqlite:///{run.logdir / 'ledger.db'}"
    subprocess.run(faregate_cmd() + ["db", "upgrade", "--quiet", "--config", str(config)], check=True)
    su = repeated_startup("faregate", fg_cmd, "/health/live", startup_runs, run.logdir, run.srv_cpu)
    run.results["startup"]["faregate"] = su
    log(f"faregate start-up: {su['ready_s_runs']} s; idle RSS {su['idle_rss_runs'][-1]}")
    port = free_port()
    fg = Server("faregate", fg_cmd + ["--port", str(port)], run.logdir, run.srv_cpu)
    fg.wait_http(port, "/health/ready", 30)
    targets = [Target("faregate", chat_url(port), MASTER_KEY, fg)]
    if with_key:
        targets.append(Target("faregate+key", chat_url(port), limited_key(f"http://127.0.0.1:{port}"), fg))
    return targets


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


def bench_litellm(run: Run, config: Path) -> None:
    exe, version = ensure_litellm(run.logdir)
    if exe is None:
        run.results["notes"].append(f"LiteLLM skipped: {version}")
        log(f"LiteLLM skipped: {version}")
        return
    run.results["litellm_version"] = version
    port = free_port()
    env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_TELEMETRY="False",
               NO_DOCS="True", PYTHONUNBUFFERED="1")
    env.pop("VIRTUAL_ENV", None)
    ll = Server("litellm", [str(exe), "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
                            "--num_workers", "1"], run.logdir, run.srv_cpu, env=env, cwd=run.logdir)
    try:
        log(f"LiteLLM {version}: starting (it takes several seconds)")
        t = ll.wait_http(port, "/health/liveliness", 120, interval=0.05)
        run.results["startup"]["litellm"] = idle_after_start(ll, t)
        run.measure("litellm", chat_url(port), MASTER_KEY, ll)
    finally:
        ll.stop()
