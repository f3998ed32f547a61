#!/usr/bin/env bash
# Run the test suite in the project's virtual environment (made by scripts/setup.sh).
# Arguments go to pytest; without any, tests/ and python/tests/ (the Python engine's unit tests) run. pytest's exit code is ours.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! [ -x .venv/bin/python ]; then
    echo "run_tests.sh: .venv is missing: run 'make setup' (scripts/setup.sh) first" >&2
    exit 2
fi
(($#)) || set -- tests/ python/tests/
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
