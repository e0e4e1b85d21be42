# `make test` is all CI runs: it creates .venv, installs everything, then runs pytest.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch/torchvision: this machine serves these two from local disk; override elsewhere if needed.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=

.PHONY: install test test-fast bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch, torchvision" 2>/dev/null || $(PY) -m pip install -q $(TORCH_SPEC) || $(PY) -m pip install -q torch torchvision
	$(PY) -m pip install -q -e ".[test]"
	touch $@

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

bench: install
	$(PY) benchmarks/bench_predict.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
