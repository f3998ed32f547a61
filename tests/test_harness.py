"""Smoke tests of the harness itself (conftest.py, datasets.py): if these fail, nothing else can be trusted."""

import os
import re
from pathlib import Path

import numpy as np
import pytest

from datasets import fetch_xy, load_sklearn_dataset

REPO = Path(__file__).resolve().parent.parent


def test_select_one(conn):
    assert conn.execute("SELECT 1").fetchone() == (1,)


def test_server_runs_as_non_root(pg_server, conn):
    backend_pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    postmaster_pid = int((pg_server.datadir / "postmaster.pid").read_text().split()[0])
    for pid in (backend_pid, postmaster_pid):
        assert os.stat(f"/proc/{pid}").st_uid != 0


def test_server_settings(pg_server, conn):
    def setting(name):
        return conn.execute("SELECT current_setting(%s)", (name,)).fetchone()[0]

    assert setting("server_version_num").startswith("15")
    assert setting("listen_addresses") == ""
    assert setting("unix_socket_directories") == pg_server.socket_dir
    assert int(setting("port")) == pg_server.port
    assert "pg_cron" in setting("shared_preload_libraries")
    assert setting("cron.database_name") == "ml_stack_cron"
    assert setting("cron.host") == pg_server.socket_dir
    assert setting("fsync") == "off"
    assert setting("max_connections") == "50"
    assert setting("server_encoding") == "UTF8"


@pytest.mark.parametrize("round_", [1, 2])
def test_each_test_gets_its_own_database(conn, round_):
    # Whichever round runs second must not see the first one's table.
    assert conn.execute("SELECT to_regclass('public.harness_probe')").fetchone()[0] is None
    conn.execute("CREATE TABLE harness_probe (round int)")


def test_ml_stack_installed(conn):
    control = (REPO / "control" / "ml_stack.control").read_text()
    default_version = re.search(r"^default_version\s*=\s*'([^']*)'", control, re.M).group(1)
    row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'ml_stack'").fetchone()
    assert row is not None and row[0] == default_version


def test_plpython_available_with_debian_libraries(pg_server, new_db):
    import sklearn
    import xgboost

    with pg_server.connect(new_db()) as c:
        c.execute("CREATE EXTENSION plpython3u")
        c.execute("""
            CREATE FUNCTION lib_versions() RETURNS text[] LANGUAGE plpython3u AS $$
                import sklearn, xgboost
                return [sklearn.__version__, xgboost.__version__]
            $$""")
        # The server's Python and the test venv must use the same libraries (oracle comparisons).
        assert c.execute("SELECT lib_versions()").fetchone()[0] == [sklearn.__version__, xgboost.__version__]


def test_pg_cron_available_in_cron_database(pg_server):
    with pg_server.connect(pg_server.cron_dbname) as c:
        c.execute("CREATE EXTENSION pg_cron")
        try:
            jobid = c.execute("SELECT cron.schedule('harness_probe', '0 0 1 1 *', 'SELECT 1')").fetchone()[0]
            assert c.execute("SELECT count(*) FROM cron.job WHERE jobid = %s", (jobid,)).fetchone()[0] == 1
            c.execute("SELECT cron.unschedule(%s)", (jobid,))
        finally:
            c.execute("DROP EXTENSION pg_cron")  # leave the shared cron database clean


def test_new_db_is_empty_and_dropped(pg_server, new_db):
    name = new_db()
    with pg_server.connect(name) as c:
        assert c.execute("SELECT count(*) FROM pg_extension WHERE extname = 'ml_stack'").fetchone()[0] == 0
    with pg_server.connect() as c:
        assert c.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (name,)).fetchone()[0] == 1


@pytest.mark.parametrize("name, columns, label_dtype", [
    ("diabetes", ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"], np.float64),
    ("iris", ["sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm"], np.int64),
    ("breast_cancer", None, np.int64),
    ("wine", None, np.int64),
])
def test_dataset_round_trip(conn, name, columns, label_dtype):
    X, y = load_sklearn_dataset(conn, name)
    cols = [r[0] for r in conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 ORDER BY attnum",
        (name,))]
    assert cols[-1] == "target" and len(cols) == X.shape[1] + 1
    assert all(re.fullmatch(r"[a-z_][a-z0-9_]*", c) for c in cols)
    if columns:
        assert cols[:-1] == columns
    X2, y2 = fetch_xy(conn, name)
    assert y2.dtype == label_dtype
    np.testing.assert_array_equal(X2, X)  # exact: float8 round-trips bit for bit
    np.testing.assert_array_equal(y2, y)
