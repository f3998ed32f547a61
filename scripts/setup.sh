#!/usr/bin/env bash
# Prepare a Debian 12 machine to build and test ml_stack: apt packages and the .venv with the pinned test
# dependencies. Idempotent and quiet: it prints only when something fails.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
REQUIREMENTS=tests/requirements.txt
STAMP=$VENV/.requirements.sha256

# The server, its PL/Python, PGXS and pg_cron must be one PostgreSQL build: apt installs them together.
PG_PACKAGES=(postgresql-15 postgresql-plpython3-15 postgresql-server-dev-15 postgresql-15-cron)
OTHER_PACKAGES=(python3-venv python3-sklearn python3-xgboost python3-numpy make zip unzip pgxnclient)

log=$(mktemp)
trap 'rm -f "$log"' EXIT

# Run a command with its output kept aside; show it only if the command fails.
quiet() {
    if ! "$@" >"$log" 2>&1; then
        cat "$log" >&2
        echo "setup.sh: failed: $*" >&2
        exit 1
    fi
}

installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed'
}

missing=()
for p in "${PG_PACKAGES[@]}"; do
    if ! installed "$p"; then
        missing=("${PG_PACKAGES[@]}")
        break
    fi
done
for p in "${OTHER_PACKAGES[@]}"; do
    installed "$p" || missing+=("$p")
done

if ((${#missing[@]})); then
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup.sh: missing Debian packages (${missing[*]}); run this script as root" >&2
        exit 1
    fi
    # The tests start their own server, so Debian's default cluster is never needed: don't create one.
    # (createcluster.conf includes this directory; an existing cluster is left as it is.)
    mkdir -p /etc/postgresql-common/createcluster.d
    echo 'create_main_cluster = false' >/etc/postgresql-common/createcluster.d/ml_stack.conf
    quiet apt-get update
    # Recommends would pull in matplotlib and more; everything needed is a hard dependency.
    quiet env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi

# The venv must be made from Debian's python with system site-packages, so tests use the same
# scikit-learn/xgboost as the server's PL/Python. Rebuild one made any other way.
if ! [ -x "$VENV/bin/python" ] ||
    ! grep -qx 'home = /usr/bin' "$VENV/pyvenv.cfg" 2>/dev/null ||
    ! grep -qx 'include-system-site-packages = true' "$VENV/pyvenv.cfg" 2>/dev/null; then
    rm -rf "$VENV"
    quiet /usr/bin/python3 -m venv --system-site-packages "$VENV"
fi

want=$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)
if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
    quiet "$VENV/bin/python" -m pip install --disable-pip-version-check -q -r "$REQUIREMENTS"
    echo "$want" >"$STAMP"
fi
