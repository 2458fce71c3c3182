# Two commands: `make demo` and `make test`. Both set up what they need first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
export DO_NOT_TRACK := 1

.PHONY: demo test install tidb lint docs bench bench-growth clean

demo: install tidb
	$(BIN)/ecom demo

test: install tidb lint
	$(BIN)/pytest

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
