# Every target creates the virtual environment on first use, from the pinned
# requirements.txt, so `make demo` and `make test` work on a fresh machine.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test test-fast lint demo check-env benchmark benchmark-speed clean

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

lint: setup
	$(VENV)/bin/ruff check gnn_metamf tests scripts

# Dry run of environment.yml's pip section against the pinned environment.
check-env: setup
	$(PY) scripts/check_environment.py --pip-dry-run

demo: setup
	$(PY) scripts/demo.py

# Protocols A, B and C (about 30 minutes on 2 cores; reuses trained runs).
benchmark: setup
	$(PY) scripts/bench_protocols.py --protocol all --out results

# Speed and memory: MetaMF imputing unseen matrices against per-matrix MF
# and scikit-surprise's SVD (MetaMF at one thread and at every core, the
# baselines at one), then meta-training throughput (one thread). Tables in
# results/speed/ (adapt.md, train.md). SPEED_ARGS=--quick: < 4 min. With
# the demo's checkpoint (make demo) MetaMF's RMSE is reported too.
SPEED_ARGS ?=
SPEED_CHECKPOINT ?= runs/demo/checkpoint.pt
benchmark-speed: setup
	$(PY) -c "import surprise" 2>/dev/null || \
		$(PY) -m pip install -q scikit-surprise
	$(PY) scripts/bench_adapt.py --out results/speed \
		$(if $(wildcard $(SPEED_CHECKPOINT)),--checkpoint $(SPEED_CHECKPOINT)) \
		$(SPEED_ARGS)
	OMP_NUM_THREADS=1 $(PY) scripts/bench_train.py --out results/speed \
		$(SPEED_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
