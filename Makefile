# adindex: `make demo` and `make test` work on a fresh machine (they create .venv on first use).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export OMP_WAIT_POLICY ?= PASSIVE
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test test-fast lint typecheck proto check-proto docs check-docs bench cluster clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,bench,ray]'
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
# make bench DATASET=calibrated-1m   (also: calibrated-100k, tight-1m, realtext, sample, esci,
# fashion-mnist). realtext reads the Debian packages below (installed here when missing and
# root; otherwise the command to run is printed and the dataset is skipped) and embeds its texts
# once into ~/.cache/adindex/realtext (python -m benchmarks.realtext, about an hour).
DATASET ?= calibrated-100k
REALTEXT_PACKAGES := wordnet-base dict-gcide
bench: $(STAMP)
	@if [ "$(DATASET)" = realtext ] && ! dpkg -s $(REALTEXT_PACKAGES) >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get install -y $(REALTEXT_PACKAGES); \
	  else echo "realtext needs: sudo apt-get install $(REALTEXT_PACKAGES)"; fi; \
	fi
	$(BIN)/python -m benchmarks.recall_latency --dataset $(DATASET)

# Sharded serving on one machine (docs/serving.md#sharded-serving): one leaf per shard of the
# newest version under INDEX (built with 'adindex build --shards N') on ports PORT+1..PORT+N,
# and a root in front on PORT. Ctrl-C stops them all.
#   make cluster INDEX=./index PORT=50051
INDEX ?= ./index
PORT ?= 50051
cluster: $(STAMP)
	@set -eu; \
	shards=$$($(BIN)/adindex info --index $(INDEX) --json | $(BIN)/python -c \
	  'import json, sys; s = json.load(sys.stdin)["manifest"]["shards"]; print(s["count"] if s else 0)'); \
	if [ "$$shards" -eq 0 ]; then echo "$(INDEX) is not sharded: adindex build --shards N"; exit 1; fi; \
	trap 'kill $$(jobs -p) 2>/dev/null; wait' EXIT INT TERM; \
	leaves=""; \
	for i in $$(seq 0 $$((shards - 1))); do \
	  port=$$(($(PORT) + 1 + i)); \
	  $(BIN)/adindex serve --index $(INDEX) --shard $$i --port $$port --alone-threads 1 & \
	  leaves="$$leaves$${leaves:+,}127.0.0.1:$$port"; \
	done; \
	$(BIN)/adindex root --port $(PORT) --leaves $$leaves

clean:
	rm -rf $(VENV) .demo .pytest_cache .mypy_cache .ruff_cache
