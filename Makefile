# Tickwatch: the one entry point for people and CI. `make` (or `make help`) lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
.ONESHELL:
.SHELLFLAGS := -eu -o pipefail -c

export UV_PYTHON_DOWNLOADS ?= never
# uv from PATH, else the copy `make install` puts in .tools/ (pip --target: no venv, no root).
UV := $(shell command -v uv 2>/dev/null || echo $(CURDIR)/.tools/uv/bin/uv)
PY := $(CURDIR)/.venv/bin/python
PYTEST_ARGS ?=
RUN_ARGS ?=
SEED_ARGS ?=
CHAOS_ARGS ?=
# The Kubernetes manifests' builder (the same version in tests/unit/test_k8s_manifests.py).
KUSTOMIZE_VERSION ?= v5.7.1
# The dashboard's chart library, vendored (committed) into the gateway's static files.
CHARTS_VERSION ?= 5.2.1
DASHBOARD_STATIC := services/gateway/src/tickwatch_gateway/dashboard/static
# mypy --strict covers every library and every service.
TYPED := libs/common/src libs/devstack/src libs/testkit/src services/ingestor/src \
  services/alert-engine/src services/notifier/src services/portfolio/src services/gateway/src

.PHONY: help install run seed down test test-unit lint bench kafka-up kafka-down chaos vendor-charts

help: ## list the targets
	@echo "Tickwatch: make <target>"
	if [ -t 1 ]; then on=$$'\e[36m'; off=$$'\e[0m'; else on=; off=; fi
	grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) \
	  | awk -v on="$$on" -v off="$$off" 'BEGIN {FS = ":.*?## "}; {printf "  %s%-18s%s %s\n", on, $$1, off, $$2}'

install: ## install uv if missing, every package from uv.lock into .venv, chromium and kustomize if missing
	@if [ ! -x "$(UV)" ]; then
	  echo "uv not found: installing it into .tools/uv with pip"
	  python3 -m pip install --quiet --disable-pip-version-check --target .tools/uv 'uv>=0.9'
	fi
	"$(UV)" sync --all-packages --frozen --quiet
	# The browser tests drive Debian's Chromium (a test tool's own browser download cannot work).
	if [ ! -x /usr/bin/chromium ]; then
	  echo "chromium not found: installing Debian's package with apt-get"
	  as_root=$$([ "$$(id -u)" = 0 ] || echo sudo)
	  $$as_root apt-get update -qq && $$as_root apt-get install -y --no-install-recommends chromium
	fi
	# kustomize (tests/unit/test_k8s_manifests.py builds every overlay), from the Go module proxy.
	if [ ! -x .tools/kustomize-$(KUSTOMIZE_VERSION)/kustomize ]; then
	  echo "kustomize $(KUSTOMIZE_VERSION) not found: go install into .tools/ (about a minute, once)"
	  GOBIN=$(CURDIR)/.tools/kustomize-$(KUSTOMIZE_VERSION) go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION)
	fi

run: install ## the whole system here: servers under .data/, topics, migrations, five services, URLs
	@exec "$(PY)" -m tickwatch_devstack up $(RUN_ARGS)

seed: install ## demo users, alerts and portfolios on the running `make run` (twice changes nothing)
	@exec "$(PY)" -m tickwatch_devstack seed $(SEED_ARGS)

down: ## stop everything `make run` (and `make kafka-up`) started, even after a crash
	@if [ -x "$(PY)" ]; then "$(PY)" -m tickwatch_devstack down; fi
	@bash deploy/apache-kafka/kafka.sh down

test: install ## the whole suite (unit, integration, end to end) against real servers it starts
	"$(PY)" -m pytest $(PYTEST_ARGS)

test-unit: install ## only the tests that need no server
	"$(PY)" -m pytest --no-servers $(PYTEST_ARGS)

lint: install ## ruff check, ruff format --check, mypy --strict over every library and service
	"$(UV)" run --frozen --no-sync ruff check .
	"$(UV)" run --frozen --no-sync ruff format --check .
	"$(UV)" run --frozen --no-sync mypy $(TYPED)

bench: install ## run every bench/*.py in turn (each starts its own servers and prints figures)
	@shopt -s nullglob; scripts=(bench/*.py)
	if [ $${#scripts[@]} -eq 0 ]; then echo "no bench/*.py yet"; exit 0; fi
	for script in "$${scripts[@]}"; do
	  echo "=== $$script"
	  "$(PY)" "$$script"
	done

chaos: install ## a seeded fault run on real servers (2,000 alerts, every fault in turn); exit 1 on a loss
	"$(PY)" -m tickwatch_devstack.chaos $(CHAOS_ARGS)

vendor-charts: ## refresh the dashboard's lightweight-charts (CHARTS_VERSION=x.y.z) from npm; commit the result
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT
	(cd "$$tmp" && npm pack --silent "lightweight-charts@$(CHARTS_VERSION)" >/dev/null && tar xzf lightweight-charts-*.tgz)
	rm -f $(DASHBOARD_STATIC)/lightweight-charts-*.standalone.production.js
	cp "$$tmp/package/dist/lightweight-charts.standalone.production.js" \
	  "$(DASHBOARD_STATIC)/lightweight-charts-$(CHARTS_VERSION).standalone.production.js"
	cp "$$tmp/package/LICENSE" "$(DASHBOARD_STATIC)/lightweight-charts-LICENSE.txt"
	sed -i -E 's/lightweight-charts-[0-9.]+\.standalone/lightweight-charts-$(CHARTS_VERSION).standalone/' \
	  $(DASHBOARD_STATIC)/dashboard.html
	echo "lightweight-charts $(CHARTS_VERSION) vendored into $(DASHBOARD_STATIC)"

kafka-up: ## a throwaway Apache Kafka (KRaft) on localhost:29092, wiped at each start (benches, experiments)
	@bash deploy/apache-kafka/kafka.sh up

kafka-down: ## stop that Apache Kafka broker
	@bash deploy/apache-kafka/kafka.sh down
