"""The report: the tables of a run's results, the targets of the issue with PASS/FAIL, the py-spy
summary, notes and errors."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

# The targets of the issue.
TARGET_P99_RATIO = 1.5       # faregate's added p99 <= 1.5 x the bare proxy's added p99
TARGET_RPS_PCT = 75.0        # faregate's max RPS >= 75 % of the bare proxy's
TARGET_STARTUP_S = 1.5       # spawn -> first /health/live 200
TARGET_IDLE_RSS_MB = 120.0   # after start-up, remote models only
TARGET_TTFT_ADD_MS = 2.0     # streaming: added TTFT
TARGET_TPS_PCT = 98.0        # streaming: % of direct tokens/s kept


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


def cpu_us_per_req(x: dict[str, Any]) -> float | None:
    """Server CPU time per request (us), from its CPU% over the run and the RPS: harness-independent."""
    if not x.get("server_cpu_pct") or not x.get("rps"):
        return None
    return round(x["server_cpu_pct"] / 100 / x["rps"] * 1e6, 0)


def _latency(r: dict[str, Any]) -> list[str]:
    s, lat = r["settings"], r["latency"]
    d = lat.get("direct")
    rows = []
    for name, x in lat.items():
        p50, p99 = x["latency_ms"]["p50"], x["latency_ms"]["p99"]
        add50 = None if (d is None or name == "direct" or p50 is None) else p50 - d["latency_ms"]["p50"]
        add99 = None if (d is None or name == "direct" or p99 is None) else p99 - d["latency_ms"]["p99"]
        rows.append([name, p50, x["latency_ms"]["p90"], p99, x["rps"], x["errors"], x["server_rss_mb"],
                     signed(add50), signed(add99), x["server_cpu_pct"], x["mock_cpu_pct"], x["loadgen_cpu_pct"]])
    out = [f"Latency at {s['connections']} connections (closed loop, {s['duration_s']:.0f} s measured after "
           f"{s['warmup_s']:.0f} s warm-up)",
           table(["target", "p50 ms", "p90 ms", "p99 ms", "RPS", "errors", "RSS MB", "+p50 ms", "+p99 ms",
                  "srv CPU%", "mock CPU%", "gen CPU%"], rows)]
    if s.get("latency_repeats", 1) > 1:
        runs = "; ".join(f"{n} {', '.join(f'{v:.1f}' for v in x.get('p99_runs_ms', []))}" for n, x in lat.items())
        out.append(f"(each row is the run with the median p99 of {s['latency_repeats']}; every run's p99 ms: {runs};"
                   " errors are summed over the runs)")
    return out


def _max_rps(r: dict[str, Any]) -> list[str]:
    m, s, mx = r["machine"], r["settings"], r["max_rps"]
    out = [f"Max RPS at {s['max_connections']} connections (closed loop, {s['max_duration_s']:.0f} s)"]
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
        if any(x.get("rps_runs") and len(x["rps_runs"]) > 1 for x in mx.values()):
            runs = "; ".join(f"{n} {', '.join(f'{v:.0f}' for v in x.get('rps_runs', []))}" for n, x in mx.items())
            out.append(f"(each row is the run with the median RPS; every round's RPS: {runs}; the targets below "
                       "compare runs of the same round)")
        out.append(f"(client: {s.get('max_rps_client', 'loadgen.py')}; direct = the harness ceiling: the client and "
                   f"the mock alone reach {mx['direct']['rps']:.0f} RPS of the ideal {ideal:.0f}. {m['pinning']}: "
                   f"if cpu1 is not near 100% busy, the harness did not hold a server back.)")
    return out


def _stream(r: dict[str, Any]) -> list[str]:
    s, st = r["settings"], r["stream"]
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
    return [f"Streaming ({s['stream_connections']} concurrent streams, {s['duration_s']:.0f} s)",
            table(["target", "streams", "TTFT p50", "TTFT p99", "+TTFT ms", "tok/s p50", "e2e tok/s",
                   "tok/s kept", "errors"], rows)]


def _startup(r: dict[str, Any]) -> list[str]:
    su = r["startup"]
    rows = []
    for name, x in su.items():
        runs = x.get("ready_s_runs")
        rows.append([name, x["ready_s"], ", ".join(f"{t:.2f}" for t in runs) if runs else "-", x["idle_rss_mb"]])
    out = ["Start-up (spawn -> first health 200) and idle RSS (whole process tree)",
           table(["server", "ready s", "runs s", "idle RSS MB"], rows)]
    fsu = su.get("faregate")
    if fsu:
        per = fsu["idle_rss_runs"][-1]["per_process_mb"]
        out.append(f"(faregate = granian supervisor + 1 worker: {' + '.join(f'{x:.0f}' for x in per)} MB)")
    return out


def target_checks(r: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    """(target, goal, measured, passed; None: for information) of each target the results allow to
    check — for faregate with the master key, and again with a limited virtual key ("+key":
    auth + limits + budgets + ledger)."""
    checks: list[tuple[str, str, str, bool | None]] = []
    for name in ("faregate", "faregate+key"):
        if name in r["latency"]:
            checks += _load_checks(r, name, "" if name == "faregate" else " [+key]")
    fsu = r["startup"].get("faregate")
    if fsu:
        checks.append(("start-up to first /health/live 200 (median of 3)", f"<= {TARGET_STARTUP_S} s",
                       f"{fsu['ready_s']:.2f} s", fsu["ready_s"] <= TARGET_STARTUP_S))
        checks.append(("idle RSS after start-up (remote models only)", f"<= {TARGET_IDLE_RSS_MB:.0f} MB",
                       f"{fsu['idle_rss_mb']:.0f} MB", fsu["idle_rss_mb"] <= TARGET_IDLE_RSS_MB))
    return checks


def paired(a: dict[str, Any], b: dict[str, Any], runs: str, f: Callable[[float, float], float],
           single: float) -> float:
    """The median over rounds of f(a's run, b's run of the same round) — the targets were
    measured in interleaved rounds; `single` when there was one round."""
    xs, ys = a.get(runs) or [], b.get(runs) or []
    vals = [f(x, y) for x, y in zip(xs, ys, strict=False) if x is not None and y]
    return statistics.median(vals) if len(vals) > 1 else single


def _load_checks(r: dict[str, Any], name: str, tag: str) -> list[tuple[str, str, str, bool | None]]:
    s, lat, mx, st = r["settings"], r["latency"], r["max_rps"], r["stream"]
    checks: list[tuple[str, str, str, bool | None]] = []
    d, b, f = lat.get("direct"), lat.get("bare"), lat.get(name)
    if d and b and f:
        # rounds interleave the targets: compare each round's runs with each other (paired)
        b99 = paired(b, d, "p99_runs_ms", lambda x, y: x - y, b["latency_ms"]["p99"] - d["latency_ms"]["p99"])
        f99 = paired(f, d, "p99_runs_ms", lambda x, y: x - y, f["latency_ms"]["p99"] - d["latency_ms"]["p99"])
        limit = TARGET_P99_RATIO * max(b99, 0.0)
        checks.append((f"added p99 at {s['connections']} conns <= {TARGET_P99_RATIO}x bare's{tag}",
                       f"<= {limit:.1f} ms", f"{f99:.1f} ms (bare {b99:.1f} ms; ratio "
                       f"{(f99 / b99 if b99 > 0 else float('inf')):.2f}x)", f99 <= limit))
    if mx.get("bare") and mx.get(name):
        pct = paired(mx[name], mx["bare"], "rps_runs", lambda x, y: 100 * x / y, 100 * mx[name]["rps"] / mx["bare"]["rps"])
        checks.append((f"max RPS at {s['max_connections']} conns >= {TARGET_RPS_PCT:.0f}% of bare's{tag}",
                       f">= {TARGET_RPS_PCT:.0f}%", f"{pct:.0f}% ({mx[name]['rps']:.0f} / {mx['bare']['rps']:.0f})",
                       pct >= TARGET_RPS_PCT))
        bu, fu = cpu_us_per_req(mx["bare"]), cpu_us_per_req(mx[name])
        if bu and fu:
            checks.append((f"  (info) CPU per request, bare / {name}", f">= {TARGET_RPS_PCT:.0f}%",
                           f"{100 * bu / fu:.0f}% ({bu:.0f} / {fu:.0f} us)", None))
    errs = sum(r[k][name]["errors"] for k in ("latency", "max_rps", "stream") if name in r[k])
    checks.append((f"zero errors through {name}", "0", str(errs), errs == 0))
    ds, fs = st.get("direct"), st.get(name)
    if ds and fs and fs["ttft_ms"]["p50"] is not None:
        add = fs["ttft_ms"]["p50"] - ds["ttft_ms"]["p50"]
        checks.append((f"streaming: added TTFT (p50){tag}", f"<= {TARGET_TTFT_ADD_MS:.0f} ms", f"{add:.1f} ms",
                       add <= TARGET_TTFT_ADD_MS))
        kept = 100 * fs["decode_tps"]["p50"] / ds["decode_tps"]["p50"]
        checks.append((f"streaming: tokens/s kept (p50){tag}", f">= {TARGET_TPS_PCT:.0f}%", f"{kept:.1f}%",
                       kept >= TARGET_TPS_PCT))
    return checks


def _profile(r: dict[str, Any]) -> list[str]:
    pr = r.get("profile") or {}
    if not pr.get("top_self"):
        return []
    out = ["", f"py-spy: faregate worker at {fmt(pr.get('rps'), 0)} RPS ({r['settings']['max_connections']} "
               f"connections); its event-loop thread used {pr['main_thread_cpu_pct']}% of a core. Own time of that "
               f"thread (C/Rust time is charged to the calling Python line; {pr['file']}):"]
    out.append("  by package: " + ", ".join(
        f"{x['package']} {x['pct']:.0f}%" + (f" ({x['us_per_req']} us/req)" if "us_per_req" in x else "")
        for x in pr["by_package"] if x["pct"] >= 0.5))
    out.append("  top functions:")
    for x in pr["top_self"][:15]:
        out.append(f"  {x['pct']:5.1f}%  {x['function']}  ({x['where']})")
    return out


def render(r: dict[str, Any]) -> str:
    """The report of results r; also stores the checked targets in r["targets"]."""
    m, s = r["machine"], r["settings"]
    out = [f"faregate overhead benchmark — {r['date']}",
           f"machine: {m['cpus']} CPUs, Python {m['python']}, {m['platform']}; pinning: {m['pinning']}",
           f"upstream: mock, {s['upstream_latency_ms']:.0f} ms fixed latency, {s['mock_workers']} workers; "
           f"streams: TTFT {s['stream_ttft_ms']} ms, ITL {s['stream_itl_ms']} ms, {s['stream_tokens']} tokens"]
    if r.get("litellm_version"):
        out.append(f"LiteLLM: {r['litellm_version']} (litellm[proxy] from PyPI, own venv)")
    for section in (_latency, _max_rps, _stream, _startup):
        out.append("")
        out.extend(section(r))

    out.append("")
    out.append("Targets")
    checks = target_checks(r)
    rows = [[name, target, measured, "info" if ok is None else "PASS" if ok else "FAIL"]
            for name, target, measured, ok in checks]
    out.append(table(["target", "goal", "measured", "result"], rows))
    r["targets"] = [{"target": a.strip(), "goal": b, "measured": c, "pass": ok} for a, b, c, ok in checks]

    out.extend(_profile(r))
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
