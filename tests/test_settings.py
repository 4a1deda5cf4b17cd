"""Settings: parsing, refusing unsafe values, keeping secrets out of sight, and the README table."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.db.urls import resolve
from server.domain.errors import ConfigurationError
from server.settings import Settings, documented_variables

README = Path(__file__).resolve().parent.parent / "README.md"


def test_defaults_are_the_documented_ones() -> None:
    settings = Settings.from_env({})
    assert (settings.http_host, settings.http_port, settings.grpc_port) == ("127.0.0.1", 8080, 50051)
    assert settings.max_body_bytes >= 10 * 1024 * 1024
    assert settings.supabase_configured is False
    assert settings.x402_enabled is False


def test_numbers_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="CROSSCOMPUTE_GRPC_PORT must be a whole number"):
        Settings.from_env({"CROSSCOMPUTE_GRPC_PORT": "fifty"})
    with pytest.raises(ConfigurationError, match="must not be negative"):
        Settings.from_env({"CROSSCOMPUTE_HTTP_PORT": "-1"})


def test_a_secret_key_is_refused_where_the_public_key_goes() -> None:
    with pytest.raises(ConfigurationError, match="holds a secret key"):
        Settings.from_env({"SUPABASE_PUBLISHABLE_KEY": "sb_secret_abc"})
    with pytest.raises(ConfigurationError, match="equals a configured secret"):
        Settings.from_env({"SUPABASE_ANON_KEY": "same", "SUPABASE_JWT_SECRET": "same"})


def test_unknown_x402_networks_are_refused() -> None:
    for unknown in ("ethereum", "eip155:1", "eip155:"):
        with pytest.raises(ConfigurationError, match="X402_NETWORK"):
            Settings.from_env({"X402_NETWORK": unknown})


@pytest.mark.parametrize(
    ("configured", "name", "asset"),
    [
        ("eip155:84532", "base-sepolia", "0x036CbD53842c5426634e7929541eC2318f3dCF7e"),
        ("base-sepolia", "base-sepolia", "0x036CbD53842c5426634e7929541eC2318f3dCF7e"),
        ("eip155:8453", "base", "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"),
    ],
)
def test_an_x402_network_is_named_by_its_v1_name_or_its_caip2_id(
    configured: str, name: str, asset: str
) -> None:
    settings = Settings.from_env({"X402_NETWORK": configured})
    assert (settings.x402_network_name, settings.x402_asset_address) == (name, asset)


def test_secrets_never_appear_in_repr() -> None:
    settings = Settings.from_env(
        {
            "SUPABASE_JWT_SECRET": "jwt-secret-value",
            "OPENAI_API_KEY": "sk-value",
            "CROSSCOMPUTE_ADMIN_TOKEN": "adm",
        }
    )
    text = repr(settings)
    assert "jwt-secret-value" not in text and "sk-value" not in text and "adm'" not in text
    assert settings.provider_env["OPENAI_API_KEY"] == "sk-value"
    assert "sk-value" in settings.secret_values()


def test_database_urls_pick_the_drivers_and_never_echo_a_password(tmp_path: Path) -> None:
    default = resolve("", tmp_path / "var" / "db.sqlite3")
    assert default.backend == "sqlite"
    assert default.async_url.drivername == "sqlite+aiosqlite"
    postgres = resolve("postgresql+psycopg://user:pw@db:5432/app", tmp_path / "x")
    assert (postgres.backend, postgres.async_url.drivername) == ("postgresql", "postgresql+psycopg")
    with pytest.raises(ConfigurationError, match="psycopg") as refused:
        resolve("postgresql+asyncpg://user:hunter2@db/app", tmp_path / "x")
    assert "hunter2" not in str(refused.value)
    with pytest.raises(ConfigurationError, match="sqlite:// or postgresql"):
        resolve("mysql://user:hunter2@db/app", tmp_path / "x")


def test_the_readme_documents_every_variable() -> None:
    readme = README.read_text()
    missing = [name for name, _default, _doc in documented_variables() if f"`{name}`" not in readme]
    assert missing == []
