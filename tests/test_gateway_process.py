"""`make run`'s process: the gateway starts the gRPC server and Envoy, says where they listen,
answers, and stops both cleanly on Ctrl-C (SIGINT)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from tests.support.waiting import eventually

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_gateway(tmp_path: Path) -> tuple[subprocess.Popen[str], str]:
    """`python -m server.gateway` on free ports; returns it and its banner, once printed."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CROSSCOMPUTE_", "DATABASE_URL"))},
        "CROSSCOMPUTE_HTTP_PORT": "0",
        "CROSSCOMPUTE_GRPC_PORT": "0",
        "CROSSCOMPUTE_ENVOY_ADMIN_PORT": "0",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'gateway.sqlite3'}",
        "CROSSCOMPUTE_LOG_LEVEL": "WARNING",
        "CROSSCOMPUTE_METRICS_PORT": str(free_port()),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "server.gateway"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []

    def banner() -> str | None:
        line = process.stdout.readline() if process.stdout else ""
        assert line or process.poll() is None, f"gateway exited: {process.stderr and process.stderr.read()}"
        lines.append(line)
        return "".join(lines) if "Press Ctrl-C" in line else None

    try:
        return process, eventually(banner, timeout=60, what="the gateway's banner")
    except BaseException:
        process.kill()
        process.communicate()
        raise


def test_the_gateway_runs_in_the_foreground_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    process, printed = start_gateway(tmp_path)
    try:
        http = re.search(r"REST/OpenAI\s+(http://127\.0\.0\.1:\d+)", printed)
        admin = re.search(r"Envoy admin\s+(http://127\.0\.0\.1:\d+)", printed)
        assert http and admin and re.search(r"gRPC\s+127\.0\.0\.1:\d+", printed), printed
        health = httpx.get(f"{http.group(1)}/health", timeout=10)
        assert health.status_code == 200 and health.json()["database"]["backend"] == "sqlite"
        metrics = re.search(r"Metrics\s+(http://127\.0\.0\.1:\d+/metrics)", printed)
        assert metrics, printed
        scraped = httpx.get(metrics.group(1), timeout=10).text
        assert (
            'crosscompute_requests_total{code="OK",method="/crosscompute.v1.SystemService/GetHealth"}'
            in scraped
        )
        assert httpx.get(f"{http.group(1)}/metrics", timeout=10).status_code == 404, "never through Envoy"

        process.send_signal(signal.SIGINT)
        stdout, _stderr = process.communicate(timeout=30)
        assert process.returncode == 0
        assert "stopped" in stdout
        # Envoy went with it: nothing answers on its admin port any more.
        try:
            httpx.get(f"{admin.group(1)}/ready", timeout=2)
            raise AssertionError("envoy is still running")
        except httpx.TransportError:
            pass
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            if f"\nPPid:\t{pid}\n" in status:
                found.append(int(entry.name))
    return found


def test_a_gateway_killed_outright_leaves_no_envoy_behind(tmp_path: Path) -> None:
    process, _printed = start_gateway(tmp_path)
    try:
        envoys = [pid for pid in children(process.pid) if "envoy" in Path(f"/proc/{pid}/cmdline").read_text()]
        assert len(envoys) == 1, envoys
        process.kill()  # SIGKILL: no handler runs, no cleanup code
        process.wait(30)  # not communicate(): an orphaned Envoy would hold the pipes open
        eventually(
            lambda: (
                not Path(f"/proc/{envoys[0]}").exists()
                or "State:\tZ" in Path(f"/proc/{envoys[0]}/status").read_text()
            ),
            timeout=30,
            what="envoy to exit with its gateway",
        )
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
