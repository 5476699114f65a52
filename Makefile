# perlinsos: two commands set everything up on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
export UV_PYTHON_DOWNLOADS := never
UV = $(shell command -v uv 2>/dev/null || echo python3 -m uv)
RUN = $(UV) run --frozen

.PHONY: run up test test-faults soak lint typecheck unit db flow bench profile asyncapi asyncapi-check sync clean

# Bytecode compiled at install (as pip does, and as the service image does): otherwise
# every process compiles what it imports the first time, or every time where
# PYTHONDONTWRITEBYTECODE is set, about a second of CPU per service at each start.
.venv/.synced: Makefile uv.lock pyproject.toml $(wildcard */pyproject.toml services/*/pyproject.toml)
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 \
		|| python3 -m pip install --quiet uv
	$(UV) sync --frozen --all-packages --compile-bytecode
	@touch $@

sync: .venv/.synced

## The main job: embedded stack, synthetic 24,300 cohort, per-funding-line report, stop.
run: sync
	$(RUN) perlinsos cohort

## Start the stack and run until Ctrl-C.
up: sync
	$(RUN) perlinsos up

## Lint, type-check, then every test (unit and flow, against a real broker and PostgreSQL).
test: sync
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy
	tools/asyncapi/validate.sh
	$(RUN) pytest

## Plain values and in-memory stores only: no broker, no database.
unit: sync
	$(RUN) pytest -m "not flow and not db"

## PostgreSQL only (store and SQL tests; no broker, no service processes).
db: sync
	$(RUN) pytest -m db

## Services as real processes on a real broker and PostgreSQL.
flow: sync
	$(RUN) pytest -m flow

## The fault suite: each fault against a fault-free run of the same submissions, one
## table at the end (FAULTS_SIZE=5000, FAULTS_RATE=50, FAULTS_SHORT=1; docs/RELIABILITY.md).
test-faults: sync
	$(RUN) pytest faults -p no:cacheprovider

## Intake at a fixed rate with faults now and then; memory, lag and backlog sampled
## (SOAK_ARGS="--rate 100 --minutes 10").
soak: sync
	$(RUN) python -m faults.soak $(SOAK_ARGS)

## Benchmarks, separate from tests: one run on one embedded stack, a table of figures
## against targets, written into docs/benchmarks.md (BENCH_ARGS="--quick", "--million",
## "--full", "--two-instances"; `uv run --frozen python -m benchmarks --help`).
bench: sync
	$(RUN) python -m benchmarks $(BENCH_ARGS)

## py-spy on every service while the cohort runs; each service's top costs (PROFILE_ARGS=
## "--size 24300 --out .perlinsos-profile"; the raw stacks open in speedscope).
profile: sync
	$(RUN) python -m benchmarks.profile $(PROFILE_ARGS)

## Regenerate the AsyncAPI document of every topic from the code.
asyncapi: sync
	$(RUN) python -m perlinsos_shared.asyncapi > docs/asyncapi.json

## The official AsyncAPI validator (npm @asyncapi/cli, pinned in tools/asyncapi) on
## docs/asyncapi.json; needs Node.js and npm (says so when they are missing).
asyncapi-check:
	tools/asyncapi/validate.sh

clean:
	rm -rf .perlinsos .pytest_cache .mypy_cache .ruff_cache
