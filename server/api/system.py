"""SystemService: `/health` and `/api/config`."""

from __future__ import annotations

from typing import Any

import grpc
from crosscompute.v1 import system_service_pb2 as pb
from crosscompute.v1 import system_service_pb2_grpc as pb_grpc

from server.api.http import send_http_status
from server.domain.catalog import Catalog
from server.domain.health import Probe, check_health
from server.domain.public_config import public_config
from server.settings import Settings


class SystemServicer(pb_grpc.SystemServiceServicer):
    """Health and public configuration."""

    def __init__(self, settings: Settings, probe: Probe, backend: str, catalog: Catalog) -> None:
        self._settings = settings
        self._probe = probe
        self._backend = backend
        self._catalog = catalog

    async def GetHealth(
        self, request: pb.GetHealthRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetHealthResponse:
        report = await check_health(
            self._settings,
            self._probe,
            self._backend,
            self._catalog.providers_configured(),
            self._catalog.simulated,
        )
        if not report.ok:
            await send_http_status(context, 503)
        x402 = pb.X402Status(
            enabled=report.x402.enabled,
            network=report.x402.network,
            asset=report.x402.asset,
            pay_to=report.x402.pay_to,
        )
        return pb.GetHealthResponse(
            ok=report.ok,
            supabase_configured=report.supabase_configured,
            x402=x402,
            providers_configured=report.providers_configured,
            database=pb.DatabaseStatus(
                ok=report.database_ok, backend=report.database_backend, latency_ms=report.database_latency_ms
            ),
            payment_channels=pb.PaymentChannels(x402=pb.PaymentChannel(enabled=report.x402.enabled)),
            version=report.version,
            simulator_enabled=report.simulator_enabled,
        )

    async def GetConfig(
        self, request: pb.GetConfigRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetConfigResponse:
        config = public_config(self._settings)
        return pb.GetConfigResponse(
            ok=True,
            supabase_configured=config.supabase_configured,
            supabase_url=config.supabase_url,
            supabase_publishable_key=config.supabase_publishable_key,
        )
