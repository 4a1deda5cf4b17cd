"""`/health` and `/api/config` through the real Envoy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import make_settings
from tests.support.databases import postgres_database, set_connections_allowed
from tests.support.gateway import Gateway, running_gateway
from tests.support.waiting import eventually

SECRETS = {
    "SUPABASE_JWT_SECRET": "hs256-jwt-secret-never-served-0123456789",
    "SUPABASE_SECRET_KEY": "sb_secret_never-served-abcdefghijklmnop",
    "CROSSCOMPUTE_ADMIN_TOKEN": "admin-token-never-served-4815162342",
    "AGENT_REGISTRATION_SECRET": "agent-registration-secret-never-served",
    "OPENAI_API_KEY": "sk-openai-never-served-ABCDEFGH",
    "ANTHROPIC_API_KEY": "sk-ant-never-served-IJKLMNOP",
}
PUBLIC = {
    "SUPABASE_URL": "https://abcdefgh.supabase.co",
    "SUPABASE_PUBLISHABLE_KEY": "sb_publishable_public-value-123",
    "X402_PAY_TO": "0x1111111111111111111111111111111111111111",
    "X402_FACILITATOR_URL": "http://127.0.0.1:9/facilitator",
    "X402_NETWORK": "base",
}


@pytest.fixture(scope="module")
def configured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway with Supabase, x402, two providers and every secret configured."""
    database = f"sqlite:///{tmp_path_factory.mktemp('configured') / 'db.sqlite3'}"
    with running_gateway(make_settings(database, **SECRETS, **PUBLIC)) as running:
        yield running


def test_health_reports_the_contract_fields(gateway: Gateway, http: httpx.Client) -> None:
    response = http.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["ok"] is True
    assert body["supabaseConfigured"] is False
    assert body["x402"] == {
        "enabled": False,
        "network": "base-sepolia",
        "asset": "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
        "payTo": "",
    }
    assert body["providersConfigured"] == {
        "openai": False,
        "anthropic": False,
        "deepseek": False,
        "gemini": False,
        "openrouter": False,
        "ollama": False,
        "simulator": True,
    }
    assert body["simulatorEnabled"] is True, "no provider is configured: the simulator serves, and says so"
    assert body["paymentChannels"] == {"x402": {"enabled": False}}
    assert body["database"]["ok"] is True
    assert body["database"]["backend"] == gateway.backend
    assert gateway.recorder.take() == ["/crosscompute.v1.SystemService/GetHealth"]


def test_health_reflects_the_configuration(configured: Gateway) -> None:
    body = httpx.get(f"{configured.base_url}/health").json()
    assert body["supabaseConfigured"] is True
    assert body["providersConfigured"]["openai"] is True
    assert body["providersConfigured"]["anthropic"] is True
    assert body["providersConfigured"]["deepseek"] is False
    assert body["providersConfigured"]["simulator"] is False
    assert body["simulatorEnabled"] is False
    assert body["x402"] == {
        "enabled": True,
        "network": "base",
        "asset": "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913",
        "payTo": PUBLIC["X402_PAY_TO"],
    }
    assert body["paymentChannels"]["x402"]["enabled"] is True


def test_config_serves_the_public_supabase_values(configured: Gateway) -> None:
    response = httpx.get(f"{configured.base_url}/api/config")
    assert response.status_code == 200
    assert response.json() == {
        "ok": True,
        "supabaseConfigured": True,
        "supabaseUrl": PUBLIC["SUPABASE_URL"],
        "supabasePublishableKey": PUBLIC["SUPABASE_PUBLISHABLE_KEY"],
    }


@pytest.mark.parametrize("path", ["/api/config", "/health"])
def test_no_secret_is_ever_served(configured: Gateway, path: str) -> None:
    response = httpx.get(f"{configured.base_url}{path}")
    served = response.text + "\n".join(f"{name}: {value}" for name, value in response.headers.items())
    for name, secret in SECRETS.items():
        assert secret not in served, f"{name} leaked through {path}"
    # The settings know these are secrets, and every one was configured.
    assert sorted(configured.settings.secret_values()) == sorted(SECRETS.values())


def test_config_falls_back_to_the_legacy_anon_key(tmp_path: Path) -> None:
    settings = make_settings(
        f"sqlite:///{tmp_path / 'db.sqlite3'}",
        SUPABASE_URL=PUBLIC["SUPABASE_URL"],
        SUPABASE_ANON_KEY="eyJ.anon.key",
    )
    assert settings.supabase_public_key == "eyJ.anon.key"
    assert settings.supabase_configured is True


@pytest.mark.postgres
def test_health_is_503_while_the_database_is_down_and_recovers(tmp_path: Path) -> None:
    with postgres_database("health") as (name, url), running_gateway(make_settings(url)) as running:
        health = f"{running.base_url}/health"
        assert httpx.get(health).status_code == 200

        set_connections_allowed(name, False)
        try:
            response = httpx.get(health, timeout=10)
            assert response.status_code == 503
            body = response.json()
            assert body["ok"] is False
            assert body["database"] == {"ok": False, "backend": "postgresql", "latencyMs": 0}
            assert "providersConfigured" in body and "x402" in body
            assert not any(name.startswith("grpc-") for name in response.headers)
        finally:
            set_connections_allowed(name, True)

        # Back without restarting anything: the pool drops dead connections and reconnects.
        eventually(lambda: httpx.get(health, timeout=10).status_code == 200, what="/health to recover")
        assert httpx.get(health).json()["database"]["ok"] is True
