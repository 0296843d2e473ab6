# Two commands: `make demo` and `make test`. Each creates .venv and installs what it needs.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
TORCH := torch==2.13.0
STATIC := geolatent/app/static/index.html  # the web app front end, built by npm + Vite

.PHONY: demo test lint install install-dev clean frontend system-deps npm-deps

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

demo: $(VENV)/.installed $(STATIC)
	$(BIN)/geolatent demo --out demo_output

# System packages (Debian), installed when missing (as root): npm builds the app's front end;
# the tests also drive chromium (through Playwright; never a downloaded browser build), start
# throwaway PostgreSQL clusters and read COG metadata with gdalinfo.
define apt_install
	@missing=""; for spec in $(1); do cmd=$${spec%%=*}; pkg=$${spec##*=}; \
	  command -v $$cmd >/dev/null 2>&1 || ls $$cmd >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y $$missing; \
	  else echo "missing system packages:$$missing; as root: apt-get install -y$$missing"; exit 1; fi; \
	fi
endef

npm-deps:
	$(call apt_install,npm=npm)

system-deps: npm-deps
	$(call apt_install,chromium=chromium /usr/lib/postgresql/*/bin/initdb=postgresql gdalinfo=gdal-bin)

# The web app's front end: npm packages (package-lock.json) built by Vite into the package.
frontend/node_modules/.package-lock.json: frontend/package-lock.json | npm-deps
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
