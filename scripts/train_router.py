"""Train the complexity model from `data/router/train/*.jsonl` (`make train-router`).

A linear model with the logistic loss, one against the rest per tier, fitted by averaged stochastic
gradient descent (scikit-learn's `SGDClassifier`, the optional `train` extra: as accurate as
L-BFGS logistic regression on this data and a tenth of its time), over the features of
`server/domain/routing/features.py`. Everything is chosen by cross-validation on the training set
alone, each fold one of the slices the set was written in (a fold is scored on text written apart
from what it learned from): the regularisation `alpha`, the temperature of its probabilities, then
the two weights of the decision's costs (`far`, `under`). The held-out set is never read here.

The artifact is `server/domain/routing/model/<version>.npy` (weights, float16) and `<version>.json`
(bias, version, the training data's digest, the choices and their cross-validated figures). Seeds,
thread counts and the data's order are fixed, so the same data gives the same bytes.
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import argparse  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import numpy.typing as npt  # noqa: E402

from server.domain.routing import features  # noqa: E402
from server.domain.routing.complexity import MODEL_DIR, TIERS, VERSION, costs, decide, softmax  # noqa: E402
from server.domain.routing.dataset import (  # noqa: E402
    TRAIN_DIR,
    data_digest,
    load_rows,
    shape_of,
    summary,
    training_files,
)

ALPHA_GRID = (3e-6, 1e-5, 3e-5, 1e-4, 3e-4)
TEMPERATURE_GRID = tuple(round(0.25 * 1.25**i, 3) for i in range(25))
EPOCHS = 50
FAR_GRID = (1.0, 1.25, 1.5, 2.0, 3.0)
UNDER_GRID = (1.0, 1.25, 1.5, 2.0)
#: The decision's weights maximise cross-validated exact plus within-one-tier, less twice the share
#: of gross under-routing (COMPLEX or REASONING sent to SIMPLE, the error that costs most).
GROSS_PENALTY = 2.0


def matrix(rows: list[dict[str, Any]]) -> Any:
    from scipy.sparse import csr_matrix

    indptr, indices, values = [0], [], []
    for row in rows:
        found, weights = features.featurize(row["messages"], shape_of(row))
        indices.append(found)
        values.append(weights)
        indptr.append(indptr[-1] + len(found))
    return csr_matrix(
        (np.concatenate(values), np.concatenate(indices), np.asarray(indptr)),
        shape=(len(rows), features.FEATURES),
        dtype=np.float64,
    )


def fit(x: Any, y: npt.NDArray[np.int64], alpha: float) -> Any:
    from sklearn.linear_model import SGDClassifier

    model = SGDClassifier(
        loss="log_loss", alpha=alpha, max_iter=EPOCHS, tol=None, average=True, random_state=0
    )
    model.fit(x, y)
    return model


def out_of_fold(x: Any, y: npt.NDArray[np.int64], groups: list[str], alpha: float) -> npt.NDArray[np.float64]:
    """Each row's scores from a model that never saw its slice."""
    scores = np.zeros((len(y), len(TIERS)))
    for group in sorted(set(groups)):
        test = np.array([g == group for g in groups])
        model = fit(x[~test], y[~test], alpha)
        scores[test] = model.decision_function(x[test])
    return scores


def calibrated_temperature(scores: npt.NDArray[np.float64], y: npt.NDArray[np.int64]) -> float:
    """The temperature whose softmax of out-of-fold scores best predicts the labels (log-loss)."""

    def loss(temperature: float) -> float:
        return float(-np.log(softmax(scores, temperature)[np.arange(len(y)), y] + 1e-12).mean())

    return min(TEMPERATURE_GRID, key=loss)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--train", type=Path, default=TRAIN_DIR)
    parser.add_argument("--out", type=Path, default=MODEL_DIR, help="where the artifact is written")
    args = parser.parse_args()
    files = training_files(args.train)
    rows, groups = [], []
    for path in files:
        loaded = load_rows(path)
        rows += loaded
        groups += [path.stem] * len(loaded)
    y = np.asarray([TIERS.index(row["tier"]) for row in rows], dtype=np.int64)
    x = matrix(rows)
    print(f"training rows: {len(rows)} from {len(files)} slices; features: {features.FEATURES}")

    by_alpha = {}
    for alpha in ALPHA_GRID:
        scores = out_of_fold(x, y, groups, alpha)
        exact = float(np.mean(scores.argmax(1) == y))
        by_alpha[alpha] = (exact, scores)
        print(f"  alpha={alpha:<6g} cross-validated exact {exact:.1%}")
    alpha_best = max(ALPHA_GRID, key=lambda a: (round(by_alpha[a][0], 4), a))
    temperature = calibrated_temperature(by_alpha[alpha_best][1], y)
    probabilities = softmax(by_alpha[alpha_best][1], temperature)

    figures = {}
    for far in FAR_GRID:
        for under in UNDER_GRID:
            matrix_ = costs(far, under)
            chosen = np.asarray([decide(p, matrix_) for p in probabilities])
            figures[(far, under)] = summary(y, chosen)

    def merit(key: tuple[float, float]) -> float:
        f = figures[key]
        return round(f["exact"] + f["within_one"] - GROSS_PENALTY * f["gross_under"], 4)

    far, under = max(figures, key=lambda key: (merit(key), -key[0], -key[1]))
    plain = summary(y, probabilities.argmax(1))
    print("  far  under  exact  within-1  gross-under")
    print(
        f"  (the likeliest tier) {plain['exact']:.3f}  {plain['within_one']:.3f}  {plain['gross_under']:.3f}"
    )
    for key in sorted(figures):
        f = figures[key]
        print(
            f"  {key[0]:<4g} {key[1]:<5g}  {f['exact']:.3f}  {f['within_one']:.3f}     {f['gross_under']:.3f}"
        )
    cv = figures[(far, under)]
    print(
        f"chosen: alpha={alpha_best:g}, temperature={temperature:g}, far={far:g}, under={under:g}; "
        "cross-validated (leave one slice out): "
        f"exact {cv['exact']:.1%}, within one {cv['within_one']:.1%}, "
        f"gross under-routing {cv['gross_under']:.1%}"
    )

    model = fit(x, y, alpha_best)
    weights = np.ascontiguousarray(model.coef_.T, dtype=np.float16)
    args.out.mkdir(parents=True, exist_ok=True)
    np.save(args.out / f"{VERSION}.npy", weights, allow_pickle=False)
    meta = {
        "version": VERSION,
        "tiers": list(TIERS),
        "bias": [round(float(b), 6) for b in model.intercept_],
        "far": far,
        "under": under,
        "alpha": alpha_best,
        "temperature": temperature,
        "features": features.FEATURES,
        "training_rows": len(rows),
        "training_digest": data_digest(files),
        "cross_validation": {"folds": sorted(set(groups)), **{k: round(v, 4) for k, v in cv.items()}},
        "trained_with": {
            "numpy": np.__version__,
            "scikit-learn": __import__("sklearn").__version__,
            "scipy": __import__("scipy").__version__,
        },
    }
    (args.out / f"{VERSION}.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {args.out / VERSION}.npy and .json")


if __name__ == "__main__":
    main()
