"""Helpers shared by the test modules: calling ml_stack.train, reading the registry and what the database serves,
and a database of its own for a module's read-only tests.

Imported as ``from helpers import ...``, like ``datasets`` (pytest puts tests/ on sys.path).
"""

import json
from contextlib import contextmanager

import numpy as np
from psycopg import sql
from psycopg.rows import dict_row

from datasets import load_sklearn_dataset

# --------------------------------------------------------------------------------------------------------------
# rows


def one_row(conn, query, params=None):
    """Run ``query``; assert that it returned exactly one row and return that row as a dict."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(query, params).fetchall()
    assert len(rows) == 1, rows
    return rows[0]


def model_row(conn, model_id):
    """The ml_stack.models row of a model, as a dict."""
    return one_row(conn, "SELECT * FROM ml_stack.models WHERE id = %s", (model_id,))


# --------------------------------------------------------------------------------------------------------------
# training

# ml_stack.train's named parameters and their SQL types (sql/training/train.sql). Every named argument is cast
# to its parameter's type, so that the call resolves whatever SQL type the Python value renders as (a float NaN,
# for one, renders as 'NaN'::float8, which does not cast implicitly to real).
TRAIN_PARAM_TYPES = {
    "task": "text", "relation_name": "text", "y_column_name": "text", "algorithm": "text",
    "hyperparams": "jsonb", "search": "text", "search_params": "jsonb", "search_args": "jsonb",
    "test_size": "real", "test_sampling": "text", "preprocess": "jsonb", "automatic_deploy": "boolean",
    "engine": "text", "exclude": "text[]",
}


def train_query(*args, **kwargs):
    """The query ``SELECT * FROM ml_stack.train(...)``, not run, with every value as a quoted literal.

    Positional arguments go in as they are (project_name, task, relation_name, y_column_name: text), None as
    NULL; named ones as ``name => literal::type`` with the type from TRAIN_PARAM_TYPES, dicts and lists as JSON.
    Literals, not parameters: hostile strings must reach ml_stack as data whatever quotes they hold, and a query
    without parameters can go to any connection as a plain statement (simple query protocol).
    """
    parts = [sql.Literal(a) for a in args]
    for name, value in kwargs.items():
        if name not in TRAIN_PARAM_TYPES:
            raise TypeError(f"train() has no parameter {name!r}")
        if TRAIN_PARAM_TYPES[name] == "text[]" and value is not None:
            parts.append(sql.SQL("{} => ARRAY[{}]::text[]").format(
                sql.Identifier(name), sql.SQL(", ").join(sql.Literal(v) for v in value)))
            continue
        if isinstance(value, (dict, list)):
            value = json.dumps(value)
        parts.append(sql.SQL("{} => {}::{}").format(
            sql.Identifier(name), sql.Literal(value), sql.SQL(TRAIN_PARAM_TYPES[name])))
    return sql.SQL("SELECT * FROM ml_stack.train({})").format(sql.SQL(", ").join(parts))


def train(conn, *args, **kwargs):
    """Run ml_stack.train(...) (arguments as for ``train_query``); return its one result row as a dict:
    project, task, algorithm, engine, model_id, deployed, metrics. train() shows its metrics rounded; the
    oracles compare the registry's full values, read here."""
    row = one_row(conn, train_query(*args, **kwargs))
    row["metrics"] = conn.execute("SELECT metrics FROM ml_stack.models WHERE id = %s", (row["model_id"],)).fetchone()[0]
    return row


def train_every_kind(conn):
    """Load diabetes, breast_cancer and iris and train one model of every kind the SQL engine makes, with a
    deployment history a rollback can walk back. Returns {"ols", "ridge", "binary", "multinomial"} -> model id.

    Each project is named after its dataset table, so a restored or upgraded database has the same relation to
    retrain on by project name. diabetes: OLS (deployed automatically), then ridge with a non-default alpha, not
    deployed automatically but by id: the project serves ridge, and rolling back gives OLS again. Written against
    the current API; test_upgrade also runs it on older releases, and a release whose train() differs needs its
    own variant there.
    """
    for dataset in ("diabetes", "breast_cancer", "iris"):
        load_sklearn_dataset(conn, dataset)
    ids = {}
    ids["ols"] = conn.execute(
        "SELECT model_id FROM ml_stack.train('diabetes', 'regression', 'diabetes', 'target')").fetchone()[0]
    ids["ridge"] = conn.execute(
        "SELECT model_id FROM ml_stack.train('diabetes', algorithm => 'ridge', hyperparams => '{\"alpha\": 0.5}',"
        " automatic_deploy => false)").fetchone()[0]
    conn.execute("SELECT * FROM ml_stack.deploy(%s::bigint)", (ids["ridge"],))
    ids["binary"] = conn.execute(
        "SELECT model_id FROM ml_stack.train('breast_cancer', 'classification', 'breast_cancer', 'target')"
    ).fetchone()[0]
    ids["multinomial"] = conn.execute(
        "SELECT model_id FROM ml_stack.train('iris', 'classification', 'iris', 'target')").fetchone()[0]
    return ids


