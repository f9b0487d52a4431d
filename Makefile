# `make demo` and `make test` create the virtualenv from the pinned requirements when it is missing.
# OSF_VENV overrides where it lives (CI keeps one outside the clone, keyed by the requirements hash).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# this clone's source first: a venv shared between clones (CI's) has its editable install pointing at
# whichever clone installed last
export PYTHONPATH := $(CURDIR)/src$(if $(PYTHONPATH),:$(PYTHONPATH))
STAMP := $(VENV)/.osf-requirements

.PHONY: demo test bench bench-quick lock clean-venv

# One venv for the demo, the tests and the benchmarks: dev.txt plus the peers of bench.txt (ModelOpt,
# Torch-Pruning), never dependencies of the library itself.
$(STAMP): requirements/dev.txt requirements/bench.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements/dev.txt -r requirements/bench.txt
	$(PY) -m pip install -q --no-deps -e .
	@cat requirements/dev.txt requirements/bench.txt > $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/osf demo --out reports/demo --force

# two pytest-xdist workers (one torch thread each on two cores): much of a test is torch.export's Python
TEST_WORKERS ?= 2
test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal tests

bench: $(STAMP)
	$(PY) bench/zoo.py
	$(PY) bench/supernet_step.py
	$(PY) bench/supernet_step.py --malloc keep
	$(PY) bench/train_evidence.py
	$(PY) bench/cost_speed.py
	$(PY) bench/forkjoin.py
	$(PY) bench/motifs.py
	$(PY) bench/extraction.py
	$(PY) bench/arch_switch.py
	$(PY) bench/call_overhead.py
	$(PY) bench/quality.py
	$(PY) bench/search_algorithms.py
	$(PY) bench/minilm.py
	$(PY) bench/coverage.py --resume
	$(PY) bench/probe.py
	$(PY) bench/exports.py
	$(PY) bench/dynamic_spatial.py
	$(PY) bench/module_swaps.py

bench-quick: $(STAMP)
	$(PY) bench/zoo.py --quick
	$(PY) bench/supernet_step.py --quick
	$(PY) bench/train_evidence.py --quick
	$(PY) bench/cost_speed.py --quick
	$(PY) bench/forkjoin.py --quick
	$(PY) bench/extraction.py --quick
	$(PY) bench/arch_switch.py --quick
	$(PY) bench/call_overhead.py --quick
	$(PY) bench/quality.py --quick
	$(PY) bench/search_algorithms.py --quick
	$(PY) bench/minilm.py --quick
	$(PY) bench/coverage.py --quick
	$(PY) bench/probe.py --quick
	$(PY) bench/exports.py --quick
	$(PY) bench/dynamic_spatial.py --quick
	$(PY) bench/module_swaps.py --quick

lock:
	$(PYTHON) -m venv /tmp/osf-lock-venv && /tmp/osf-lock-venv/bin/pip install -q -r requirements/dev.in
	{ echo "# Pinned closure of requirements/dev.in; regenerate with 'make lock'."; /tmp/osf-lock-venv/bin/pip freeze; } > requirements/dev.txt

clean-venv:
	rm -rf $(VENV)
