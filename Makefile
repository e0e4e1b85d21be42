# `make test` is all CI runs: it creates .venv, installs everything, runs ruff, then pytest.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch: this machine serves it from local disk; override elsewhere if needed.
TORCH_SPEC ?= torch==2.14.1
PYTEST_ARGS ?=
# pytest worker processes (pytest-xdist): 2 suits a 2-core CI machine, where much of a test's time is one core
# importing in a CLI subprocess; PYTEST_JOBS=0 runs the suite in this process alone
PYTEST_JOBS ?= 2

.PHONY: install browser lint docs test test-fast bench demo demo-run clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(TORCH_SPEC) || $(PY) -m pip install -q torch
	$(PY) -m pip install -q -e ".[test,docs]"
	touch $@

# the page test of `serve` drives Debian's chromium (tests/test_serve_page.py); CI starts from a bare machine
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
		$(SUDO) apt-get install -y -q chromium >/dev/null || \
		{ $(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q chromium >/dev/null; }

# ruff, then the import contracts in pyproject.toml (layers, no cycles, rich/typer only in the command layer)
lint: install
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports --no-cache --no-logo

# The documentation site (mkdocs.yml) into site/: --strict fails on a broken link or a missing page; nothing is
# fetched from the network. The CLI reference is rendered from --help during the build (openocr_cli/cli/help_reference.py).
# NO_MKDOCS_2_WARNING: Material's end-of-life note (mkdocs.yml says how the config stays Zensical-ready).
docs: install
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --quiet

# tests/test_docs*.py build the site with --strict themselves (into a temporary folder) and check it.
# Tests that run OpenVINO in the test process get a pytest process of their own: on a CPU with AMX, a later
# DataLoader with forked workers in the same process crashed it (SIGSEGV, only after OpenVINO had run).
test: lint browser
	$(PY) -m pytest -q -n $(PYTEST_JOBS) -m "not openvino" $(PYTEST_ARGS)
	$(PY) -m pytest -q -m openvino $(PYTEST_ARGS)

test-fast: install browser
	$(PY) -m pytest -q -n $(PYTEST_JOBS) -m "not slow and not openvino" $(PYTEST_ARGS)
	$(PY) -m pytest -q -m "openvino and not slow" $(PYTEST_ARGS)

# OPENOCR=/path/to/OpenOCR adds OpenOCR's own scripts to the data, training and whole-process runs.
OPENOCR ?=
WITH_OPENOCR := $(if $(OPENOCR),--openocr $(OPENOCR))
# WEIGHTS=/path/to/best.pth (a trained checkpoint, README: Benchmarks) adds the held-out int8 accuracy run.
WEIGHTS ?=

bench: install
	$(PY) benchmarks/bench_predict.py
	$(PY) benchmarks/bench_vs_openocr.py $(WITH_OPENOCR) $(if $(WEIGHTS),--weights $(WEIGHTS))
	$(if $(WEIGHTS),$(PY) benchmarks/bench_int8.py --weights $(WEIGHTS))
	$(PY) benchmarks/bench_data.py $(WITH_OPENOCR)
	$(PY) benchmarks/bench_data.py --jpeg $(WITH_OPENOCR)
	$(PY) benchmarks/bench_train.py $(WITH_OPENOCR)
	$(PY) benchmarks/bench_tune.py
	$(PY) benchmarks/bench_uncertain.py
	$(PY) benchmarks/bench_serve.py
	$(PY) benchmarks/bench_serve_limits.py
	$(PY) benchmarks/bench_predict_scale.py
	$(PY) benchmarks/bench_huge.py $(if $(WEIGHTS),--weights $(WEIGHTS))
	$(PY) benchmarks/bench_ray.py
	$(PY) benchmarks/bench_amp.py step
	$(PY) benchmarks/bench_amp.py predict --openvino

# Offline demo: generate a synthetic text set, train from scratch on CPU, evaluate, predict.
DEMO ?= demo
DEMO_EPOCHS ?= 20
DEMO_TRAIN := --data-dir $(DEMO)/data --train-label $(DEMO)/data/train_label.txt --eval-label $(DEMO)/data/test_label.txt
DEMO_SMALL := -o "Train.dataset.transforms.4.EastRandomCropData.size=[192, 192]" \
	-o "Train.dataset.transforms.3.IaaAugment.augmenter_args.2.args.size=[0.5, 1.5]" -o Global.print_batch_step=40

demo: install
	$(MAKE) demo-run

demo-run:
	$(PY) -m openocr_cli.data.synth $(DEMO)/data --train 64 --test 16 --seed 0
	$(PY) -m openocr_cli check-data --data-dir $(DEMO)/data --label-file $(DEMO)/data/train_label.txt $(DEMO_SMALL)
	$(PY) -m openocr_cli train $(DEMO_TRAIN) --weights none --device cpu --epochs $(DEMO_EPOCHS) \
		--batch-size 8 --workers 2 --lr 0.002 --output $(DEMO)/run --overwrite $(DEMO_SMALL)
	$(PY) -m openocr_cli eval --weights $(DEMO)/run/best.pth --data-dir $(DEMO)/data \
		--label-file $(DEMO)/data/test_label.txt --device cpu --json $(DEMO)/metrics.json \
		--tune --report $(DEMO)/report
	$(PY) -m openocr_cli predict $(DEMO)/data/test --weights $(DEMO)/run/best.pth --device cpu --output $(DEMO)/predict

clean:
	rm -rf $(VENV) build site *.egg-info .pytest_cache
