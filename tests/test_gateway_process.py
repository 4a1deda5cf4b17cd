"""`make run`'s process: the gateway starts the gRPC server and Envoy, says where they listen,
answers, and stops both cleanly on Ctrl-C (SIGINT)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.pipes import LineReader
from tests.support.waiting import eventually

ROOT = Path(__file__).resolve().parent.parent
GATEWAY_COMMAND = [sys.executable, "-m", "server.gateway"]
#: How long the gateway may take to print its banner (it migrates a new database and starts Envoy).
BANNER_TIMEOUT_SECONDS = 60.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Started:
    """The gateway's process, its output as it is read, and the banner it printed."""

    process: subprocess.Popen[str]
    stdout: LineReader
    stderr: LineReader
    banner: str

    def stop(self) -> None:
        """Kill it if it is still running, and reap it (never waiting on its pipes: an orphaned
        Envoy would hold them open)."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(30)


def start_gateway(tmp_path: Path) -> Started:
    """`python -m server.gateway` on free ports; returns it once its banner is printed, or fails
    within BANNER_TIMEOUT_SECONDS whatever it prints (or does not)."""
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
        GATEWAY_COMMAND,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stderr is not None
    stdout, stderr = LineReader(process.stdout, "stdout"), LineReader(process.stderr, "stderr")
    try:
        try:
            banner = stdout.wait_for(
                "Press Ctrl-C", timeout=BANNER_TIMEOUT_SECONDS, what="the gateway's banner"
            )
        except AssertionError as error:
            raise AssertionError(f"{error}\nstderr: {stderr.drain()!r}") from None
        return Started(process, stdout, stderr, banner)
    except BaseException:
        Started(process, stdout, stderr, "").stop()
        raise


def test_the_gateway_runs_in_the_foreground_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    started = start_gateway(tmp_path)
    process, printed = started.process, started.banner
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
        assert process.wait(30) == 0
        assert "stopped" in started.stdout.rest(timeout=30)
        # Envoy went with it: nothing answers on its admin port any more.
        try:
            httpx.get(f"{admin.group(1)}/ready", timeout=2)
            raise AssertionError("envoy is still running")
        except httpx.TransportError:
            pass
    finally:
        started.stop()


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
    started = start_gateway(tmp_path)
    process = started.process
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
        started.stop()  # the readers close the pipes when they end
