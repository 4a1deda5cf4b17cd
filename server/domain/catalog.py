"""The model catalog: which models exist, who serves them, what they can do and what they cost.

It is read from a JSON file (`server/catalog/models.json`, or `CROSSCOMPUTE_CATALOG`) and validated
at start; a model is offered only when its provider is configured. The routing profiles `auto`,
`cheap`, `medium` and `premium` are always listed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveInt,
    ValidationError,
    model_validator,
)

from server.domain.errors import ConfigurationError

DEFAULT_CATALOG = Path(__file__).resolve().parent.parent / "catalog" / "models.json"
#: When the routing profiles were introduced (Unix seconds), shown as their `created`.
PROFILES_CREATED = 1_767_225_600  # 2026-01-01T00:00:00Z
PROFILE_NAMES = ("auto", "cheap", "medium", "premium")
#: Legacy profile names clients may still send.
ALIASES = {"eco": "cheap", "balanced": "medium"}
SIMULATOR = "simulator"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProviderSpec(_Strict):
    """How to reach one provider."""

    kind: Literal["openai", "anthropic", "simulator"]
    base_url: str = ""
    api_key_env: str = ""
    base_url_env: str = ""
    #: A self-hosted server is enabled by its base URL alone (no key needed).
    self_hosted: bool = False


class Prices(_Strict):
    """US dollars per million tokens."""

    input: Decimal = Field(ge=0)
    cached_input: Decimal = Field(ge=0)
    output: Decimal = Field(ge=0)


class ModelSpec(_Strict):
    """One model as clients name it, and how to call it upstream."""

    id: str = Field(min_length=1, max_length=200)
    provider: str
    upstream: str = Field(min_length=1)
    name: str
    context_window: PositiveInt
    max_output: PositiveInt
    tools: bool
    vision: bool
    reasoning: bool
    token_parameter: Literal["max_tokens", "max_completion_tokens"]
    system_role: Literal["system", "developer"]
    prices: Prices
    price_rule: str = Field(min_length=1, max_length=64)
    #: Which budget the model belongs to: a `cheap` profile never routes to a `medium` or `premium` one.
    price_class: Literal["cheap", "medium", "premium"]
    created: NonNegativeInt = PROFILES_CREATED


TIERS = ("SIMPLE", "MEDIUM", "COMPLEX", "REASONING")
BUDGETS = ("cheap", "medium", "premium")
Tier = Literal["SIMPLE", "MEDIUM", "COMPLEX", "REASONING"]
Budget = Literal["cheap", "medium", "premium"]


class RoutingSpec(_Strict):
    """How profiles route: a budget per tier for `auto`, and ordered candidates per budget and tier."""

    version: str
    max_attempts: PositiveInt
    auto_budgets: dict[Tier, Budget]
    candidates: dict[Budget, dict[Tier, list[str]]]


class CatalogFile(_Strict):
    """The whole file."""

    version: str
    providers: dict[str, ProviderSpec]
    models: list[ModelSpec]
    routing: RoutingSpec

    @model_validator(mode="after")
    def _consistent(self) -> CatalogFile:
        seen: set[str] = set()
        for model in self.models:
            if model.provider not in self.providers:
                raise ValueError(f"model {model.id!r} names unknown provider {model.provider!r}")
            if model.id in seen:
                raise ValueError(f"model id {model.id!r} appears twice")
            if model.id in PROFILE_NAMES or model.id in ALIASES:
                raise ValueError(f"model id {model.id!r} is a routing profile name")
            seen.add(model.id)
        by_id = {model.id: model for model in self.models}
        if set(self.routing.auto_budgets) != set(TIERS):
            raise ValueError("routing.auto_budgets must name a budget for every tier")
        for budget in BUDGETS:
            tiers = self.routing.candidates.get(budget)  # type: ignore[call-overload]
            if tiers is None or set(tiers) != set(TIERS):
                raise ValueError(f"routing.candidates.{budget} must list candidates for every tier")
            for tier, ids in tiers.items():
                for model_id in ids:
                    listed = by_id.get(model_id)
                    if listed is None:
                        raise ValueError(
                            f"routing.candidates.{budget}.{tier} names unknown model {model_id!r}"
                        )
                    if BUDGETS.index(listed.price_class) > BUDGETS.index(budget):
                        raise ValueError(
                            f"{model_id} is a {listed.price_class} model: not a {budget} candidate"
                        )
        return self


@dataclass(frozen=True)
class Provider:
    """A configured provider: where it is and its key (a secret)."""

    name: str
    kind: str
    base_url: str
    api_key: str


@dataclass(frozen=True)
class CatalogEntry:
    """One entry of `/v1/models`: a model, or a routing profile (`spec` is None)."""

    id: str
    name: str
    owned_by: str
    created: int
    spec: ModelSpec | None = None


def load_catalog_file(path: Path) -> CatalogFile:
    """Read and validate a catalog file; a clear ConfigurationError when it is wrong."""
    try:
        return CatalogFile.model_validate(json.loads(path.read_text()))
    except FileNotFoundError:
        raise ConfigurationError(f"the model catalog {path} does not exist") from None
    except json.JSONDecodeError as error:
        raise ConfigurationError(f"the model catalog {path} is not valid JSON: {error}") from None
    except ValidationError as error:
        raise ConfigurationError(f"the model catalog {path} is not valid:\n{error}") from None


def configured_providers(
    file: CatalogFile, environ: Mapping[str, str], simulator: str
) -> dict[str, Provider]:
    """The providers whose settings are present; the simulator per `simulator` (auto, on, off)."""
    providers: dict[str, Provider] = {}
    for name, spec in file.providers.items():
        if spec.kind == SIMULATOR:
            continue
        key = environ.get(spec.api_key_env, "") if spec.api_key_env else ""
        base_url = (environ.get(spec.base_url_env, "") if spec.base_url_env else "") or spec.base_url
        enabled = bool(key) if spec.api_key_env else bool(spec.self_hosted and base_url)
        if enabled and base_url:
            providers[name] = Provider(name=name, kind=spec.kind, base_url=base_url.rstrip("/"), api_key=key)
    if simulator == "on" or (simulator == "auto" and not providers):
        for name, spec in file.providers.items():
            if spec.kind == SIMULATOR:
                providers[name] = Provider(name=name, kind=SIMULATOR, base_url="", api_key="")
    return providers


class Catalog:
    """The models clients may use now (their provider is configured) and the routing profiles."""

    def __init__(self, file: CatalogFile, providers: Mapping[str, Provider]) -> None:
        self.version = file.version
        self.routing = file.routing
        self.providers = dict(providers)
        self.all_providers = tuple(file.providers)
        profiles = tuple(
            CatalogEntry(name, f"Routing profile: {name}", "crosscompute", PROFILES_CREATED)
            for name in PROFILE_NAMES
        )
        models = tuple(
            CatalogEntry(model.id, model.name, model.provider, model.created, model)
            for model in file.models
            if model.provider in providers
        )
        self._entries = models + profiles
        self._by_id = {entry.id: entry for entry in self._entries}

    def list(self) -> tuple[CatalogEntry, ...]:
        return self._entries

    def get(self, model_id: str) -> CatalogEntry | None:
        return self._by_id.get(ALIASES.get(model_id, model_id))

    def providers_configured(self) -> dict[str, bool]:
        """Every provider the catalog knows, and whether it is configured."""
        return {name: name in self.providers for name in self.all_providers}

    @property
    def simulated(self) -> bool:
        """Whether the simulator (not a real model) is serving."""
        return SIMULATOR in self.providers


def cost_micro(
    spec: ModelSpec, credits_per_usd: Decimal, *, input_tokens: int, cached_tokens: int, output_tokens: int
) -> int:
    """What tokens cost in micro-credits, rounded up to the micro-credit."""
    fresh = max(0, input_tokens - cached_tokens)
    usd_per_million = (
        fresh * spec.prices.input
        + cached_tokens * spec.prices.cached_input
        + output_tokens * spec.prices.output
    )
    # tokens * (USD per million tokens) * (credits per USD) = millionths of credits: micro-credits.
    return int((usd_per_million * credits_per_usd).to_integral_value(rounding=ROUND_CEILING))
