"""Which provider class speaks to a deployment. Heavy providers are imported only when used."""

from __future__ import annotations

from typing import TYPE_CHECKING

from faregate.providers.base import Provider

if TYPE_CHECKING:
    from faregate.config.schema import LocalModelSettings
    from faregate.providers.transport import Transport
    from faregate.routing.deployment import Deployment


def build_provider(dep: Deployment, transport: Transport, local: LocalModelSettings) -> Provider:
    if dep.provider == "openai":
        from faregate.providers.openai import OpenAIProvider

        return OpenAIProvider(dep, transport)
    if dep.provider == "azure":
        from faregate.providers.openai import AzureOpenAIProvider

        return AzureOpenAIProvider(dep, transport)
    if dep.provider == "anthropic":
        from faregate.providers.anthropic import AnthropicProvider

        return AnthropicProvider(dep, transport)
    if dep.provider == "local":
        from faregate.providers.local import LocalProvider

        return LocalProvider(dep, transport, local)
    raise ValueError(f"deployment '{dep.id}': unknown provider '{dep.provider}'")
