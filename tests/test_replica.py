"""Serving from a streaming replica (issue 11, item 4): a hot standby of a primary (``pg_basebackup -R``, its own
socket and port) answers every model kind exactly as the primary does, follows a deployment made on the primary
once it has replayed it, and refuses training and exposing with an error that says where to run them.

The python engine's pickled models are signed with a key in the primary's data directory
(``ml_stack_python.key``, made on first use). A base backup copies the key only when it exists at backup time;
a key made later is a file, not WAL, and never reaches the standby: there such a model is refused (not loaded
unsigned) until the key file is copied into the standby's data directory (docs/python-engine.md).
"""

import os
import shutil
import time
from pathlib import Path

import pytest
from psycopg import errors

from pgserver import SERVER_OS_USER
from datasets import load_sklearn_dataset

DBNAME = "ml_stack_replicated"
# the harness's settings but pg_cron's (tests/conftest.py; "from conftest import" would find python/tests' too)
SETTINGS = {"max_connections": "50", "ml_stack.venv": str(Path(__file__).resolve().parent.parent / ".venv")}


@pytest.fixture(scope="module")
def servers(pg_server):
    PgServer = type(pg_server)   # the harness's server class (connect(), ...)
    primary = PgServer.start(SETTINGS, prefix="ml_stack_primary_")
    replica = None
    try:
        with primary.connect() as c:
            c.execute(f"CREATE DATABASE {DBNAME}")
        replica = PgServer.start_replica(primary)
        yield primary, replica
    finally:
        if replica is not None:
            replica.stop()
        primary.stop()


def replayed(primary, replica, timeout=30):
    """Wait until the replica has replayed everything the primary has written so far."""
    with primary.connect() as p:
        lsn = p.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
    deadline = time.monotonic() + timeout
    with replica.connect() as r:
        while r.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,)).fetchone()[0] is not True:
            assert time.monotonic() < deadline, "the replica did not replay the primary's WAL in time"
            time.sleep(0.1)


PREDICTIONS = {
    "diabetes": "SELECT array_agg(ml_stack.predict('{p}', ARRAY[age, sex, bmi, bp, s1, s2, s3, s4, s5, s6]) ORDER BY ctid) FROM diabetes",
    "iris": "SELECT array_agg(ml_stack.predict_proba('{p}', ARRAY[sepal_length_cm, sepal_width_cm, petal_length_cm, petal_width_cm]) "
            "ORDER BY ctid) FROM iris",
}


def test_a_replica_serves_every_model_kind_as_the_primary(servers):
    primary, replica = servers
    projects = {"linear": ("diabetes", "regression", "linear"), "xgboost": ("diabetes", "regression", "xgboost"),
                "knn": ("iris", "classification", "knn"), "logistic": ("iris", "classification", "linear")}
    with primary.connect(DBNAME) as p:
        p.execute("SET client_min_messages = warning")
        p.execute("CREATE EXTENSION ml_stack_python CASCADE")
        load_sklearn_dataset(p, "diabetes")
        load_sklearn_dataset(p, "iris")
        for name, (table, task, algorithm) in projects.items():
            p.execute("SELECT * FROM ml_stack.train(%s, %s, %s, 'target', algorithm => %s)", (name, task, table, algorithm))
        formats = dict(p.execute("SELECT p.name, m.artifact ->> 'format' FROM ml_stack.models AS m "
                                 "JOIN ml_stack.projects AS p ON p.id = m.project_id").fetchall())
        assert formats == {"linear": "linear", "xgboost": "trees", "knn": "python", "logistic": "linear"}
        expected = {name: p.execute(PREDICTIONS[table].format(p=name)).fetchone()[0] for name, (table, _, _) in projects.items()}
        typed = p.execute("SELECT array_agg(ml_stack._project_1_predict(age, sex, bmi, bp, s1, s2, s3, s4, s5, s6) "
                          "ORDER BY ctid) FROM diabetes").fetchone()[0]
    replayed(primary, replica)
    # the key of the pickles was made after the base backup: the standby refuses the pickled model, then loads it
    # once the key file is there
    with replica.connect(DBNAME) as r:
        for name in ("linear", "xgboost", "logistic"):
            assert r.execute(PREDICTIONS[projects[name][0]].format(p=name)).fetchone()[0] == expected[name], name
        assert r.execute("SELECT array_agg(ml_stack._project_1_predict(age, sex, bmi, bp, s1, s2, s3, s4, s5, s6) "
                         "ORDER BY ctid) FROM diabetes").fetchone()[0] == typed
        with pytest.raises(errors.Error, match="not signed by this server"):
            r.execute(PREDICTIONS["iris"].format(p="knn"))
    key = replica.datadir / "ml_stack_python.key"
    shutil.copy2(primary.datadir / "ml_stack_python.key", key)
    if os.geteuid() == 0:   # the tests run as root, the servers as postgres
        shutil.chown(key, user=SERVER_OS_USER, group=SERVER_OS_USER)
    key.chmod(0o600)
    with replica.connect(DBNAME) as r:
        assert r.execute(PREDICTIONS["iris"].format(p="knn")).fetchone()[0] == expected["knn"]


def test_a_deployment_on_the_primary_reaches_the_replica(servers):
    primary, replica = servers
    with primary.connect(DBNAME) as p:
        p.execute("SET client_min_messages = warning")
        p.execute("SELECT * FROM ml_stack.train('linear', algorithm => 'ridge', hyperparams => '{\"alpha\": 5}', "
                  "automatic_deploy => false)")
        ridge = p.execute("SELECT max(id) FROM ml_stack.models").fetchone()[0]
        p.execute("SELECT * FROM ml_stack.deploy(%s)", (ridge,))
        expected = p.execute(PREDICTIONS["diabetes"].format(p="linear")).fetchone()[0]
        by_id = p.execute(PREDICTIONS["diabetes"].format(p="linear").replace("'linear'", f"{ridge}::bigint")).fetchone()[0]
    assert expected == by_id
    replayed(primary, replica)
    with replica.connect(DBNAME) as r:
        assert r.execute("SELECT model_id FROM ml_stack.deployed_models WHERE project_name = 'linear'").fetchone()[0] == ridge
        assert r.execute(PREDICTIONS["diabetes"].format(p="linear")).fetchone()[0] == expected


def test_training_and_exposing_on_the_replica_say_where_to_run_them(servers):
    primary, replica = servers
    replayed(primary, replica)
    with replica.connect(DBNAME) as r:
        for call, what in [("SELECT * FROM ml_stack.train('linear', algorithm => 'ridge')", "ml_stack.train"),
                           ("SELECT * FROM ml_stack.expose('linear')", "ml_stack.expose")]:
            with pytest.raises(errors.ReadOnlySqlTransaction, match="hot standby") as e:
                r.execute(call)
            assert what in e.value.diag.message_primary and "primary" in e.value.diag.message_hint
