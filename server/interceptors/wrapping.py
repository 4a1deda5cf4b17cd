"""Interceptors that run code around each call, for unary and streaming responses alike.

An interceptor says what happens around one call as an async context manager (`around`); the
handler wrapping here runs every kind of RPC method inside it.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

import grpc

if TYPE_CHECKING:
    ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    ServerInterceptor = grpc.aio.ServerInterceptor

Context = grpc.aio.ServicerContext[Any, Any]
#: A servicer method: (request, context) -> response, awaitable response or async iterator.
Behavior = Callable[..., Any]
#: What runs around one call, given its context.
Around = Callable[[Context], AbstractAsyncContextManager[None]]


async def call_unary(behavior: Behavior, request: Any, context: Context) -> Any:
    """Call a unary-response behaviour, sync or async."""
    result = behavior(request, context)
    if inspect.isawaitable(result):
        result = await result
    return result


async def call_stream(behavior: Behavior, request: Any, context: Context) -> AsyncIterator[Any]:
    """Call a streaming-response behaviour (an async generator, or a coroutine using `context.write`)."""
    result = behavior(request, context)
    if inspect.isasyncgen(result) or hasattr(result, "__aiter__"):
        async for item in result:
            yield item
    elif inspect.isawaitable(result):
        await result


def wrap_handler(
    handler: grpc.RpcMethodHandler[Any, Any] | None, around: Around
) -> grpc.RpcMethodHandler[Any, Any] | None:
    """A handler like `handler` whose behaviour runs inside `around(context)`."""
    if handler is None:
        return None
    options = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }

    def unary(behavior: Behavior) -> Behavior:
        async def run(request: Any, context: Context) -> Any:
            async with around(context):
                return await call_unary(behavior, request, context)

        return run

    def stream(behavior: Behavior) -> Behavior:
        async def run(request: Any, context: Context) -> AsyncIterator[Any]:
            async with around(context):
                async for item in call_stream(behavior, request, context):
                    yield item

        return run

    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(unary(handler.unary_unary), **options)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(stream(handler.unary_stream), **options)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(unary(handler.stream_unary), **options)
    assert handler.stream_stream is not None
    return grpc.stream_stream_rpc_method_handler(stream(handler.stream_stream), **options)


class AroundInterceptor(ServerInterceptor):
    """Base of the interceptors here: subclasses define `around` for one call."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        # An unknown method has no handler: None passes through and gRPC answers UNIMPLEMENTED.
        return wrap_handler(handler, lambda context: self.around(handler_call_details, context))  # type: ignore[return-value]

    def around(self, details: grpc.HandlerCallDetails, context: Context) -> AbstractAsyncContextManager[None]:
        """What happens around one call."""
        raise NotImplementedError


def metadata_value(context: Context, name: str) -> str | None:
    """The first value of invocation metadata `name` (lower case), as text."""
    for key, value in context.invocation_metadata() or ():
        if key == name:
            return value.decode("latin-1") if isinstance(value, bytes) else value
    return None
