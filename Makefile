# adindex: `make demo` and `make test` work on a fresh machine (they create .venv on first use).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export OMP_WAIT_POLICY ?= PASSIVE
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test test-fast lint typecheck proto check-proto docs check-docs bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/adindex demo

test: $(STAMP) lint typecheck check-proto check-docs
	$(BIN)/python -m pytest --durations=25

# Everything except tests that load the real embedding model.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# The one place generated protobuf code comes from; the output is committed.
proto: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -I proto --python_out=. --grpc_python_out=. --pyi_out=. proto/retrieval/v1/*.proto

# Regenerate and fail if the committed code differs from what the .proto says.
check-proto: proto
	git diff --exit-code -- retrieval/v1/ || (echo "generated code is stale: run 'make proto' and commit" && exit 1)

# Tables, plots and figures in docs/*.md from the committed raw results in docs/results/*.jsonl
# (docs/benchmarks.md, "How figures are made"). check-docs fails when a doc differs from them.
docs: $(STAMP)
	$(BIN)/python -m benchmarks.docs

check-docs: $(STAMP)
	$(BIN)/python -m benchmarks.docs --check

# Recall/latency of adindex vs raw FAISS, exact search, hnswlib and LanceDB (docs/benchmarks.md).
# make bench DATASET=calibrated-1m   (also: calibrated-100k, sample, esci, fashion-mnist)
DATASET ?= calibrated-100k
bench: $(STAMP)
	$(BIN)/python -m benchmarks.recall_latency --dataset $(DATASET)

clean:
	rm -rf $(VENV) .demo .pytest_cache .mypy_cache .ruff_cache
