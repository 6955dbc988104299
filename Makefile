# Two commands do all setup on a fresh machine: `make demo` and `make test`.
# Each creates .venv and installs bpbench (editable, with its test and plot extras) if needed.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install demo test test-cuda bench mnist-data clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,plot]'
	@touch $(STAMP)

install: $(STAMP)

# A short showcase: seed 000's regression by hand and by autograd, then the 2-2-1 net's trace.
demo: $(STAMP)
	$(BIN)/bpbench list
	$(BIN)/bpbench run linreg --manual --log-every 100
	$(BIN)/bpbench run linreg --autograd
	$(BIN)/bpbench run bce --trace
	$(BIN)/bpbench gradcheck bce

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-cuda: $(STAMP)
	$(BIN)/python -m pytest -q -m cuda

bench: $(STAMP)
	$(BIN)/python benchmarks/bench.py

# Rebuild the shipped offline MNIST 0/1 subset from ../shared/data/mnist (checks the MD5 sums).
mnist-data: $(STAMP)
	$(BIN)/python scripts/build_mnist01.py ../shared/data/mnist bpbench/data/mnist01.npz

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
