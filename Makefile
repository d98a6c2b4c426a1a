# certreconcile: the two set-up commands are `make demo` and `make test`.
SHELL := /bin/bash
# The venv's interpreter: the distribution's /usr/bin/python3 when it is 3.11 or newer and can make a venv, else
# python3 from PATH; `make PYTHON=...` chooses another. pyenv's default build (a shared libpython, no
# --enable-optimizations) is slower than Debian's optimised one, whose executable has libpython linked in: on the
# 2-core machine of issue 16 the same work took 6 to 24 % less CPU on Debian's (bench/README.md).
PYTHON ?= $(shell /usr/bin/python3 -c 'import sys, ensurepip, venv; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && echo /usr/bin/python3 || echo python3)
VENV ?= .venv
BIN := $(VENV)/bin
# Debian packages the tests need (installed only when missing); lego is for bench/peers.py.
DEBIAN_PACKAGES ?= git openssh-client openssl bind9 bind9-utils bind9-dnsutils pdns-server pdns-backend-sqlite3 pebble caddy nginx haproxy shellcheck prometheus openssh-server systemd lego
DEMO_DIR ?= examples/desired-state
# What `make image` needs: buildah builds and runs the image, mmdebstrap bootstraps its base from the Debian mirror.
IMAGE_DEBIAN_PACKAGES ?= buildah mmdebstrap
IMAGE ?= localhost/certreconcile:dev

# `make demo` installs the runtime only (the stamp RUNTIME); `make test` adds the test extras (TESTENV).
RUNTIME := $(VENV)/.certreconcile-runtime
TESTENV := $(VENV)/.certreconcile-test

.PHONY: help venv demo test lint typecheck importlint unit soak deps image-deps image bench bench-year schema dist clean

help:
	@echo "make demo   - install into $(VENV), apply $(DEMO_DIR) on the embedded defaults, show status"
	@echo "make test   - install everything the tests need (Debian packages too), run lint, types and tests"
	@echo "make soak   - the long randomized tests: crash injection at every step and at random moments, the loader fuzz, every bad input through plan and apply"
	@echo "make bench  - run the benchmarks in bench/, the full simulated year last (about 29 to 39 minutes here, with the machine's speed of the day)"
	@echo "make bench-year - the full simulation alone: 10,000 certificates over 365 days (about 21 to 29 minutes here)"
	@echo "make dist   - build the wheel and the sdist into dist/ and check them with twine"
	@echo "make image  - build the container image with buildah (base bootstrapped with mmdebstrap), run --version and the demo in it"

$(RUNTIME): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(TESTENV): $(RUNTIME) tests/plugins/certreconcile-example-target/pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test]'
	# a third-party target kind (its own package), for tests/e2e/test_third_party_plugin.py
	$(BIN)/python -m pip install --quiet --no-deps -e tests/plugins/certreconcile-example-target
	touch $@

venv: $(TESTENV)

# The runtime alone: the demo runs on the embedded defaults (embedded PostgreSQL, local KMS, local CA, files).
demo: $(RUNTIME)
	$(BIN)/certreconcile apply --dir $(DEMO_DIR) --auto-approve
	$(BIN)/certreconcile status --dir $(DEMO_DIR)

deps image-deps: PACKAGES = $(if $(filter image-deps,$@),$(IMAGE_DEBIAN_PACKAGES),$(DEBIAN_PACKAGES))
deps image-deps:
	@missing=""; for p in $(PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

lint: venv
	$(BIN)/ruff check src tests bench

typecheck: venv
	$(BIN)/mypy --strict src

importlint: venv
	$(BIN)/lint-imports

unit: venv
	$(BIN)/pytest -q -p no:cacheprovider

test: deps venv lint typecheck importlint unit

# The tests marked `soak` (pyproject's addopts deselects them from `make test`; a later -m wins), then
# the loader fuzz with its large profile and every bad-input case through plan and apply (CERTRECONCILE_SOAK=1).
soak: deps venv image
	$(BIN)/pytest -q -p no:cacheprovider -m soak
	CERTRECONCILE_SOAK=1 $(BIN)/pytest -q -p no:cacheprovider tests/property/test_loader_fuzz.py tests/e2e/test_cli_inputs.py

# The container image (Containerfile), built and run with buildah; too slow for `make test` (about 2 minutes
# from nothing, 40 s with the base cached in build/image/). Root is needed (buildah's vfs storage, chroot).
image: image-deps
	IMAGE=$(IMAGE) packaging/container/build-image.sh
	IMAGE=$(IMAGE) packaging/container/test-image.sh

# Three runs per row (the scripts' default is 5 where the spread is wide), 5 certificates for the peers that take
# seconds each with one process and 40 for the others: what `make bench` prints within its time; the scripts alone
# take more. The last line is the scripts' wall time (issue 16: within 30 minutes), the set-up before them apart.
bench: deps venv
	@mkdir -p .bench && date +%s > .bench/started
	$(BIN)/python bench/desired_load.py
	$(BIN)/python bench/plan_scale.py --repeat 3
	$(BIN)/python bench/cli_plan.py --repeat 3
	$(BIN)/python bench/run_cycle.py
	$(BIN)/python bench/renewal_query.py
	$(BIN)/python bench/issuance.py
	$(BIN)/python bench/ari_refresh.py
	$(BIN)/python bench/peers.py --serial-certificates 5 --peer-certificates 40
	$(BIN)/python bench/distribution.py
	$(BIN)/python bench/fleet.py
	$(BIN)/python bench/fanout.py
	$(BIN)/python bench/rewrap.py
	$(BIN)/python bench/simulate.py $(YEAR)
	@echo "make bench: the scripts took $$(( $$(date +%s) - $$(cat .bench/started) )) s"

# The full simulation (issue 16): 10,000 certificates over 365 days, two replicas taking turns. About 21 to 29
# minutes on the 2-core machine, the last script of `make bench` (bench/README.md); this target runs it alone.
YEAR = --certificates 10000 --days 365 --interval-hours 12 --staggered --mix 49,49,2 --per-domain 100
bench-year: venv
	$(BIN)/python bench/simulate.py $(YEAR)

dist: venv
	rm -rf dist
	$(BIN)/python -m build --outdir dist .
	$(BIN)/twine check --strict dist/*

# The committed JSON Schema holds the built-in kinds only (`certreconcile schema` prints every installed kind).
schema: venv
	$(BIN)/python -c 'import sys; from certreconcile.desired.schema import render_json_schema as r; sys.stdout.write(r(builtin_only=True))' > schemas/desired-state.schema.json

clean:
	-test -x $(BIN)/certreconcile && $(BIN)/certreconcile db stop --dir $(DEMO_DIR)
	rm -rf $(VENV) .bench dist build .mypy_cache .ruff_cache .pytest_cache examples/desired-state/.certreconcile
