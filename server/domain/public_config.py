"""The public configuration a web app reads from `/api/config`. Nothing secret may be added here."""

from __future__ import annotations

from dataclasses import dataclass

from server.settings import Settings


@dataclass(frozen=True)
class PublicConfig:
    """Values safe to serve to any browser."""

    supabase_configured: bool
    supabase_url: str
    supabase_publishable_key: str


def public_config(settings: Settings) -> PublicConfig:
    """The public Supabase values: the project URL and the publishable (or legacy anon) key."""
    return PublicConfig(
        supabase_configured=settings.supabase_configured,
        supabase_url=settings.supabase_url,
        supabase_publishable_key=settings.supabase_public_key,
    )
