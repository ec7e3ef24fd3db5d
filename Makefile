# Every target creates and uses the project's own virtual environment.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: dev test test-quick lint typecheck bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

dev: $(STAMP)
	$(BIN)/vm-agent dev

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest -m "not real_agents and not vm"

test-quick: $(STAMP)
	$(BIN)/pytest -m "not slow and not real_agents and not vm" -x -q

# The pinned agents of agents/ for real, against scripted model stand-ins on loopback.
# Needs `cd agents && npm ci` (skips with the reason without it, fails under CI).
.PHONY: test-real-agents
test-real-agents: $(STAMP)
	$(BIN)/pytest -m real_agents tests/real_agents -v --durations=0

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
