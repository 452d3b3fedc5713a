# The two commands of the README: `make run` and `make test`.
# Both set up everything they need on a fresh Debian machine.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Debian packages the test suite starts for real (none of it talks to the internet):
# a DNS server for the backscatter test, and CPython's own e-mail test corpus when this
# Python was installed without its test package (Debian splits it out).
PY_TESTSUITE := $(shell $(PYTHON) -c "import os, sys, sysconfig; \
  print('' if os.path.isdir(os.path.join(sysconfig.get_paths()['stdlib'], 'test', 'test_email')) \
  else 'libpython%d.%d-testsuite' % sys.version_info[:2])" 2>/dev/null)
TEST_DEBS ?= dnsmasq-base openssl $(PY_TESTSUITE)

.PHONY: run test debs clean bench

run: $(VENV)/.installed
	$(BIN)/mailflow serve

test: $(VENV)/.test-installed debs
	$(BIN)/ruff check src tests plugins bench
	$(BIN)/mypy
	$(BIN)/pytest

$(BIN)/python:
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  echo "python3-venv is missing: installing it with apt-get"; \
	  rm -rf $(VENV); \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv \
	  && $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.test-installed: $(VENV)/.installed pyproject.toml $(wildcard plugins/*/pyproject.toml)
	$(BIN)/pip install -q -e '.[test]'
	for p in plugins/*/; do [ -f "$$p/pyproject.toml" ] && $(BIN)/pip install -q -e "$$p"; done; true
	touch $@

debs:
	@missing=""; for d in $(TEST_DEBS); do dpkg -s $$d >/dev/null 2>&1 || missing="$$missing $$d"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages for the tests:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

bench: $(VENV)/.test-installed
	$(BIN)/python bench/throughput.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
