# Two commands: `make demo` and `make test`. Both set up what they need first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
export DO_NOT_TRACK := 1

.PHONY: demo test install tidb lint docs bench bench-growth clean test-real

demo: install tidb
	$(BIN)/ecom demo

# Two workers, a test file each at a time (a file's module fixtures stay in one process); every test has its
# own databases and warehouse files, so files run side by side.
test: install tidb lint
	$(BIN)/pytest -n 2 --dist loadfile

install: $(STAMP) profiles.yml

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "error: Python 3.11+ is needed (set PYTHON=python3.11)"; exit 1; }
	@$(PYTHON) -m venv $(VENV) || { echo "error: cannot create a virtualenv — on Debian/Ubuntu: apt-get install python3-venv"; exit 1; }
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[dev]"
	@rm -f $(VENV)/.installed-* && touch $@

profiles.yml:
	cp profiles.example.yml profiles.yml

tidb:
	@bash scripts/ensure-tidb.sh

# The real-engine contract suite (tests/real/README.md): the whole pipeline through the CLI against what TIDB_* and
# ECOM_TARGET/SNOWFLAKE_* name, in databases of its own that it drops afterwards. Never part of `make test`; fails
# (not skips) when they name nothing. The local stand-ins only on purpose: make test-real ECOM_REAL_ALLOW_STANDIN=1
test-real: install
	@if [ "$${ECOM_REAL_ALLOW_STANDIN:-}" = 1 ] || [ "$${ECOM_TARGET:-}" = local ]; then bash scripts/ensure-tidb.sh; fi
	ECOM_REAL=1 $(BIN)/pytest -v -p no:cacheprovider tests/real

lint: install
	$(BIN)/ruff check runner loaders tests bench
	$(BIN)/ruff format --check runner loaders tests bench
	$(BIN)/mypy

docs: install
	$(BIN)/ecom dbt docs generate

clean:
	rm -rf .ecom dbt_project/target dbt_project/logs

SCALE ?= 100000
bench: install tidb
	$(BIN)/python -m bench.pipeline --orders $(SCALE)

bench-growth: install
	$(BIN)/python -m bench.growth
