"""Error mapping, in one place: a domain error becomes a gRPC status for gRPC callers and, through
metadata Envoy's Lua filter applies, the right HTTP status and JSON body for HTTP callers.

HTTP bodies take the shape of the surface the method belongs to:
- the OpenAI surfaces (`InferenceService`, `ResponsesService`):
  `{"error": {"message", "type", "code", "param"}}`
- Anthropic's Messages API (`MessagesService`): `{"type": "error", "error": {"type", "message"}}`, with its
  own statuses (529 for an exhausted provider)
- the API surface (everything else): `{"ok": false, "error": {"code", "message"}}`
gRPC callers also get a `google.rpc.Status` with an AIP-193 `ErrorInfo` (reason, domain).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import grpc
import psycopg
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from sqlalchemy.exc import InterfaceError, OperationalError

from server.domain.errors import DomainError, ErrorKind, NotImplementedYet, ServiceUnavailable
from server.domain.wire import chat_completions, messages
from server.interceptors.wrapping import AroundInterceptor, Context

logger = logging.getLogger(__name__)

ERROR_DOMAIN = "crosscompute.io"
HTTP_STATUS_HEADER = "x-crosscompute-http-status"
ERROR_BODY_HEADER = "x-crosscompute-error-body"
OPENAI_SERVICES = ("/crosscompute.v1.InferenceService/", "/crosscompute.v1.ResponsesService/")
ANTHROPIC_SERVICES = ("/crosscompute.v1.MessagesService/",)


@dataclass(frozen=True)
class Mapping:
    """How one error kind travels: its gRPC code, HTTP status and OpenAI error type."""

    code: grpc.StatusCode
    http_status: int
    openai_type: str


_CODES_AND_STATUSES: dict[ErrorKind, tuple[grpc.StatusCode, int]] = {
    ErrorKind.INVALID_ARGUMENT: (grpc.StatusCode.INVALID_ARGUMENT, 400),
    ErrorKind.UNAUTHENTICATED: (grpc.StatusCode.UNAUTHENTICATED, 401),
    ErrorKind.PAYMENT_REQUIRED: (grpc.StatusCode.FAILED_PRECONDITION, 402),
    ErrorKind.PERMISSION_DENIED: (grpc.StatusCode.PERMISSION_DENIED, 403),
    ErrorKind.NOT_FOUND: (grpc.StatusCode.NOT_FOUND, 404),
    ErrorKind.CONFLICT: (grpc.StatusCode.ALREADY_EXISTS, 409),
    ErrorKind.RATE_LIMITED: (grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
    ErrorKind.NOT_IMPLEMENTED: (grpc.StatusCode.UNIMPLEMENTED, 501),
    ErrorKind.UPSTREAM_FAILED: (grpc.StatusCode.UNAVAILABLE, 502),
    ErrorKind.UNAVAILABLE: (grpc.StatusCode.UNAVAILABLE, 503),
    ErrorKind.UPSTREAM_TIMEOUT: (grpc.StatusCode.DEADLINE_EXCEEDED, 504),
    ErrorKind.INTERNAL: (grpc.StatusCode.INTERNAL, 500),
}
MAPPINGS: dict[ErrorKind, Mapping] = {
    kind: Mapping(code, status, chat_completions.ERROR_TYPES[kind])
    for kind, (code, status) in _CODES_AND_STATUSES.items()
}


def error_body(error: DomainError, method: str) -> dict[str, Any]:
    """The JSON body HTTP callers of `method` get for `error`, in the shape of its API."""
    if error.body is not None:
        return dict(error.body)
    if method.startswith(OPENAI_SERVICES):
        return chat_completions.error_body(error)
    if method.startswith(ANTHROPIC_SERVICES):
        return messages.error_body(error)
    return {"ok": False, "error": {"code": error.reason, "message": error.message}}


def http_status(error: DomainError, method: str) -> int:
    """The HTTP status of `error` for callers of `method` (Anthropic's API has its own, like 529)."""
    if method.startswith(ANTHROPIC_SERVICES):
        return messages.error_status(error)[1]
    return MAPPINGS[error.kind].http_status


def trailing_metadata(error: DomainError, method: str) -> tuple[tuple[str, str | bytes], ...]:
    """The metadata that carries `error` to gRPC callers and to Envoy."""
    mapping = MAPPINGS[error.kind]
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN)
    if error.param:
        info.metadata["param"] = error.param
    detail = any_pb2.Any()
    detail.Pack(info)
    status = status_pb2.Status(
        code=getattr(code_pb2, mapping.code.name), message=error.message, details=[detail]
    )
    body = json.dumps(error_body(error, method), ensure_ascii=True, separators=(",", ":"))
    metadata: list[tuple[str, str | bytes]] = [
        (HTTP_STATUS_HEADER, str(http_status(error, method))),
        (ERROR_BODY_HEADER, body),
        *((name.lower(), value) for name, value in error.headers.items()),
    ]
    metadata.extend(rpc_status.to_status(status).trailing_metadata)
    return tuple(metadata)


def as_domain_error(error: Exception, method: str) -> DomainError:
    """Any exception a servicer raised, as the error its caller should see."""
    if isinstance(error, DomainError):
        return error
    if isinstance(error, NotImplementedError):
        name = method.rsplit("/", 1)[-1]
        return NotImplementedYet(f"{name} is not implemented yet")
    if isinstance(
        error,
        OperationalError | InterfaceError | psycopg.OperationalError | psycopg.InterfaceError | TimeoutError,
    ):
        # The database is down or unreachable: nothing was changed, and a retry later may work.
        logger.warning("database unavailable in %s: %s", method, type(error).__name__)
        return ServiceUnavailable("the database is unavailable; retry shortly", reason="DATABASE_UNAVAILABLE")
    logger.error("unexpected error in %s", method, exc_info=error)
    return DomainError("internal error")


class ErrorMappingInterceptor(AroundInterceptor):
    """Turns exceptions into statuses; unexpected ones are logged and answered as INTERNAL."""

    @asynccontextmanager
    async def around(self, details: grpc.HandlerCallDetails, context: Context) -> AsyncIterator[None]:
        try:
            yield
        except (grpc.aio.AbortError, asyncio.CancelledError):
            raise
        except Exception as caught:
            error = as_domain_error(caught, details.method)
            metadata = trailing_metadata(error, details.method)
            await context.abort(MAPPINGS[error.kind].code, error.message, trailing_metadata=metadata)
