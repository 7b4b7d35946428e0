# Two commands do all the set-up on a fresh machine with python3:
#   make run    start the gateway (bootstraps .venv first)
#   make test   run the whole test suite with trial (bootstraps .venv first)
# and, for CI: make test-oldest, the suite on the oldest supported versions.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TRIAL_ARGS ?= tests

.PHONY: run echo test venv clean

venv: $(STAMP)

# Reinstall when the packaging changes.  An editable install keeps the
# source tree importable; the plugin in twisted/plugins is found through it.
$(STAMP): setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/pip install --quiet --editable '.[test]' --config-settings editable_mode=compat
	touch $(STAMP)

# Without a JWT_SECRET anywhere, start in development mode (no JWT check),
# saying so; with one (environment or .env), the configuration is used as is.
run: $(STAMP)
	@if [ -z "$${JWT_SECRET:-}" ] && ! grep -qs '^ *JWT_SECRET=' .env; then \
	  echo "make run: no JWT_SECRET in the environment or .env; starting with REQUIRE_AUTH=false (development)"; \
	  export REQUIRE_AUTH="$${REQUIRE_AUTH:-false}"; \
	fi; \
	exec $(BIN)/twistd --nodaemon --pidfile= qeetgw

# The echo upstream on the six default service ports, for trying the gateway.
echo: $(STAMP)
	exec $(BIN)/python -m qeetgw_dev.echo

test: $(STAMP)
	$(BIN)/trial --jobs=2 $(TRIAL_ARGS)

# The suite on the oldest versions qeetgw supports (constraints-oldest.txt:
# each install_requires at its lower bound), in a venv of its own; `make
# test` runs it on the newest.  CI runs both.
OLDEST_VENV ?= .venv-oldest
OLDEST_BIN := $(OLDEST_VENV)/bin
OLDEST_STAMP := $(OLDEST_VENV)/.installed

.PHONY: test-oldest
test-oldest: $(OLDEST_STAMP)
	$(OLDEST_BIN)/trial --jobs=2 $(TRIAL_ARGS)

$(OLDEST_STAMP): setup.py pyproject.toml constraints-oldest.txt
	$(PYTHON) -m venv $(OLDEST_VENV)
	$(OLDEST_BIN)/pip install --quiet --upgrade pip setuptools wheel
	$(OLDEST_BIN)/pip install --quiet --constraint constraints-oldest.txt \
	  --editable '.[test]' --config-settings editable_mode=compat
	touch $(OLDEST_STAMP)

clean:
	rm -rf $(VENV) $(OLDEST_VENV) _trial_temp* build dist *.egg-info twisted/plugins/dropin.cache

# The benchmark (bench/run.py; never part of `make test`): qeetgw against nginx
# and the shop's real Express gateway, with wrk on loopback.  EXPRESS_SRC names
# a qeetmart checkout or git directory; its micros/api-gateway is built at its
# pnpm-lock.yaml versions into ~/.cache/qeetgw-bench (once), and without it
# the Express peer is skipped, saying so.  Installs wrk and nginx when missing,
# and stops every process it started.  A quick smoke run:
#   make bench EXPRESS_SRC=~/src/qeetmart BENCH_ARGS="--duration 3 --rounds 1"
BENCH_ARGS ?=
EXPRESS_SRC ?=

.PHONY: bench
bench: $(STAMP)
	$(BIN)/python bench/run.py $(if $(EXPRESS_SRC),--express-src '$(EXPRESS_SRC)') $(BENCH_ARGS)
