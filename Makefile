# The two commands of the README: `make run` and `make test`.
# Both set up everything they need on a fresh Debian machine.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Debian packages the test suite starts for real (none of it talks to the internet):
# a DNS server for the backscatter test, Postfix for tests/integration/test_postfix.py
# (a private instance under a tmp dir: the system's own is neither configured nor
# started), PostgreSQL for the store suite (a private cluster, the system's never started),
# Prometheus for tests/integration/test_prometheus_*.py (promtool checks and unit-tests the
# alert rules; a private server under a tmp dir scrapes a test daemon; the system's own
# service is never started), Chromium for tests/integration/test_report_browser.py
# (headless, driven over its DevTools protocol on loopback), and CPython's own e-mail test
# corpus when this Python was installed without its test package (Debian splits it out).
PY_TESTSUITE := $(shell $(PYTHON) -c "import os, sys, sysconfig; \
  print('' if os.path.isdir(os.path.join(sysconfig.get_paths()['stdlib'], 'test', 'test_email')) \
  else 'libpython%d.%d-testsuite' % sys.version_info[:2])" 2>/dev/null)
TEST_DEBS ?= dnsmasq-base openssl postfix sasl2-bin postgresql prometheus chromium $(PY_TESTSUITE)

# The report's chart library: plotly.js's partial bundle of bar, scatter and pie charts
# (the report draws bars only), a quarter of the full plotly.min.js the plotly wheel
# ships. Taken from the npm registry (no Node.js needed: scripts/fetch_npm_file.py),
# checked against its digest, and installed in the package (git ignores it); without it
# the report falls back on the full bundle.
PLOTLY_BASIC_VERSION := 4.1.1
PLOTLY_BASIC_SHA256 := 99784e3abfb07b142a15e521a439e6d9addceadb3f79553fd24c72774f0649ba
PLOTLY_BASIC_JS     := src/mailflow/report/static/plotly-basic.min.js

.PHONY: run test debs clean bench bench-debs bench-store bench-profile

# /metrics, /healthz and /report on loopback (the ready line says where)
RUN_METRICS ?= 127.0.0.1:9125

run: $(VENV)/.installed
	$(BIN)/mailflow serve --metrics $(RUN_METRICS)

test: $(VENV)/.test-installed debs
	$(BIN)/ruff check src tests plugins bench scripts
	$(BIN)/mypy
	$(BIN)/pytest -n 4 --dist loadfile

$(BIN)/python:
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  echo "python3-venv is missing: installing it with apt-get"; \
	  rm -rf $(VENV); \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv \
	  && $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install -q --upgrade pip

# the plugin packages under plugins/ too: the shipped rules enable some (rules/chain.yaml)
$(VENV)/.installed: $(BIN)/python pyproject.toml $(wildcard plugins/*/pyproject.toml) $(PLOTLY_BASIC_JS)
	$(BIN)/pip install -q -e .
	for p in plugins/*/; do [ -f "$$p/pyproject.toml" ] && $(BIN)/pip install -q -e "$$p"; done; true
	touch $@

$(PLOTLY_BASIC_JS):
	$(PYTHON) scripts/fetch_npm_file.py plotly.js-basic-dist-min $(PLOTLY_BASIC_VERSION) \
	  plotly-basic.min.js $(PLOTLY_BASIC_SHA256) $@

$(VENV)/.test-installed: $(VENV)/.installed pyproject.toml $(wildcard plugins/*/pyproject.toml)
	$(BIN)/pip install -q -e '.[test]'
	touch $@

# Installs what is missing, non-interactively, and starts no service meanwhile:
# - postfix is preseeded "No configuration": no /etc/postfix/main.cf, so neither its init
#   script nor its systemd unit starts a system instance, now or at boot;
# - a policy-rc.d answering 101 ("forbidden") keeps invoke-rc.d from starting any service
#   during the install (an existing one, as Docker images ship, is left alone);
# - prometheus: the same policy-rc.d keeps its service from starting during the install,
#   --no-install-recommends leaves out prometheus-node-exporter, and the service the
#   package enabled is disabled then (systemd unit and init script: not started at boot
#   either; stopped if systemd runs). The tests start /usr/bin/prometheus themselves, on
#   a free loopback port, and never query the system's;
# - --no-remove: rather fail than replace the machine's MTA (exim4 conflicts with postfix);
#   then install postfix yourself (test_postfix.py needs it);
# - the postfix user joins the sasl group, as deploy/postfix/README.md has an administrator
#   do: the private Postfix's chrooted submission smtpd reads agents' sasldb through it.
POLICY_RC := /usr/sbin/policy-rc.d

debs:
	@missing=""; for d in $(TEST_DEBS); do \
	  [ "$$(dpkg-query -W -f='$${db:Status-Status}' $$d 2>/dev/null)" = installed ] \
	    || missing="$$missing $$d"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages for the tests:$$missing"; \
	  case " $$missing " in *" postfix "*) \
	    echo "postfix postfix/main_mailer_type select No configuration" \
	      | debconf-set-selections;; esac; \
	  if [ ! -e $(POLICY_RC) ]; then \
	    trap 'rm -f $(POLICY_RC)' EXIT; trap 'exit 1' HUP INT TERM; \
	    printf '#!/bin/sh\nexit 101\n' >$(POLICY_RC) && chmod 755 $(POLICY_RC); fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends --no-remove $$missing || { \
	    echo "apt-get failed (would it remove an MTA? see debs in the Makefile)" >&2; exit 1; }; \
	  case " $$missing " in *" prometheus "*) \
	    deb-systemd-helper disable prometheus.service >/dev/null 2>&1 || true; \
	    update-rc.d prometheus disable >/dev/null 2>&1 || true; \
	    if [ -d /run/systemd/system ]; then systemctl stop prometheus.service || true; fi;; \
	  esac; \
	fi; \
	if getent group sasl >/dev/null && id postfix >/dev/null 2>&1 \
	    && ! id -nG postfix | grep -qw sasl; then \
	  echo "adding the postfix user to the sasl group (deploy/postfix/README.md)"; \
	  adduser --quiet postfix sasl; fi

# mailflow against its peers (bench/peers.py): the sink, a bare relay, Haraka (installed
# from npm under bench/.haraka), mailflow on SQLite (1 worker, 1 per core) and PostgreSQL;
# the table is printed and written under bench/results/. BENCH_ARGS=--quick for a smoke run.
# (node and npm: Debian's nodejs and npm, unless they are there already, as NodeSource's
# nodejs ships npm and conflicts with Debian's npm package)
BENCH_DEBS ?= postfix postgresql
BENCH_ARGS ?=

bench: $(VENV)/.test-installed bench-debs
	$(BIN)/python bench/peers.py $(BENCH_ARGS)

bench-debs:
	@$(MAKE) --no-print-directory debs TEST_DEBS="$(BENCH_DEBS)"
	@command -v node >/dev/null && command -v npm >/dev/null \
	  || $(MAKE) --no-print-directory debs TEST_DEBS="nodejs npm"

# mailflow's cost per message with 1,000 and 1,000,000 cases in its store (bench/store_size.py)
bench-store: $(VENV)/.test-installed bench-debs
	$(BIN)/python bench/store_size.py $(BENCH_ARGS)

# where a message's time goes, under py-spy (bench/profiling.py)
bench-profile: $(VENV)/.test-installed bench-debs
	$(BIN)/pip install -q py-spy
	$(BIN)/python bench/profiling.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache $(PLOTLY_BASIC_JS)
