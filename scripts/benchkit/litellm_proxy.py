"""LiteLLM's proxy, for the benchmark's comparison: a cached virtual environment and a runner.

`ensure_litellm_venv()` creates `.bench/litellm-venv` once (about a minute) with `litellm[proxy]`
pinned to `LITELLM_VERSION`, apart from the project's own environment; the installed
`litellm-VERSION.dist-info` is the cache key, so later calls return at once.

`running_litellm(provider_base_url, workers)` writes a config that maps `MODEL` to the provider
(`openai/...`, `api_base` = the provider + `/v1`, a dummy key), starts
`litellm --config ... --port <free> --num_workers N` in its own process group with a random master
key, no database, the local model cost map and no telemetry, waits (polling, deadline 120 s) until
`/health/readiness` answers and every worker has logged "Application startup complete", and yields a
`LiteLLM` handle. On exit the whole process group is terminated (killed after 15 s). LiteLLM calls
the provider's `GET /v1/models` once at start.

    with running_litellm("http://127.0.0.1:8081", workers=2) as litellm:
        litellm.url, litellm.master_key, litellm.model, litellm.pids  # pids: the process tree, now

Standalone check: `python -m scripts.benchkit.litellm_proxy PROVIDER_BASE_URL --workers 1` starts it,
sends one plain and one streamed completion, prints the results and stops it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCH_DIR = ROOT / ".bench"
VENV = BENCH_DIR / "litellm-venv"
LITELLM_VERSION = "1.108.7"
MODEL = "openai/gpt-5-mini"
READY_DEADLINE_SECONDS = 120.0


def ensure_litellm_venv(venv: Path = VENV, version: str = LITELLM_VERSION) -> Path:
    """Creates the LiteLLM virtual environment unless it already holds `version`; returns its `litellm`."""
    executable = venv / "bin" / "litellm"
    if executable.exists() and any(venv.glob(f"lib/python*/site-packages/litellm-{version}.dist-info")):
        return executable
    venv.parent.mkdir(parents=True, exist_ok=True)
    # The base interpreter, not the project's venv: `-m venv` from inside a venv would still work,
    # but this keeps the two environments plainly unrelated.
    python = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([python, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", f"litellm[proxy]=={version}"],
        check=True,
    )
    return executable


def free_port() -> int:
    """A port that is free right now (another process could take it before it is bound)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def process_tree(root_pid: int) -> list[int]:
    """`root_pid` and all its descendants, found by scanning /proc (the kernel here has no
    /proc/<pid>/task/*/children)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    tree = [root_pid]
    index = 0
    while index < len(tree):
        tree += parents.get(tree[index], [])
        index += 1
    return tree


@dataclass
class LiteLLM:
    """A running LiteLLM proxy."""

    url: str
    master_key: str
    model: str
    process: subprocess.Popen[bytes]
    log_path: Path
    config_path: Path
    workers: int
    version: str = LITELLM_VERSION
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def pids(self) -> list[int]:
        """Every process of the proxy (the launcher and its worker children), read from /proc now."""
        return process_tree(self.process.pid)


def _get(url: str, headers: dict[str, str], timeout: float = 2.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 (http://127.0.0.1 only)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as error:
        return int(error.code), bytes(error.read())


def _started_workers(log_path: Path) -> int:
    try:
        return log_path.read_text(errors="replace").count("Application startup complete")
    except OSError:
        return 0


def _wait_ready(litellm: LiteLLM, deadline: float) -> None:
    """Polls readiness and the log until every worker has started, or raises with the log's tail."""
    headers = {"Authorization": f"Bearer {litellm.master_key}"}
    while True:
        if litellm.process.poll() is not None:
            raise RuntimeError(
                f"litellm exited with {litellm.process.returncode}:\n{_tail(litellm.log_path)}"
            )
        try:
            status, _ = _get(f"{litellm.url}/health/readiness", headers)
        except (OSError, urllib.error.URLError):
            status = 0
        if status == 200 and _started_workers(litellm.log_path) >= litellm.workers:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"litellm not ready after {READY_DEADLINE_SECONDS} s:\n{_tail(litellm.log_path)}"
            )
        # The interval between polls doubles as a check that the launcher has not exited.
        with contextlib.suppress(subprocess.TimeoutExpired):
            litellm.process.wait(timeout=0.25)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def write_config(path: Path, provider_base_url: str, model: str = MODEL) -> None:
    """The proxy's config: `model` routed to the provider's OpenAI-compatible API (JSON is valid YAML)."""
    upstream = model if model.startswith("openai/") else f"openai/{model}"
    config = {
        "model_list": [
            {
                "model_name": model,
                "litellm_params": {
                    "model": upstream,
                    "api_base": provider_base_url.rstrip("/") + "/v1",
                    "api_key": "sk-bench-provider",
                },
            }
        ],
        "general_settings": {"master_key": "os.environ/LITELLM_MASTER_KEY"},
    }
    path.write_text(json.dumps(config, indent=2) + "\n")


