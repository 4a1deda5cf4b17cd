"""Domain errors. The transport layer maps each kind to a gRPC code and an HTTP status in one place
(`server.interceptors.errors`); domain code only says what went wrong.

`reason` follows Google AIP-193: a constant UPPER_SNAKE_CASE identifier of the error's cause.
Messages are for people and must never contain a secret (a key, a token).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any


class ErrorKind(enum.Enum):
    """What kind of failure an error is, independent of any transport."""

    INVALID_ARGUMENT = "invalid_argument"
    UNAUTHENTICATED = "unauthenticated"
    PAYMENT_REQUIRED = "payment_required"
    PERMISSION_DENIED = "permission_denied"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    RATE_LIMITED = "rate_limited"
    NOT_IMPLEMENTED = "not_implemented"
    UPSTREAM_FAILED = "upstream_failed"
    UNAVAILABLE = "unavailable"
    UPSTREAM_TIMEOUT = "upstream_timeout"
    INTERNAL = "internal"


class DomainError(Exception):
    """An error a caller should see, with a kind, an AIP-193 reason and a safe message."""

    kind: ErrorKind = ErrorKind.INTERNAL
    default_reason: str = "INTERNAL"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.param = param
        #: Extra response headers (for example an x402 `PAYMENT-REQUIRED` challenge).
        self.headers: Mapping[str, str] = headers or {}
        #: A complete response body replacing the standard error shape (for example x402's v1 body).
        self.body = body


class InvalidArgument(DomainError):
    """The request is malformed or out of range."""

    kind = ErrorKind.INVALID_ARGUMENT
    default_reason = "INVALID_ARGUMENT"


class Unauthenticated(DomainError):
    """The caller's credentials are missing or not valid."""

    kind = ErrorKind.UNAUTHENTICATED
    default_reason = "UNAUTHENTICATED"


class PaymentRequired(DomainError):
    """The caller must pay (x402) or has too few credits."""

    kind = ErrorKind.PAYMENT_REQUIRED
    default_reason = "PAYMENT_REQUIRED"


class PermissionDenied(DomainError):
    """The caller is known but may not do this."""

    kind = ErrorKind.PERMISSION_DENIED
    default_reason = "PERMISSION_DENIED"


class NotFound(DomainError):
    """The named thing does not exist (or is not the caller's)."""

    kind = ErrorKind.NOT_FOUND
    default_reason = "NOT_FOUND"


class Conflict(DomainError):
    """The request conflicts with the current state."""

    kind = ErrorKind.CONFLICT
    default_reason = "CONFLICT"


class RateLimited(DomainError):
    """Too many requests."""

    kind = ErrorKind.RATE_LIMITED
    default_reason = "RATE_LIMITED"


class NotImplementedYet(DomainError):
    """The operation is in the contract but not built yet."""

    kind = ErrorKind.NOT_IMPLEMENTED
    default_reason = "NOT_IMPLEMENTED"


class UpstreamFailed(DomainError):
    """An upstream service (a provider, the facilitator) failed."""

    kind = ErrorKind.UPSTREAM_FAILED
    default_reason = "UPSTREAM_FAILED"


class ServiceUnavailable(DomainError):
    """A dependency (the database, every provider) cannot be reached now."""

    kind = ErrorKind.UNAVAILABLE
    default_reason = "UNAVAILABLE"


class UpstreamTimeout(DomainError):
    """An upstream service did not answer in time."""

    kind = ErrorKind.UPSTREAM_TIMEOUT
    default_reason = "UPSTREAM_TIMEOUT"


class ConfigurationError(Exception):
    """The settings cannot work; raised at start, never to a caller."""
