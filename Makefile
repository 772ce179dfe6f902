# Two entry points (see README): `make demo` runs the product on the embedded default,
# `make test` runs the test suite against the machine's Postgres and Redis.
PY := .venv/bin/python
PIP := .venv/bin/pip
PKGS := -e shared -e services/api -e services/gpu_worker -e services/llm_worker -e client

.PHONY: setup services test test-all lint demo bench clean

# The venv is rebuilt only when a dependency list changes (stamp file).
.venv/.stamp: shared/pyproject.toml services/*/pyproject.toml client/pyproject.toml requirements-dev.txt
	test -x $(PY) || python3.11 -m venv .venv
	$(PIP) install -q --upgrade pip
	# torch first and pinned: pip takes the CPU build from this machine's disk.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q $(PKGS) -r requirements-dev.txt
	touch $@

setup: .venv/.stamp

services:
	bash scripts/ensure_services.sh

lint: setup
	.venv/bin/ruff check .

test: setup services
	.venv/bin/ruff check .
	$(PY) -m pytest -q

test-all: setup services
	$(PY) -m pytest -q -m ""

demo: setup
	.venv/bin/spdlab demo

bench: setup services
	for script in bench/bench_*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

clean:
	rm -rf .venv var
