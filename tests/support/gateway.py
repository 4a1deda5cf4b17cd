"""A real gateway for tests: the gRPC server in-process (its own event loop, in a thread) and the
real Envoy binary in front of it, both on free ports."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc

from server.app import Runtime, start
from server.edge.config import EdgeConfig
from server.edge.process import EnvoyProcess
from server.interceptors.wrapping import AroundInterceptor, Context, ServerInterceptor
from server.settings import Settings

T = TypeVar("T")
START_TIMEOUT_SECONDS = 60


class MethodRecorder(AroundInterceptor):
    """Remembers which gRPC methods ran, in order. A call is recorded when its method runs with a
    request, not when Envoy merely opens a stream it then resets (a body too large, bad JSON)."""

    def __init__(self) -> None:
        self.methods: list[str] = []
        self._lock = threading.Lock()

    @asynccontextmanager
    async def around(self, details: grpc.HandlerCallDetails, context: Context) -> AsyncIterator[None]:
        # Envoy's own health checks come on their schedule, not because of a request.
        if not details.method.startswith("/grpc.health."):
            with self._lock:
                self.methods.append(details.method)
        yield

    def take(self) -> list[str]:
        """The methods called since the last `take`."""
        with self._lock:
            taken, self.methods = self.methods, []
        return taken


class ServerThread:
    """A `grpc.aio` server running on its own event loop in a background thread."""

    def __init__(self, settings: Settings, interceptors: list[ServerInterceptor]) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="grpc-server", daemon=True)
        self._settings = settings
        self._interceptors = interceptors
        self.runtime: Runtime | None = None

    def start(self) -> Runtime:
        self._thread.start()
        self.runtime = self.run(start(self._settings, extra_interceptors=self._interceptors))
        return self.runtime

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(START_TIMEOUT_SECONDS)

    def stop(self) -> None:
        if self.runtime is not None:
            self.run(self.runtime.stop(grace_seconds=1))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(START_TIMEOUT_SECONDS)
        self._loop.close()


@dataclass
class Gateway:
    """A running gateway: its URLs, settings and the methods its server saw."""

    settings: Settings
    base_url: str
    grpc_target: str
    backend: str
    recorder: MethodRecorder
    server: ServerThread
    envoy: EnvoyProcess
    extra: dict[str, Any] = field(default_factory=dict)


def envoy_for(grpc_port: int, settings: Settings) -> EnvoyProcess:
    """An Envoy (not started) on free loopback ports in front of `grpc_port`."""
    return EnvoyProcess(EdgeConfig.for_settings(settings, grpc_port, listen_port=0, admin_port=0))


@contextmanager
def running_gateway(settings: Settings) -> Iterator[Gateway]:
    """Start the gRPC server and Envoy on free ports; stop both afterwards."""
    recorder = MethodRecorder()
    server = ServerThread(settings, [recorder])
    runtime = server.start()
    envoy = envoy_for(runtime.port, settings)
    try:
        ports = envoy.start()
        yield Gateway(
            settings=settings,
            base_url=f"http://127.0.0.1:{ports.http}",
            grpc_target=f"127.0.0.1:{runtime.port}",
            backend=runtime.database.backend,
            recorder=recorder,
            server=server,
            envoy=envoy,
        )
    finally:
        envoy.stop()
        server.stop()
