"""Reading what callers send in metadata (HTTP headers through Envoy)."""

from __future__ import annotations

from typing import Any

import grpc

from server.interceptors.wrapping import metadata_value

ADMIN_TOKEN_HEADER = "x-crosscompute-admin-token"  # noqa: S105 - a header name, not a secret


def bearer_token(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    """The token of `Authorization: Bearer <token>`, or None."""
    value = metadata_value(context, "authorization")
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def api_key(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    """The caller's key: `x-api-key` (Anthropic's header), else `Authorization: Bearer`."""
    value = (metadata_value(context, "x-api-key") or "").strip()
    return value or bearer_token(context)
