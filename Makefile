# Aegis — the commands a new user needs. See README.md.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 3000
ROWS   ?= 10000
DAYS   ?= 2
DRILL_ROWS ?= 100000
TABLE  ?= infra_logs
BENCH_ROWS ?= 100000,1000000

.PHONY: up capture worker bench-scale bench-capture bench-schemas install env test lint validate demo drill drill-postgres bench clean migrate-lake doctor metrics
METRICS_PORT ?= 9464

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

env: .env

.env:
	sed "s/^AEGIS_PII_KEY=\$${AEGIS_PII_KEY:-dev-only-change-me}$$/AEGIS_PII_KEY=\$${AEGIS_PII_KEY:-dev-only-$$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')}/" .env.example > .env
	@echo "wrote .env from .env.example (with a generated development PII key)"

up: install env .dagster_home/dagster.yaml  ## set up and run the platform on the embedded stack: http://127.0.0.1:3000, with the change capture beside it (Litestream for SQLite)
	mkdir -p data
	$(BIN)/python -m platform_assets.protection.capture_process & capture=$$!; \
	trap 'kill $$capture 2>/dev/null' EXIT INT TERM; \
	DAGSTER_HOME=$(CURDIR)/.dagster_home $(BIN)/dagster dev -w workspace.yaml -h $(HOST) -p $(PORT)

capture: install env  ## the change capture alone: PostgreSQL (wal_level=logical) into the change log, SQLite through Litestream
	$(BIN)/python -m platform_assets.protection.capture_process

QUEUE ?= dagster
NAME ?= aegis-$(shell hostname)
worker: install env  ## a Dagster Celery worker on this host for AEGIS_EXECUTOR=celery (QUEUE, NAME; DAGSTER_HOME: the shared PostgreSQL instance)
	$(BIN)/python -m platform_assets.ops.worker --queue $(QUEUE) --name $(NAME)

# the local instance (run queue polled every second, short-lived skipped sensor ticks): docker/dagster.local.yaml
.dagster_home/dagster.yaml: docker/dagster.local.yaml
	mkdir -p .dagster_home
	cp docker/dagster.local.yaml $@

TEST_WORKERS ?= 2
test: install  ## ruff, then the whole pytest suite on $(TEST_WORKERS) workers (each test module whole on one)
	$(BIN)/ruff check .
	$(BIN)/pytest -n $(TEST_WORKERS)

validate: install
	$(BIN)/dagster definitions validate -w workspace.yaml

demo: install  ## headless: the whole graph for the last $(DAYS) days on a fresh temp dir, summarised per layer
	$(BIN)/python -m platform_assets.ops.runner --days $(DAYS) --rows $(ROWS)

clean:
	rm -rf data .dagster_home .pytest_cache .ruff_cache test-artifacts

doctor: install env .dagster_home/dagster.yaml  ## one line per backend and setting, configured as Dagster reads it (the environment wins over .env): OK / WARN / FAIL; exit 1 on FAIL
	DAGSTER_HOME=$${DAGSTER_HOME:-$(CURDIR)/.dagster_home} $(BIN)/python -m platform_assets.ops.doctor

metrics: install env .dagster_home/dagster.yaml  ## Prometheus/OpenMetrics on http://$(HOST):$(METRICS_PORT)/metrics (scrape config: README)
	DAGSTER_HOME=$${DAGSTER_HOME:-$(CURDIR)/.dagster_home} $(BIN)/python -m platform_assets.ops.metrics --host $(HOST) --port $(METRICS_PORT)

migrate-lake: install env  ## convert a lake written before Delta Lake (a _commit.json per partition); nothing is deleted
	set -a && . ./.env && set +a && $(BIN)/python -m resources.lake.migration $(if $(LAKE),--lake $(LAKE))

drill: install  ## DROP TABLE on a protected table and time the sensor-driven restore (ROWS, TABLE)
	$(BIN)/python -m bench.drill --rows $(DRILL_ROWS) --table $(TABLE)

PG_DRILL_ROWS ?= 1000000
SCALE ?= 50
bench-schemas: install  ## Aegis vs pg_dump/pg_restore (-j2) on pgbench's schema, one group, through Dagster (SCALE)
	$(BIN)/python -m bench.pg_schemas --scale $(SCALE)

CHANGES ?= 100000
drill-postgres: install  ## the DROP drill on PostgreSQL with the change capture: 1M rows, CHANGES since the base
	$(BIN)/python -m bench.pg_drill --rows $(PG_DRILL_ROWS) --changes $(CHANGES)

BACKFILL_DAYS ?= 8
bench-scale: install  ## a BACKFILL_DAYS backfill (8) in process and through Celery on 1 and 2 workers, ROWS a table (bench/RESULTS-scale-out.md; RabbitMQ, PostgreSQL)
	$(BIN)/python -m bench.scale_out --days $(BACKFILL_DAYS) --rows $(ROWS)

bench-capture: install  ## continuous protection measured: tps with the capture off/on, RPO p50/p99, restore with replay vs full (bench/RESULTS-capture.md)
	$(BIN)/python -m bench.capture $(ARGS)

bench: install  ## Aegis vs pandas and vs pg_dump/pg_restore: BENCH_ROWS=100000,1000000, BENCH_PG_ROWS=1000000,10000000 (defaults); ARGS=--quick (smoke) or ARGS=--pg-only
	BENCH_ROWS=$(BENCH_ROWS) $(BIN)/python -m bench.run $(ARGS)
