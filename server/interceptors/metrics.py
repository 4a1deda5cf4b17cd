"""Request metrics: one count and one latency observation per call, by method and status."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc

from server.interceptors.access_log import final_code
from server.interceptors.wrapping import AroundInterceptor, Context
from server.observability import LATENCY, REQUESTS


class MetricsInterceptor(AroundInterceptor):
    """Counts calls and observes their latency for Prometheus."""

    @asynccontextmanager
    async def around(self, details: grpc.HandlerCallDetails, context: Context) -> AsyncIterator[None]:
        started, error = time.perf_counter(), None
        try:
            yield
        except BaseException as caught:
            error = caught
            raise
        finally:
            LATENCY.labels(details.method).observe(time.perf_counter() - started)
            REQUESTS.labels(details.method, final_code(context, error).name).inc()
