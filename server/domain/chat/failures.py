"""How a provider's failure reaches our caller (never with the provider's credentials or URL)."""

from __future__ import annotations

from server.domain.errors import (
    DomainError,
    InvalidArgument,
    ServiceUnavailable,
    UpstreamFailed,
    UpstreamTimeout,
)
from server.domain.providers.base import UpstreamError


def domain_error(error: UpstreamError) -> DomainError:
    """The error our caller gets for a provider's failure."""
    if error.kind == "bad_request":
        return InvalidArgument(error.message, reason="UPSTREAM_BAD_REQUEST")
    if error.kind == "auth":
        return UpstreamFailed(
            "The provider refused the gateway's credentials.", reason="PROVIDER_AUTH_FAILED"
        )
    if error.kind == "rate_limited":
        return ServiceUnavailable(
            "The provider is rate limiting; retry shortly.", reason="PROVIDER_RATE_LIMITED"
        )
    if error.kind == "overloaded":
        return ServiceUnavailable("The provider is overloaded; retry shortly.", reason="PROVIDER_OVERLOADED")
    if error.kind == "timeout":
        return UpstreamTimeout("The provider did not answer in time.", reason="PROVIDER_TIMEOUT")
    if error.kind == "connect":
        return UpstreamFailed("The provider could not be reached.", reason="PROVIDER_UNREACHABLE")
    return UpstreamFailed("The provider failed to answer.", reason="PROVIDER_ERROR")
