"""The architecture's floor, for `make bench`: the gateway's Envoy in front of a grpc.aio server whose
CreateChatCompletion does nothing but answer (no key, no database, no routing, no provider call).

What the gateway costs above this line is its own work; what this line costs is the fixed
architecture (Envoy's transcoder and Lua filter, a Python gRPC server on uvloop). It is a
measuring instrument only: it is never part of the gateway.

    python -m scripts.benchkit.floor_server      # prints "gRPC listening on 127.0.0.1:PORT"
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import grpc
import uvloop
from crosscompute.v1 import inference_service_pb2 as pb
from crosscompute.v1 import inference_service_pb2_grpc as pb_grpc
from google.api import httpbody_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]

from scripts.benchkit.provider import completion_body, stream_events

MODEL = "openai/gpt-5-mini"
ANSWER = completion_body(MODEL, 8)
EVENTS = stream_events(MODEL, 8, include_usage=True)


class FloorInference(pb_grpc.InferenceServiceServicer):
    """Answers every chat completion at once with the same body (or the same SSE events, one message
    each, when the request asks for a stream) and one routing header."""

    async def CreateChatCompletion(
        self, request: pb.CreateChatCompletionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.CreateChatCompletionResponse]:
        await context.send_initial_metadata((("x-crosscompute-provider", "floor"),))
        if b'"stream": true' not in request.body.data:
            yield pb.CreateChatCompletionResponse(
                body=httpbody_pb2.HttpBody(content_type="application/json", data=ANSWER)
            )
            return
        content_type = "text/event-stream"
        for event in EVENTS:
            yield pb.CreateChatCompletionResponse(
                body=httpbody_pb2.HttpBody(content_type=content_type, data=event)
            )
            content_type = ""

    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListModelsResponse:
        raise NotImplementedError  # not measured

    async def GetModel(
        self, request: pb.GetModelRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.Model:
        raise NotImplementedError  # not measured


async def serve() -> None:
    server = grpc.aio.server()
    pb_grpc.add_InferenceServiceServicer_to_server(FloorInference(), server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    print(f"gRPC listening on 127.0.0.1:{port}", flush=True)
    await server.wait_for_termination()


@contextmanager
def running_floor() -> Iterator[tuple[str, list[int]]]:
    """The floor server behind the gateway's own Envoy configuration; yields (base URL, pids)."""
    import subprocess
    import sys

    from server.edge.config import EdgeConfig
    from server.edge.process import EnvoyProcess
    from server.settings import Settings

    process = subprocess.Popen(
        [sys.executable, "-m", "scripts.benchkit.floor_server"], stdout=subprocess.PIPE, text=True
    )
    envoy: EnvoyProcess | None = None
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline().rsplit(":", 1)[1])
        settings = Settings.from_env({})
        config = EdgeConfig.for_settings(settings, port)
        envoy = EnvoyProcess(config, concurrency=settings.envoy_concurrency)
        edge = envoy.start()
        yield f"http://127.0.0.1:{edge.http}", [process.pid, envoy.pid]
    finally:
        if envoy is not None:
            envoy.stop()
        process.terminate()
        process.wait(15)
        if process.stdout is not None:
            process.stdout.close()


if __name__ == "__main__":
    uvloop.run(serve())
