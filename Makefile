# Two entry points: `make demo` (the main job, offline, no keys) and `make test`.
# Both create .venv and install deepmem into it first (torch is pinned to the CPU build).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1

.PHONY: demo test serve bench install

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(BIN)/.installed

demo: $(BIN)/.installed
	$(BIN)/deepmem ingest --demo
	$(BIN)/deepmem train
	$(BIN)/deepmem search "How do I create an AUTOINCREMENT field?" -k 5

test: $(BIN)/.installed
	./scripts/ensure-chromium
	$(BIN)/python -m pytest

serve: $(BIN)/.installed
	$(BIN)/deepmem serve

bench: $(BIN)/.installed
	$(BIN)/python bench/ingest_throughput.py
	$(BIN)/python bench/search_latency.py
	$(BIN)/python bench/deep_memory.py
