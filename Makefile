# evtopup — `make run` runs the whole system, `make test` runs the tests. Both build what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= config/demo.toml
SECRETS := .run/secrets.env
EVTOPUP := $(BIN)/evtopup --config $(CONFIG)
DEMO_USER ?= demo-user-1
N ?= 5000

.PHONY: run run-ampeco test lint bench bench-ampeco mutation setup secrets launch-url clean new-processor catalogs catalogs-update

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The page's catalogues (services/page/locales/*/LC_MESSAGES/page.po) compiled to what it reads; and,
# after a change of services/page/messages.py, every catalogue brought up to it (new texts to translate).
catalogs: $(STAMP)
	$(BIN)/python -m services.page.catalogs compile

catalogs-update: $(STAMP)
	$(BIN)/python -m services.page.catalogs update

# Adds whatever secret the file lacks (a file from an older version gains the new ones).
secrets:
	@scripts/demo-secrets.sh $(SECRETS)

setup: $(STAMP) catalogs secrets
	scripts/ensure-servers.sh
	scripts/ensure-vhost.sh evtopup
	set -a && . ./$(SECRETS) && set +a && $(EVTOPUP) broker-users && $(EVTOPUP) setup

run: setup
	@set -a && . ./$(SECRETS) && set +a && exec $(EVTOPUP) run all --launch-url-for $(DEMO_USER)

# The same with balances in the AMPECO simulator (its own process on :8123, users 1..1000) and the
# page opened as AMPECO's app opens it: config/demo-ampeco.toml, its own databases and vhost.
AMPECO_CONFIG := config/demo-ampeco.toml
run-ampeco: $(STAMP) catalogs secrets
	scripts/ensure-servers.sh
	scripts/ensure-vhost.sh evtopup_ampeco
	@set -a && . ./$(SECRETS) && set +a && \
	  { $(BIN)/python -m tests.simulators.ampeco --port 8123 --api-token-env EVTOPUP__CSMS__API_TOKEN \
	      --users 1..1000 --balance 5.00 & sim=$$!; trap 'kill $$sim' EXIT INT TERM; sleep 1; \
	    $(BIN)/evtopup --config $(AMPECO_CONFIG) broker-users && $(BIN)/evtopup --config $(AMPECO_CONFIG) setup && \
	    $(BIN)/evtopup --config $(AMPECO_CONFIG) run all --launch-url-for 1; }

launch-url: $(STAMP) secrets
	@set -a && . ./$(SECRETS) && set +a && $(EVTOPUP) launch-url --user $(DEMO_USER)

test: $(STAMP) catalogs
	scripts/ensure-servers.sh
	$(BIN)/python -m pytest -q --durations=15

# A new processor from the template (services/payments/processors/_template): `make new-processor NAME=acmepay`.
new-processor: $(STAMP)
	@test -n "$(NAME)" || { echo "usage: make new-processor NAME=<name>" >&2; exit 2; }
	$(BIN)/python scripts/new-processor $(NAME)

lint: $(STAMP)
	$(BIN)/ruff check services shared tests bench
	$(BIN)/mypy --strict services shared

# Mutation testing of the pure modules ([tool.mutmut] in pyproject.toml) against tests/unit only; slow, so
# not part of `make test`. One worker by default (MUTATION_JOBS=2 for more); mutants and results in mutants/.
MUTATION_JOBS ?= 1
mutation: $(STAMP)
	$(BIN)/mutmut run --max-children $(MUTATION_JOBS)
	$(BIN)/mutmut results

# The floor (FLOOR: bare_pipeline.py, the bare durable work of a top-up on this machine, in a venv of
# its own with its pinned packages) and then the sandbox top-up pipeline with the built-in ledger
# (bursts of N, a steady load, few and many users, a preloaded history, two replicas): one table
# against the issue's targets, one JSON result in bench/results/ (bench/suite.py).
FLOOR ?= $(or $(EVTOPUP_FLOOR_DIR),../shared/floor)
FLOOR_VENV := .venv-floor
FLOOR_STAMP := $(FLOOR_VENV)/.installed

$(FLOOR_STAMP): $(FLOOR)/requirements.txt
	$(PYTHON) -m venv $(FLOOR_VENV)
	$(FLOOR_VENV)/bin/pip install --quiet -r $(FLOOR)/requirements.txt
	touch $(FLOOR_STAMP)

bench: $(STAMP) catalogs $(FLOOR_STAMP)
	scripts/ensure-servers.sh
	$(BIN)/python -m bench.suite --floor-python $(FLOOR_VENV)/bin/python --floor-dir $(FLOOR) --topups $(N)

# Every credit delivered to the AMPECO simulator at a steady AMPECO_RATE, and the delivery dispatcher
# alone draining AMPECO_N credits of 500 users.
AMPECO_N ?= 4000
AMPECO_RATE ?= 200
bench-ampeco: $(STAMP) catalogs
	scripts/ensure-servers.sh
	$(BIN)/python -m bench.topup_bench --csms ampeco --topups $(AMPECO_N) --rate $(AMPECO_RATE)
	$(BIN)/python -m bench.delivery_bench --deliveries $(AMPECO_N) --users 500

clean:
	rm -rf $(VENV) $(FLOOR_VENV) .run bench/results
