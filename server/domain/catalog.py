"""The model catalog as clients see it. Today: the routing profiles, which always exist; the
provider models join them with the inference issue's catalog file."""

from __future__ import annotations

from dataclasses import dataclass

#: When the routing profiles were introduced (Unix seconds), shown as their `created`.
PROFILES_CREATED = 1_767_225_600  # 2026-01-01T00:00:00Z


@dataclass(frozen=True)
class CatalogEntry:
    """One entry of `/v1/models`."""

    id: str
    name: str
    owned_by: str
    created: int


PROFILES = (
    CatalogEntry("auto", "Auto: routed by complexity and budget", "crosscompute", PROFILES_CREATED),
    CatalogEntry("cheap", "Cheap: the cheapest model that answers well", "crosscompute", PROFILES_CREATED),
    CatalogEntry("medium", "Medium: balanced cost and quality", "crosscompute", PROFILES_CREATED),
    CatalogEntry("premium", "Premium: the strongest models", "crosscompute", PROFILES_CREATED),
)
#: Legacy profile names clients may still send.
ALIASES = {"eco": "cheap", "balanced": "medium"}


class Catalog:
    """Looks models up by the ids clients use."""

    def __init__(self, entries: tuple[CatalogEntry, ...] = PROFILES) -> None:
        self._entries = entries
        self._by_id = {entry.id: entry for entry in entries}

    def list(self) -> tuple[CatalogEntry, ...]:
        return self._entries

    def get(self, model_id: str) -> CatalogEntry | None:
        return self._by_id.get(ALIASES.get(model_id, model_id))
