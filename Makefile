# edgewave: `make run` shows the release loop on embedded defaults, `make test` runs the tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-12)

.PHONY: run test test-unit lint contracts bench setup clean up down

setup: $(STAMP)

# Idempotent: the venv is made once and reinstalled only when pyproject.toml changes.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "edgewave needs Python 3.11, found " + sys.version' 
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing edgewave and its pinned dependencies into $(VENV) (log: $(VENV)/install.log)"
	@$(BIN)/python -m pip install --quiet --upgrade pip > $(VENV)/install.log 2>&1 || (tail -40 $(VENV)/install.log; exit 1)
	@$(BIN)/python -m pip install --quiet -e '.[control,dev]' >> $(VENV)/install.log 2>&1 || (tail -40 $(VENV)/install.log; exit 1)
	@rm -f $(VENV)/.installed-* && touch $@

# The demo's own fleet file (deployments/fleet.yaml's sites, shorter waits); an
# EDGEWAVE_FLEET_PATH of your own wins.
DEMO_FLEET = EDGEWAVE_FLEET_PATH=$${EDGEWAVE_FLEET_PATH:-deployments/demo-fleet.yaml}
run: $(STAMP)
	$(DEMO_FLEET) $(BIN)/edgewave demo loop
	$(DEMO_FLEET) $(BIN)/edgewave status

# The real servers: Prefect server + UI, MLflow server, a process worker; prefect.yaml deployed.
up: $(STAMP)
	$(BIN)/edgewave up

down: $(STAMP)
	$(BIN)/edgewave down

test: $(STAMP) contracts
	@bash scripts/setup-system.sh
	PYTHON=$(BIN)/python bash scripts/test-lanes.sh

# The layers of DESIGN.md as import contracts ([tool.importlinter] in pyproject.toml).
contracts: $(STAMP)
	$(BIN)/lint-imports --no-cache

# ruff (pyflakes, bugbear, pyupgrade, simplify, isort), the import contracts, and basedpyright in
# basic mode. The checker finds edgewave.flows|tasks|serving through links to the folders (the
# editable install maps them with an import hook no static checker follows).
LINT_PATHS := $(VENV)/lint-paths/edgewave
lint: $(STAMP) contracts
	$(BIN)/ruff check flows tasks serving tests bench
	@mkdir -p $(LINT_PATHS) && for d in flows tasks serving; do ln -sfn $(CURDIR)/$$d $(LINT_PATHS)/$$d; done
	$(BIN)/basedpyright --project pyproject.toml

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

bench: $(STAMP)
	$(BIN)/python -m bench.release
	$(BIN)/python -m bench.serving
	$(BIN)/python -m bench.rollout_scale
	@bash scripts/setup-system.sh  # sshd, docker-registry: the fleet's servers
	$(BIN)/python -m bench.fleet_sync
	$(BIN)/python -m bench.judgement
	$(BIN)/python -m bench.drift
	$(BIN)/python -m bench.image
	$(BIN)/python -m bench.vision
	$(BIN)/python -m bench.quality
	$(BIN)/python -m bench.firstrun

clean:
	rm -rf .edgewave
