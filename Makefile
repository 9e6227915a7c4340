# One place for every command; `make help` lists them.
SHELL := /bin/bash
COMPOSE := docker compose -f deploy/compose.yaml --env-file deploy/versions.env
VENV := .venv

.PHONY: help up down logs ps test lint unit bench dev clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-8s %s\n", $$1, $$2}'

up: ## build and start the stack (needs Docker), wait until healthy, print the URLs
	$(COMPOSE) up -d --build --wait
	@echo "demo:       http://localhost:8080"
	@echo "grafana:    http://localhost:3000"
	@echo "prometheus: http://localhost:9090"
	@echo "graphgen:   http://localhost:9464/metrics"

down: ## stop the stack
	$(COMPOSE) down

logs: ## follow the stack's logs
	$(COMPOSE) logs -f

ps: ## show the stack's containers
	$(COMPOSE) ps

test: lint unit ## every check and test (no Docker needed)

lint: ## formatting and clippy, warnings are errors
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

unit: ## unit, conformance and integration tests
	PYTHON=$(abspath $(VENV))/bin/python cargo test --workspace --locked

bench: ## engine benchmark (criterion)
	cargo bench -p graphgen --bench engine

clean: ## remove build output
	cargo clean
