"""Request ids: Envoy's `x-request-id` (or a new one) in a ContextVar for the whole call."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc

from server.interceptors.wrapping import AroundInterceptor, Context
from server.request_context import request_id_var

_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def choose_request_id(metadata: Any) -> str:
    """The caller's request id when it is safe to log, else a new one."""
    for key, value in metadata or ():
        if key == "x-request-id":
            text = value.decode("latin-1") if isinstance(value, bytes) else value
            if _SAFE_REQUEST_ID.match(text):
                return str(text)
    return uuid.uuid4().hex


class RequestIdInterceptor(AroundInterceptor):
    """Sets the request id for the duration of each call."""

    @asynccontextmanager
    async def around(self, details: grpc.HandlerCallDetails, context: Context) -> AsyncIterator[None]:
        token = request_id_var.set(choose_request_id(details.invocation_metadata))
        try:
            yield
        finally:
            request_id_var.reset(token)
