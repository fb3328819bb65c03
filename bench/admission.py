"""Cost of the access stages alone: authenticate + admit + settle per request, in-process.

    .venv/bin/python bench/admission.py [--redis redis://127.0.0.1:6379/0] [-n 20000] [--rpm-strategy S]

Runs the real stages (directory lookup, limits, budgets, token estimate, settle) on a built
gateway without HTTP or an upstream, for: the master key; a virtual key with RPM, TPM, parallel
and a budget; and such a key whose user and team carry the same limits. Prints µs per request.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import yaml

from faregate.access.records import KeyRecord, Limits, Subject
from faregate.accounting.pricing import Tokens
from faregate.config.loader import parse_config
from faregate.core.call import Call
from faregate.gateway import Gateway

CONFIG = """
model_list:
  - model_name: m
    litellm_params: {model: openai/gpt-4o-mini, api_base: "http://127.0.0.1:9/v1", api_key: x}
general_settings: {master_key: sk-bench-master}
"""
BIG = Limits(rpm=10_000_000, tpm=2_000_000_000, max_parallel=100_000, budget_nusd=10**18, budget_period="day")
BODY = {"model": "m", "messages": [{"role": "user", "content": "Say hello to the benchmark, briefly."}],
        "max_tokens": 16}
USAGE = {"prompt_tokens": 12, "completion_tokens": 16}


async def run(redis_url: str | None, n: int, strategy: str = "auto") -> None:
    text = CONFIG + (f"redis_url: {redis_url}\n" if redis_url else "") + f"limits: {{rpm_strategy: {strategy}}}\n"
    config = parse_config(yaml.safe_load(text))
    gw = Gateway(config)
    gw.prices.load()
    gw.tokens.load()
    gw.limiter.prepare()
    hasher = gw.directory.hasher
    assert hasher is not None
    secrets = {"key-only": "sk-fg-bench-key-only-000000000000000000000000000",
               "key+user+team": "sk-fg-bench-key-user-team-00000000000000000000"}
    gw.directory.put_key(KeyRecord("k1", hasher(secrets["key-only"]), limits=BIG))
    gw.directory.put_key(KeyRecord("k2", hasher(secrets["key+user+team"]), user_id="u", team_id="t", limits=BIG))
    gw.directory.put_subject(Subject("user", "u", BIG))
    gw.directory.put_subject(Subject("team", "t", BIG))
    admit = next(s for s in gw.pipeline.stages if s.name == "admit")
    print(f"state: {'Redis ' + redis_url if redis_url else 'in-process'}; RPM strategy {gw.limiter.rpm_strategy}; "
          f"{n} requests each")
    for label, key in (("master key", "sk-bench-master"), *secrets.items()):
        headers = {"authorization": f"Bearer {key}"}
        t0 = time.perf_counter()
        for i in range(n):
            call = Call(request_id=f"r{i}", endpoint="chat", body=BODY, headers=headers)
            call.principal = gw.auth.check(headers)
            call.deployment = gw.deployments[0]
            await admit.before(call)
            call.usage = USAGE
            call.tokens = Tokens.from_usage(USAGE)
            call.cost = gw.prices.cost(call.deployment.id, call.tokens)
            await admit.after(call)
            await asyncio.sleep(0)  # a server's loop turns between requests: background tasks run
        us = (time.perf_counter() - t0) / n * 1e6
        print(f"  {label:14s} {us:7.1f} µs per request (authenticate + admit + settle)")
    if gw.redis is not None:
        await gw.redis.aclose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--redis", help="redis URL (default: in-process state)")
    ap.add_argument("-n", type=int, default=20000)
    ap.add_argument("--rpm-strategy", default="auto", choices=["auto", "moving-window", "sliding-window"])
    args = ap.parse_args()
    asyncio.run(run(args.redis, args.n, args.rpm_strategy))


if __name__ == "__main__":
    main()
