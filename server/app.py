"""Assembling the gRPC server: storage, servicers, interceptors, health and reflection."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal

import grpc
import httpx
from crosscompute.v1 import (
    accounts_service_pb2,
    accounts_service_pb2_grpc,
    admin_service_pb2,
    admin_service_pb2_grpc,
    agents_service_pb2,
    agents_service_pb2_grpc,
    inference_service_pb2,
    inference_service_pb2_grpc,
    messages_service_pb2,
    messages_service_pb2_grpc,
    responses_service_pb2,
    responses_service_pb2_grpc,
    system_service_pb2,
    system_service_pb2_grpc,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]
from grpc_reflection.v1alpha import reflection
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.ext.asyncio import AsyncEngine

from server.api.accounts import AccountsServicer
from server.api.admin import AdminServicer
from server.api.agents import AgentsServicer
from server.api.inference import InferenceServicer
from server.api.messages import MessagesServicer
from server.api.responses import ResponsesServicer
from server.api.system import SystemServicer
from server.db.engine import create_engine, session_factory
from server.db.migrate import upgrade
from server.db.notifications import listen_for_revoked_keys
from server.db.pool import open_pool
from server.db.repositories import AccountRepository, DatabaseProbe, LedgerRepository
from server.db.repositories.accounts import KeyRow
from server.db.repositories.billing_postgres import PostgresBilling
from server.db.repositories.billing_sqlite import SqliteBilling
from server.db.repositories.cooldowns import CooldownRepository
from server.db.repositories.payments import PaymentRepository
from server.db.repositories.rate_limits import RateLimitRepository
from server.db.repositories.responses import ResponseRepository
from server.db.repositories.usage import UsageRepository
from server.db.urls import DatabaseUrls, resolve
from server.domain.accounts import AccountPolicy, PeopleAccounts
from server.domain.admin import Administration
from server.domain.agents import AgentAccounts
from server.domain.catalog import Catalog, configured_providers, load_catalog_file
from server.domain.chat.lease import shortest_safe_lease, warn_if_short
from server.domain.chat.service import ChatService
from server.domain.chat.tokens import warm_up
from server.domain.credits import MICRO_PER_CREDIT
from server.domain.holds import Billing
from server.domain.key_auth import ApiKeyAuthenticator
from server.domain.key_cache import KeyCache
from server.domain.payments.chain import ChainClient
from server.domain.payments.facilitator import FacilitatorClient
from server.domain.payments.offer import TOKEN_VERSION, chain_id_of
from server.domain.payments.reconciler import reconcile_forever
from server.domain.payments.settlement import SettlementPolicy, Settlements
from server.domain.payments.topup import TopUpPolicy, TopUps
from server.domain.providers.base import ProviderClient
from server.domain.providers.registry import provider_clients
from server.domain.responses import ResponsesService
from server.domain.routing.complexity import default_model
from server.domain.routing.notdiamond import NotDiamondClient
from server.domain.routing.router import Router
from server.domain.skill import render_skill
from server.domain.supabase_tokens import SupabaseTokenVerifier
from server.domain.sweeper import sweep_forever
from server.domain.usage_report import UsageReports
from server.interceptors import default_interceptors
from server.interceptors.wrapping import ServerInterceptor
from server.settings import Settings

logger = logging.getLogger(__name__)

#: Longest wait for one JSON-RPC answer from the x402 network's node.
RPC_TIMEOUT_SECONDS = 10.0
#: Connections for the inference hot path on PostgreSQL (each request holds one for one statement).
POOL_SIZE = 10

SERVICE_NAMES = tuple(
    module.DESCRIPTOR.services_by_name[name].full_name
    for module, name in (
        (system_service_pb2, "SystemService"),
        (accounts_service_pb2, "AccountsService"),
        (agents_service_pb2, "AgentsService"),
        (inference_service_pb2, "InferenceService"),
        (responses_service_pb2, "ResponsesService"),
        (messages_service_pb2, "MessagesService"),
        (admin_service_pb2, "AdminService"),
    )
)


@dataclass
class Runtime:
    """A running gRPC server and what it owns."""

    settings: Settings
    database: DatabaseUrls
    engine: AsyncEngine
    server: grpc.aio.Server
    port: int
    http_client: httpx.AsyncClient
    provider_clients: dict[str, ProviderClient]
    facilitator: FacilitatorClient | None
    chain: ChainClient | None
    settlements: Settlements | None
    notdiamond: NotDiamondClient | None
    key_cache: KeyCache[KeyRow]
    pool: AsyncConnectionPool | None = None
    background: list[asyncio.Task[None]] = field(default_factory=list)
    billing: Billing | None = None

    async def stop(self, grace_seconds: float = 5.0) -> None:
        """Finish calls in flight (up to the grace period), then release what the server holds."""
        await self.server.stop(grace_seconds)
        for task in self.background:
            task.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)
        await self.http_client.aclose()
        for client in self.provider_clients.values():
            await client.aclose()
        if self.facilitator is not None:
            await self.facilitator.aclose()
        if self.chain is not None:
            await self.chain.aclose()
        if self.notdiamond is not None:
            await self.notdiamond.aclose()
        if self.pool is not None:
            await self.pool.close()
        await self.engine.dispose()


async def start(settings: Settings, *, extra_interceptors: Sequence[ServerInterceptor] = ()) -> Runtime:
    """Migrate the database, then serve every service on `settings.grpc_host:grpc_port`."""
    database = resolve(settings.database_url, settings.sqlite_default_path)
    await asyncio.to_thread(upgrade, database)
    engine = create_engine(database)
    sessions = session_factory(engine)
    http_client = httpx.AsyncClient(timeout=httpx.Timeout(5.0))
    accounts = AccountRepository(sessions)
    ledger = LedgerRepository(sessions)
    shared_database = database.backend == "postgresql"
    key_cache: KeyCache[KeyRow] = KeyCache(settings.key_cache_seconds, needs_listener=shared_database)
    background: list[asyncio.Task[None]] = []
    if shared_database:
        background.append(
            asyncio.create_task(
                listen_for_revoked_keys(database, key_cache.forget, key_cache.listening),
                name="key-revocations",
            )
        )
    verifier = SupabaseTokenVerifier(
        supabase_url=settings.supabase_url,
        jwt_secret=settings.supabase_jwt_secret,
        min_refresh_seconds=settings.supabase_jwks_min_refresh_seconds,
        client=http_client,
    )
    people = PeopleAccounts(
        accounts,
        AccountPolicy(
            signup_micro=settings.signup_micro,
            max_active_keys=settings.max_active_keys,
            max_quota_micro=settings.max_key_quota_credits * MICRO_PER_CREDIT,
        ),
        key_cache,
    )
    authenticator = ApiKeyAuthenticator(accounts, key_cache)
    await asyncio.to_thread(warm_up)  # the tokeniser's tables, before the first request needs them
    catalog_file = load_catalog_file(settings.catalog_file)
    catalog = Catalog(
        catalog_file, configured_providers(catalog_file, settings.provider_env, settings.simulator)
    )
    clients = provider_clients(catalog.providers, settings.upstream_timeout_seconds)
    pool = await open_pool(database, POOL_SIZE) if shared_database else None
    usage = UsageRepository(sessions)
    # Holds and bills: one statement per step on PostgreSQL's pool, one ORM transaction on SQLite.
    lease = timedelta(seconds=settings.hold_lease_seconds)
    billing: Billing = PostgresBilling(pool, lease) if pool is not None else SqliteBilling(sessions, lease)
    warn_if_short(
        settings.hold_lease_seconds,
        shortest_safe_lease(
            settings.upstream_timeout_seconds,
            catalog.routing.max_attempts,
            settings.stream_idle_timeout_seconds,
        ),
    )
    cooldowns = CooldownRepository(sessions)
    notdiamond = (
        NotDiamondClient(
            settings.notdiamond_api_key, settings.notdiamond_base_url, settings.notdiamond_timeout_ms / 1000
        )
        if settings.notdiamond_api_key
        else None
    )
    chat = ChatService(
        catalog,
        clients,
        billing,
        usage,
        settings.credits_per_usd_decimal,
        settings.default_max_output_tokens,
        Router(catalog, cooldowns, notdiamond, default_model()),
        cooldowns,
        settings.hold_lease_seconds,
    )
    background.append(
        asyncio.create_task(sweep_forever(billing, settings.hold_sweep_seconds), name="hold-sweeper")
    )

    limit = settings.max_body_bytes + 1024 * 1024
    server = grpc.aio.server(
        interceptors=[*default_interceptors(), *extra_interceptors],
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            ("grpc.so_reuseport", 0),
        ],
    )
    system_service_pb2_grpc.add_SystemServiceServicer_to_server(
        SystemServicer(settings, DatabaseProbe(sessions), database.backend, catalog), server
    )
    accounts_service_pb2_grpc.add_AccountsServiceServicer_to_server(
        AccountsServicer(verifier, people, UsageReports(accounts, usage)), server
    )
    agents = AgentAccounts(
        accounts,
        RateLimitRepository(sessions),
        registration_secret=settings.agent_registration_secret,
        registrations_per_hour=settings.agent_registrations_per_hour,
    )
    facilitator = (
        FacilitatorClient(settings.x402_facilitator_url, settings.x402_facilitator_timeout_seconds)
        if settings.x402_enabled
        else None
    )
    top_up_policy = TopUpPolicy(
        enabled=settings.x402_enabled,
        network=settings.x402_network_name,
        asset=settings.x402_asset_address,
        pay_to=settings.x402_pay_to,
        token_name=settings.x402_token_name,
        token_version=TOKEN_VERSION,
        default_usd=Decimal(settings.x402_default_topup_usd),
        min_usd=Decimal(settings.x402_min_topup_usd),
        max_usd=Decimal(settings.x402_max_topup_usd),
        credits_per_usd=settings.credits_per_usd_decimal,
        resource=f"{settings.public_url.rstrip('/')}/api/agents/topup",
    )
    chain = (
        ChainClient(settings.x402_rpc_url, chain_id_of(settings.x402_network), RPC_TIMEOUT_SECONDS)
        if settings.x402_enabled and settings.x402_rpc_url
        else None
    )
    payments = PaymentRepository(sessions)
    settlements = (
        Settlements(
            payments,
            facilitator,
            chain,
            SettlementPolicy(
                facilitator_timeout_seconds=settings.x402_facilitator_timeout_seconds,
                expiry_margin_seconds=settings.x402_expiry_margin_seconds,
                reconcile_seconds=settings.x402_reconcile_seconds,
            ),
        )
        if facilitator is not None
        else None
    )
    if settlements is not None and settings.x402_reconcile_seconds:
        background.append(
            asyncio.create_task(
                reconcile_forever(settlements, settings.x402_reconcile_seconds), name="x402-reconciler"
            )
        )
    top_ups = TopUps(top_up_policy, payments, settlements)
    skill = render_skill(settings.public_url, catalog, top_up_policy)
    agents_service_pb2_grpc.add_AgentsServiceServicer_to_server(
        AgentsServicer(agents, authenticator, top_ups, usage, skill), server
    )
    inference_service_pb2_grpc.add_InferenceServiceServicer_to_server(
        InferenceServicer(authenticator, catalog, chat, settings.credits_per_usd_decimal), server
    )
    responses_service_pb2_grpc.add_ResponsesServiceServicer_to_server(
        ResponsesServicer(authenticator, ResponsesService(chat, ResponseRepository(sessions))), server
    )
    messages_service_pb2_grpc.add_MessagesServiceServicer_to_server(
        MessagesServicer(authenticator, chat), server
    )
    admin_service_pb2_grpc.add_AdminServiceServicer_to_server(
        AdminServicer(Administration(settings.admin_token, ledger, accounts, payments)), server
    )

    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server,
    )

    port = server.add_insecure_port(f"{settings.grpc_host}:{settings.grpc_port}")
    await server.start()
    for name in ("", *SERVICE_NAMES):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    logger.info(
        "grpc server started", extra={"address": f"{settings.grpc_host}:{port}", "database": database.backend}
    )
    return Runtime(
        settings=settings,
        database=database,
        engine=engine,
        server=server,
        port=port,
        http_client=http_client,
        provider_clients=clients,
        facilitator=facilitator,
        chain=chain,
        settlements=settlements,
        notdiamond=notdiamond,
        key_cache=key_cache,
        pool=pool,
        billing=billing,
        background=background,
    )
