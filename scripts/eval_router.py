"""Evaluate the local router on the labelled set (`make eval-router`): accuracy, confusion matrix,
the cost of `auto` against always-premium at catalog prices, and the classifier's speed."""

from __future__ import annotations

import json
import statistics
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path

from server.domain.catalog import DEFAULT_CATALOG, TIERS, load_catalog_file
from server.domain.chat.tokens import count_text
from server.domain.routing.classifier import classify

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "router_prompts.jsonl"
#: Output tokens assumed per answer when pricing the set.
ANSWER_TOKENS = 400


def main() -> None:
    rows = [json.loads(line) for line in DATA.read_text().splitlines()]
    catalog = load_catalog_file(DEFAULT_CATALOG)
    models = {model.id: model for model in catalog.models if model.provider not in {"simulator", "ollama"}}
    routing = catalog.routing

    def first(budget: str, tier: str) -> str:
        return next(m for m in routing.candidates[budget][tier] if m in models)  # type: ignore[index]

    def cost(model_id: str, prompt: str) -> Decimal:
        prices = models[model_id].prices
        return (count_text(prompt) * prices.input + ANSWER_TOKENS * prices.output) / 1_000_000

    confusion: Counter[tuple[str, str]] = Counter()
    auto_cost = premium_cost = Decimal(0)
    for row in rows:
        tier = classify([{"role": "user", "content": row["prompt"]}]).tier
        confusion[(row["tier"], tier)] += 1
        auto_cost += cost(first(routing.auto_budgets[tier], tier), row["prompt"])  # type: ignore[index]
        premium_cost += cost(first("premium", row["tier"]), row["prompt"])
    correct = sum(confusion[(tier, tier)] for tier in TIERS)
    print(f"labelled prompts: {len(rows)}   accuracy: {correct / len(rows):.1%}")
    print("\nconfusion (rows: expected, columns: predicted)")
    print(f"{'':>10} " + " ".join(f"{tier:>9}" for tier in TIERS))
    for expected in TIERS:
        print(f"{expected:>10} " + " ".join(f"{confusion[(expected, got)]:>9}" for got in TIERS))
    saving = 1 - auto_cost / premium_cost
    print(
        f"\ncost of the set ({ANSWER_TOKENS} output tokens each, catalog USD prices, "
        "all providers configured):"
    )
    print(f"  auto: ${auto_cost:.4f}   always premium: ${premium_cost:.4f}   auto saves {saving:.1%}")

    long_prompt = (
        "Design a scalable architecture for a chat system with caching, sharding and failover. " * 110
    )
    timings = []
    for _ in range(2000):
        started = time.perf_counter()
        classify([{"role": "user", "content": long_prompt}])
        timings.append((time.perf_counter() - started) * 1000)
    timings.sort()
    print(
        f"\nclassifier speed, {count_text(long_prompt)}-token prompt: "
        f"p50 {statistics.median(timings):.3f} ms, p99 {timings[int(len(timings) * 0.99)]:.3f} ms"
    )


if __name__ == "__main__":
    main()
