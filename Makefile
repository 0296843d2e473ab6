# Two commands: `make demo` and `make test`. Each creates .venv and installs what it needs.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
TORCH := torch==2.13.0

.PHONY: demo test lint install install-dev clean frontend system-deps

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip wheel setuptools
	# torch first and pinned: a loose requirement would pull the CUDA wheels.
	$(BIN)/python -m pip install $(TORCH)

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -e .
	touch $@

$(VENV)/.installed-dev: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -e ".[dev]"
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: $(VENV)/.installed
	$(BIN)/geolatent demo --out demo_output

# System packages the app tests need (Debian): chromium (driven by Playwright; never a
# downloaded browser build), PostgreSQL (a throwaway cluster per test run) and npm (front end).
system-deps:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v npm >/dev/null 2>&1 || missing="$$missing npm"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y $$missing; \
	  else echo "missing system packages:$$missing; as root: apt-get install -y$$missing"; exit 1; fi; \
	fi

# The web app's front end: npm packages (package-lock.json) built by Vite into the package.
STATIC := geolatent/app/static/index.html
frontend/node_modules/.package-lock.json: frontend/package-lock.json
	cd frontend && npm ci --no-audit --no-fund

$(STATIC): frontend/node_modules/.package-lock.json frontend/index.html frontend/vite.config.js $(wildcard frontend/src/*)
	cd frontend && npx vite build

frontend: $(STATIC)

test: $(VENV)/.installed-dev system-deps $(STATIC)
	$(BIN)/python -m pytest -q

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check geolatent tests benchmarks

clean:
	rm -rf $(VENV) demo_output .pytest_cache geolatent/app/static frontend/node_modules
