# Every target creates and uses the project's own virtual environment.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: dev test test-quick lint typecheck bench clean vm-image vm-test

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

# the Debian image the VM tests boot, built once per recipe (tests/vm/recipe.py) and cached
vm-image: $(STAMP)
	$(BIN)/python -m tests.vm.image

vm-test: vm-image
	$(BIN)/pytest -m vm

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
