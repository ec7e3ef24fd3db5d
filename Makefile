# Every target creates and uses the project's own virtual environment.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: dev test test-slow test-quick lint typecheck bench lock artifacts clean vm-image vm-test node-image

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[control-plane,test]'
	touch $(STAMP)

dev: $(STAMP)
	$(BIN)/vm-agent dev

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# The slow cases (end to end through real processes: dev, the dispatcher's replicas, the
# gateway, terminals...) are a stage of their own, so `make test` stays within its budget.
test: lint typecheck
	$(BIN)/pytest -m "not slow and not real_agents and not vm"

test-slow: $(STAMP)
	$(BIN)/pytest -m "slow and not real_agents and not vm"

test-quick: $(STAMP)
	$(BIN)/pytest -m "not slow and not real_agents and not vm" -x -q

# the Debian image the VM tests boot, built once per recipe (tests/vm/recipe.py) and cached
vm-image: $(STAMP)
	$(BIN)/python -m tests.vm.image

# vm-image with vm-agent and the agents installed from $(ARTIFACTS) by the install steps
# themselves (tests/vm/node_image.py; root: a loop mount and a chroot), cached by the hashes
node-image: vm-image
	$(BIN)/python -m tests.vm.node_image --artifacts $(ARTIFACTS)

vm-test: vm-image
	$(BIN)/pytest -m vm

# The pinned agents of agents/ for real, against scripted model stand-ins on loopback.
# Needs `cd agents && npm ci` (skips with the reason without it, fails under CI).
.PHONY: test-real-agents
test-real-agents: $(STAMP)
	$(BIN)/pytest -m real_agents tests/real_agents -v --durations=0

bench: $(STAMP)
	$(BIN)/python -m benchmarks

# The VM's runtime dependencies, pinned with every file's hash, for Debian 12's
# python3 (3.11, x86_64, glibc 2.36). Reads PyPI; commit the result.
LOCK_ARGS := --generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_36
lock: $(STAMP)
	$(BIN)/python -m pip install --quiet 'uv==0.13.9'
	$(BIN)/uv pip compile --quiet $(LOCK_ARGS) --custom-compile-command "make lock" \
		-o locks/vm-agent.txt pyproject.toml locks/vm-bootstrap.in

# The wheelhouse and the agent bundle a VM installs (PyPI and npm, through pip and npm ci).
ARTIFACTS ?= build/artifacts
artifacts: $(STAMP)
	$(BIN)/python -m control_plane artifacts build --out $(ARTIFACTS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
