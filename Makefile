# Two commands set everything up on a fresh machine:
#   make run   — virtualenv, install, migrate the embedded SQLite database, demo data, serve on 127.0.0.1:8000
#                with the sandbox channels (local simulators of Alipay, WeChat Pay and two banks on 8101-8104)
#   make test  — lint and the whole test suite (SQLite and PostgreSQL)

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export ZHANGFANG_ADMIN_API_KEY ?= zf-demo-admin-key

.PHONY: run test install lint bench bench-payments bench-accounting clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/zhangfang db upgrade
	$(BIN)/zhangfang demo load
	ZHANGFANG_SANDBOX=1 $(BIN)/zhangfang serve --host 127.0.0.1 --port 8000

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

test: lint
	$(BIN)/pytest -n 2 --dist loadgroup

bench: install
	$(BIN)/python benchmarks/ledger_throughput.py

bench-payments: install
	$(BIN)/python benchmarks/payments_api.py

bench-accounting: install
	$(BIN)/python benchmarks/accounting_sync.py

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache .hypothesis
