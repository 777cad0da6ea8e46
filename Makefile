# Two entry points (see README): `make demo` and `make test`. Both create ./.venv on first use
# and install lmkit into it. torch is pinned to the CPU build (2.13.0); for a CUDA build, install
# torch into .venv first from https://pytorch.org (the range in pyproject.toml keeps it).
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.lmkit-installed

.PHONY: demo test test-quick bench install clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/lmkit demo

test: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy
	$(PY) -m pytest -q -n 2 --dist loadfile

test-quick: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile -m 'not slow'

bench: $(STAMP)
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) benchmarks/train_throughput.py --family decoder encoder encdec
	$(PY) benchmarks/generate_speed.py
	$(PY) benchmarks/curate_speed.py

clean:
	rm -rf $(VENV) runs
