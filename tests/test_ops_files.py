"""The operations files: Prometheus rules (checked and unit-tested with promtool), the Grafana
dashboard (valid, every query on contract metrics) and the runbook (an anchor for every alert).

promtool comes from the Debian package `prometheus` (apt-get install --no-install-recommends
prometheus); without it these tests fail rather than skip.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERTS_TEST = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "faregate.json"
RUNBOOK = ROOT / "docs" / "runbook.md"

# The observability contract: metric name -> type. Histograms expose _bucket, _sum and _count;
# counters _total (prometheus_client also serves _created, never queried here).
COUNTERS = {
    "faregate_requests", "faregate_tokens", "faregate_cost_usd", "faregate_saved_usd",
    "faregate_cache_requests", "faregate_ratelimit_rejections",
    "faregate_spend_alerts",  # src/faregate/accounting/alerts.py
}
HISTOGRAMS = {
    "faregate_request_duration_seconds", "faregate_overhead_seconds",
    "faregate_upstream_duration_seconds", "faregate_time_to_first_token_seconds",
    "faregate_inter_token_latency_seconds",
}
GAUGES = {
    "faregate_in_flight", "faregate_queue_depth", "faregate_breaker_state",
    "faregate_budget_remaining_usd",
    "faregate_spend_alerts_active",  # src/faregate/accounting/alerts.py
}
CONTRACT = ({f"{c}_total" for c in COUNTERS} | GAUGES
            | {f"{h}{s}" for h in HISTOGRAMS for s in ("_bucket", "_sum", "_count")})

METRIC = re.compile(r"faregate_[a-z_]+")
RECORDED = re.compile(r"faregate:[a-z0-9_:]+")


def promtool() -> str:
    path = shutil.which("promtool") or ("/usr/bin/promtool" if os.path.exists("/usr/bin/promtool") else None)
    if path is None:
        pytest.fail("promtool not found: install the Debian package `prometheus` "
                    "(apt-get install -y --no-install-recommends prometheus)")
    return path


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=120, cwd=ROOT)


def rules() -> list[dict]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def alerts() -> list[dict]:
    return [r for r in rules() if "alert" in r]


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def runbook_anchors() -> set[str]:
    anchors, fenced = set(), False
    for line in RUNBOOK.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (m := re.match(r"#{1,6}\s+(.+)", line)):
            anchors.add(slug(m.group(1)))
    return anchors


def dashboard_panels() -> list[dict]:
    out = []
    for p in json.loads(DASHBOARD.read_text())["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))  # a collapsed row keeps its panels inside
    return out


# -- Prometheus rules ---------------------------------------------------------------------------

def test_promtool_check_rules() -> None:
    r = run_promtool("check", "rules", str(ALERTS))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_promtool_unit_tests() -> None:
    r = run_promtool("test", "rules", str(ALERTS_TEST))
    assert r.returncode == 0, r.stdout + r.stderr


def test_unit_tests_cover_the_key_alerts() -> None:
    """The unit tests assert both firing and silence for breaker-open, 5xx-spike, cost-spike."""
    doc = yaml.safe_load(ALERTS_TEST.read_text())
    assert doc["rule_files"] == ["alerts.yml"]
    fired: set[str] = set()
    silent: set[str] = set()
    for case in doc["tests"]:
        for t in case.get("alert_rule_test", []):
            (fired if t.get("exp_alerts") else silent).add(t["alertname"])
    for name in ("FaregateBreakerOpen", "FaregateProviderErrorSpike", "FaregateCostSpike"):
        assert name in fired and name in silent, name


def test_every_alert_is_complete() -> None:
    names = [a["alert"] for a in alerts()]
    assert len(names) == len(set(names)), "duplicate alert names"
    for a in alerts():
        assert a["labels"]["severity"] in {"critical", "warning", "info"}, a["alert"]
        assert "for" in a, a["alert"]
        for key in ("summary", "description", "runbook_url"):
            assert a["annotations"].get(key), (a["alert"], key)
    expected = {"FaregateProviderErrorSpike", "FaregateLatencyP99High", "FaregateTTFTP99High",
                "FaregateCostSpike", "FaregateCacheHitRateDrop", "FaregateBreakerOpen",
                "FaregateBudgetNearlyExhausted", "FaregateRateLimitRejectionsJump",
                "FaregateGatewayDown", "FaregateHighErrorRate"}
    assert expected <= set(names)


def test_rules_use_contract_metrics_and_recorded_names() -> None:
    recorded = {r["record"] for r in rules() if "record" in r}
    assert all(name.startswith("faregate:") for name in recorded)
    for r in rules():
        expr = r["expr"]
        unknown = set(METRIC.findall(expr)) - CONTRACT
        assert not unknown, (r.get("alert") or r.get("record"), unknown)
        missing = set(RECORDED.findall(expr)) - recorded
        assert not missing, (r.get("alert") or r.get("record"), missing)


def test_every_runbook_url_has_a_heading() -> None:
    anchors = runbook_anchors()
    for a in alerts():
        url = a["annotations"]["runbook_url"]
        path, _, anchor = url.partition("#")
        assert path.endswith("docs/runbook.md"), url
        assert anchor == a["alert"].lower(), url
        assert anchor in anchors, f"{a['alert']}: no heading for #{anchor} in docs/runbook.md"


def test_runbook_links_resolve() -> None:
    anchors = runbook_anchors()
    for link in re.findall(r"\]\(#([^)]+)\)", RUNBOOK.read_text()):
        assert link in anchors, link


# -- Grafana dashboard ----------------------------------------------------------------------------

def test_dashboard_is_importable() -> None:
    d = json.loads(DASHBOARD.read_text())
    assert d["id"] is None and d["uid"] == "faregate" and d["title"] == "faregate"
    assert 36 <= d["schemaVersion"] <= 41
    assert [i["name"] for i in d["__inputs"]] == ["DS_PROMETHEUS"]
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("model", "deployment"):
        assert variables[name]["type"] == "query"
        assert "label_values(" in variables[name]["query"]["query"]
    ids = [p["id"] for p in dashboard_panels()]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in dashboard_panels():
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]


def test_dashboard_panels_query_contract_metrics() -> None:
    seen: set[str] = set()
    for p in dashboard_panels():
        if p["type"] == "row":
            continue
        assert p["type"] in {"timeseries", "stat", "bargauge"}, p["title"]
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}", p["title"]
            names = set(METRIC.findall(t["expr"]))
            assert names, (p["title"], t["expr"])
            assert names <= CONTRACT, (p["title"], names - CONTRACT)
            seen |= names
    # Every contract metric is on the dashboard (the _sum of histograms is not needed).
    assert CONTRACT - seen <= {f"{h}_sum" for h in HISTOGRAMS} | {f"{h}_count" for h in HISTOGRAMS} \
        | {"faregate_spend_alerts_total"}, CONTRACT - seen
