# camflow: build / run / test plumbing.
#   make install       Debian packages + .venv (pip install -e '.[dev]' when pyproject.toml changed)
#   make services-up   Kafka (KRaft, 127.0.0.1:$(KAFKA_PORT)) + MinIO (127.0.0.1:$(MINIO_PORT))
#   make services-down stop both (by PID; no-op when not running)
#   make test          install, helm (chart checks), services-up, pytest against them, services-down (always)
#                      (its trimmed chaos set, tests/test_chaos_functional.py, runs a Kafka + MinIO of its own: 31092, 31000)
#   make run           install, then `camflow run` (embedded default: no Kafka/MinIO needed)
#   make regions       install, then two regions on this machine (scripts/regions_demo.sh): each a Kafka, a MinIO
#                      and a `camflow run` of its own (A: edge 8080, RTSP 8554; B: 8180, 8654), the MinIOs linked
#                      by site replication (docs/regions.md); prints where to push and watch; Ctrl-C stops all
#   make image         the container image (scripts/image.sh): build/image/camflow-<version>.oci.tar + its digest
#   make lint          ruff check + mypy --strict + lint-imports (the architecture rules; config in pyproject.toml)
#   make bench         every bench/bench_*.py (BENCH='ingest' for one; BENCH_ARGS='-- --steps 25,50')
#   make chaos         every fault scenario on its own Kafka + MinIO (ports 29092.., 29000) with ffmpeg pushing:
#                      one table + build/chaos/report.json; fails on any loss beyond what a scenario may
#                      lose (docs/reliability.md). About 25 min; bounded at 60 (CHAOS='ingest-sigkill,...')
#   make fuzz          every parser's fuzz target (tests/fuzz, atheris) for FUZZ_RUNS inputs each (100000),
#                      FUZZ_JOBS at a time (2); FUZZ='sdp tokens' for some; exits 1 on a finding
# Override e.g. `make test PYTEST_ARGS='-k rtsp -x'` or `make services-up KAFKA_PORT=29092`.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := install
.DELETE_ON_ERROR:

PYTHON ?= python3.11
VENV := .venv
VENV_STAMP := $(VENV)/.camflow-installed
HLSJS := edge/web/node_modules/hls.js/dist/hls.min.js

# Test services, on ports that stay clear of the usual defaults (9092/9093/9000).
KAFKA_PORT ?= 19092
KAFKA_CONTROLLER_PORT ?= 19093
MINIO_PORT ?= 19000
MINIO_ROOT_USER ?= camflow
MINIO_ROOT_PASSWORD ?= camflow-secret
TEST_BUCKET ?= camflow-test
PYTEST_ARGS ?=
export KAFKA_PORT KAFKA_CONTROLLER_PORT MINIO_PORT MINIO_ROOT_USER MINIO_ROOT_PASSWORD TEST_BUCKET

.PHONY: install system-packages helm image services-up services-down test run regions lint bench chaos fuzz

install: system-packages $(VENV_STAMP) $(HLSJS)

system-packages:
	bash scripts/install-system.sh

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# Order-only on the interpreter: only a newer pyproject.toml (or a missing stamp) re-runs pip.
$(VENV_STAMP): pyproject.toml | $(VENV)/bin/python
	$(VENV)/bin/pip install -e '.[dev]'
	touch $@

# hls.js for the edge's player page, from npm, served by the edge from disk (never from a CDN).
$(HLSJS): edge/web/package.json edge/web/package-lock.json
	npm ci --prefix edge/web --no-audit --no-fund
	touch $@

# helm for the chart checks (tests/test_helm_chart.py): a `go install` build, cached in ~/.cache/camflow.
helm:
	bash scripts/helm.sh install

# The container image the Helm chart runs, built from Debian's packages without a container engine
# (docs/deployment.md "Container image"); tests/test_image.py builds it too (reused while the sources are unchanged).
image: install
	bash scripts/image.sh

services-up:
	bash scripts/kafka.sh start
	bash scripts/minio.sh start

services-down:
	status=0; \
	bash scripts/minio.sh stop || status=1; \
	bash scripts/kafka.sh stop || status=1; \
	exit $$status

# scripts/test.sh starts the services, traps EXIT/INT/TERM to stop them, and exits with
# pytest's code (5, "no tests collected", counts as failure).
test: install helm
	bash scripts/test.sh --durations=30 $(PYTEST_ARGS)

run: install
	$(VENV)/bin/camflow run

# Backends on 28092/28093 + 28100 (A) and 28192/28193 + 28200 (B), clear of the test and chaos services;
# every port can be moved by env (scripts/regions.sh and scripts/regions_demo.sh list them).
regions: install
	bash scripts/regions_demo.sh

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-logo

BENCH ?=
BENCH_ARGS ?=
bench: install
	$(VENV)/bin/python -m bench $(BENCH) $(BENCH_ARGS)

# The chaos suite (tests/chaos, docs/reliability.md): each scenario starts the four services as
# processes on Kafka and MinIO of its own (scripts/kafka.sh, scripts/minio.sh; 3 brokers / 4 drives
# where a scenario needs them), pushes 60-120 s with ffmpeg, injects its fault, reads the recording
# back from the VOD playlist. Every process is stopped by PID at the end; SIGINT at the time bound
# lets the harness stop them too (SIGKILL 2 min later if it hangs).
CHAOS ?=
CHAOS_TIMEOUT ?= 3600
chaos: install
	rm -rf build/chaos/work
	timeout --signal=INT --kill-after=120 $(CHAOS_TIMEOUT) $(VENV)/bin/python -m tests.chaos \
		$(if $(CHAOS),--scenarios $(CHAOS)) --work build/chaos/work --report build/chaos/report.json

# Fuzzing (docs/development.md "Fuzzing"): FUZZ names targets (default: all). FUZZ_RUNS, FUZZ_JOBS, FUZZ_MAX_TIME
# and FUZZ_CORPUS reach `python -m tests.fuzz` through the environment (make exports command-line variables);
# its defaults are written there. Findings and the kept corpus go under .run/fuzz/TARGET/.
FUZZ ?=
fuzz: install
	$(VENV)/bin/python -m tests.fuzz $(FUZZ)
