"""Wrapping an RPC method handler's behaviour, for unary and streaming responses alike."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

if TYPE_CHECKING:
    ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    ServerInterceptor = grpc.aio.ServerInterceptor

#: A servicer method: (request, context) -> response, awaitable response or async iterator.
Behavior = Callable[..., Any]
#: Wraps a unary-response call: (behavior, request, context) -> response.
UnaryAround = Callable[[Behavior, Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]
#: Wraps a streaming-response call: (behavior, request, context) -> async iterator of responses.
StreamAround = Callable[[Behavior, Any, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Any]]


async def call_unary(behavior: Behavior, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
    """Call a unary-response behaviour, sync or async."""
    result = behavior(request, context)
    if inspect.isawaitable(result):
        result = await result
    return result


async def call_stream(
    behavior: Behavior, request: Any, context: grpc.aio.ServicerContext[Any, Any]
) -> AsyncIterator[Any]:
    """Call a streaming-response behaviour (an async generator, or a coroutine using `context.write`)."""
    result = behavior(request, context)
    if inspect.isasyncgen(result) or hasattr(result, "__aiter__"):
        async for item in result:
            yield item
    elif inspect.isawaitable(result):
        await result


def wrap_handler(
    handler: grpc.RpcMethodHandler[Any, Any] | None, unary: UnaryAround, stream: StreamAround
) -> grpc.RpcMethodHandler[Any, Any] | None:
    """A handler like `handler` whose behaviour runs inside `unary` or `stream`."""
    if handler is None:
        return None
    options = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        inner_uu = handler.unary_unary

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            return await unary(inner_uu, request, context)

        return grpc.unary_unary_rpc_method_handler(unary_unary, **options)
    if handler.unary_stream is not None:
        inner_us = handler.unary_stream

        async def unary_stream(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            async for item in stream(inner_us, request, context):
                yield item

        return grpc.unary_stream_rpc_method_handler(unary_stream, **options)
    if handler.stream_unary is not None:
        inner_su = handler.stream_unary

        async def stream_unary(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            return await unary(inner_su, requests, context)

        return grpc.stream_unary_rpc_method_handler(stream_unary, **options)
    inner_ss = handler.stream_stream
    assert inner_ss is not None

    async def stream_stream(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        async for item in stream(inner_ss, requests, context):
            yield item

    return grpc.stream_stream_rpc_method_handler(stream_stream, **options)


def metadata_value(context: grpc.aio.ServicerContext[Any, Any], name: str) -> str | None:
    """The first value of invocation metadata `name` (lower case), as text."""
    for key, value in context.invocation_metadata() or ():
        if key == name:
            return value.decode("latin-1") if isinstance(value, bytes) else value
    return None
