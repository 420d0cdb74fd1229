# neo-ray: make demo | make test | make lint | make bench
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.neo-installed
NODE_TOOLS := .tools/node

.PHONY: setup demo test lint format bench clean down peers-node

$(STAMP): pyproject.toml
	scripts/system-deps.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU build of torch lies on this machine's disk; a bare range could pull a CUDA build.
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

# dependency-cruiser 16 (the JS/TS peer) from the npm registry, for tests and benchmarks.
$(NODE_TOOLS)/node_modules/.bin/depcruise:
	mkdir -p $(NODE_TOOLS)
	cd $(NODE_TOOLS) && npm install --silent --no-audit --no-fund dependency-cruiser@16 typescript@5 >/dev/null

peers-node: $(NODE_TOOLS)/node_modules/.bin/depcruise

demo: setup
	scripts/demo.sh

down: setup
	$(VENV)/bin/neo-ray down

test: setup peers-node
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff format --check neo_ray tests bench scripts deploy
	$(VENV)/bin/ruff check neo_ray tests bench scripts deploy
	$(VENV)/bin/mypy

format: setup
	$(VENV)/bin/ruff format neo_ray tests bench scripts deploy
	$(VENV)/bin/ruff check --fix neo_ray tests bench scripts deploy

bench: setup peers-node
	$(PY) -m bench

clean:
	rm -rf $(VENV) .tools .neo .pytest_cache .mypy_cache .ruff_cache build *.egg-info
