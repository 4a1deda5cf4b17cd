"""From a profile (auto, cheap, medium, premium) or an explicit model to an ordered list of
candidate models, with the reasons, ready for the call and its fallbacks."""

from __future__ import annotations

from dataclasses import dataclass, field

from server.db.repositories.cooldowns import CooldownRepository
from server.domain.catalog import ALIASES, PROFILE_NAMES, Catalog, ModelSpec
from server.domain.chat.request import ChatRequest
from server.domain.errors import InvalidArgument, NotFound, ServiceUnavailable
from server.domain.routing.complexity import TIERS, ComplexityModel
from server.domain.routing.features import Shape
from server.domain.routing.notdiamond import NotDiamondClient
from server.observability import ROUTING

#: Output room assumed when checking a context window for a request that names no max_tokens.
OUTPUT_MARGIN = 1024
TRADEOFFS = {"cheap": "cost", "medium": None, "premium": None}
#: Profiles that decide an unsure request by its likeliest tier, not the safer higher one.
FRUGAL = {"cheap"}


@dataclass
class Route:
    """Where a request goes, and why."""

    profile: str
    candidates: list[ModelSpec]
    tier: str = ""
    budget: str = ""
    intelligence: str = "local"
    session_id: str = ""
    request_id: str = ""
    version: str = ""
    reasons: list[str] = field(default_factory=list)

    @property
    def explicit(self) -> bool:
        return self.profile == "explicit"


class Router:
    """Classifies, budgets, filters and orders candidates; NotDiamond may pick the first."""

    def __init__(
        self,
        catalog: Catalog,
        cooldowns: CooldownRepository,
        notdiamond: NotDiamondClient | None,
        complexity: ComplexityModel,
    ) -> None:
        self._catalog = catalog
        self._complexity = complexity
        self._cooldowns = cooldowns
        self._notdiamond = notdiamond

    def _fits(self, spec: ModelSpec, request: ChatRequest, prompt_tokens: int) -> bool:
        output = min(request.max_output_tokens or OUTPUT_MARGIN, spec.max_output)
        return (
            prompt_tokens + output <= spec.context_window
            and (spec.tools or not request.has_tools)
            and (spec.vision or not request.has_images)
        )

    async def route(self, request: ChatRequest, prompt_tokens: int) -> Route:
        profile = ALIASES.get(request.model, request.model)
        if profile in PROFILE_NAMES:
            return await self._profile(profile, request, prompt_tokens)
        return await self._explicit(request, prompt_tokens)

    async def _explicit(self, request: ChatRequest, prompt_tokens: int) -> Route:
        entry = self._catalog.get(request.model)
        if entry is None or entry.spec is None:
            raise NotFound(
                f"The model `{request.model}` does not exist or its provider is not configured; "
                "see /v1/models.",
                reason="MODEL_NOT_FOUND",
                param="model",
            )
        spec = entry.spec
        if request.has_tools and not spec.tools:
            raise InvalidArgument(
                f"{spec.id} does not support tools.", param="tools", reason="MODEL_LACKS_TOOLS"
            )
        if request.has_images and not spec.vision:
            raise InvalidArgument(
                f"{spec.id} does not accept images.", param="messages", reason="MODEL_LACKS_VISION"
            )
        # OpenRouter's `models: [...]`: the caller's own fallbacks, when they can serve the request.
        fallbacks = [self._catalog.get(model_id) for model_id in request.fallback_models]
        candidates = [spec] + [
            e.spec
            for e in fallbacks
            if e is not None and e.spec is not None and self._fits(e.spec, request, prompt_tokens)
        ]
        resting = await self._cooldowns.resting() if len(candidates) > 1 else set()
        ordered = [c for c in candidates if c.id not in resting] + [c for c in candidates if c.id in resting]
        return Route(profile="explicit", candidates=list(dict.fromkeys(ordered)))

    async def _profile(self, profile: str, request: ChatRequest, prompt_tokens: int) -> Route:
        routing = self._catalog.routing
        shape = Shape.of(request.options, images=request.has_images)
        classification = self._complexity.classify(request.messages, shape, cautious=profile not in FRUGAL)
        tier = classification.tier
        resting = await self._cooldowns.resting()
        # No model of the tier can take the request (context, tools, images): the next tier up can.
        for serving in TIERS[TIERS.index(tier) :]:
            budget = routing.auto_budgets[serving] if profile == "auto" else profile  # type: ignore[index]
            available = []
            for model_id in routing.candidates[budget][serving]:  # type: ignore[index]
                entry = self._catalog.get(model_id)
                if (
                    entry is not None
                    and entry.spec is not None
                    and self._fits(entry.spec, request, prompt_tokens)
                ):
                    available.append(entry.spec)
            if available:
                break
        candidates = [c for c in available if c.id not in resting] + [c for c in available if c.id in resting]
        if not candidates:
            raise ServiceUnavailable(
                f"No configured {budget} model can serve this request (tier {tier}): check tools, images and "
                "context size, or configure more providers.",
                reason="NO_MODEL_AVAILABLE",
            )
        if serving != tier:
            classification.reasons.append(f"no {tier} model fits the request: served as {serving}")
        route = Route(
            profile=profile,
            candidates=candidates,
            tier=tier,
            budget=budget,
            version=self._complexity.version,
            reasons=classification.reasons,
        )
        try:
            return await self._advise(route, request, candidates, budget)
        finally:
            ROUTING.labels(profile, tier, budget, route.intelligence).inc()

    async def _advise(
        self, route: Route, request: ChatRequest, candidates: list[ModelSpec], budget: str
    ) -> Route:
        """Let NotDiamond choose the first candidate, when it is configured and answers in time."""
        if self._notdiamond is not None and len(candidates) > 1:
            selection = await self._notdiamond.select(
                request.messages, [(c.provider, c.upstream) for c in candidates], TRADEOFFS.get(budget)
            )
            chosen = next(
                (
                    c
                    for c in candidates
                    if selection and (c.provider, c.upstream) == (selection.provider, selection.model)
                ),
                None,
            )
            if selection is not None and chosen is not None:
                route.candidates = [chosen] + [c for c in candidates if c is not chosen]
                route.intelligence = "notdiamond"
                route.session_id, route.request_id = selection.session_id, selection.request_id
            elif selection is not None:
                route.reasons.append(
                    f"NotDiamond chose {selection.provider}/{selection.model}, not a candidate"
                )
        return route
