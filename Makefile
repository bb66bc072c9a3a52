# Two commands on a fresh machine (Python 3.11+ with venv, and make):
#   make serve   run the server on its embedded defaults (a CA is created in ./var)
#   make test    run the whole test suite, with ruff and mypy --strict
#   make unit    the fast tier: no peer program but openssl, no PostgreSQL
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DATA   ?= var

.PHONY: serve test lint typecheck unit bench bench-acme bench-est bench-agent bench-monitor clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "certwright needs Python 3.11 or newer ($(PYTHON) is older)"; exit 1; }
	@$(PYTHON) -m venv $(VENV) || \
	  { echo "could not create $(VENV): install the venv module (Debian: apt-get install python3-venv)"; exit 1; }
	$(BIN)/python -m pip install -q --upgrade pip

# constraints.txt pins every package to the version the tests passed with.
$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	@touch $@

serve: $(VENV)/.installed
	$(BIN)/certwright serve --data $(DATA) --init

# ruff, then the import contracts of the layers (DESIGN.md, "Layers").
lint: $(VENV)/.installed
	$(BIN)/ruff check src tests bench tools
	$(BIN)/python tools/check_layers.py src

typecheck: $(VENV)/.installed
	$(BIN)/mypy src

test: lint typecheck
	$(BIN)/pytest

# The fast tier: the tests marked neither `peer` nor `postgres` (tests/conftest.py fails
# an unmarked test that asks for any other program), so no certwright server driven by
# curl, no ACME client, Pebble, nginx, named or PostgreSQL; openssl still verifies each CA
# directory a test creates. 436 of the 730 tests, about 100 s on two shared cores
# (the whole suite, CERTWRIGHT_REQUIRE_PEERS=1: 730 tests in about 6.5 minutes).
unit: $(VENV)/.installed
	$(BIN)/pytest -m "not peer and not postgres"

bench: $(VENV)/.installed
	$(BIN)/python bench/issuance.py

# ACME end to end against Pebble (needs Debian's pebble package).
bench-acme: $(VENV)/.installed
	$(BIN)/python bench/acme_throughput.py

# EST simpleenroll end to end (Basic and mutual TLS) beside the Authority's own rate.
bench-est: $(VENV)/.installed
	$(BIN)/python bench/est_throughput.py

# `certwright agent plan` and `agent status` over 500 specs (static names and nginx).
bench-agent: $(VENV)/.installed
	$(BIN)/python bench/agent_plan.py

# `monitor check` over 100,000 certificates and 1,000 / 10,000 expectations.
bench-monitor: $(VENV)/.installed
	$(BIN)/python bench/monitor_check.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
