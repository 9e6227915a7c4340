# Every command of the project; `make help` lists them.
SHELL := /bin/bash
COMPOSE := docker compose -f deploy/compose.yaml
# graphgen ×REPLICAS behind the OpenTelemetry Collector's load_balancing exporter (Compose v2.24.4+).
SCALE_COMPOSE := docker compose -f deploy/compose.yaml -f deploy/compose.scale.yaml
REPLICAS ?= 3
VENV := .venv
PYTEST := $(VENV)/bin/pytest
export PYTHON := $(abspath $(VENV))/bin/python
# Under `make`, a test that needs Prometheus, Chromium or the Python venv fails when the tool
# is missing; a bare `cargo test` skips it and says which target installs it.
export GRAPHGEN_REQUIRE_TOOLS := 1

.PHONY: help up down up-scale down-scale logs ps tools test lint unit stack e2e dev bench bench-intake bench-queue bench-e2e load fuzz clean

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

up: ## build and start the stack (needs Docker), wait until healthy, print the URLs
	$(COMPOSE) up -d --build --wait
	@echo "demo shop:   http://localhost:8080"
	@echo "grafana:     http://localhost:3000  (Explore → Tempo → Service Graph)"
	@echo "prometheus:  http://localhost:9090"
	@echo "tempo:       http://localhost:3200"
	@echo "graphgen:    http://localhost:9464/metrics  (OTLP on localhost:4317 gRPC, :4318 HTTP)"

down: ## stop the stack (keeps the data volumes; `make clean` removes them)
	$(COMPOSE) down

up-scale: ## the stack with graphgen ×REPLICAS (default 3) behind the OpenTelemetry Collector
	REPLICAS=$(REPLICAS) $(SCALE_COMPOSE) up -d --build --wait
	@echo "OTLP:        localhost:4317 gRPC, :4318 HTTP (the collector, routing by trace id)"
	@echo "graphgen:    $(REPLICAS) replicas, each scraped by Prometheus (dashboard: graphgen health)"
	@echo "fleet map:   http://localhost:9464/graph  (every replica's share, merged)"
	@echo "grafana:     http://localhost:3000   prometheus: http://localhost:9090"

down-scale: ## stop the scaled stack (keeps the data volumes)
	REPLICAS=$(REPLICAS) $(SCALE_COMPOSE) down

logs: ## follow the stack's logs
	$(COMPOSE) logs -f

ps: ## show the stack's containers and their health
	$(COMPOSE) ps

tools: ## install what the tests use besides Rust (Debian, as root): Prometheus, Chromium, Python venv, schemas
	bash scripts/install-tools.sh

test: lint unit stack ## every check and test; no Docker needed (`make tools` installs what they use)

lint: ## formatting and clippy, warnings are errors
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

unit: ## Rust tests: engine, conformance, processes over sockets, SDK clients, browser
	cargo test --workspace --locked

# `cargo test --no-run` builds the binaries with the features `unit` already resolved, so
# nothing is compiled twice (a plain `cargo build` resolves features without dev-dependencies).
stack: ## static checks of deploy/, prometheus/, tempo/, grafana/ and the end-to-end run
	cargo test --workspace --locked --no-run
	$(PYTEST) -q tests/stack

e2e: ## only the end-to-end run: Prometheus + graphgen + demo roles + Chromium + Grafana's queries
	cargo test --workspace --locked --no-run
	$(PYTEST) -q tests/stack/test_e2e.py

dev: ## no Docker: graphgen, the demo roles (and Prometheus if installed) as local processes
	scripts/dev.sh

bench: ## engine benchmark, Tempo's steady-state workload (criterion)
	cargo bench -p graphgen --bench engine

bench-intake: ## intake (decode + engine) from 2 threads vs 1, in process, pre-encoded requests
	cargo bench -p graphgen --bench intake_threads

bench-queue: ## the disk queue with --queue-fsync always, 16 clients: group commit vs one fsync a request
	cargo bench -p graphgen --bench queue_fsync

bench-e2e: ## graphgen end to end vs a decode baseline (and rotel-agent if its wheel installs): spans per CPU-second
	cargo build --release --locked -p graphgen
	python3 scripts/bench_e2e.py

LOAD_ARGS ?= --rate 5000 --duration 60s
load: ## drive a running stack or `make dev` with shop traces: make load LOAD_ARGS="--rate 20000 --duration 30s"
	cargo run --release --locked -p graphgen --bin graphgen-load -- send --endpoint http://127.0.0.1:4317 $(LOAD_ARGS)

fuzz: ## fuzz the OTLP/HTTP decode path and the borrowed reader against prost, 60 s each (cargo-fuzz)
	scripts/fuzz.sh 60

clean: ## remove build output and the stack's volumes
	cargo clean
	-$(COMPOSE) down -v
