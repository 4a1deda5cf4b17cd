"""Shared fixtures: settings, databases on both backends, and a real gateway per backend."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.db.engine import create_engine, session_factory
from server.db.migrate import upgrade
from server.db.urls import DatabaseUrls, resolve
from server.settings import DEFAULT_SQLITE_PATH, Settings
from tests.support.databases import postgres_database
from tests.support.fake_provider import FakeProvider
from tests.support.gateway import Gateway, running_gateway
from tests.support.people import close_clients
from tests.support.supabase import JWT_SECRET, SupabaseStandIn

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def make_settings(database_url: str, **overrides: str) -> Settings:
    """Settings for a test: free ports, the given database, nothing from the developer's environment."""
    environ = {
        "CROSSCOMPUTE_GRPC_PORT": "0",
        "CROSSCOMPUTE_METRICS_PORT": "0",
        "DATABASE_URL": database_url,
        **overrides,
    }
    return Settings.from_env(environ)


@pytest.fixture(scope="session", params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A migrated-on-first-use database for this run, on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'crosscompute.sqlite3'}"
        return
    with postgres_database("session") as (_name, url):
        yield url


@pytest.fixture(scope="session")
def migrated(database_url: str) -> DatabaseUrls:
    """The session's database, migrated."""
    urls = resolve(database_url, DEFAULT_SQLITE_PATH)
    upgrade(urls)
    return urls


@pytest.fixture
async def sessions(migrated: DatabaseUrls) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on the migrated database, for repository tests."""
    engine = create_engine(migrated)
    yield session_factory(engine)
    await engine.dispose()


ADMIN_TOKEN = "admin-token-for-tests-5b2f0c"
MAX_ACTIVE_KEYS = 5


@pytest.fixture(scope="session")
def supabase() -> Iterator[SupabaseStandIn]:
    """Supabase Auth's JWKS endpoint, served locally, and a minter of its tokens."""
    with SupabaseStandIn().running() as stand_in:
        yield stand_in


def gateway_settings(database_url: str, supabase: SupabaseStandIn, **overrides: str) -> Settings:
    """The settings the test gateways run with: sign-in through the stand-in, an admin token."""
    return make_settings(
        database_url,
        SUPABASE_URL=supabase.url,
        SUPABASE_JWT_SECRET=JWT_SECRET,
        SUPABASE_JWKS_MIN_REFRESH_SECONDS="0",
        CROSSCOMPUTE_ADMIN_TOKEN=ADMIN_TOKEN,
        CROSSCOMPUTE_MAX_ACTIVE_KEYS=str(MAX_ACTIVE_KEYS),
        **{"CROSSCOMPUTE_AGENT_REGISTRATIONS_PER_HOUR": "10000", **overrides},
    )


@pytest.fixture(scope="session")
def gateway(database_url: str, supabase: SupabaseStandIn) -> Iterator[Gateway]:
    """The real gateway (gRPC server and Envoy) on the session's database."""
    with running_gateway(gateway_settings(database_url, supabase)) as running:
        yield running


@pytest.fixture
def http(gateway: Gateway) -> Iterator[httpx.Client]:
    """A plain HTTP client for the gateway's public port (for checks below the OpenAI client)."""
    gateway.recorder.take()
    with httpx.Client(base_url=gateway.base_url, timeout=10.0) as client:
        yield client


@pytest.fixture(scope="session")
def contract_path() -> Path:
    """The public REST contract, shared with the rest of the team."""
    path = Path(__file__).resolve().parent.parent.parent / "shared" / "spec" / "crosscompute-openapi.json"
    if not path.exists():
        pytest.fail(f"the contract is missing: {path}")
    return path


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProvider]:
    """The stand-in OpenAI and Anthropic provider, one per test module."""
    with FakeProvider().running() as provider:
        yield provider


@pytest.fixture(autouse=True)
def _close_openai_clients() -> Iterator[None]:
    """Each test's clients from `Person.openai` close when it ends (see tests/support/people.py)."""
    yield
    close_clients()
