"""Evaluate the complexity model (`make eval-router`) on the held-out set, which nothing was tuned on.

Reports exact and within-one-tier accuracy, gross under-routing (COMPLEX or REASONING sent to
SIMPLE), exact per language, the confusion matrix, the cost of `auto` against always-premium at
catalog prices, and classification time; beside them, the cross-validated figures the model's
choices were made on (from its artifact).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import Counter, defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

from server.domain.catalog import DEFAULT_CATALOG, load_catalog_file
from server.domain.chat.request import text_of
from server.domain.chat.tokens import count_text
from server.domain.routing.complexity import MODEL_DIR, TIERS, ComplexityModel
from server.domain.routing.dataset import HELD_OUT, load_rows, shape_of, summary

#: Output tokens assumed per answer when pricing the set.
ANSWER_TOKENS = 400


def evaluate(model: ComplexityModel, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures `make eval-router` prints, and the test's floor checks."""
    expected = np.asarray([TIERS.index(row["tier"]) for row in rows])
    chosen = np.asarray([TIERS.index(model.classify(row["messages"], shape_of(row)).tier) for row in rows])
    figures: dict[str, Any] = summary(expected, chosen)
    languages: dict[str, list[bool]] = defaultdict(list)
    for row, want, got in zip(rows, expected, chosen, strict=False):
        languages[row["language"]].append(bool(want == got))
    figures["languages"] = {lang: (sum(hits) / len(hits), len(hits)) for lang, hits in languages.items()}
    figures["confusion"] = Counter(zip(expected.tolist(), chosen.tolist(), strict=False))
    figures["chosen"] = chosen
    return figures


def costs(rows: list[dict[str, Any]], chosen: np.ndarray) -> tuple[Decimal, Decimal]:
    """What the set costs routed by `auto`, and sent to the premium model of its true tier."""
    catalog = load_catalog_file(DEFAULT_CATALOG)
    models = {model.id: model for model in catalog.models if model.provider not in {"simulator", "ollama"}}
    routing = catalog.routing

    def first(budget: str, tier: str) -> str:
        return next(m for m in routing.candidates[budget][tier] if m in models)  # type: ignore[index]

    def cost(model_id: str, prompt_tokens: int) -> Decimal:
        prices = models[model_id].prices
        return (prompt_tokens * prices.input + ANSWER_TOKENS * prices.output) / 1_000_000

    auto = premium = Decimal(0)
    for row, got in zip(rows, chosen, strict=False):
        tokens = sum(count_text(text_of(m.get("content"))) for m in row["messages"])
        tier = TIERS[got]
        auto += cost(first(routing.auto_budgets[tier], tier), tokens)  # type: ignore[index]
        premium += cost(first("premium", row["tier"]), tokens)
    return auto, premium


def timings(model: ComplexityModel) -> tuple[int, float, float]:
    paragraph = (
        "Our platform team keeps a chat service running in three regions; the notes below cover caching, "
        "sharding, failover drills and what broke last quarter, with owners and dates for each action. "
    )
    prompt = paragraph * 1
    while count_text(prompt) < 2000:
        prompt += paragraph
    messages = [{"role": "user", "content": prompt + "\nWhich region failed over first, and why?"}]
    for _ in range(200):
        model.classify(messages)
    spent = []
    for _ in range(3000):
        started = time.perf_counter()
        model.classify(messages)
        spent.append((time.perf_counter() - started) * 1000)
    spent.sort()
    return count_text(messages[0]["content"]), statistics.median(spent), spent[int(len(spent) * 0.99)]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=HELD_OUT)
    args = parser.parse_args()
    model = ComplexityModel.load()
    meta = json.loads((MODEL_DIR / f"{model.version}.json").read_text())
    rows = load_rows(args.data)
    figures = evaluate(model, rows)
    cv = meta["cross_validation"]
    print(
        f"model {model.version}: trained on {meta['training_rows']} rows, "
        f"alpha {meta['alpha']:g}, decision costs far {model.far:g} under {model.under:g}"
    )
    print(f"\n{'':24} {'exact':>7} {'within 1':>9} {'gross under':>12}")
    print(
        f"{'cross-validation':24} {cv['exact']:>7.1%} {cv['within_one']:>9.1%} {cv['gross_under']:>12.1%}"
        f"   (leave one of {len(cv['folds'])} slices out)"
    )
    print(
        f"{'held-out (' + str(len(rows)) + ' rows)':24} {figures['exact']:>7.1%} "
        f"{figures['within_one']:>9.1%} {figures['gross_under']:>12.1%}"
    )
    print("\nheld-out exact per language:")
    for lang, (share, count) in sorted(figures["languages"].items(), key=lambda item: -item[1][1]):
        print(f"  {lang}: {share:.0%} of {count}")
    print("\nconfusion (rows: expected, columns: routed)")
    print(f"{'':>10} " + " ".join(f"{tier:>9}" for tier in TIERS))
    for want in range(len(TIERS)):
        print(
            f"{TIERS[want]:>10} "
            + " ".join(f"{figures['confusion'][(want, got)]:>9}" for got in range(len(TIERS)))
        )
    auto, premium = costs(rows, figures["chosen"])
    print(
        f"\ncost of the held-out set ({ANSWER_TOKENS} output tokens each, catalog USD prices, all providers):"
    )
    print(
        f"  auto: ${auto:.4f}   always premium: ${premium:.4f}   auto costs {auto / premium:.1%} of premium"
    )
    tokens, p50, p99 = timings(model)
    print(f"\nclassification time, {tokens}-token prompt: p50 {p50:.3f} ms, p99 {p99:.3f} ms")


if __name__ == "__main__":
    main()
