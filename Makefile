# Two commands do all the set-up on a fresh machine:
#   make run    run Lapse (Temporal dev server + Web UI, worker, API) with the demo organisation
#   make test   lint, type-check and run the whole test suite
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: run test lint system-deps fuzz chaos bench bench-connectors bench-birthright bench-web bench-reviews bench-notify soak bench-scaling screenshots histories clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.run: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@ $(VENV)/.run

run: $(VENV)/.run
	$(BIN)/lapse run

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .
	$(BIN)/lint-imports

# Real servers the tests start themselves, from Debian's packages: PostgreSQL and OpenLDAP's
# slapd (scim2-server comes from PyPI with the dev extras); and Chromium, which the web UI's browser
# tests drive through Playwright (never `playwright install`: Debian's build is the one used).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
system-deps:
	@missing=""; \
	ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing="$$missing postgresql"; \
	[ -x /usr/sbin/slapd ] || missing="$$missing slapd ldap-utils"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing (Debian packages) for the connector and browser tests"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  $(SUDO) systemctl disable --now slapd >/dev/null 2>&1 || $(SUDO) service slapd stop >/dev/null 2>&1 || true; \
	fi

test: lint system-deps
	$(BIN)/pytest --durations=25

# The API fuzz suite, large: schemathesis over the OpenAPI document (`make test` runs it small).
FUZZ_EXAMPLES ?= 100
fuzz: $(VENV)/.dev system-deps
	LAPSE_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest tests/api/test_fuzz.py -p no:cacheprovider -s

# The chaos suite, full size: lifecycles against a real PostgreSQL while the worker, the Temporal dev server,
# the API and the target are broken under them (`make test` runs it small: tests/test_chaos.py).
CHAOS_LIFECYCLES ?= 1000
# With it, the abuse tests at full size: 1,000 extension attempts on one grant, 30 days of a failing revoke.
chaos: $(VENV)/.dev system-deps
	LAPSE_ABUSE_ATTEMPTS=1000 LAPSE_FAILING_REVOKE_DAYS=30 $(BIN)/pytest -p no:cacheprovider \
	  "tests/workflows/test_request_abuse.py::test_f1_endless_extensions_leave_the_history_small" \
	  "tests/workflows/test_long_expiry.py::test_f2_days_of_failing_revokes_keep_every_run_small"
	$(BIN)/python -m bench.chaos --lifecycles $(CHAOS_LIFECYCLES) --json bench/results-chaos-$$(date -u +%F).json

bench: $(VENV)/.dev
	$(BIN)/python -m bench.lifecycle

bench-connectors: $(VENV)/.dev system-deps
	$(BIN)/python -m bench.connectors

bench-birthright: $(VENV)/.dev
	$(BIN)/python -m bench.birthright

# The web UI's figures: sign-in overhead per call, the approvals inbox (10,000 open decisions among 100,000
# pending requests) and the permissions page (1,000,000 grants), each on SQLite and PostgreSQL.
bench-web: $(VENV)/.dev system-deps
	$(BIN)/python -m bench.signin --json bench/results-signin-$$(date -u +%F).json
	$(BIN)/python -m bench.approvals
	$(BIN)/python -m bench.permissions

# Access reviews: starting a 100,000-item campaign on a real stack, and the reviewers' pages and bulk decisions.
bench-reviews: $(VENV)/.dev system-deps
	$(BIN)/python -m bench.reviews --out bench/results-reviews-$$(date -u +%F).json
	$(BIN)/python -m bench.review_pages

# Notifications (issue 12), against a fake Slack: notice latency at 10 lifecycles/s, the lifecycle with
# notifications off and on (alternating), and 10,000 expiring-soon warnings for grants ending in one minute.
# About an hour (the warnings: ~45 min on a 2-CPU machine); needs a quiet machine.
bench-notify: $(VENV)/.dev
	$(BIN)/python -m bench.notifications --json bench/results-notify-$$(date -u +%F).json

# Operability (issue 13). The soak: 100,000 sleeping P7D grants held by the worker (its memory and the Temporal
# server's DB per grant), then 1 hour at 5 lifecycles/s on top of them: about 2 hours; SOAK_ARGS to make it smaller
# (e.g. SOAK_ARGS="--grants 2000 --soak-seconds 60"). Both need a quiet machine.
SOAK_ARGS ?=
soak: $(VENV)/.dev
	$(BIN)/python -m bench.soak --json bench/results-soak-$$(date -u +%F).json $(SOAK_ARGS)

# The lifecycle benchmark with 1, 2 and 3 worker processes at rising rates, bare Temporal at the same rates, and
# where the limit is (CPU per process, schedule-to-start, the app DB's write lock): about 30-40 minutes.
SCALING_ARGS ?=
bench-scaling: $(VENV)/.dev
	$(BIN)/python -m bench.scaling --json bench/results-scaling-$$(date -u +%F).json $(SCALING_ARGS)

# The README's pictures of Lapse's messages (docs/screenshots/): the admin page's previews, in Chromium.
screenshots: $(VENV)/.dev system-deps
	$(BIN)/python -m bench.screenshots --out docs/screenshots

histories: $(VENV)/.dev
	$(BIN)/python -m tests.histories.record $(TAG)

clean:
	rm -rf data
