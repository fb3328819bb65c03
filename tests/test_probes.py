"""Active health probes: a deployment nobody calls is found dead (breaker open) or alive by its
probes alone, against a real mock upstream and a port nothing listens on."""

from __future__ import annotations

import yaml

from faregate.config.loader import parse_config
from faregate.gateway import Gateway
from tests.conftest import UPSTREAM_KEY, Server, free_port


async def test_probes_open_a_dead_deployments_breaker_and_vouch_for_a_live_one(mock_upstream: Server) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    config = parse_config(yaml.safe_load(f"""
model_list:
  - model_name: m
    litellm_params: {{model: openai/gpt-4o-mini, api_base: "{mock_upstream.url}/v1", api_key: {UPSTREAM_KEY}}}
  - model_name: m
    litellm_params: {{model: openai/gpt-4o-mini, api_base: "{dead}/v1", api_key: {UPSTREAM_KEY}}}
  - model_name: e
    litellm_params: {{model: openai/text-embedding-3-small, api_base: "{mock_upstream.url}/v1", api_key: {UPSTREAM_KEY}}}
    model_info: {{mode: embedding}}
router_settings: {{health_check_interval: 60, allowed_fails: 2}}
"""))
    gw = Gateway(config)
    await gw.transport.start()
    try:
        probes = gw.routing.probes
        assert probes is not None
        live, gone, emb = gw.deployments
        for _ in range(2):
            assert await probes.probe(live) and await probes.probe(emb)
            assert not await probes.probe(gone)
        health = gw.routing.health()
        assert health[gone.id]["breaker"]["state"] == "open"
        assert health[gone.id]["last_probe"]["ok"] is False and "upstream_connection_error" in health[gone.id]["last_error"]
        assert health[live.id]["breaker"]["state"] == "closed" and health[live.id]["last_probe"]["ok"] is True
        assert health[emb.id]["last_probe"]["ok"] is True
        assert live.stats.requests == 0  # probes are not traffic
        assert gw.router.pick("m").id == live.id  # the dead one is skipped without any user finding out
    finally:
        await gw.transport.close()


def test_probes_are_off_by_default() -> None:
    config = parse_config({"model_list": [{"model_name": "m", "litellm_params": {"model": "openai/x", "api_base": "http://h/v1"}}]})
    assert Gateway(config).routing.probes is None
