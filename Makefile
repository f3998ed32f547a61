# ml_stack — a pure-SQL extension bundle built with PGXS.
#
# The version comes from the control file (single source of truth). `make` builds
# extension/ml_stack--$(EXTVERSION).sql by concatenating the sources listed in
# sql/ml_stack.manifest. Install scripts of released versions and hand-written
# upgrade scripts live in extension/ and are never regenerated or edited.

# The bundle's two extensions. Each has its control file, its manifest and its
# version (read from the control file).
EXTENSIONS  := ml_stack ml_stack_python ml_stack_pgml ml_stack_vectorize
version_of   = $(shell sed -n "s/^default_version *= *'\(.*\)'/\1/p" control/$(1).control)
# The newest released install script older than the current version: the upgrade starts there.
previous_of  = $(lastword $(shell ls extension/$(1)--*.sql 2>/dev/null | sed -n 's|^extension/$(1)--\([0-9.]*\)\.sql$$|\1|p' \
                                 | grep -vx '$(call version_of,$(1))' | sort -V))
EXTVERSION  := $(call version_of,ml_stack)
# The Debian server's own pg_config, when installed (another client version's may come first on PATH).
PG_CONFIG   ?= $(firstword $(wildcard /usr/lib/postgresql/15/bin/pg_config) pg_config)

# Generated scripts of the current versions: install scripts, and the upgrade from the previous release.
BUILT := $(foreach e,$(EXTENSIONS),extension/$(e)--$(call version_of,$(e)).sql \
            $(if $(call previous_of,$(e)),extension/$(e)--$(call previous_of,$(e))--$(call version_of,$(e)).sql))
SOURCES := $(shell grep -hv '^\#' sql/*.manifest 2>/dev/null | awk 'NF {print $$1}' | sed '/^python\//!s|^|sql/|') \
           $(wildcard python/ml_stack_python/*.py) scripts/build_script.sh

MODULEDIR   := extension
DATA        := $(foreach e,$(EXTENSIONS),control/$(e).control) $(sort $(wildcard extension/*.sql) $(BUILT))

PYTHON_VENV := .venv
VENV_PY     := $(PYTHON_VENV)/bin/python

all: $(BUILT)

$(BUILT): extension/%.sql: $(SOURCES) $(wildcard control/*.control) $(wildcard sql/*.manifest)
	sh scripts/build_script.sh $(call build_args,$*) > $@.tmp
	mv $@.tmp $@
# "ml_stack--0.2.0" -> install ml_stack 0.2.0 ...; "ml_stack--0.1.0--0.2.0" -> upgrade ml_stack 0.1.0 0.2.0 ...
build_args = $(if $(word 3,$(subst --, ,$(1))),upgrade,install) $(subst --, ,$(1)) sql/$(firstword $(subst --, ,$(1))).manifest

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
	$(VENV_PY) bench/python_engine.py
	$(VENV_PY) bench/naive_bayes.py
	$(VENV_PY) bench/vectors.py
	$(VENV_PY) bench/embeddings.py
	$(VENV_PY) bench/dropin.py

# The committed install script must be what the sources build (no drift).
check-built:
	@for f in $(BUILT); do n=$${f#extension/}; n=$${n%.sql}; \
	    sh scripts/build_script.sh $$(echo $$n | sed 's/--/ /g' | awk '{print (NF == 3 ? "upgrade" : "install"), $$0}') \
	        sql/$${n%%--*}.manifest | cmp - $$f || exit 1; done

# Upgrade path: every released version updates to the current one (tests/test_upgrade.py).
updatecheck: setup all
	$(MAKE) install
	scripts/run_tests.sh tests/test_upgrade.py

dist: all
	git archive --format zip --prefix=ml_stack-$(EXTVERSION)/ -o ml_stack-$(EXTVERSION).zip HEAD
