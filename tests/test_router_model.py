"""The learned complexity model: trained from the committed data, judged on the held-out set that
nothing was tuned on, deterministic across processes, and cautious only where the profile allows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from typing import Any

import numpy as np
import pytest

from scripts.eval_router import evaluate
from scripts.router_data import Item, near_duplicates
from server.domain.routing.complexity import (
    MODEL_DIR,
    TIERS,
    VERSION,
    ComplexityModel,
    costs,
    decide,
    default_model,
)
from server.domain.routing.dataset import HELD_OUT, data_digest, load_rows, shape_of, training_files
from server.domain.routing.features import FEATURES, Shape, featurize

#: A little under what `make eval-router` reports for this version (85.5%, 95.2%, 1.2%: docs/routing.md).
HELD_OUT_EXACT = 0.84
HELD_OUT_WITHIN_ONE = 0.94
HELD_OUT_GROSS_UNDER = 0.02


@pytest.fixture(scope="module")
def model() -> ComplexityModel:
    return default_model()


@pytest.fixture(scope="module")
def held_out() -> list[dict[str, Any]]:
    return load_rows(HELD_OUT)


@pytest.fixture(scope="module")
def training() -> list[dict[str, Any]]:
    return [row for path in training_files() for row in load_rows(path)]


def test_the_committed_model_was_trained_from_the_committed_data() -> None:
    meta = json.loads((MODEL_DIR / f"{VERSION}.json").read_text())
    assert meta["version"] == VERSION
    assert meta["training_digest"] == data_digest(training_files()), "run `make train-router` and commit"
    assert (MODEL_DIR / f"{VERSION}.npy").stat().st_size < 4_000_000


def test_the_training_set_is_large_balanced_and_varied(training: list[dict[str, Any]]) -> None:
    tiers = Counter(row["tier"] for row in training)
    assert len(training) >= 4000
    assert max(tiers.values()) - min(tiers.values()) <= len(training) * 0.02, tiers
    languages = Counter(row["language"] for row in training)
    assert sum(n for lang, n in languages.items() if lang != "en") >= len(training) / 4
    assert len(languages) - 1 >= 12
    for tier in TIERS:
        rows = [row for row in training if row["tier"] == tier]
        for feature in (
            "system",
            "json",
            "multiturn",
            "tools",
            "image",
            "long" if tier != "REASONING" else "terse",
        ):
            assert sum(feature in row["features"] for row in rows) >= 0.03 * len(rows), (tier, feature)


def test_the_held_out_set_shares_no_task_with_the_training_set(
    training: list[dict[str, Any]], held_out: list[dict[str, Any]]
) -> None:
    assert len(held_out) >= 600
    assert len({row["tier"] for row in held_out}) == 4
    items = [Item("train", i, row) for i, row in enumerate(training)]
    items += [Item("held-out", i, row) for i, row in enumerate(held_out)]
    crossing = [(a.where, b.where) for _, a, b in near_duplicates(items) if a.source != b.source]
    assert not crossing


def test_held_out_figures_stay_above_their_floors(
    model: ComplexityModel, held_out: list[dict[str, Any]]
) -> None:
    figures = evaluate(model, held_out)
    assert figures["exact"] >= HELD_OUT_EXACT
    assert figures["within_one"] >= HELD_OUT_WITHIN_ONE
    assert figures["gross_under"] <= HELD_OUT_GROSS_UNDER


def test_the_decision_prefers_the_higher_tier_and_hedges_between_far_ones() -> None:
    plain = costs(1.0, 1.0)
    assert decide(np.array([0.50, 0.45, 0.03, 0.02]), None) == 0, "no costs: the likeliest"
    assert decide(np.array([0.50, 0.45, 0.03, 0.02]), costs(1.0, 1.5)) == 1, "under-routing costs more"
    assert decide(np.array([0.55, 0.40, 0.03, 0.02]), plain) == 0
    assert decide(np.array([0.45, 0.05, 0.05, 0.45]), costs(2.0, 1.0)) in (1, 2), "torn: between them"
    assert decide(np.array([0.02, 0.03, 0.10, 0.85]), costs(3.0, 2.0)) == 3
    assert costs(2.0, 1.5)[3, 0] == 2.0 * 3 * 1.5 and costs(2.0, 1.5)[0, 3] == 2.0 * 3
    assert costs(2.0, 1.5)[1, 0] == 1.5 and costs(2.0, 1.5)[0, 1] == 1.0


def test_the_cheap_profile_takes_the_likeliest_tier(
    model: ComplexityModel, held_out: list[dict[str, Any]]
) -> None:
    cautious = [model.classify(row["messages"], shape_of(row)).tier for row in held_out]
    frugal = [model.classify(row["messages"], shape_of(row), cautious=False).tier for row in held_out]
    likeliest = [
        TIERS[int(np.argmax(model.probabilities(row["messages"], shape_of(row))))] for row in held_out
    ]
    assert frugal == likeliest
    assert frugal != cautious, "the costs change some decisions"


def test_features_are_the_same_in_every_process() -> None:
    messages = [
        {"role": "system", "content": "Reply in JSON."},
        {"role": "user", "content": "¿Cuál es la complejidad de este algoritmo? 你好 " * 40},
    ]
    here = featurize(messages, Shape(tools=2))
    script = (
        "import json, sys; from server.domain.routing.features import featurize, Shape; "
        "i, v = featurize(json.loads(sys.argv[1]), Shape(tools=2)); "
        "print(json.dumps([i.tolist(), v.tolist()]))"
    )
    for seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", script, json.dumps(messages)],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout
        indices, values = json.loads(out)
        assert indices == here[0].tolist()
        assert np.allclose(values, here[1])
    assert here[0].max() < FEATURES


def test_a_request_is_classified_the_same_way_every_time(
    model: ComplexityModel, held_out: list[dict[str, Any]]
) -> None:
    row = held_out[0]
    assert model.classify(row["messages"], shape_of(row)) == model.classify(row["messages"], shape_of(row))
    reasons = model.classify(row["messages"], shape_of(row)).reasons
    assert reasons[0].startswith(f"{VERSION}: "), "the reason names the model and its probabilities"