# --------------------------------------------------------------------------------------------------------------
# the registry

# training_runs: the history of training runs (0.2.0), extension configuration like the registry proper
REGISTRY_TABLES = ("projects", "snapshots", "models", "deployments", "training_runs", "vectorizers")


def registry_rows(conn):
    """Every row of every registry table, as text (exact: float8 prints shortest-exact), in id order:
    {table: [row, ...]}."""
    return {table: [r[0] for r in conn.execute(
        sql.SQL("SELECT t::text FROM ml_stack.{} AS t ORDER BY t.id").format(sql.Identifier(table)))]
        for table in REGISTRY_TABLES}


def registry_state(conn):
    """``registry_rows`` plus what else a copy of the registry must reproduce: each table's id sequence
    (``<table>_id_seq``: last_value, is_called) and the deployed_models view (``deployed_models``).

    Not for comparing before and after a failed call: sequences are not transactional, a rolled-back insert
    still uses up its id.
    """
    state = registry_rows(conn)
    for table in REGISTRY_TABLES:
        state[f"{table}_id_seq"] = conn.execute(
            sql.SQL("SELECT last_value, is_called FROM ml_stack.{}").format(sql.Identifier(f"{table}_id_seq"))
        ).fetchone()
    state["deployed_models"] = [r[0] for r in conn.execute(
        "SELECT d::text FROM ml_stack.deployed_models AS d ORDER BY d.project_name")]
    return state


# --------------------------------------------------------------------------------------------------------------
# what the database serves


def predictions(conn, relation, columns, model):
    """Predictions of the server for every row of ``relation`` in its own order, as a float64 array; ``model`` is
    a project name (its deployed model) or a model id."""
    arr = sql.SQL(", ").join(map(sql.Identifier, columns))
    ref = sql.SQL("%s::bigint") if isinstance(model, int) else sql.SQL("%s::text")
    q = sql.SQL("SELECT ml_stack.predict({}, ARRAY[{}]) FROM {}").format(ref, arr, sql.Identifier(relation))
    return np.array([r[0] for r in conn.execute(q, (model,))], dtype=np.float64)


def serving_state(conn):
    """Every prediction and probability the database serves, for every model trained in it, by project name and
    by model id, on every row of the relation the model was trained on.

    The relation and its feature columns are the model's snapshot's (imported models have none and are left
    out); a project is predicted on the relation of its latest model. Keys ("project", name) and ("model", id);
    values: a list of (features, prediction, probabilities or None) in the relation's order. The features are
    part of each row so that a change of row order shows up as a difference instead of comparing two different
    rows' predictions.
    """
    out = {}
    for project, task, model_id, relation, features in conn.execute(
            "SELECT p.name, p.task, m.id, s.relation_name, s.features FROM ml_stack.models AS m"
            " JOIN ml_stack.projects AS p ON p.id = m.project_id JOIN ml_stack.snapshots AS s ON s.id = m.snapshot_id"
            " ORDER BY m.id").fetchall():
        f = sql.SQL("ARRAY[{}]::float8[]").format(sql.SQL(", ").join(sql.Identifier(c["name"]) for c in features))
        for key, arg in ((("project", project), sql.Literal(project)),
                         (("model", model_id), sql.SQL("{}::bigint").format(sql.Literal(model_id)))):
            proba = sql.SQL("ml_stack.predict_proba({}, f)").format(arg) if task == "classification" else sql.NULL
            out[key] = conn.execute(
                sql.SQL("SELECT f, ml_stack.predict({a}, f), {p} FROM (SELECT {f} AS f FROM {t}) AS r").format(
                    a=arg, p=proba, f=f, t=sql.SQL(relation))).fetchall()  # relation_name: regclass output, quoted
    return out


# --------------------------------------------------------------------------------------------------------------
# databases


@contextmanager
def private_database(pg_server, name):
    """A database ``name`` of its own with ml_stack installed, for a module-scoped fixture whose tests share it
    (a fresh database per test would cost more than the tests). Made from template0, after dropping what an
    interrupted run may have left; closed and dropped (FORCE) on exit. Yields an autocommit connection."""
    drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    with pg_server.connect() as admin:
        admin.execute(drop)
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
    conn = pg_server.connect(name)
    try:
        conn.execute("CREATE EXTENSION ml_stack")
        yield conn
    finally:
        conn.close()
        with pg_server.connect() as admin:
            admin.execute(drop)
