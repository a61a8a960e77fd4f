# The two README commands: `make demo` (main job, embedded default) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint perf clean

# Bytecode compiled once here: with PYTHONDONTWRITEBYTECODE set (as in containers), every
# process would otherwise recompile its imports (~10 s for the service's).
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "uv>=0.5,<1"
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -r requirements.lock -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/tipml demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

perf: $(STAMP)
	$(BIN)/python -m perf.materialize
	$(BIN)/python -m perf.score_load
	$(BIN)/python -m perf.generate_overhead
	$(BIN)/python -m perf.bandit_regret
	$(BIN)/python -m perf.ingest
	$(BIN)/python -m perf.events
	$(BIN)/python -m perf.scale
	$(BIN)/python -m perf.scorer_quality

clean:
	rm -rf $(VENV) feature_repo/data
