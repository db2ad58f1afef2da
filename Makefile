# Set-up and common tasks. Every target installs what it needs into .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU wheel of this version is what CI and the developers' machines use; an
# unpinned torch would pull a multi-GB CUDA build. Cluster users install their own.
TORCH_VERSION ?= 2.13.0
STAMP := $(VENV)/.installed

.PHONY: install demo test test-all bench bench-quick bench-tt clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "torch==$(TORCH_VERSION)"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: install
	$(VENV)/bin/ttflow fit targets/gl1d.yaml --out runs/gl1d --overwrite
	$(VENV)/bin/ttflow evaluate runs/gl1d/run.h5 -n 100000

test: install
	$(PY) -m pytest -q -m "not slow"

test-all: install
	$(PY) -m pytest -q

# Every shipped target with a TT base, a Gaussian base and the TT alone; rewrites
# the flows section of docs/benchmarks.md. bench-quick runs tiny budgets instead.
bench: install
	$(PY) bench/flows.py

bench-quick: install
	$(PY) bench/flows.py --quick

# TT engine: cross approximation against teneva (installed here for this benchmark
# only), sampling throughput and fit time against dimension.
bench-tt: install
	$(PY) -m pip install --quiet teneva
	$(PY) bench/tt_engine.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
