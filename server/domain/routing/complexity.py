"""The learned complexity model: a request's tier, with how sure it is, in well under a millisecond.

A linear model with the logistic loss (one against the rest per tier) over `features.featurize`,
its scores turned into probabilities by a softmax at a temperature calibrated on cross-validation;
trained by `scripts/train_router.py`
and committed as a small versioned artifact (`model/<version>.npy` and `.json`), read once at start.
Scoring is a gather and a dot product in numpy; no network, no model download.

The tier is the one with the least expected cost under the model's probabilities, where a tier off
by one costs 1, off by more costs `far` per tier, and sending a request to a lower tier than it
needs costs `under` times as much: unsure between two tiers, it prefers the higher one, and torn
between two far apart, the one between them. Both weights were chosen by cross-validation. A
profile that asks for the cheapest answer takes the likeliest tier instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from server.domain.routing.features import FEATURES, PLAIN, Shape, featurize

TIERS = ("SIMPLE", "MEDIUM", "COMPLEX", "REASONING")
VERSION = "complexity-2"
MODEL_DIR = Path(__file__).resolve().parent / "model"


@dataclass(frozen=True)
class Classification:
    """The tier, the model's probability for it, and the reasons, for headers and logs."""

    tier: str
    score: float
    reasons: list[str] = field(default_factory=list)


def softmax(scores: npt.NDArray[np.float64], temperature: float) -> npt.NDArray[np.float64]:
    """Probabilities from scores, row by row."""
    scaled = np.asarray(scores, dtype=np.float64) / temperature
    scaled = np.exp(scaled - scaled.max(axis=-1, keepdims=True))
    result: npt.NDArray[np.float64] = scaled / scaled.sum(axis=-1, keepdims=True)
    return result


def costs(far: float, under: float) -> npt.NDArray[np.float64]:
    """`costs[t, c]`: routing a request of tier `t` to tier `c`."""
    tiers = np.arange(len(TIERS))
    apart = np.abs(tiers[:, None] - tiers[None, :]).astype(np.float64)
    matrix = np.where(apart <= 1, apart, far * apart)
    result: npt.NDArray[np.float64] = matrix * np.where(tiers[None, :] < tiers[:, None], under, 1.0)
    return result


def decide(probabilities: npt.NDArray[np.float64], cost: npt.NDArray[np.float64] | None) -> int:
    """The tier with the least expected cost; with no cost matrix, the likeliest."""
    if cost is None:
        return int(np.argmax(probabilities))
    return int(np.argmin(probabilities @ cost))


class ComplexityModel:
    """Weights, bias, temperature and decision costs of one trained version."""

    def __init__(
        self,
        weights: npt.NDArray[np.float32],
        bias: npt.NDArray[np.float32],
        *,
        temperature: float,
        far: float,
        under: float,
        version: str,
    ) -> None:
        if weights.shape != (FEATURES, len(TIERS)):
            raise ValueError(
                f"{version}: weights of shape {weights.shape}, features expect {(FEATURES, len(TIERS))}"
            )
        self.weights = weights
        self.bias = bias
        self.temperature = temperature
        self.far, self.under = far, under
        self.cost = costs(far, under)
        self.version = version

    @classmethod
    def load(cls, version: str = VERSION, directory: Path = MODEL_DIR) -> ComplexityModel:
        meta: dict[str, Any] = json.loads((directory / f"{version}.json").read_text())
        # Row-major float32: a request's rows are gathered with one `take`.
        weights = np.ascontiguousarray(
            np.load(directory / f"{version}.npy", allow_pickle=False), dtype=np.float32
        )
        return cls(
            weights,
            np.asarray(meta["bias"], dtype=np.float32),
            temperature=float(meta["temperature"]),
            far=float(meta["far"]),
            under=float(meta["under"]),
            version=meta["version"],
        )

    def probabilities(self, messages: list[dict[str, Any]], shape: Shape = PLAIN) -> npt.NDArray[np.float64]:
        indices, values = featurize(messages, shape)
        scores = (values @ np.take(self.weights, indices, axis=0) + self.bias).astype(np.float64)
        return softmax(scores, self.temperature)

    def classify(
        self, messages: list[dict[str, Any]], shape: Shape = PLAIN, *, cautious: bool = True
    ) -> Classification:
        """Deterministic: the same request always gets the same tier."""
        probabilities = self.probabilities(messages, shape)
        chosen = decide(probabilities, self.cost if cautious else None)
        ranked = sorted(range(len(TIERS)), key=lambda i: -probabilities[i])
        reasons = [f"{self.version}: " + ", ".join(f"{TIERS[i]} {probabilities[i]:.2f}" for i in ranked[:2])]
        if chosen != ranked[0]:
            reasons.append(f"unsure: {TIERS[chosen]} costs least in expectation, not {TIERS[ranked[0]]}")
        return Classification(
            tier=TIERS[chosen], score=round(float(probabilities[chosen]), 3), reasons=reasons
        )


@lru_cache(maxsize=1)
def default_model() -> ComplexityModel:
    """The committed model, read once per process."""
    return ComplexityModel.load()
