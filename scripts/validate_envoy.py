"""`envoy --mode validate` on the configuration `make run` would render (run by `make lint`)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from server.edge.config import EdgeConfig, render
from server.edge.process import validate
from server.settings import Settings


def main() -> None:
    settings = Settings.from_env()
    config = EdgeConfig.for_settings(settings, settings.grpc_port)
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "envoy.yaml"
        path.write_text(render(config))
        validate(path)
    print("envoy --mode validate: the rendered configuration is valid")


if __name__ == "__main__":
    main()
