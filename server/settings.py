"""Settings, read once from environment variables.

Every setting is a field of `Settings` with the variable that sets it and a line of documentation;
the README's configuration table lists the same variables (a test keeps the two in step).
Secrets are marked so that they never appear in `repr`, logs or public answers.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server.domain.credits import credits_to_micro
from server.domain.errors import ConfigurationError, InvalidArgument

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SQLITE_PATH = PROJECT_ROOT / "var" / "crosscompute.sqlite3"

#: Provider name → the environment variable whose presence enables it.
PROVIDER_KEY_VARIABLES: dict[str, str] = {
    "openai": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "deepseek": "DEEPSEEK_API_KEY",
    "gemini": "GEMINI_API_KEY",
    "openrouter": "OPENROUTER_API_KEY",
}


def setting(env: str, doc: str, default: Any = None, *, secret: bool = False) -> Any:
    """A settings field: its environment variable, documentation and default."""
    return field(default=default, repr=not secret, metadata={"env": env, "doc": doc, "secret": secret})


@dataclass(frozen=True)
class Settings:
    """The gateway's configuration."""

    grpc_host: str = setting("CROSSCOMPUTE_GRPC_HOST", "Address the gRPC server binds.", "127.0.0.1")
    grpc_port: int = setting("CROSSCOMPUTE_GRPC_PORT", "gRPC port (0 picks a free one).", 50051)
    http_host: str = setting("CROSSCOMPUTE_HTTP_HOST", "Address Envoy's public listener binds.", "127.0.0.1")
    http_port: int = setting("CROSSCOMPUTE_HTTP_PORT", "Envoy's public REST/OpenAI port.", 8080)
    envoy_admin_port: int = setting(
        "CROSSCOMPUTE_ENVOY_ADMIN_PORT", "Envoy's admin port, bound to 127.0.0.1 only.", 9901
    )
    envoy_concurrency: int = setting("CROSSCOMPUTE_ENVOY_CONCURRENCY", "Envoy worker threads.", 1)
    database_url: str = setting(
        "DATABASE_URL",
        "SQLAlchemy URL. Unset: a SQLite file under `var/`. "
        "PostgreSQL: `postgresql+psycopg://user@host:5432/db`.",
        "",
    )
    log_level: str = setting(
        "CROSSCOMPUTE_LOG_LEVEL", "Log level of the JSON logs on standard error.", "INFO"
    )
    max_body_bytes: int = setting(
        "CROSSCOMPUTE_MAX_BODY_BYTES", "Largest request or response body, in bytes.", 16 * 1024 * 1024
    )
    stream_idle_timeout_seconds: int = setting(
        "CROSSCOMPUTE_STREAM_IDLE_TIMEOUT_SECONDS",
        "A stream with no bytes for this long is cut (there is no total timeout).",
        300,
    )
    signup_credits: str = setting(
        "CROSSCOMPUTE_SIGNUP_CREDITS", "Credits granted once to each person at bootstrap (decimal).", "100"
    )
    max_active_keys: int = setting(
        "CROSSCOMPUTE_MAX_ACTIVE_KEYS", "Most active API keys one account may hold.", 25
    )
    max_key_quota_credits: int = setting(
        "CROSSCOMPUTE_MAX_KEY_QUOTA_CREDITS", "Largest `quotaCredits` a key may be given.", 1_000_000_000
    )
    key_cache_seconds: int = setting(
        "CROSSCOMPUTE_KEY_CACHE_SECONDS",
        "How long a key lookup is cached (0: never); a deactivation evicts it at once on every replica.",
        30,
    )
    supabase_jwks_min_refresh_seconds: int = setting(
        "SUPABASE_JWKS_MIN_REFRESH_SECONDS", "Least time between JWKS refetches caused by unknown `kid`s.", 10
    )
    supabase_url: str = setting("SUPABASE_URL", "Supabase project URL, e.g. `https://abc.supabase.co`.", "")
    supabase_publishable_key: str = setting(
        "SUPABASE_PUBLISHABLE_KEY", "Supabase publishable key (`sb_publishable_...`), public.", ""
    )
    supabase_anon_key: str = setting(
        "SUPABASE_ANON_KEY", "Legacy Supabase anon key, public; used when no publishable key is set.", ""
    )
    supabase_jwt_secret: str = setting(
        "SUPABASE_JWT_SECRET", "Legacy HS256 JWT secret of older Supabase projects. Secret.", "", secret=True
    )
    supabase_secret_key: str = setting(
        "SUPABASE_SECRET_KEY", "Supabase secret or service-role key. Secret; never served.", "", secret=True
    )
    admin_token: str = setting(
        "CROSSCOMPUTE_ADMIN_TOKEN", "Token the gRPC-only AdminService requires. Secret.", "", secret=True
    )
    agent_registration_secret: str = setting(
        "AGENT_REGISTRATION_SECRET",
        "When set, agent registration needs it in `x-agent-registration-secret`. Secret.",
        "",
        secret=True,
    )
    x402_pay_to: str = setting(
        "X402_PAY_TO",
        "Address that receives x402 payments; x402 is on when it and the facilitator URL are set.",
        "",
    )
    x402_network: str = setting("X402_NETWORK", "x402 network: `base-sepolia` or `base`.", "base-sepolia")
    x402_asset: str = setting("X402_ASSET", "Token contract paid in; empty means the network's USDC.", "")
    x402_facilitator_url: str = setting("X402_FACILITATOR_URL", "x402 facilitator base URL.", "")
    provider_keys: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from `environ` (default: the process environment)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for item in dataclasses.fields(cls):
            name = item.metadata.get("env")
            if name is None or name not in env:
                continue
            raw = env[name].strip()
            values[item.name] = _parse(name, raw, item.default)
        values["provider_keys"] = {
            provider: env[variable]
            for provider, variable in PROVIDER_KEY_VARIABLES.items()
            if env.get(variable)
        }
        return cls(**values).validated()

    def validated(self) -> Settings:
        """Refuse settings that would put a secret where the public can read it."""
        public_key = self.supabase_public_key
        if public_key.startswith("sb_secret_"):
            raise ConfigurationError(
                "SUPABASE_PUBLISHABLE_KEY/SUPABASE_ANON_KEY holds a secret key (sb_secret_...); "
                "it would be served to browsers by /api/config"
            )
        if public_key and public_key in self.secret_values():
            raise ConfigurationError("the Supabase public key equals a configured secret")
        try:
            if self.signup_micro < 0:
                raise ConfigurationError("CROSSCOMPUTE_SIGNUP_CREDITS must not be negative")
        except InvalidArgument as error:
            raise ConfigurationError(f"CROSSCOMPUTE_SIGNUP_CREDITS: {error.message}") from None
        if self.x402_network not in X402_NETWORKS:
            raise ConfigurationError(f"X402_NETWORK must be one of {sorted(X402_NETWORKS)}")
        return self

    @property
    def signup_micro(self) -> int:
        """The signup grant in micro-credits."""
        return credits_to_micro(self.signup_credits, param="CROSSCOMPUTE_SIGNUP_CREDITS")

    @property
    def supabase_public_key(self) -> str:
        """The key a browser uses: the publishable key, else the legacy anon key."""
        return self.supabase_publishable_key or self.supabase_anon_key

    @property
    def supabase_configured(self) -> bool:
        """Sign-in works when the web app has the project URL and a public key."""
        return bool(self.supabase_url and self.supabase_public_key)

    @property
    def providers_configured(self) -> dict[str, bool]:
        """Every known provider, and whether its key is set."""
        return {provider: provider in self.provider_keys for provider in PROVIDER_KEY_VARIABLES}

    @property
    def x402_enabled(self) -> bool:
        """x402 top-ups need a receiving address and a facilitator."""
        return bool(self.x402_pay_to and self.x402_facilitator_url)

    @property
    def x402_asset_address(self) -> str:
        """The asset paid in: the configured one, else the network's USDC."""
        return self.x402_asset or X402_NETWORKS[self.x402_network]

    @property
    def sqlite_default_path(self) -> Path:
        """Where the embedded SQLite database lives when `DATABASE_URL` is unset."""
        return DEFAULT_SQLITE_PATH

    def secret_values(self) -> list[str]:
        """Every configured secret value, for tests and log scrubbing."""
        secrets = [
            str(getattr(self, item.name))
            for item in dataclasses.fields(self)
            if item.metadata.get("secret") and getattr(self, item.name)
        ]
        return [*secrets, *self.provider_keys.values()]


#: x402 networks the gateway accepts, with their USDC contract.
X402_NETWORKS: dict[str, str] = {
    "base-sepolia": "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
    "base": "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913",
}


def documented_variables() -> list[tuple[str, str, str]]:
    """(variable, default, documentation) for every setting, for the README table."""
    rows = []
    for item in dataclasses.fields(Settings):
        if "env" in item.metadata:
            default = "" if item.metadata["secret"] else str(item.default)
            rows.append((item.metadata["env"], default, item.metadata["doc"]))
    rows.extend(
        (variable, "", f"Enables the {name} provider. Secret.")
        for name, variable in PROVIDER_KEY_VARIABLES.items()
    )
    return rows


def _parse(name: str, raw: str, default: Any) -> Any:
    if isinstance(default, bool):
        return raw.lower() in {"1", "true", "yes", "on"}
    if isinstance(default, int):
        try:
            value = int(raw)
        except ValueError:
            raise ConfigurationError(f"{name} must be a whole number, not {raw!r}") from None
        if value < 0:
            raise ConfigurationError(f"{name} must not be negative")
        return value
    return raw
