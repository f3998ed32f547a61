# ml_stack — a pure-SQL extension bundle built with PGXS.
#
# The version comes from the control file (single source of truth). `make` builds
# extension/ml_stack--$(EXTVERSION).sql by concatenating the sources listed in
# sql/ml_stack.manifest. Install scripts of released versions and hand-written
# upgrade scripts live in extension/ and are never regenerated or edited.

EXTNAME     := ml_stack
EXTVERSION  := $(shell sed -n "s/^default_version *= *'\(.*\)'/\1/p" control/$(EXTNAME).control)
# The Debian server's own pg_config, when installed (another client version's may come first on PATH).
PG_CONFIG   ?= $(firstword $(wildcard /usr/lib/postgresql/15/bin/pg_config) pg_config)

CURRENT_SCRIPT := extension/$(EXTNAME)--$(EXTVERSION).sql
MANIFEST       := sql/$(EXTNAME).manifest
SOURCES        := $(shell grep -v '^\#' $(MANIFEST) 2>/dev/null | sed 's|^|sql/|')

MODULEDIR   := extension
DATA        := control/$(EXTNAME).control $(sort $(wildcard extension/*.sql) $(CURRENT_SCRIPT))

PYTHON_VENV := .venv
VENV_PY     := $(PYTHON_VENV)/bin/python

all: $(CURRENT_SCRIPT)

$(CURRENT_SCRIPT): $(MANIFEST) $(SOURCES) control/$(EXTNAME).control
	sh scripts/build_script.sh $(EXTVERSION) $(MANIFEST) > $@.tmp
	mv $@.tmp $@

# On a fresh machine PGXS arrives with `make setup` (postgresql-server-dev-15);
# the targets below run `make install` in a sub-make, which finds it then.
PGXS := $(shell $(PG_CONFIG) --pgxs 2>/dev/null)
ifneq ($(wildcard $(PGXS)),)
include $(PGXS)
else
install:
	@echo "PGXS not found: run 'make setup' (as root) first" >&2; exit 1
endif

.PHONY: setup test demo bench dist updatecheck check-built

# Everything a fresh Debian 12 machine needs (apt packages, a virtual environment
# with pinned test dependencies). Idempotent.
setup:
	scripts/setup.sh

test: setup all
	$(MAKE) install
	scripts/run_tests.sh

demo: setup all
	$(MAKE) install
	demo/run.sh

bench: setup all
	$(MAKE) install
	$(VENV_PY) bench/predict_linear.py
	$(VENV_PY) bench/train_linear.py

# The committed install script must be what the sources build (no drift).
check-built:
	sh scripts/build_script.sh $(EXTVERSION) $(MANIFEST) | cmp - $(CURRENT_SCRIPT)

# Upgrade path: every released version updates to the current one (tests/test_upgrade.py).
updatecheck: setup all
	$(MAKE) install
	scripts/run_tests.sh tests/test_upgrade.py

dist: all
	git archive --format zip --prefix=$(EXTNAME)-$(EXTVERSION)/ -o $(EXTNAME)-$(EXTVERSION).zip HEAD
