"""Provider clients for the configured providers, and the sweeper of abandoned reservations."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import timedelta

from server.db.repositories.usage import UsageRepository
from server.domain.catalog import Provider
from server.domain.providers.anthropic import AnthropicClient
from server.domain.providers.base import ProviderClient
from server.domain.providers.openai_compat import OpenAICompatibleClient
from server.domain.providers.simulator import SimulatorClient

logger = logging.getLogger(__name__)

#: A reservation still open this long after it was made belongs to a call that died with its replica.
ABANDONED_AFTER = timedelta(hours=1)
SWEEP_EVERY_SECONDS = 300.0


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


async def release_stale_reservations(usage: UsageRepository) -> None:
    """Forever: give back credits held by calls that can no longer finish. Cancel to stop."""
    while True:
        try:
            released = await usage.release_stale(ABANDONED_AFTER)
            if released:
                logger.warning("released %d abandoned reservations", released)
        except Exception as error:
            logger.warning("reservation sweep failed: %s", type(error).__name__)
        await asyncio.sleep(SWEEP_EVERY_SECONDS)
