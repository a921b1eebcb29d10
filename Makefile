# Set-up is part of every target: a fresh clone needs only `make demo` or `make test`.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench lint

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# The CPU build of torch 2.13 where it is available (this lab's machines keep it on disk);
	# otherwise any torch the requirement range admits.
	$(PY) -m pip install --quiet torch==2.13.0 || $(PY) -m pip install --quiet "torch>=2.6,<3"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

## demo: a short DS-TD3 run on HalfCheetah-v5 (a few minutes on a laptop CPU) into runs/demo
demo: $(STAMP)
	rm -rf runs/demo
	$(VENV)/bin/dstrl train --algo ds-td3 --env HalfCheetah-v5 --steps 20000 \
		--start-steps 5000 --eval-every 5000 --eval-episodes 5 --out runs/demo

## test: the whole test suite (what CI runs)
test: $(STAMP)
	$(PY) -m pytest -q

## bench: training throughput against Stable-Baselines3 (installs the bench extra)
bench: $(STAMP)
	$(PY) -m pip install --quiet -e ".[bench]"
	$(PY) benchmarks/throughput.py

lint: $(STAMP)
	$(VENV)/bin/ruff check dstrl tests benchmarks
