"""Test harness: one private PostgreSQL 15 server per session, one fresh database per test.

- ``pg_server`` (session): a server of our own in a temp directory, Unix socket only, with pg_cron preloaded
  (its database is ``ml_stack_cron``). Under root (CI) it runs as the ``postgres`` OS user, since
  initdb/pg_ctl refuse to run as root.
- ``postgresql_noproc`` (session): pytest-postgresql's executor for that server. It builds the template
  database ``ml_stack_test_tmpl`` once, with ``CREATE EXTENSION ml_stack`` in it.
- ``postgresql`` / ``conn`` (per test): database ``ml_stack_test`` cloned from that template, dropped after
  the test. ``conn`` is the same connection in autocommit mode.
- ``new_db`` (per test): makes extra empty databases (no extension), e.g. as pg_restore targets.
- ``tick_server`` (session): a second server, for the tests that wait for a real pg_cron tick.
"""

import itertools
import sys
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo
from pytest_postgresql import factories

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))  # the engine's package, for its evaluator
import pgserver  # noqa: E402  (the throwaway-server code shared with the demo and the benchmarks)

CRON_DBNAME = "ml_stack_cron"
TEST_DBNAME = "ml_stack_test"  # its template is ml_stack_test_tmpl (pytest-postgresql's naming)
HARNESS_SETTINGS = {
    "max_connections": "50",
    "shared_preload_libraries": "pg_cron",
    "cron.database_name": CRON_DBNAME,
    # torch and sentence-transformers for ml_stack_python's embeddings: the project's venv (scripts/setup.sh)
    "ml_stack.venv": str(Path(__file__).resolve().parent.parent / ".venv"),
}

_extra_db_numbers = itertools.count(1)


class PgServer(pgserver.PgServer):
    """The harness's server: scripts/pgserver.py's, plus what the tests and pytest-postgresql read."""

    user = pgserver.DB_SUPERUSER
    cron_dbname = CRON_DBNAME
    # Read by pytest-postgresql's postgresql_noproc(depends_on=...).
    password = None
    options = ""
    maintenance_dbname = "postgres"
    template_dbname = None

    @property
    def socket_dir(self) -> str:
        return self.host

    def dsn(self, dbname: str = "postgres") -> str:
        return make_conninfo(host=self.host, port=self.port, user=self.user, dbname=dbname)

    def connect(self, dbname: str = "postgres", autocommit: bool = True, **kwargs) -> psycopg.Connection:
        return psycopg.connect(self.dsn(dbname), autocommit=autocommit, **kwargs)

    def bin(self, name: str) -> str:
        """Path of a server or client program, e.g. ``bin("pg_dump")``."""
        return str(self.bindir / name)


@pytest.fixture(scope="session")
def pg_server():
    # pg_cron's jobs connect through libpq; without TCP they must use the socket directory
    server = PgServer.start(HARNESS_SETTINGS, prefix="ml_stack_pg_",
                            extra_settings=lambda srv: {"cron.host": srv.host})
    try:
        with server.connect() as c:
            # the pg_cron launcher retries until its database exists
            c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(CRON_DBNAME)))
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def tick_server():
    """A server of its own for the tests that wait for a real pg_cron tick, with pg_cron created once in its cron
    database and never dropped. On the shared server, whose other tests drop and create pg_cron and install
    ml_stack in a database after another, pg_cron 1.4's scheduler was seen after a full suite alive and idle
    with our jobs in cron.job, running none of them, while the same tests passed on a fresh server. The likely
    cause: its job cache is invalidated by relcache messages for cron.job's oid only, and a scheduler that falls
    behind the shared invalidation queue is reset instead (a reset does not name the relation)."""
    server = PgServer.start(HARNESS_SETTINGS, prefix="ml_stack_tick_",
                            extra_settings=lambda srv: {"cron.host": srv.host})
    try:
        with server.connect() as c:
            c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(CRON_DBNAME)))
        with server.connect(CRON_DBNAME) as c:
            c.execute("CREATE EXTENSION pg_cron SCHEMA pg_catalog")  # out of public, which the tests drop
        yield server
    finally:
        server.stop()


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
