# Every target creates and uses the project's own virtual environment.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# Marked tests outside the quick loop: real agents (make test-real-agents), VMs (make vm-test).
NOT_HEAVY := not real_agents and not vm

.PHONY: dev test test-quick test-real-agents lint typecheck bench clean

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
	$(BIN)/pytest -m "$(NOT_HEAVY)"

test-quick: $(STAMP)
	$(BIN)/pytest -m "not slow and $(NOT_HEAVY)" -x -q

# The pinned agents of agents/ for real, against scripted model stand-ins on loopback.
# Needs `cd agents && npm ci` (skips with the reason without it, fails under CI).
test-real-agents: $(STAMP)
	$(BIN)/pytest -m real_agents tests/real_agents -v --durations=0

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
