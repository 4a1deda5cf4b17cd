"""`python -m server.gateway` (`make run`): the gRPC server and Envoy together, in the foreground.

Prints where both listen; Ctrl-C (or SIGTERM) stops Envoy, then the server, cleanly.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import sys

import uvloop

from server.app import start
from server.edge.config import EdgeConfig
from server.edge.process import EnvoyError, EnvoyProcess
from server.jsonlog import configure_logging
from server.observability import serve_metrics
from server.settings import Settings

ENVOY_WATCH_INTERVAL_SECONDS = 0.5


async def run(settings: Settings) -> int:
    runtime = await start(settings)
    # What start-up built lives as long as the process: keep the collector from scanning it again.
    gc.freeze()
    envoy = EnvoyProcess(
        EdgeConfig.for_settings(settings, runtime.port),
        concurrency=settings.envoy_concurrency,
    )
    try:
        ports = await asyncio.to_thread(envoy.start)
    except EnvoyError as error:
        print(f"envoy failed to start: {error}", file=sys.stderr)
        await runtime.stop()
        return 1
    if settings.metrics_port:
        serve_metrics(settings.metrics_port)
    metrics = f"http://127.0.0.1:{settings.metrics_port}/metrics" if settings.metrics_port else "off"
    print(
        f"CrossCompute API is up (database: {runtime.database.backend})\n"
        f"  REST/OpenAI  http://{settings.http_host}:{ports.http}   (try: curl http://{settings.http_host}:{ports.http}/health)\n"
        f"  Dashboard    http://{settings.http_host}:{ports.http}/\n"
        f"  gRPC         {settings.grpc_host}:{runtime.port}\n"
        f"  Envoy admin  http://127.0.0.1:{ports.admin}\n"
        f"  Metrics      {metrics}\n"
        "Press Ctrl-C to stop.",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    exit_code = 0
    while not stop.is_set():
        if envoy.poll() is not None:
            print(f"envoy exited unexpectedly (code {envoy.poll()}); stopping", file=sys.stderr)
            exit_code = 1
            break
        try:
            await asyncio.wait_for(stop.wait(), ENVOY_WATCH_INTERVAL_SECONDS)
        except TimeoutError:
            continue
    print("stopping…", flush=True)
    await asyncio.to_thread(envoy.stop)
    await runtime.stop()
    print("stopped", flush=True)
    return exit_code


def main() -> None:
    settings = Settings.from_env()
    configure_logging(settings.log_level)
    sys.exit(uvloop.run(run(settings)))


if __name__ == "__main__":
    main()
