"""Model groups, which of their deployments may serve a call now, and where to fall back.

A model group is every `model_list` entry sharing a `model_name`. `pick()` narrows a group to
the deployments usable now, then lets the group's strategy (routing/strategies.py) choose:

1. not already tried by this call, `weight` > 0;
2. breaker not open (routing/breaker.py; shared by replicas through Redis when configured);
3. the lowest `order` tier that still has one (LiteLLM's `order`: tier 2 is used only when no
   deployment of tier 1 can be) — and, within it, self-hosted engines that report an overload
   (routing/engine_load.py) are skipped while another deployment can take the call. This is
   the self-hosted → managed overflow: engines in tier 1, managed APIs in tier 2.

Fallbacks name other groups to try when a group cannot serve: `fallbacks` (errors, timeouts,
rate limits), `context_window_fallbacks` (the prompt is too long for the model),
`content_policy_fallbacks` (the upstream refused the content), and `default_fallbacks` for
every group without its own.
"""

from __future__ import annotations

import random
import time
import zlib
from collections.abc import Callable, Collection, Iterable
from typing import TYPE_CHECKING, Any, Literal

from faregate.routing.deployment import Deployment
from faregate.routing.strategies import Sticky, Strategy, build_strategy

if TYPE_CHECKING:
    from faregate.core.call import Call

FallbackReason = Literal["error", "context_window", "content_policy"]


class Router:
    def __init__(self, deployments: Iterable[Deployment], fallbacks: list[dict[str, list[str]]] | None = None, *,
                 context_window_fallbacks: list[dict[str, list[str]]] | None = None,
                 content_policy_fallbacks: list[dict[str, list[str]]] | None = None,
                 default_fallbacks: list[str] | None = None, strategy: str = "weighted",
                 group_strategies: dict[str, str] | None = None, sticky_by: str | None = None,
                 price_of: Callable[[Deployment], float | None] | None = None,
                 breakers: Any = None, engines: Any = None, rng: random.Random | None = None) -> None:
        self.groups: dict[str, list[Deployment]] = {}
        for dep in deployments:
            dep.hash_seed = zlib.crc32(dep.id.encode())
            self.groups.setdefault(dep.group, []).append(dep)
        self._rules = {"error": _merge(fallbacks), "context_window": _merge(context_window_fallbacks),
                       "content_policy": _merge(content_policy_fallbacks)}
        self._default = [g for g in default_fallbacks or [] if g in self.groups]
        self._default_raw = list(default_fallbacks or [])
        self._plans: dict[tuple[str, str], tuple[str, ...]] = {}
        self.rng = rng or random.Random()
        price = price_of or (lambda d: None)
        self._strategies: dict[str, Strategy] = {}
        for g in self.groups:
            self._strategies[g] = build_strategy((group_strategies or {}).get(g, strategy), price, self.rng)
        self.sticky = Sticky(sticky_by) if sticky_by else None
        self.breakers = breakers  # .allows(id) -> bool, .acquire_probe(id) -> bool
        self.engines = engines  # .overloaded(id) -> bool
        self._cooling: dict[str, float] = {}  # deployment id -> monotonic time its retry-after ends
        self._tiered = {g for g, deps in self.groups.items() if len({d.order for d in deps}) > 1}
        if breakers is not None:
            breakers.watch([d.id for deps in self.groups.values() for d in deps])

    def cooling(self, deployment_id: str) -> float | None:
        """Seconds left of its retry-after, or None."""
        until = self._cooling.get(deployment_id)
        left = until - time.monotonic() if until is not None else 0.0
        return round(left, 3) if left > 0 else None

    def cool_down(self, deployment_id: str, seconds: float) -> None:
        """The upstream said retry-after: no request of this replica goes there until then."""
        self._cooling[deployment_id] = time.monotonic() + min(seconds, 3600.0)

    def unknown_fallbacks(self) -> list[str]:
        """Fallback rules that name a group or target that does not exist (a config mistake)."""
        out = []
        for rules in self._rules.values():
            for group, targets in rules.items():
                out += [f"{group} -> {t}" for t in targets if t not in self.groups]
                if group not in self.groups:
                    out.append(f"{group} (no such model group)")
        out += [f"default_fallbacks -> {g}" for g in self._default_raw if g not in self.groups]
        return out

    def has(self, group: str) -> bool:
        return group in self.groups

    def deployments_of(self, group: str) -> list[Deployment]:
        return self.groups.get(group, [])

    def strategy_of(self, group: str) -> str:
        s = self._strategies.get(group)
        return s.name if s else "weighted"

    def plan(self, group: str, reason: FallbackReason = "error") -> tuple[str, ...]:
        """The group, then the groups to fall back to for `reason`, in order, each once."""
        key = (group, reason)
        plan = self._plans.get(key)
        if plan is None:
            if group not in self.groups:
                return ()
            own = self._rules[reason].get(group)
            targets = own if own is not None else (self._default if reason == "error" else [])
            plan = self._plans[key] = tuple(dict.fromkeys([group, *(t for t in targets if t in self.groups)]))
        return plan

    def fallbacks_for(self, group: str, reason: FallbackReason) -> tuple[str, ...]:
        return self.plan(group, reason)[1:]

    def pick(self, group: str, exclude: Collection[str] = (), call: Call | None = None,
             ignore_cooling: bool = False) -> Deployment | None:
        deps = self.groups.get(group)
        if not deps:
            return None
        breakers = self.breakers
        while True:
            candidates = self._candidates(deps, exclude, breakers, ignore_cooling)
            if not candidates:
                return None
            dep = self._choose(group, candidates, call)
            # half-open: one probe at a time; if another request took it, look again
            if breakers is None or breakers.acquire_probe(dep.id):
                return dep
            exclude = {*exclude, dep.id}

    def _candidates(self, deps: list[Deployment], exclude: Collection[str], breakers: Any,
                    ignore_cooling: bool = False) -> list[Deployment]:
        if self._cooling and not ignore_cooling:
            now = time.monotonic()
            for dep_id, until in list(self._cooling.items()):
                if until <= now:
                    del self._cooling[dep_id]
            if self._cooling:
                exclude = {*exclude, *self._cooling}
        tripped = breakers.not_closed if breakers is not None else ()
        if exclude or tripped:
            usable = [d for d in deps if d.weight > 0 and d.id not in exclude
                      and (d.id not in tripped or breakers.allows(d.id))]
        else:
            usable = [d for d in deps if d.weight > 0]
        if len(usable) <= 1:
            return usable
        engines = self.engines
        if engines is not None:  # overloaded engines only while nothing else can take it
            relaxed = [d for d in usable if not engines.overloaded(d.id)]
            usable = relaxed or usable
        if deps[0].group not in self._tiered:
            return usable
        top = min(d.order for d in usable)
        return [d for d in usable if d.order == top]

    def _choose(self, group: str, candidates: list[Deployment], call: Call | None) -> Deployment:
        if len(candidates) == 1:
            return candidates[0]
        if self.sticky is not None:
            key = self.sticky.key_of(call)
            if key is not None:
                return self.sticky.pick(candidates, key)
        return self._strategies[group].pick(candidates, call)


def _merge(rules: list[dict[str, list[str]]] | None) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for rule in rules or []:
        for group, targets in rule.items():
            out.setdefault(group, []).extend(targets)
    return out
