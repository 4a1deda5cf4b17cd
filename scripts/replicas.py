"""Run N gRPC server replicas behind one Envoy on one PostgreSQL: the deployment for users who outgrow
one process or one machine. Every replica shares the database; nothing correct lives in memory.

    DATABASE_URL=postgresql+psycopg://user@host/db python -m scripts.replicas --replicas 3

Envoy checks each replica's gRPC health, retries a request that could not reach a replica, and
routes around one that stops answering. Ctrl-C stops them all.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

from server.edge.config import EdgeConfig
from server.edge.process import EnvoyPorts, EnvoyProcess
from server.settings import Settings

READY = re.compile(r"gRPC listening on [\d.]+:(\d+)")


@dataclass
class Replicas:
    """Running replicas (their processes and gRPC ports) and the Envoy in front of them."""

    processes: list[subprocess.Popen[str]] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)
    envoy: EnvoyProcess | None = None
    edge: EnvoyPorts | None = None

    def kill(self, index: int) -> None:
        """Kill one replica abruptly (SIGKILL), as a crash would."""
        self.processes[index].kill()
        self.processes[index].wait(10)


def _drain(process: subprocess.Popen[str]) -> None:
    try:
        assert process.stdout is not None
        while process.stdout.read(4096):
            pass
    except (OSError, ValueError):
        pass  # the pipe was closed: the replica is gone


def start_replica(environ: Mapping[str, str]) -> tuple[subprocess.Popen[str], int]:
    """Start `python -m server` on a free port; wait for it to say where it listens."""
    process = subprocess.Popen(
        [sys.executable, "-m", "server"],
        env={**environ, "CROSSCOMPUTE_GRPC_PORT": "0", "CROSSCOMPUTE_METRICS_PORT": "0"},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    for line in process.stdout:
        match = READY.search(line)
        if match:
            # Keep draining its output so the replica never blocks on a full pipe.
            threading.Thread(target=_drain, args=(process,), daemon=True).start()
            return process, int(match.group(1))
    code = process.wait()
    process.stdout.close()
    raise RuntimeError(f"replica exited with code {code}")


@contextmanager
def running(
    count: int, environ: Mapping[str, str], *, http_port: int = 0, admin_port: int = 0
) -> Iterator[Replicas]:
    """Start `count` replicas (one at a time: the first migrates the database) and Envoy."""
    replicas = Replicas()
    try:
        for _ in range(count):
            process, port = start_replica(environ)
            replicas.processes.append(process)
            replicas.ports.append(port)
        settings = Settings.from_env(environ)
        config = EdgeConfig.for_settings(
            settings, replicas.ports[0], listen_port=http_port, admin_port=admin_port
        )
        config = dataclasses.replace(
            config, more_endpoints=tuple(("127.0.0.1", port) for port in replicas.ports[1:])
        )
        replicas.envoy = EnvoyProcess(config, concurrency=settings.envoy_concurrency)
        replicas.edge = replicas.envoy.start()
        yield replicas
    finally:
        if replicas.envoy is not None:
            replicas.envoy.stop()
        for process in replicas.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in replicas.processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(15)
            if process.stdout is not None:
                process.stdout.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--replicas", type=int, default=3)
    args = parser.parse_args()
    settings = Settings.from_env()
    if not settings.database_url.startswith("postgresql"):
        sys.exit("replicas share a PostgreSQL database: set DATABASE_URL=postgresql+psycopg://...")
    with running(
        args.replicas, os.environ, http_port=settings.http_port, admin_port=settings.envoy_admin_port
    ) as replicas:
        assert replicas.edge is not None
        print(
            f"{args.replicas} replicas on gRPC ports {replicas.ports}; REST/OpenAI on http://127.0.0.1:{replicas.edge.http}"
        )
        print("Press Ctrl-C to stop.", flush=True)
        stop = threading.Event()
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        stop.wait()


if __name__ == "__main__":
    main()
