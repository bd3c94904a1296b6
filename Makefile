# Two entry points, each creating the environment when it is missing (pins live in pyproject.toml).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test test-all wheel-test docs bench env clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

env: $(VENV)/.installed

## demo: the main job on the embedded default (torchvision mobilenet_v2, all_but_first)
demo: env
	$(PY) -m odconv_surgery.experiments.demo

# The suite runs against the package as users get it: built into a wheel and installed (non-editable) into
# $(WHEEL_TEST), which PYTHONPATH puts before the venv's editable install. The venv's pytest script (not
# `python -m pytest`) keeps the repository root off sys.path, so the source tree cannot shadow the wheel;
# conftest.py refuses to run if it does. Build and install take a few seconds; the suite runs once.
WHEEL_TEST := build/wheel-test
TEST_ENV = PYTHONPATH=$(CURDIR)/$(WHEEL_TEST) ODCONV_TEST_INSTALLED=$(CURDIR)/$(WHEEL_TEST)

wheel-test: env
	rm -rf build
	$(PY) -m pip wheel --quiet --no-deps --wheel-dir build/dist .  # built as pip builds it for users (isolated)
	$(PY) -m pip install --quiet --no-deps --no-compile --target $(WHEEL_TEST) build/dist/*.whl

## test: the test suite against the installed wheel (what CI runs)
test: wheel-test
	$(TEST_ENV) $(VENV)/bin/pytest

## test-all: including the heavy tests marked slow
test-all: wheel-test
	$(TEST_ENV) $(VENV)/bin/pytest -m "slow or not slow"

## docs: the documentation site into build/site/ (strict: a broken link or API reference fails; what CI runs)
docs: env
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

bench: env
	$(PY) benchmarks/bench_eager.py

clean:
	rm -rf $(VENV) build *.egg-info
