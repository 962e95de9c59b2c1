# The README's two commands: `make run` and `make test`. Everything else supports them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
NODES ?= 1
TEST_KAFKA_PORT ?= 19092
TEST_KAFKA_DATA := $(CURDIR)/.kafka/test

.PHONY: install run test test-faults test-unit test-integration lint kafka-up kafka-down kafka-logs kafka-status topics clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

kafka-up:
	NODES=$(NODES) deploy/kafka/kafka.sh up

kafka-down:
	NODES=$(NODES) deploy/kafka/kafka.sh down

kafka-logs:
	NODES=$(NODES) deploy/kafka/kafka.sh logs

kafka-status:
	NODES=$(NODES) deploy/kafka/kafka.sh status

topics: install
	$(PY) -m agents topics apply

run: install
	deploy/local/run.sh

# A broker of its own on a test port and a fresh data folder: started here, stopped here.
test: install
	@rm -rf $(TEST_KAFKA_DATA)
	@KAFKA_PORT=$(TEST_KAFKA_PORT) KAFKA_DATA=$(TEST_KAFKA_DATA) deploy/kafka/kafka.sh up
	@status=0; \
	rm -rf .coverage-data; mkdir -p .coverage-data; \
	INVENTORY_TEST_BOOTSTRAP=127.0.0.1:$(TEST_KAFKA_PORT) $(PY) -m coverage run -m pytest --ignore=tests/faults $(PYTEST_ARGS) || status=$$?; \
	KAFKA_PORT=$(TEST_KAFKA_PORT) KAFKA_DATA=$(TEST_KAFKA_DATA) deploy/kafka/kafka.sh down; \
	$(PY) -m coverage combine -q && $(PY) -m coverage report | tail -25 && \
	  echo "coverage of agents/ (unit, integration, deploy and worker subprocesses): $$($(PY) -m coverage report --format=total)%"; \
	exit $$status

# The reliability suite (tests/faults): SIGKILL loops, rebalances, a 3-broker cluster losing a leader,
# duplicates, reordering and fuzz, each judged by the independent checker. FAULT_SCALE=3 for a longer run.
test-faults: install
	@rm -rf $(TEST_KAFKA_DATA)-faults
	@KAFKA_PORT=$(TEST_KAFKA_PORT) KAFKA_DATA=$(TEST_KAFKA_DATA)-faults deploy/kafka/kafka.sh up
	@status=0; \
	INVENTORY_TEST_BOOTSTRAP=127.0.0.1:$(TEST_KAFKA_PORT) $(PY) -m pytest tests/faults $(PYTEST_ARGS) || status=$$?; \
	KAFKA_PORT=$(TEST_KAFKA_PORT) KAFKA_DATA=$(TEST_KAFKA_DATA)-faults deploy/kafka/kafka.sh down; \
	exit $$status

test-unit: install
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-integration: install
	@rm -rf $(TEST_KAFKA_DATA)
	@KAFKA_PORT=$(TEST_KAFKA_PORT) KAFKA_DATA=$(TEST_KAFKA_DATA) deploy/kafka/kafka.sh up
	@status=0; \
	INVENTORY_TEST_BOOTSTRAP=127.0.0.1:$(TEST_KAFKA_PORT) $(PY) -m pytest tests/integration $(PYTEST_ARGS) || status=$$?; \
	KAFKA_PORT=$(TEST_KAFKA_PORT) KAFKA_DATA=$(TEST_KAFKA_DATA) deploy/kafka/kafka.sh down; \
	exit $$status

lint: install
	$(VENV)/bin/ruff check agents tests bench
	$(VENV)/bin/ruff format --check agents tests bench
	$(VENV)/bin/mypy
	$(PY) -m agents topics check

clean:
	rm -rf data .run .kafka/test .pytest_cache .mypy_cache .ruff_cache

# Throughput, latency and memory on a broker of its own (port 19392, .kafka/bench), stopped at the end;
# results in bench/results/. Options: make bench BENCH_ARGS="--rates 50,100,200 --seconds 30 --workers 2"
.PHONY: bench
bench: install
	$(PY) -m bench.run $(BENCH_ARGS)

# faust in a virtualenv of its own (the optional [bench] extra), for bench/runtimes.py only.
.PHONY: bench-venv bench-runtimes bench-recovery
bench-venv:
	@test -x .venv-bench/bin/python || $(PYTHON) -m venv .venv-bench
	.venv-bench/bin/pip install --quiet -e '.[bench]'

# faust vs Quix Streams (at-least-once, exactly-once) vs a plain confluent-kafka loop, one workload.
bench-runtimes: install
	KAFKA_PORT=19692 KAFKA_DATA=$(CURDIR)/.kafka/bench-runtimes deploy/kafka/kafka.sh up
	$(PY) -m bench.runtimes --bootstrap 127.0.0.1:19692 $(BENCH_ARGS); status=$$?; \
	KAFKA_PORT=19692 KAFKA_DATA=$(CURDIR)/.kafka/bench-runtimes deploy/kafka/kafka.sh down; exit $$status

# Recovery time per 100 MB of changelog (starts and stops a broker of its own).
bench-recovery: install
	$(PY) -m bench.recovery $(BENCH_ARGS)

# The hashed lock files from pyproject.toml's pins: requirements.lock (the runtime; the Docker image installs
# it) and requirements-dev.lock (runtime + dev, constrained to the same versions). Versions already locked
# stay as they are; LOCK_ARGS=--upgrade moves every unpinned transitive dependency to its newest release.
.PHONY: lock
LOCK := $(VENV)/bin/uv pip compile pyproject.toml --universal --python-version 3.11 --generate-hashes --quiet \
	--custom-compile-command 'make lock' $(LOCK_ARGS)
lock: install
	$(LOCK) -o requirements.lock
	$(LOCK) --extra dev --constraint requirements.lock -o requirements-dev.lock
