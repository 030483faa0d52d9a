# The two set-up commands of the README: `make run` and `make test`. Both install what they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 11435
WEB_CONCURRENCY ?= 1
# Several workers pool their metrics in files here (prometheus_client's multiprocess mode); the
# folder is emptied at each start, or the counts of the previous run would be added again.
PROMETHEUS_MULTIPROC_DIR ?= $(or $(DATA_DIR),data)/prometheus-multiproc

.PHONY: run test lint demo simulate bench

$(VENV)/.runtime: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

## run: install, migrate and serve the proxy, admin and dashboards (SQLite unless DATABASE_URL)
run: $(VENV)/.runtime
	$(PY) manage.py migrate --no-input
	$(PY) manage.py collectstatic --no-input --verbosity 0
	@$(PY) manage.py banner --host $(HOST) --port $(PORT)
	if [ "$(WEB_CONCURRENCY)" -gt 1 ]; then \
		mkdir -p "$(PROMETHEUS_MULTIPROC_DIR)" && rm -f "$(PROMETHEUS_MULTIPROC_DIR)"/*.db && \
		export PROMETHEUS_MULTIPROC_DIR="$(abspath $(PROMETHEUS_MULTIPROC_DIR))"; \
	fi; \
	exec $(VENV)/bin/uvicorn ollama_monitor.asgi:application --host $(HOST) --port $(PORT) \
		--workers $(WEB_CONCURRENCY) --loop uvloop --http httptools \
		--no-server-header --no-access-log --timeout-graceful-shutdown 30

## test: install, lint, check and run the whole suite (on PostgreSQL when DATABASE_URL says so)
test: $(VENV)/.dev lint
	$(PY) manage.py check
	$(PY) manage.py makemigrations --check --dry-run
	$(PY) -m pytest $(PYTEST_ARGS)
	@echo "All checks passed. 'make run' serves the proxy on http://$(HOST):$(PORT)" \
		"(dashboard /dashboard/, admin /admin/, API /analytics/docs, metrics /metrics);" \
		"create the first admin user with: $(PY) manage.py createsuperuser"

lint: $(VENV)/.dev
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

## simulate: a simulated Ollama on 127.0.0.1:11434 (no real Ollama or model needed)
simulate: $(VENV)/.runtime
	$(PY) manage.py simulate_ollama --port 11434

## demo: the simulated Ollama, the proxy in front of it, and some traffic through it
demo: $(VENV)/.dev
	$(PY) manage.py migrate --no-input
	$(PY) manage.py demo

## bench: the proxy's overhead against the direct path and nginx (bench/proxy.py; --quick for a short run)
bench: $(VENV)/.dev
	$(PY) bench/proxy.py $(BENCH_ARGS)
