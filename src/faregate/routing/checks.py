"""Config problems the schema cannot see (addresses, fallbacks), each named by YAML path.

Imports no provider or server code, so `faregate serve` validates before spawning workers
without paying for them.
"""

from __future__ import annotations

from faregate.config.schema import Config
from faregate.routing.deployment import build_deployments, deployment_problems
from faregate.routing.router import Router


def check_deployments(config: Config) -> list[str]:
    problems = deployment_problems(config)
    for rule in Router(build_deployments(config), config.router_settings.fallbacks).unknown_fallbacks():
        problems.append(f"router_settings.fallbacks: '{rule}' names no model group in model_list")
    return problems
