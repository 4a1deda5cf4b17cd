"""Stand-in servicers behind the real interceptors and the real Envoy, for testing the edge itself."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]

from server.interceptors import default_interceptors
from server.settings import Settings
from tests.support.gateway import envoy_for

START_TIMEOUT_SECONDS = 30


@contextmanager
def stand_in_behind_envoy(register: Callable[[grpc.aio.Server], None]) -> Iterator[str]:
    """Serve what `register` adds on a grpc.aio server (own loop, own thread) behind a real Envoy;
    yield Envoy's base URL."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="stand-in", daemon=True)
    thread.start()

    async def serve() -> tuple[grpc.aio.Server, int]:
        server = grpc.aio.server(interceptors=default_interceptors())
        register(server)
        # Envoy checks its upstreams' gRPC health, as it does the real server's.
        health_servicer = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        return server, port

    server, port = asyncio.run_coroutine_threadsafe(serve(), loop).result(START_TIMEOUT_SECONDS)
    envoy = envoy_for(port, Settings())
    try:
        yield f"http://127.0.0.1:{envoy.start().http}"
    finally:
        envoy.stop()
        asyncio.run_coroutine_threadsafe(server.stop(0), loop).result(START_TIMEOUT_SECONDS)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(START_TIMEOUT_SECONDS)
        loop.close()
