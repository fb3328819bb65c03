"""Self-hosted engine load (routing.engine_load): metrics parsing, hysteresis, staleness, and the
monitor against the real mock upstream's /metrics (vLLM, SGLang and TGI names)."""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.error
from collections.abc import Callable

import pytest

from faregate.routing.engine_load import (
    EngineLoad,
    EngineMonitor,
    EngineThresholds,
    check_metrics_url,
    parse_metrics,
    redact_url,
)
from tests.conftest import Server, free_port

VLLM_V1 = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="llama"} 3.0
vllm:num_requests_running{engine="1",model_name="llama"} 4.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="llama"} 5.0
vllm:num_requests_waiting{engine="1",model_name="llama"} 7.0
# HELP vllm:num_requests_waiting_by_reason A look-alike that must not count.
# TYPE vllm:num_requests_waiting_by_reason gauge
vllm:num_requests_waiting_by_reason{model_name="llama",reason="capacity"} 100.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="llama"} 0.42
vllm:kv_cache_usage_perc{engine="1",model_name="llama"} 0.93
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{le="0.001",model_name="llama"} 0.0
vllm:time_to_first_token_seconds_bucket{le="+Inf",model_name="llama"} 12.0
vllm:time_to_first_token_seconds_count{model_name="llama"} 12.0
vllm:time_to_first_token_seconds_sum{model_name="llama"} 3.5
# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{model_name="llama"} 1234.0
"""

VLLM_V0 = """\
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="a"} 2.0
vllm:num_requests_waiting{model_name="b"} 1.0
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{model_name="a"} 0.5
vllm:gpu_cache_usage_perc{model_name="b"} NaN
"""

SGLANG = """\
# HELP sglang:prompt_tokens_total Number of prefill tokens processed.
# TYPE sglang:prompt_tokens_total counter
sglang:prompt_tokens_total{model_name="meta-llama/Llama-3.1-8B-Instruct"} 8.128902e+06
# HELP sglang:token_usage The token usage
# TYPE sglang:token_usage gauge
sglang:token_usage{model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.28
# HELP sglang:num_running_reqs The number of running requests
# TYPE sglang:num_running_reqs gauge
sglang:num_running_reqs{model_name="meta-llama/Llama-3.1-8B-Instruct"} 162.0
# HELP sglang:num_queue_reqs The number of requests in the waiting queue
# TYPE sglang:num_queue_reqs gauge
sglang:num_queue_reqs{model_name="meta-llama/Llama-3.1-8B-Instruct"} 2826.0
"""

TGI = """\
# TYPE tgi_queue_size gauge
tgi_queue_size 3
# TYPE tgi_batch_current_size gauge
tgi_batch_current_size 16
"""


# ------------------------------------------------------------------------------------ parsing

def test_parse_vllm_sums_waiting_and_running_and_takes_max_kv() -> None:
    m = parse_metrics(VLLM_V1)
    assert (m.flavor, m.waiting, m.running, m.kv_usage) == ("vllm", 12, 7, 0.93)
    assert parse_metrics(VLLM_V1, "vllm") == m


def test_parse_vllm_v0_cache_name_and_nan() -> None:
    m = parse_metrics(VLLM_V0)
    assert (m.flavor, m.waiting, m.running, m.kv_usage) == ("vllm", 3, None, 0.5)


def test_parse_sglang() -> None:
    m = parse_metrics(SGLANG)
    assert (m.flavor, m.waiting, m.running, m.kv_usage) == ("sglang", 2826, 162, 0.28)
    assert parse_metrics(SGLANG, "sglang") == m


def test_parse_tgi_has_no_kv() -> None:
    m = parse_metrics(TGI)
    assert (m.flavor, m.waiting, m.running, m.kv_usage) == ("tgi", 3, 16, None)


def test_parse_errors() -> None:
    with pytest.raises(ValueError, match="no vLLM, SGLang or TGI"):
        parse_metrics("# HELP up\nup 1\n")
    with pytest.raises(ValueError, match="no vLLM, SGLang or TGI"):
        parse_metrics("<html>not metrics</html>")
    with pytest.raises(ValueError, match="no sglang load gauges"):
        parse_metrics(VLLM_V1, "sglang")
    with pytest.raises(ValueError, match="bad metrics line"):
        parse_metrics('vllm:num_requests_waiting{model_name="a"} lots\n')
    with pytest.raises(ValueError, match="flavor"):
        parse_metrics(VLLM_V1, "tensorrt")


# ----------------------------------------------------------------------------- thresholds

def test_threshold_defaults_and_validation() -> None:
    th = EngineThresholds()
    assert (th.max_waiting, th.recover_waiting, th.max_kv_usage, th.recover_kv_usage) == (8, 4, 0.9, 0.8)
    assert EngineThresholds(max_waiting=5, max_kv_usage=0.05).recover_waiting == 2
    assert EngineThresholds(max_waiting=5, max_kv_usage=0.05).recover_kv_usage == 0.0
    assert EngineThresholds(scrape_interval=0.1).scrape_timeout == 0.1
    assert EngineThresholds(scrape_interval=5, stale_after=30).scrape_timeout == 2.0
    nothing = EngineThresholds(max_waiting=None, max_kv_usage=None)
    assert (nothing.recover_waiting, nothing.recover_kv_usage) == (None, None)
    for bad in ({"recover_waiting": 9}, {"recover_kv_usage": 0.95}, {"max_kv_usage": 1.5},
                {"max_waiting": -1}, {"scrape_interval": 0}, {"stale_after": 1.0}, {"flavor": "trt"},
                {"max_waiting": None, "recover_waiting": 1}):
        with pytest.raises(ValueError):
            EngineThresholds(**bad)


def test_hysteresis() -> None:
    th = EngineThresholds(max_waiting=8, max_kv_usage=0.9)  # recover at 4 / 0.8
    t = 1000.0
    s = th.update(None, 8, 1, 0.5, now=t)
    assert not s.overloaded  # at the threshold is not above it
    s = th.update(s, 9, 1, 0.5, now=t + 1)
    assert s.overloaded and s.error is None and s.scraped_at == t + 1
    s = th.update(s, 6, 1, 0.5, now=t + 2)
    assert s.overloaded  # between recover level and threshold: stays on
    s = th.update(s, 4, 1, 0.85, now=t + 3)
    assert s.overloaded  # waiting recovered, KV cache not yet
    s = th.update(s, 4, 1, 0.8, now=t + 4)
    assert not s.overloaded  # both at their recover levels
    s = th.update(s, 6, 1, 0.85, now=t + 5)
    assert not s.overloaded  # between the levels, coming from below: stays off
    s = th.update(s, 0, 0, 0.91, now=t + 6)
    assert s.overloaded  # KV cache alone trips it
    assert th.trip_reason(12, 0.95) == "waiting 12 > 8, KV cache 95% > 90%"
    s = th.update(s, 0, 0, None, now=t + 7)
    assert not s.overloaded  # an unknown value does not hold it back


def test_disabled_threshold_is_ignored() -> None:
    th = EngineThresholds(max_waiting=None, max_kv_usage=0.9)
    assert not th.update(None, 10_000, 0, 0.1, now=1.0).overloaded


def test_stale_state_is_not_overloaded() -> None:
    th = EngineThresholds(max_waiting=8, scrape_interval=1.0, stale_after=5.0)
    t = 1000.0
    s = th.update(None, 20, 0, 0.1, now=t)
    assert s.overloaded
    s = th.failed(s, "timed out after 1s", now=t + 3)
    assert s.overloaded and s.error == "timed out after 1s" and s.waiting == 20 and s.scraped_at == t
    s = th.failed(s, "timed out after 1s", now=t + 6)
    assert not s.overloaded and s.error == "timed out after 1s"  # stale: unknown, overflow off
    # a stale overloaded state does not carry over into the next successful scrape
    old = EngineLoad(waiting=20, scraped_at=t, overloaded=True)
    assert not th.update(old, 6, 0, 0.1, now=t + 6).overloaded
    assert th.update(old, 6, 0, 0.1, now=t + 4).overloaded
    assert th.failed(None, "refused", now=t) == EngineLoad(error="refused")


def test_urls() -> None:
    check_metrics_url("http://gpu1:8000/metrics")
    check_metrics_url("https://user:pw@gpu1/metrics")
    for bad in ("file:///etc/passwd", "gpu1:8000/metrics", "http:///metrics", "ftp://h/metrics",
                "http://h:notaport/metrics"):
        with pytest.raises(ValueError):
            check_metrics_url(bad)
    assert redact_url("https://user:s3cret@gpu1:8443/metrics?token=abc#x") == "https://gpu1:8443/metrics"
    with pytest.raises(ValueError) as info:
        EngineMonitor({"d": ("gopher://user:s3cret@h/metrics", EngineThresholds())})
    assert "s3cret" not in str(info.value)


# --------------------------------------------------------------- monitor with a fake fetch

async def until(predicate: Callable[[], bool], within: float = 1.0) -> float:
    """Seconds until `predicate()` holds; fails after `within` seconds."""
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > within:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(0.01)
    return time.monotonic() - t0


async def test_monitor_with_fake_fetch_goes_stale_and_scrubs_secrets(caplog: pytest.LogCaptureFixture) -> None:
    page = {"text": VLLM_V1.replace("7.0", "27.0"), "fail": False}
    url = "http://ops:hunter2@gpu1:8000/metrics?token=tok123"

    async def fetch(u: str) -> str:
        assert u == url
        if page["fail"]:
            raise ConnectionError(f"cannot reach {u}")
        return page["text"]

    th = EngineThresholds(scrape_interval=0.05, stale_after=0.3)
    monitor = EngineMonitor({"gpu#0": (url, th)}, fetch=fetch)
    assert not monitor.overloaded("gpu#0") and not monitor.overloaded("nope")
    assert monitor.snapshot()["gpu#0"]["status"] == "pending"
    caplog.set_level(logging.INFO, logger="faregate.routing")
    async with monitor:
        await until(lambda: monitor.overloaded("gpu#0"))
        snap = monitor.snapshot()["gpu#0"]
        assert snap["status"] == "overloaded" and snap["waiting"] == 32 and snap["kv_usage"] == 0.93
        assert snap["flavor"] == "vllm" and snap["metrics_url"] == "http://gpu1:8000/metrics"
        page["fail"] = True
        await asyncio.sleep(0.15)
        assert monitor.overloaded("gpu#0")  # a failed scrape keeps the state until it is stale
        assert "ConnectionError" in monitor.snapshot()["gpu#0"]["error"]
        waited = await until(lambda: not monitor.overloaded("gpu#0"))
        assert waited < 0.5
        snap = monitor.snapshot()["gpu#0"]
        assert snap["status"] == "unknown" and not snap["overloaded"] and snap["error"]
        await until(lambda: "load unknown" in caplog.text)  # logged by the next failed scrape
        page["fail"] = False
        await until(lambda: monitor.snapshot()["gpu#0"]["error"] is None)
        assert monitor.overloaded("gpu#0")  # scraped again: still above the threshold
        assert caplog.text.count("overflow on") == 2  # on again after the unknown spell
    text = caplog.text + repr(monitor.snapshot())
    assert "hunter2" not in text and "tok123" not in text and "ops:" not in text
    assert "deployment gpu#0 overloaded: waiting 32 > 8, KV cache 93% > 90%; overflow on" in caplog.text
    assert "load unknown, overflow off" in caplog.text
    assert "works again" in caplog.text


async def test_monitor_scrape_timeout() -> None:
    async def hang(url: str) -> str:
        await asyncio.sleep(10)
        return ""

    monitor = EngineMonitor({"slow#0": ("http://h/metrics", EngineThresholds(scrape_interval=0.05, stale_after=1))},
                            fetch=hang)
    async with monitor:
        await until(lambda: monitor.snapshot()["slow#0"]["error"] is not None)
    assert monitor.snapshot()["slow#0"]["error"] == "timed out after 0.05s"
    assert not monitor.overloaded("slow#0")


async def test_monitor_without_targets_is_a_noop() -> None:
    monitor = EngineMonitor({})
    await monitor.start()
    assert monitor.snapshot() == {} and not monitor.overloaded("x")
    await monitor.close()


# ------------------------------------------------------------ against the real mock upstream

FAST = EngineThresholds(scrape_interval=0.1, stale_after=2.0)


async def test_mock_vllm_overflow_and_recovery(mock_upstream: Server, mock_settings: Callable) -> None:
    mock_settings(num_requests_waiting=0, num_requests_running=3, kv_cache_usage_perc=0.2, metrics_flavor="vllm")
    async with EngineMonitor({"vllm#0": (mock_upstream.url + "/metrics", FAST)}) as monitor:
        await until(lambda: monitor.snapshot()["vllm#0"]["status"] == "ok")
        snap = monitor.snapshot()["vllm#0"]
        assert (snap["flavor"], snap["waiting"], snap["running"], snap["kv_usage"]) == ("vllm", 0, 3, 0.2)
        mock_settings(num_requests_waiting=20)
        await until(lambda: monitor.overloaded("vllm#0"), within=1.0)
        mock_settings(num_requests_waiting=6)  # between recover level (4) and threshold (8)
        await asyncio.sleep(0.35)
        assert monitor.overloaded("vllm#0")
        mock_settings(num_requests_waiting=0)
        await until(lambda: not monitor.overloaded("vllm#0"), within=1.0)
        mock_settings(kv_cache_usage_perc=0.95)
        await until(lambda: monitor.overloaded("vllm#0"), within=1.0)
        mock_settings(kv_cache_usage_perc=0.5)
        await until(lambda: not monitor.overloaded("vllm#0"), within=1.0)
        assert monitor.snapshot()["vllm#0"]["error"] is None


@pytest.mark.parametrize("flavor", ["auto", "sglang"])
async def test_mock_sglang(mock_upstream: Server, mock_settings: Callable, flavor: str) -> None:
    mock_settings(metrics_flavor="sglang", num_requests_waiting=0, num_requests_running=2, kv_cache_usage_perc=0.3)
    th = EngineThresholds(scrape_interval=0.1, stale_after=2.0, flavor=flavor)
    async with EngineMonitor({"sgl#0": (mock_upstream.url + "/metrics", th)}) as monitor:
        await until(lambda: monitor.snapshot()["sgl#0"]["status"] == "ok")
        snap = monitor.snapshot()["sgl#0"]
        assert (snap["flavor"], snap["waiting"], snap["running"], snap["kv_usage"]) == ("sglang", 0, 2, 0.3)
        mock_settings(num_requests_waiting=20)
        await until(lambda: monitor.overloaded("sgl#0"), within=1.0)
        mock_settings(num_requests_waiting=0)
        await until(lambda: not monitor.overloaded("sgl#0"), within=1.0)
        mock_settings(kv_cache_usage_perc=0.97)
        await until(lambda: monitor.overloaded("sgl#0"), within=1.0)
    # vLLM gauges asked for, SGLang served: every scrape fails, never overloaded
    th = EngineThresholds(scrape_interval=0.1, stale_after=2.0, flavor="vllm")
    async with EngineMonitor({"sgl#0": (mock_upstream.url + "/metrics", th)}) as monitor:
        await until(lambda: monitor.snapshot()["sgl#0"]["error"] is not None)
        assert "no vllm load gauges" in monitor.snapshot()["sgl#0"]["error"]
        assert not monitor.overloaded("sgl#0")


async def test_mock_tgi(mock_upstream: Server, mock_settings: Callable) -> None:
    mock_settings(metrics_flavor="tgi", num_requests_waiting=30, kv_cache_usage_perc=0.99)
    async with EngineMonitor({"tgi#0": (mock_upstream.url + "/metrics", FAST)}) as monitor:
        await until(lambda: monitor.overloaded("tgi#0"))
        snap = monitor.snapshot()["tgi#0"]
        assert (snap["flavor"], snap["waiting"], snap["kv_usage"]) == ("tgi", 30, None)


def test_mock_rejects_unknown_flavor(mock_settings: Callable) -> None:
    with pytest.raises(urllib.error.HTTPError) as info:
        mock_settings(metrics_flavor="trtllm")
    assert info.value.code == 400


async def test_real_http_errors_do_not_leak_credentials(mock_upstream: Server, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="faregate.routing")
    port = mock_upstream.url.rsplit(":", 1)[1]
    targets = {
        "ok#0": (f"http://scraper:pa55word@127.0.0.1:{port}/metrics", FAST),  # basic auth, ignored by the mock
        "dead#0": (f"http://scraper:pa55word@127.0.0.1:{free_port()}/metrics", FAST),
        "404#0": (f"{mock_upstream.url}/nothing-here?key=zzz", FAST),
    }
    async with EngineMonitor(targets) as monitor:
        await until(lambda: all(monitor.snapshot()[d]["status"] != "pending" for d in targets))
        snap = monitor.snapshot()
    assert snap["ok#0"]["status"] == "ok" and snap["ok#0"]["error"] is None
    assert snap["dead#0"]["status"] == "unknown" and snap["dead#0"]["error"]
    assert snap["404#0"]["error"] == "HTTP 404"
    text = caplog.text + repr(snap)
    assert "pa55word" not in text and "zzz" not in text
    assert f"metrics scrape of http://127.0.0.1:{port}/nothing-here failed: HTTP 404" in caplog.text
