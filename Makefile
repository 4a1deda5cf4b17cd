# CrossCompute API. `make run` starts the gateway; `make test` runs the tests.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
BIN := $(VENV)/bin

.PHONY: setup chromium proto proto-check run serve facilitator test test-unit lint envoy-validate eval-router train-router bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# The dashboard's browser tests drive Debian's chromium (Playwright never downloads a browser).
# Installs it when missing (as root, as CI runs); does nothing when it is there.
chromium:
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }
	@chromium --version 2>/dev/null

proto: setup
	PATH="$(abspath $(BIN)):$$PATH" $(PY) -m scripts.generate_protos

proto-check: setup
	PATH="$(abspath $(BIN)):$$PATH" $(PY) -m scripts.check_generated

run: setup
	$(PY) -m server.gateway

serve: setup
	$(PY) -m server

eval-router: setup
	$(PY) -m scripts.eval_router

# Rebuild the complexity model from data/router/train (scikit-learn, the `train` extra).
train-router: setup
	$(PY) -m pip install --quiet -e '.[dev,train]'
	$(PY) -m scripts.train_router

facilitator: setup
	$(PY) -m scripts.dev_facilitator --port 8402

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

# The pure money and token rules alone (no Envoy, no database): a few seconds.
test-unit: setup
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

envoy-validate: setup
	$(PY) -m scripts.validate_envoy

lint: setup proto-check envoy-validate
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/buf lint generated/crosscompute.binpb --config buf.yaml

bench: setup
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	$(PY) -m scripts.bench

clean:
	rm -rf $(VENV) var .mypy_cache .pytest_cache .ruff_cache
