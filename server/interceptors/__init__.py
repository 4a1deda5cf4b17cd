"""Server interceptors, one concern each: request ids, access logs, error mapping."""

from __future__ import annotations

from server.interceptors.access_log import AccessLogInterceptor
from server.interceptors.errors import ErrorMappingInterceptor
from server.interceptors.metrics import MetricsInterceptor
from server.interceptors.request_id import RequestIdInterceptor
from server.interceptors.wrapping import ServerInterceptor


def default_interceptors() -> list[ServerInterceptor]:
    """The chain, outermost first: the request id is set before anything logs, and the access log
    sees the status the error mapping chose."""
    return [RequestIdInterceptor(), AccessLogInterceptor(), MetricsInterceptor(), ErrorMappingInterceptor()]


__all__ = [
    "AccessLogInterceptor",
    "ErrorMappingInterceptor",
    "MetricsInterceptor",
    "RequestIdInterceptor",
    "default_interceptors",
]
