"""Whether and how one request uses the cache: the model group's settings and the request's
own directives.

Per request (HTTP semantics where they exist):
- `cache-control: no-cache` — do not answer from the cache; the fresh answer is stored.
- `cache-control: no-store` — do not store this answer (it may still be answered from the cache).
- `cache-control: max-age=N` — only an entry at most N seconds old may answer.
- `x-faregate-cache: off` — neither read nor write; `refresh` — like no-cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from faregate.config.schema import CacheSettings
from faregate.core.errors import GatewayError


@dataclass(frozen=True, slots=True)
class GroupCache:
    """One model group's effective settings."""

    mode: str  # off | exact | semantic
    requests: str  # deterministic | all
    ttl: float
    threshold: float
    verify: bool


@dataclass(frozen=True, slots=True)
class Directive:
    read: bool = True
    store: bool = True
    max_age: float | None = None


DEFAULT = Directive()
_OFF = Directive(read=False, store=False)


class CachePolicy:
    def __init__(self, settings: CacheSettings) -> None:
        self.settings = settings
        self._groups: dict[str, GroupCache] = {}
        layers = [settings, *settings.groups.values()]
        self.enabled = any(layer.mode not in (None, "off") for layer in layers)
        self.semantic = any(layer.mode == "semantic" for layer in layers)

    def group(self, name: str) -> GroupCache:
        found = self._groups.get(name)
        if found is None:
            top, own = self.settings, self.settings.groups.get(name)

            def pick(field: str) -> Any:
                value = getattr(own, field) if own is not None else None
                return getattr(top, field) if value is None else value

            found = GroupCache(mode=pick("mode"), requests=pick("requests"), ttl=pick("ttl"),
                               threshold=pick("similarity_threshold"), verify=pick("verify"))
            if len(self._groups) < 10_000:  # group names are validated by route: bounded anyway
                self._groups[name] = found
        return found


def directive(headers: Any) -> Directive:
    """The request's cache directives, or a 400 naming the header to fix."""
    ours = headers.get("x-faregate-cache")
    control = headers.get("cache-control")
    if ours is None and control is None:
        return DEFAULT
    read = store = True
    max_age = None
    if ours is not None:
        value = ours.strip().lower()
        if value == "off":
            return _OFF
        if value == "refresh":
            read = False
        elif value not in ("", "on"):
            raise _bad("x-faregate-cache", f"must be 'off' or 'refresh'; got '{ours[:40]}'")
    for part in (control or "").split(","):
        name, _, value = part.strip().lower().partition("=")
        if name == "no-cache":
            read = False
        elif name == "no-store":
            store = False
        elif name == "max-age":
            try:
                max_age = float(value.strip('"'))
            except ValueError:
                max_age = -1.0
            if not max_age >= 0:
                raise _bad("cache-control", f"max-age must be a number of seconds ≥ 0; got '{value[:40]}'")
    return Directive(read=read, store=store, max_age=max_age)


def _bad(header: str, what: str) -> GatewayError:
    return GatewayError(400, f"Header {header} {what}.", type="invalid_request_error",
                        code="invalid_cache_directive", param=header)
