"""Provider clients for the configured providers."""

from __future__ import annotations

from collections.abc import Mapping

from server.domain.catalog import Provider
from server.domain.providers.anthropic import AnthropicClient
from server.domain.providers.base import ProviderClient
from server.domain.providers.openai_compat import OpenAICompatibleClient
from server.domain.providers.simulator import SimulatorClient


def provider_clients(providers: Mapping[str, Provider], timeout_seconds: float) -> dict[str, ProviderClient]:
    """One pooled client per configured provider."""
    clients: dict[str, ProviderClient] = {}
    for name, provider in providers.items():
        if provider.kind == "anthropic":
            clients[name] = AnthropicClient(provider, timeout_seconds)
        elif provider.kind == "openai":
            clients[name] = OpenAICompatibleClient(provider, timeout_seconds)
        else:
            clients[name] = SimulatorClient()
    return clients
