# The two commands a user needs: `make reproduce-mx-routing` and `make test`.
# Both create the virtualenv, install dependencies and build missing images.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
# Optional: MTA=postfix|exim|sendmail, SUITE=bookworm|trixie
RUN_ARGS := $(if $(MTA),--mta $(MTA)) $(if $(SUITE),--suite $(SUITE))

.PHONY: all venv host-tools images reproduce-mx-routing reproduce-relay-bounce \
        reproduce-no-fallback reproduce-resolver-race reproduce-round-robin \
        reproduce-transition-addresses reproduce-privacy-addresses \
        reproduce matrix test test-engine unit integration bench down clean

all: test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $@

venv: $(STAMP)

# Host packages, installed when root on a Debian-family host (like CI), else named:
#   debootstrap      builds the Debian base image where no registry is reachable
#                    (with a registry, testbed/debian is pulled and needs neither);
#   docker-registry  the stand-in registry the pull-path integration test serves on loopback;
#   tshark           the integration tests read the lab's packet captures with Wireshark's reader;
#   graphviz         `dot` draws the topology (testbed graph, report.html);
#   chromium         the unit test that opens report.html in a headless browser.
HOST_TOOLS := debootstrap:/usr/sbin/debootstrap docker-registry:/usr/bin/docker-registry tshark:/usr/bin/tshark \
              graphviz:/usr/bin/dot chromium:/usr/bin/chromium

host-tools:
	@missing=""; for tool in $(HOST_TOOLS); do \
	  [ -x "$${tool#*:}" ] || missing="$$missing $${tool%%:*}"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else \
	  echo "note: missing$$missing (apt-get install$$missing): debootstrap builds the base image where no registry is reachable; docker-registry and tshark are needed by the integration tests; graphviz draws topologies; chromium is needed by the report test"; \
	fi

images: $(STAMP) host-tools
	$(BIN)/testbed images --build $(if $(SUITE),--suite $(SUITE))

reproduce-mx-routing: $(STAMP) host-tools
	$(BIN)/testbed reproduce mx-routing $(RUN_ARGS)

reproduce-relay-bounce: $(STAMP) host-tools
	$(BIN)/testbed reproduce relay-bounce $(RUN_ARGS)

# The study's client findings (docs/clients.md): slide 23 and slides 24-26.
reproduce-no-fallback: $(STAMP) host-tools
	$(BIN)/testbed reproduce no-fallback $(RUN_ARGS)

reproduce-resolver-race: $(STAMP) host-tools
	$(BIN)/testbed reproduce resolver-race $(RUN_ARGS)

# Slides 7-8: longest-prefix matching (RFC 3484 rule 9) against round-robin DNS.
reproduce-round-robin: $(STAMP) host-tools
	$(BIN)/testbed reproduce round-robin $(RUN_ARGS)

# Slide 30: Teredo- and 6to4-shaped AAAA against glibc's address selection (docs/clients.md).
reproduce-transition-addresses: $(STAMP) host-tools
	$(BIN)/testbed reproduce transition-addresses $(RUN_ARGS)

# Slide 30: RFC 4941 temporary addresses against a relay that permits hosts by
# address. MTA=exim|sendmail puts that MTA on the relay (and the other MTA host).
reproduce-privacy-addresses: $(STAMP) host-tools
	$(BIN)/testbed reproduce privacy-addresses $(RUN_ARGS)

reproduce: reproduce-mx-routing reproduce-relay-bounce reproduce-no-fallback reproduce-resolver-race \
           reproduce-round-robin reproduce-transition-addresses reproduce-privacy-addresses

# Every test: unit tests, then integration tests against real containers on
# this machine's engine, then the engine-sensitive ones again on current
# engines run nested (Debian forky's docker.io 28.5, trixie's 26.1).
# Without a Docker engine this fails (it never skips) and says why.
test: $(STAMP) host-tools
	$(BIN)/testbed doctor
	$(BIN)/pytest tests
	$(MAKE) --no-print-directory test-engine ENGINE_SUITE=forky
	$(MAKE) --no-print-directory test-engine ENGINE_SUITE=trixie ENGINE_TESTS="$(ENGINE_TESTS_SHORT)"

# The tests that depend on how the engine builds networks: both reproductions
# with every MTA, network isolation, cleanup on every exit path, step errors, and
# the capture sidecars (the run's and `testbed capture`'s) in the engine's own network namespace.
ENGINE_SUITE ?= forky
ENGINE_TESTS ?= tests/integration/test_reproductions.py tests/integration/test_exim_reproductions.py \
                tests/integration/test_sendmail_reproductions.py tests/integration/test_network.py \
                tests/integration/test_lifecycle.py tests/integration/test_step_errors.py \
                tests/integration/test_captures.py tests/integration/test_live_ops.py
ENGINE_TESTS_SHORT := tests/integration/test_reproductions.py tests/integration/test_network.py \
                      tests/integration/test_lifecycle.py

# One nested engine for the length of the run, removed after it (also on Ctrl-C).
test-engine: $(STAMP) host-tools
	$(BIN)/testbed engine run --suite $(ENGINE_SUITE) --images bookworm -- \
	  sh -c '$(BIN)/testbed doctor && $(BIN)/pytest $(ENGINE_TESTS)'

unit: $(STAMP) host-tools
	$(BIN)/pytest tests/unit

integration: $(STAMP) host-tools
	$(BIN)/testbed doctor
	$(BIN)/pytest tests/integration

bench: $(STAMP) host-tools
	$(BIN)/python scripts/bench.py

down: $(STAMP)
	$(BIN)/testbed down --all

clean:
	rm -rf $(VENV) runs .pytest_cache

# Every reproduction x variant x MTA (plus mixed assignments): an outcomes table.
# SUITES="bookworm trixie" compares Debian releases; MTAS="exim" narrows it down;
# BASELINE=FILE compares with a baseline, SHARD=K/N runs one share (docs/regression.md).
matrix: $(STAMP) host-tools
	$(BIN)/testbed matrix $(foreach s,$(SUITES),--suite $(s)) $(foreach m,$(MTAS),--mta $(m)) \
	  $(if $(BASELINE),--baseline $(BASELINE)) $(if $(SHARD),--shard $(SHARD))
