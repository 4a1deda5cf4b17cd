"""`python -m server`: the gRPC server alone (Envoy runs separately; see `server.gateway`)."""

from __future__ import annotations

import asyncio
import gc
import signal

import uvloop

from server.app import start
from server.jsonlog import configure_logging
from server.observability import serve_metrics
from server.settings import Settings


async def main() -> None:
    settings = Settings.from_env()
    configure_logging(settings.log_level)
    runtime = await start(settings)
    # What start-up built lives as long as the process: keep the collector from scanning it again.
    gc.freeze()
    if settings.metrics_port:
        serve_metrics(settings.metrics_port)
    print(f"gRPC listening on {settings.grpc_host}:{runtime.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runtime.stop()


if __name__ == "__main__":
    uvloop.run(main())
