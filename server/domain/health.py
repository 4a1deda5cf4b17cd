"""Health: what `/health` reports, from the settings and a database probe."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Protocol

from server import __version__
from server.settings import Settings

logger = logging.getLogger(__name__)

#: A health probe that takes longer than this counts as a database that is down.
PROBE_TIMEOUT_SECONDS = 2.0


class Probe(Protocol):
    """Something that can tell whether the database answers."""

    async def ping(self) -> float: ...


@dataclass(frozen=True)
class X402Report:
    """The x402 channel as agents see it."""

    enabled: bool
    network: str
    asset: str
    pay_to: str


@dataclass(frozen=True)
class HealthReport:
    """Everything `/health` says."""

    ok: bool
    supabase_configured: bool
    providers_configured: dict[str, bool]
    x402: X402Report
    database_ok: bool
    database_backend: str
    database_latency_ms: float
    version: str
    simulator_enabled: bool


async def check_health(
    settings: Settings, probe: Probe, backend: str, providers_configured: dict[str, bool], simulator: bool
) -> HealthReport:
    """Probe the database and report; `ok` is false when it does not answer in time."""
    try:
        latency_ms = await asyncio.wait_for(probe.ping(), PROBE_TIMEOUT_SECONDS)
        database_ok = True
    except Exception as error:
        logger.warning("database health probe failed: %s", type(error).__name__)
        latency_ms, database_ok = 0.0, False
    return HealthReport(
        ok=database_ok,
        supabase_configured=settings.supabase_configured,
        providers_configured=providers_configured,
        x402=X402Report(
            enabled=settings.x402_enabled,
            network=settings.x402_network_name,
            asset=settings.x402_asset_address,
            pay_to=settings.x402_pay_to,
        ),
        database_ok=database_ok,
        database_backend=backend,
        database_latency_ms=round(latency_ms, 3),
        version=__version__,
        simulator_enabled=simulator,
    )
