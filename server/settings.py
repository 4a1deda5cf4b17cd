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
from decimal import Decimal
from pathlib import Path
from typing import Any

from server.domain.catalog import DEFAULT_CATALOG
from server.domain.credits import credits_to_micro
from server.domain.errors import ConfigurationError, InvalidArgument
from server.domain.payments.offer import NETWORK_NAMES, NETWORKS, network_name

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SQLITE_PATH = PROJECT_ROOT / "var" / "crosscompute.sqlite3"

#: Providers of the default catalog and the variables that configure them (the catalog file says which
#: variable each provider reads; any `*_API_KEY` and `*_BASE_URL` variable is passed to it).
PROVIDER_VARIABLES: dict[str, tuple[str, str]] = {
    "openai": ("OPENAI_API_KEY", "OPENAI_BASE_URL"),
    "anthropic": ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"),
    "deepseek": ("DEEPSEEK_API_KEY", "DEEPSEEK_BASE_URL"),
    "gemini": ("GEMINI_API_KEY", "GEMINI_BASE_URL"),
    "openrouter": ("OPENROUTER_API_KEY", "OPENROUTER_BASE_URL"),
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
    metrics_port: int = setting(
        "CROSSCOMPUTE_METRICS_PORT",
        "Prometheus /metrics on 127.0.0.1 (never through Envoy); 0 turns it off.",
        9464,
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
    agent_registrations_per_hour: int = setting(
        "CROSSCOMPUTE_AGENT_REGISTRATIONS_PER_HOUR",
        "Agent registrations one client address may make per hour.",
        20,
    )
    x402_pay_to: str = setting(
        "X402_PAY_TO",
        "Address that receives x402 payments; x402 is on when it and the facilitator URL are set.",
        "",
    )
    x402_network: str = setting(
        "X402_NETWORK",
        "x402 network, by v1 name or CAIP-2 id: `base-sepolia` (`eip155:84532`) or `base` (`eip155:8453`).",
        "base-sepolia",
    )
    x402_asset: str = setting("X402_ASSET", "Token contract paid in; empty means the network's USDC.", "")
    x402_facilitator_url: str = setting("X402_FACILITATOR_URL", "x402 facilitator base URL.", "")
    x402_facilitator_timeout_seconds: int = setting(
        "X402_FACILITATOR_TIMEOUT_SECONDS",
        "Longest wait for the facilitator's verify or settle; a settle unanswered by then is `unknown`.",
        15,
    )
    x402_rpc_url: str = setting(
        "X402_RPC_URL",
        "Ethereum JSON-RPC endpoint of the x402 network: payments whose settle went unanswered are "
        "closed from the chain's evidence. Unset: they wait for a clear answer or an operator.",
        "",
    )
    x402_reconcile_seconds: int = setting(
        "X402_RECONCILE_SECONDS",
        "How often each replica looks at payments whose outcome is unknown (0 turns it off).",
        5,
    )
    x402_expiry_margin_seconds: int = setting(
        "X402_EXPIRY_MARGIN_SECONDS",
        "How long after an authorisation's `validBefore` an unused one is taken as expired (clock skew).",
        120,
    )
    x402_asset_name: str = setting(
        "X402_ASSET_NAME", "EIP-712 name of the asset; empty means the network's USDC name.", ""
    )
    x402_default_topup_usd: str = setting(
        "X402_DEFAULT_TOPUP_USD", "Top-up amount when none is asked.", "1.00"
    )
    x402_min_topup_usd: str = setting("X402_MIN_TOPUP_USD", "Smallest top-up, in USD.", "0.10")
    x402_max_topup_usd: str = setting("X402_MAX_TOPUP_USD", "Largest top-up, in USD.", "500.00")
    public_url: str = setting(
        "CROSSCOMPUTE_PUBLIC_URL",
        "The gateway's public base URL (named in x402 challenges).",
        "http://127.0.0.1:8080",
    )
    catalog_path: str = setting(
        "CROSSCOMPUTE_CATALOG", "Model catalog JSON file; empty means `server/catalog/models.json`.", ""
    )
    simulator: str = setting(
        "CROSSCOMPUTE_SIMULATOR",
        "The local simulator provider (not a real model): `auto` (on when no provider is set), `on`, `off`.",
        "auto",
    )
    credits_per_usd: str = setting(
        "CROSSCOMPUTE_CREDITS_PER_USD", "Credits per US dollar of provider price (decimal).", "1000"
    )
    default_max_output_tokens: int = setting(
        "CROSSCOMPUTE_DEFAULT_MAX_OUTPUT_TOKENS",
        "Output cap (and credits held) for requests that set no max_tokens, within the model's limit.",
        16384,
    )
    notdiamond_api_key: str = setting(
        "NOTDIAMOND_API_KEY", "Enables NotDiamond routing intelligence for profiles. Secret.", "", secret=True
    )
    notdiamond_base_url: str = setting(
        "NOTDIAMOND_BASE_URL", "NotDiamond API base URL.", "https://api.notdiamond.ai"
    )
    notdiamond_timeout_ms: int = setting(
        "NOTDIAMOND_TIMEOUT_MS", "NotDiamond's time budget; past it the local decision stands.", 800
    )
    upstream_timeout_seconds: int = setting(
        "CROSSCOMPUTE_UPSTREAM_TIMEOUT_SECONDS",
        "Longest wait for a provider's answer (or its next chunk).",
        120,
    )
    hold_lease_seconds: int = setting(
        "CROSSCOMPUTE_HOLD_LEASE_SECONDS",
        "How long a call's hold is leased (a relaying stream renews it); past it the sweeper releases "
        "the hold. Keep it over twice the longest silence a call can have (see Inference, billing).",
        900,
    )
    hold_sweep_seconds: int = setting(
        "CROSSCOMPUTE_HOLD_SWEEP_SECONDS",
        "How often each replica releases holds whose lease has passed (their replica died).",
        60,
    )
    #: Every `*_API_KEY` and `*_BASE_URL` variable, for the catalog's providers (keys are secrets).
    provider_env: Mapping[str, str] = field(default_factory=dict, repr=False)

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
        values["provider_env"] = {
            name: value.strip()
            for name, value in env.items()
            if name.endswith(("_API_KEY", "_BASE_URL")) and value.strip()
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
        if self.hold_lease_seconds < 1 or self.hold_sweep_seconds < 1:
            raise ConfigurationError("CROSSCOMPUTE_HOLD_LEASE_SECONDS and _SWEEP_SECONDS must be at least 1")
        if self.simulator not in {"auto", "on", "off"}:
            raise ConfigurationError("CROSSCOMPUTE_SIMULATOR must be auto, on or off")
        try:
            if credits_to_micro(self.credits_per_usd, param="CROSSCOMPUTE_CREDITS_PER_USD") <= 0:
                raise ConfigurationError("CROSSCOMPUTE_CREDITS_PER_USD must be positive")
        except InvalidArgument as error:
            raise ConfigurationError(error.message) from None
        if self.x402_network not in NETWORK_NAMES:
            raise ConfigurationError(f"X402_NETWORK must be one of {', '.join(sorted(NETWORK_NAMES))}")
        for name in ("x402_default_topup_usd", "x402_min_topup_usd", "x402_max_topup_usd"):
            try:
                credits_to_micro(getattr(self, name), param=name.upper())
            except InvalidArgument as error:
                raise ConfigurationError(error.message) from None
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
    def credits_per_usd_decimal(self) -> Decimal:
        """Credits per US dollar, exactly."""
        return Decimal(self.credits_per_usd)

    @property
    def catalog_file(self) -> Path:
        """The model catalog to load."""
        return Path(self.catalog_path) if self.catalog_path else DEFAULT_CATALOG

    @property
    def x402_enabled(self) -> bool:
        """x402 top-ups need a receiving address and a facilitator."""
        return bool(self.x402_pay_to and self.x402_facilitator_url)

    @property
    def x402_network_name(self) -> str:
        """The configured network's x402 v1 name, however it was given (`eip155:84532` → `base-sepolia`)."""
        return network_name(self.x402_network)

    @property
    def x402_asset_address(self) -> str:
        """The asset paid in: the configured one, else the network's USDC."""
        return self.x402_asset or NETWORKS[self.x402_network_name][1]

    @property
    def x402_token_name(self) -> str:
        """The asset's EIP-712 domain name (USDC's on the network, unless configured)."""
        return self.x402_asset_name or NETWORKS[self.x402_network_name][2]

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
        keys = [value for name, value in self.provider_env.items() if name.endswith("_API_KEY")]
        return [*secrets, *keys]


def documented_variables() -> list[tuple[str, str, str]]:
    """(variable, default, documentation) for every setting, for the README table."""
    rows = []
    for item in dataclasses.fields(Settings):
        if "env" in item.metadata:
            default = "" if item.metadata["secret"] else str(item.default)
            rows.append((item.metadata["env"], default, item.metadata["doc"]))
    for name, (key, base_url) in PROVIDER_VARIABLES.items():
        rows.append((key, "", f"Enables the {name} provider. Secret."))
        rows.append((base_url, "", f"Overrides the {name} API base URL (for proxies and tests)."))
    rows.append(
        ("OLLAMA_BASE_URL", "", "Enables a self-hosted OpenAI-compatible server (Ollama, vLLM, llama.cpp).")
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
