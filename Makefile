# Two entry points, each creating the environment when it is missing (pins live in pyproject.toml).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test test-all docs bench env clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

env: $(VENV)/.installed

## demo: the main job on the embedded default (torchvision mobilenet_v2, all_but_first)
demo: env
	$(PY) -m odconv_surgery.experiments.demo

## test: the test suite (what CI runs)
test: env
	$(PY) -m pytest

## test-all: including the heavy tests marked slow
test-all: env
	$(PY) -m pytest -m "slow or not slow"

## docs: the documentation site into build/site/ (strict: a broken link or API reference fails; what CI runs)
docs: env
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

bench: env
	$(PY) benchmarks/bench_eager.py

clean:
	rm -rf $(VENV) build *.egg-info
