"""The router's labelled data (`data/router/`): reading it, its digest, and how a set is scored.

Each JSONL line is one chat request as a client sends it (`messages`, optional `tools`,
`tool_choice` and `response_format`) with its `tier`, `language`, `topic` and shape `features`.
Training, evaluation and the tests read the data through here, so they agree on what a row means.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from server.domain.routing.features import Shape

DATA_DIR = Path(__file__).resolve().parents[3] / "data" / "router"
TRAIN_DIR = DATA_DIR / "train"
HELD_OUT = DATA_DIR / "heldout.jsonl"


def load_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def training_files(directory: Path = TRAIN_DIR) -> list[Path]:
    return sorted(directory.glob("*.jsonl"))


def data_digest(files: Iterable[Path]) -> str:
    """SHA-256 over the files' names and bytes, in order: what a model was trained from."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def has_images(messages: list[dict[str, Any]]) -> bool:
    return any(
        isinstance(m.get("content"), list)
        and any(isinstance(p, dict) and p.get("type") in ("image_url", "input_image") for p in m["content"])
        for m in messages
    )


def shape_of(row: dict[str, Any]) -> Shape:
    """The shape of a labelled row, as the router reads it from a request."""
    return Shape.of(row, images=has_images(row["messages"]))


def summary(expected: npt.NDArray[np.int64], chosen: npt.NDArray[np.int64]) -> dict[str, float]:
    """Exact, within one tier, and gross under-routing (COMPLEX or REASONING sent to SIMPLE)."""
    expected, chosen = np.asarray(expected), np.asarray(chosen)
    return {
        "exact": float(np.mean(expected == chosen)),
        "within_one": float(np.mean(np.abs(expected - chosen) <= 1)),
        "gross_under": float(np.mean((expected >= 2) & (chosen == 0))),
        "under": float(np.mean(chosen < expected)),
    }
