"""The catalog file: validated at start with clear errors; providers enabled by their settings."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from server.domain.catalog import (
    DEFAULT_CATALOG,
    Catalog,
    configured_providers,
    cost_micro,
    load_catalog_file,
)
from server.domain.errors import ConfigurationError


def test_the_shipped_catalog_is_valid() -> None:
    file = load_catalog_file(DEFAULT_CATALOG)
    ids = {model.id for model in file.models}
    assert {
        "openai/gpt-5-mini",
        "anthropic/claude-sonnet-4-6",
        "deepseek-chat",
        "crosscompute/simulator",
    } <= ids


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c["models"][0].update(provider="nobody"), "unknown provider"),
        (lambda c: c["models"].append(dict(c["models"][0])), "appears twice"),
        (lambda c: c["models"][0].update(id="auto"), "routing profile"),
        (lambda c: c["models"][0]["prices"].update(output="-1"), "greater than or equal to 0"),
        (lambda c: c["models"][0].update(context_window=0), "greater than 0"),
        (lambda c: c["models"][0].update(surprise=True), "Extra inputs are not permitted"),
    ],
)
def test_a_broken_catalog_is_refused_with_a_clear_error(tmp_path: Path, change: object, message: str) -> None:
    content = json.loads(DEFAULT_CATALOG.read_text())
    change(content)  # type: ignore[operator]
    path = tmp_path / "models.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ConfigurationError, match=message):
        load_catalog_file(path)


def test_a_missing_or_unparseable_catalog_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_catalog_file(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ConfigurationError, match="not valid JSON"):
        load_catalog_file(tmp_path / "bad.json")


def test_providers_follow_their_settings_and_the_simulator_steps_aside() -> None:
    file = load_catalog_file(DEFAULT_CATALOG)
    assert set(configured_providers(file, {}, "auto")) == {"simulator"}
    assert set(configured_providers(file, {}, "off")) == set()
    env = {"OPENAI_API_KEY": "sk-x", "OLLAMA_BASE_URL": "http://127.0.0.1:11434/v1"}
    providers = configured_providers(file, env, "auto")
    assert set(providers) == {"openai", "ollama"}
    assert providers["openai"].base_url == "https://api.openai.com/v1"
    assert set(configured_providers(file, env, "on")) == {"openai", "ollama", "simulator"}
    catalog = Catalog(file, providers)
    assert catalog.get("openai/gpt-5-mini") is not None
    assert catalog.get("anthropic/claude-sonnet-4-6") is None
    assert catalog.get("balanced") is not None and catalog.get("balanced").id == "medium"  # type: ignore[union-attr]


def test_costs_are_exact_and_round_up_to_the_micro_credit() -> None:
    spec = next(m for m in load_catalog_file(DEFAULT_CATALOG).models if m.id == "openai/gpt-5-mini")
    # 1,000 credits per USD: 0.25 USD/M input is 250 micro-credits a token, cached 25, output 2,000.
    assert (
        cost_micro(spec, Decimal(1000), input_tokens=100, cached_tokens=40, output_tokens=10)
        == 60 * 250 + 40 * 25 + 10 * 2000
    )
    assert cost_micro(spec, Decimal("0.001"), input_tokens=1, cached_tokens=0, output_tokens=0) == 1
