#!/usr/bin/env bash
# The ml_stack walkthrough on scikit-learn's diabetes and breast cancer datasets, then the seed workflow on
# the Debian archive's package descriptions, shared over HTTP at the end (`make demo`).
#
# Needs what `make setup` and `make install` give: PostgreSQL 15, ml_stack installed into it, and .venv.
# Starts a throwaway server in a temporary directory (Unix socket only; as the `postgres` OS user when run
# as root), loads the datasets, runs demo/demo.sql with psql, and always stops the server and removes the
# directory, on failure too. Exits non-zero when any step fails.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=.venv/bin/python
DBNAME=ml_stack_demo

die() { echo "demo: $*" >&2; exit 1; }

[ -x "$PY" ] || die ".venv is missing: run 'make setup' first (or 'make demo', which does it all)"
sharedir=$(pg_config --sharedir) || die "pg_config not found: run 'make setup' first"
psql="$(pg_config --bindir)/psql"
[ -f "$sharedir/extension/ml_stack.control" ] || die "ml_stack is not installed: run 'make install' first"

# Nothing from the caller's environment may point libpq elsewhere.
while read -r var; do unset "$var"; done < <(compgen -e | grep '^PG' || true)

# The server's directory is made here, before anything can fail, so that the trap always knows what to remove.
ML_STACK_PGDIR=$(mktemp -d "${TMPDIR:-/tmp}/ml_stack_demo_XXXXXX")
cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    if [ -e "$ML_STACK_PGDIR/data/postmaster.pid" ]; then
        "$PY" scripts/pgserver.py stop "$ML_STACK_PGDIR" || rc=1
    fi
    rm -rf "$ML_STACK_PGDIR"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

echo "demo: starting a throwaway PostgreSQL server in $ML_STACK_PGDIR"
# pg_cron preloaded for the demo database (scheduled retraining, the last part of demo.sql)
exports=$("$PY" scripts/pgserver.py start --dir "$ML_STACK_PGDIR" --cron-database "$DBNAME")
eval "$exports"
export PGDATABASE=$DBNAME

"$psql" -X -q -v ON_ERROR_STOP=1 -d postgres -c "CREATE DATABASE $DBNAME"
"$PY" demo/load_dataset.py diabetes breast_cancer | sed 's/^/demo: /'
echo
"$psql" -X -q -v ON_ERROR_STOP=1 -f demo/demo.sql
echo
# the seed workflow: Debian's package descriptions -> vectors -> classifiers -> predictions from raw text; search
"$PY" demo/load_packages.py | sed 's/^/demo: /'
"$psql" -X -q -v ON_ERROR_STOP=1 -v venv="$(pwd -P)/.venv" -f demo/text.sql
# the same workflow as its SQL was written for PostgresML and pg_vectorize
"$psql" -X -q -v ON_ERROR_STOP=1 -v venv="$(pwd -P)/.venv" -f demo/dropin.sql
echo
echo "== 21. Share the classifier over HTTP (PostgREST): POST /rpc/classify_sections {\"description\": ...}"
"$PY" demo/serve_over_http.py
echo
echo "demo: done"
