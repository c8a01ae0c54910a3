# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tvmq-installed
# test processes (pytest-xdist): most tests are single-threaded compiles
JOBS ?= 2

.PHONY: demo test arm-env browser-env bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)  ## set up, compile the bundled MNIST CNN for this machine, print the report
	$(VENV)/bin/tvmq demo --out demo-out --force --trials $(or $(TRIALS),64) --onnxruntime

test: $(STAMP)  ## set up and run the test suite
	$(PY) -m pytest -q -n $(JOBS) tests

arm-env: $(STAMP)  ## install the aarch64 cross compiler, qemu-user and runtime (targets arm, arm-neon); idempotent
	PYTHON=$(PY) bash scripts/arm_env.sh

browser-env:  ## install Debian's chromium for the headless-browser test of report.html; idempotent
	bash scripts/browser_env.sh

clean:
	rm -rf demo-out .pytest_cache
