# Two commands matter: `make demo` and `make test`. Both install into .venv first when needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.lrfdyn-installed
PYTEST_ARGS ?=

.PHONY: install demo test test-all test-peers bench clean mutation

install: $(STAMP)

# torch first (a CUDA build that lies on the local disk; lava-dl imports torchvision at
# import time), then the runtime dependencies, which pin numpy back to 1.x, then Lava
# without its stale metadata, then lrfdyn itself in editable mode.
$(STAMP): pyproject.toml requirements/runtime.txt requirements/lava.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -r requirements/runtime.txt
	$(PIP) install -q --no-deps --ignore-requires-python -r requirements/lava.txt
	$(PIP) install -q --no-deps --no-build-isolation -e .
	$(PY) -c "import lrfdyn.loihi.compat, lava.proc.lif.process, lava.lib.dl.netx, nir, nirtorch"
	touch $(STAMP)

demo: install
	$(VENV)/bin/lrfdyn demo --out runs/demo

test: install
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-all: install
	$(PY) -m pytest $(PYTEST_ARGS)

# The peers' own NIR exporters (snnTorch, Norse, SpikingJelly, Sinabs, Rockpool) against
# lrfdyn on Lava. Optional: without them `make test` skips tests/peers with the reason.
PEERS_STAMP := $(VENV)/.lrfdyn-peers-installed
$(PEERS_STAMP): $(STAMP) requirements/peers.txt
	$(PIP) install -q --no-deps -r requirements/peers.txt
	$(PY) -c "import snntorch, norse.torch, spikingjelly.activation_based.nir_exchange, sinabs, rockpool.nn.modules.torch.nir"
	touch $(PEERS_STAMP)

test-peers: $(PEERS_STAMP)
	$(PY) -m pytest tests/peers $(PYTEST_ARGS)

bench: install
	$(PY) benchmarks/run_all.py

# Mutation testing (outside CI): cosmic-ray's mutants of the core modules, each against
# that module's fast unit tests (MUTATION_ARGS="... --selection broad" adds the Lava
# integration tests, minutes per mutant), in a private copy of the tree; time-boxed,
# sampled per module (seeded). Results: runs/mutation/summary.md (and .json, one
# cosmic-ray .sqlite per module).
MUTATION_STAMP := $(VENV)/.lrfdyn-mutation-installed
MUTATION_ARGS ?= --minutes 60 --per-module 50
$(MUTATION_STAMP): $(STAMP)
	$(PIP) install -q cosmic-ray==8.7.0
	touch $(MUTATION_STAMP)

mutation: $(MUTATION_STAMP)
	nice -n 15 $(PY) tests/mutation_run.py $(MUTATION_ARGS)

clean:
	rm -rf runs .pytest_cache