@contextlib.contextmanager
def running_litellm(
    provider_base_url: str,
    workers: int = 1,
    *,
    model: str = MODEL,
    port: int | None = None,
    log_dir: Path = BENCH_DIR / "logs",
    extra_env: dict[str, str] | None = None,
) -> Iterator[LiteLLM]:
    """Starts LiteLLM's proxy (no database) in front of `provider_base_url`; yields it once ready."""
    executable = ensure_litellm_venv()
    log_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{port}"
    config_path = log_dir / f"litellm-{stamp}.yaml"
    log_path = log_dir / f"litellm-{stamp}.log"
    write_config(config_path, provider_base_url, model)
    master_key = f"sk-bench-{secrets.token_hex(12)}"
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "VIRTUAL_ENV", "PYTHONPATH") and not key.startswith("LITELLM_")
    }
    env |= {
        "LITELLM_MASTER_KEY": master_key,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_TELEMETRY": "False",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        "PATH": f"{executable.parent}{os.pathsep}{os.environ.get('PATH', '')}",
        **(extra_env or {}),
    }
    command = [str(executable), "--config", str(config_path), "--host", "127.0.0.1", "--port", str(port)]
    command += ["--num_workers", str(workers)]
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command, cwd=log_dir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    litellm = LiteLLM(
        url=f"http://127.0.0.1:{port}",
        master_key=master_key,
        model=model,
        process=process,
        log_path=log_path,
        config_path=config_path,
        workers=workers,
        headers={"Authorization": f"Bearer {master_key}"},
    )
    try:
        _wait_ready(litellm, time.monotonic() + READY_DEADLINE_SECONDS)
        yield litellm
    finally:
        stop_process_group(process)


def stop_process_group(process: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    """SIGTERM to the process group, SIGKILL to what is left of it after `grace` seconds, then waits
    (polling /proc, up to 10 s) until none of the tree's processes is left."""
    tree = process_tree(process.pid)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # workers (or a resource tracker) that outlived the launcher
    process.wait()
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() for pid in tree[1:]) and time.monotonic() < deadline:
        time.sleep(0.05)  # pacing of a shutdown poll, not a readiness wait


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("provider_base_url", help="e.g. http://127.0.0.1:8081 (without /v1)")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    started = time.monotonic()
    ensure_litellm_venv()
    print(f"venv ready in {time.monotonic() - started:.1f} s", flush=True)
    started = time.monotonic()
    with running_litellm(args.provider_base_url, args.workers) as litellm:
        print(
            f"ready in {time.monotonic() - started:.1f} s at {litellm.url}, pids {litellm.pids}", flush=True
        )
        body = {"model": litellm.model, "messages": [{"role": "user", "content": "Hi"}]}
        for extra in ({}, {"stream": True, "stream_options": {"include_usage": True}}):
            request = urllib.request.Request(  # noqa: S310 (http://127.0.0.1 only)
                f"{litellm.url}/v1/chat/completions",
                data=json.dumps(body | extra).encode(),
                headers={**litellm.headers, "Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                print(response.status, response.read().decode(), flush=True)


if __name__ == "__main__":
    main()
