"""Model groups and deployment choice.

A model group is every `model_list` entry sharing a `model_name`. `pick()` chooses one healthy
deployment of a group by weight; `plan()` says which groups to try in order (the group, then
its `router_settings.fallbacks`). The choice is O(deployments) with no allocation beyond the
candidate list, so it stays far below a microsecond budget for realistic groups.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Iterable

from faregate.routing.deployment import Deployment


class Router:
    def __init__(self, deployments: Iterable[Deployment], fallbacks: list[dict[str, list[str]]] | None = None) -> None:
        self.groups: dict[str, list[Deployment]] = {}
        for dep in deployments:
            self.groups.setdefault(dep.group, []).append(dep)
        self._fallbacks: dict[str, list[str]] = {}
        for rule in fallbacks or []:
            for group, targets in rule.items():
                self._fallbacks.setdefault(group, []).extend(targets)
        self._plans: dict[str, tuple[str, ...]] = {
            g: tuple(dict.fromkeys([g, *(t for t in self._fallbacks.get(g, ()) if t in self.groups)]))
            for g in self.groups
        }
        self._random = random.Random()

    def unknown_fallbacks(self) -> list[str]:
        """Fallback rules that name a group or target that does not exist (a config mistake)."""
        out = []
        for group, targets in self._fallbacks.items():
            out += [f"{group} -> {t}" for t in targets if t not in self.groups]
            if group not in self.groups:
                out.append(f"{group} (no such model group)")
        return out

    def has(self, group: str) -> bool:
        return group in self.groups

    def deployments_of(self, group: str) -> list[Deployment]:
        return self.groups.get(group, [])

    def plan(self, group: str) -> tuple[str, ...]:
        return self._plans.get(group, ())

    def pick(self, group: str, exclude: Collection[str] = ()) -> Deployment | None:
        deps = self.groups.get(group)
        if not deps:
            return None
        if len(deps) == 1:
            d = deps[0]
            return None if d.id in exclude else d
        candidates = [d for d in deps if d.id not in exclude and d.weight > 0] if exclude else [d for d in deps if d.weight > 0]
        if not candidates:
            return None
        if len(candidates) == 1:
            return candidates[0]
        total = sum(d.weight for d in candidates)
        point = self._random.random() * total
        for d in candidates:
            point -= d.weight
            if point < 0:
                return d
        return candidates[-1]
