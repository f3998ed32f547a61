"""Test harness: one private PostgreSQL 15 server per session, one fresh database per test.

- ``pg_server`` (session): a server of our own in a temp directory, Unix socket only, with pg_cron preloaded
  (its database is ``ml_stack_cron``). Under root (CI) it runs as the ``postgres`` OS user, since
  initdb/pg_ctl refuse to run as root.
- ``postgresql_noproc`` (session): pytest-postgresql's executor for that server. It builds the template
  database ``ml_stack_test_tmpl`` once, with ``CREATE EXTENSION ml_stack`` in it.
- ``postgresql`` / ``conn`` (per test): database ``ml_stack_test`` cloned from that template, dropped after
  the test. ``conn`` is the same connection in autocommit mode.
- ``new_db`` (per test): makes extra empty databases (no extension), e.g. as pg_restore targets.
"""

import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import port_for
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo
from pytest_postgresql import factories

PG_CONFIG = os.environ.get("PG_CONFIG", "pg_config")
SERVER_OS_USER = "postgres"  # OS user the server runs as when the tests run as root
DB_SUPERUSER = "postgres"
CRON_DBNAME = "ml_stack_cron"
TEST_DBNAME = "ml_stack_test"  # its template is ml_stack_test_tmpl (pytest-postgresql's naming)

_extra_db_numbers = itertools.count(1)


def _clean_env():
    """The caller's environment without variables that would steer libpq, pg_ctl or the server's Python."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PG", "PYTHON", "VIRTUAL_ENV"))}


@dataclass
class PgServer:
    """A running server. ``host`` is the socket directory (libpq reads a path as one)."""

    bindir: Path
    basedir: Path
    datadir: Path
    host: str
    port: int
    user: str = DB_SUPERUSER
    cron_dbname: str = CRON_DBNAME
    # Read by pytest-postgresql's postgresql_noproc(depends_on=...).
    password: str | None = None
    options: str = ""
    maintenance_dbname: str = "postgres"
    template_dbname: str | None = None

    @property
    def socket_dir(self) -> str:
        return self.host

    @property
    def logfile(self) -> Path:
        return self.basedir / "server.log"

    def dsn(self, dbname: str = "postgres") -> str:
        return make_conninfo(host=self.host, port=self.port, user=self.user, dbname=dbname)

    def connect(self, dbname: str = "postgres", autocommit: bool = True, **kwargs) -> psycopg.Connection:
        return psycopg.connect(self.dsn(dbname), autocommit=autocommit, **kwargs)

    def bin(self, name: str) -> str:
        """Path of a server or client program, e.g. ``bin("pg_dump")``."""
        return str(self.bindir / name)

    def env(self, dbname: str | None = None) -> dict:
        """Environment for client programs (pg_dump, pg_restore, psql) to reach this server."""
        env = _clean_env()
        env.update(PGHOST=self.host, PGPORT=str(self.port), PGUSER=self.user)
        if dbname:
            env["PGDATABASE"] = dbname
        return env


def _pg_bindir() -> Path:
    out = subprocess.run([PG_CONFIG, "--bindir"], check=True, capture_output=True, text=True).stdout
    return Path(out.strip())


def _run_as_server_user(cmd, cwd, what, logfile=None):
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", SERVER_OS_USER, "--", *cmd]
    # cwd: the server user may not be able to enter the caller's directory (e.g. /root/...).
    res = subprocess.run(cmd, cwd=cwd, env=_clean_env(), capture_output=True, text=True)
    if res.returncode != 0:
        log = ""
        if logfile and Path(logfile).exists():
            log = "\n--- server log (tail) ---\n" + "\n".join(Path(logfile).read_text().splitlines()[-30:])
        raise RuntimeError(f"{what} failed ({res.returncode}): {' '.join(cmd)}\n{res.stdout}{res.stderr}{log}")


def _start_server() -> PgServer:
    bindir = _pg_bindir()
    basedir = Path(tempfile.mkdtemp(prefix="ml_stack_pg_"))
    sockdir = basedir / "sock"
    sockdir.mkdir()
    if os.geteuid() == 0:
        pw = pwd.getpwnam(SERVER_OS_USER)
        for d in (basedir, sockdir):
            os.chown(d, pw.pw_uid, pw.pw_gid)
    # Only the socket file is named after the port (no TCP), so any free port would do; still take a free one.
    server = PgServer(bindir=bindir, basedir=basedir, datadir=basedir / "data", host=str(sockdir),
                      port=port_for.select_random())

    _run_as_server_user(
        [server.bin("initdb"), "-D", str(server.datadir), "-A", "trust", "-U", DB_SUPERUSER,
         "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"],
        cwd=basedir, what="initdb")
    settings = {
        "listen_addresses": "",
        "unix_socket_directories": str(sockdir),
        "port": server.port,
        "max_connections": 50,
        "fsync": "off",
        "shared_preload_libraries": "pg_cron",
        "cron.database_name": CRON_DBNAME,
        # pg_cron's jobs connect through libpq; without TCP they must use the socket.
        "cron.host": str(sockdir),
    }
    with open(server.datadir / "postgresql.conf", "a") as f:
        f.write("\n# ml_stack test harness\n")
        for key, value in settings.items():
            f.write(f"{key} = '{value}'\n")

    _run_as_server_user(
        [server.bin("pg_ctl"), "-D", str(server.datadir), "-l", str(server.logfile), "-w", "-t", "60", "-s",
         "start"],
        cwd=basedir, what="pg_ctl start", logfile=server.logfile)
    try:
        with server.connect() as c:
            # The pg_cron launcher retries until its database exists.
            c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(CRON_DBNAME)))
    except BaseException:
        _stop_server(server)
        raise
    return server


def _stop_server(server: PgServer) -> None:
    try:
        _run_as_server_user([server.bin("pg_ctl"), "-D", str(server.datadir), "-m", "fast", "-w", "-s", "stop"],
                            cwd=server.basedir, what="pg_ctl stop", logfile=server.logfile)
    finally:
        shutil.rmtree(server.basedir, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server():
    server = _start_server()
    try:
        yield server
    finally:
        _stop_server(server)


def _install_ml_stack(host, port, user, dbname, password=None, **_):
    """pytest-postgresql ``load=`` callable: runs once, in the template database."""
    with psycopg.connect(host=host, port=port, user=user, dbname=dbname, password=password,
                         autocommit=True) as c:
        c.execute("CREATE EXTENSION ml_stack")


# These override pytest-postgresql's default fixtures of the same names, which would start a server of their own.
# depends_on: host, port and user come from pg_server, known only once it has started.
postgresql_noproc = factories.postgresql_noproc(dbname=TEST_DBNAME, load=[_install_ml_stack],
                                                depends_on="pg_server")
postgresql = factories.postgresql("postgresql_noproc")


@pytest.fixture
def conn(postgresql):
    """Connection (autocommit) to this test's own database, with ml_stack installed."""
    postgresql.autocommit = True
    return postgresql


@pytest.fixture
def new_db(pg_server):
    """``new_db()`` creates an empty database (from template0, no extension) and returns its name."""
    created = []

    def make(prefix: str = "ml_stack_extra") -> str:
        name = f"{prefix}_{next(_extra_db_numbers)}"
        with pg_server.connect() as c:
            c.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
        created.append(name)
        return name

    yield make
    with pg_server.connect() as c:
        for name in created:
            c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
