"""Concurrency (issue 11): PostgreSQL's own isolation tester runs the specs of tests/isolation/specs against the
harness's server (pg_isolation_regress from postgresql-server-dev-15, --use-existing): train vs train of one
project, deploy vs predict, retrain vs rollback, vector-job writes from concurrent sessions. Each spec's expected
output (tests/isolation/expected) was read and checked by hand: which step waits, what every session sees.

To see a spec's output after a change: run this test; the differences are in the assertion message, and the
outputs in the test's temporary directory (results/). Update an expected file only after reading its diff."""

import subprocess
from pathlib import Path

import pytest

ISOLATION_DIR = Path(__file__).resolve().parent / "isolation"
PG_ISOLATION_REGRESS = Path("/usr/lib/postgresql/15/lib/pgxs/src/test/isolation/pg_isolation_regress")


@pytest.mark.skipif(not PG_ISOLATION_REGRESS.exists(), reason="pg_isolation_regress comes with postgresql-server-dev-15")
def test_isolation_specs(pg_server, new_db, tmp_path):
    dbname = new_db("ml_stack_isolation")   # --use-existing: the tester neither creates nor drops it
    with pg_server.connect(dbname) as c:
        c.execute("CREATE EXTENSION ml_stack")
    res = subprocess.run(
        [str(PG_ISOLATION_REGRESS), "--use-existing", f"--host={pg_server.host}", f"--port={pg_server.port}",
         "--user=postgres", f"--dbname={dbname}",
         f"--inputdir={ISOLATION_DIR}", f"--outputdir={tmp_path}", f"--schedule={ISOLATION_DIR / 'schedule'}"],
        capture_output=True, text=True, env=pg_server.env(), cwd=tmp_path, timeout=600)
    diffs = tmp_path / "regression.diffs"
    assert res.returncode == 0, res.stdout + res.stderr + (diffs.read_text()[:20000] if diffs.exists() else "")
