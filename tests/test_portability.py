"""export_model / import_model (DESIGN §3): a model as a JSON document that serves identically elsewhere.

The document travels as text, as it would through a file or an HTTP call, into another database that has
nothing but ml_stack: no training relation, no snapshot, no project. Identical means bit for bit: the imported
model compiles to the same arithmetic, so any difference (a coefficient rounded through JSON, a class order
changed, features reordered) is a bug, not noise.
"""

import json

import pytest
from psycopg import errors, sql

from datasets import feature_columns, fetch_xy, load_sklearn_dataset

# kind -> (dataset, task, algorithm, hyperparams). Non-default hyperparameters where the algorithm takes any, so
# that the document has to carry them for the import to serve the same.
KINDS = {
    "ols": ("diabetes", "regression", "linear", {}),
    "ridge": ("diabetes", "regression", "ridge", {"alpha": 0.5}),
    "binary_logistic": ("breast_cancer", "classification", "linear", {"C": 0.5}),
    "multinomial": ("iris", "classification", "linear", {"C": 2.0}),
}
CLASSES = {"diabetes": None, "breast_cancer": [0.0, 1.0], "iris": [0.0, 1.0, 2.0]}


# --------------------------------------------------------------------------------------------------------------
# helpers


def _train(conn, kind):
    """Train ``kind`` in the source database (loading its dataset once); return (model id, rows X)."""
    dataset, task, algorithm, hyperparams = KINDS[kind]
    if conn.execute("SELECT to_regclass(%s)", (dataset,)).fetchone()[0] is None:
        load_sklearn_dataset(conn, dataset)
    model_id = conn.execute(
        "SELECT model_id FROM ml_stack.train(%s, %s, %s, 'target', algorithm => %s, hyperparams => %s::jsonb)",
        (f"src_{kind}", task, dataset, algorithm, json.dumps(hyperparams))).fetchone()[0]
    X, _ = fetch_xy(conn, dataset)
    return model_id, X


def _export(conn, model_id):
    """The document as text: what a user would save to a file or send over HTTP."""
    return conn.execute("SELECT ml_stack.export_model(%s::bigint)::text", (model_id,)).fetchone()[0]


def _import(conn, project, document, deploy=None):
    if deploy is None:
        query, params = "SELECT ml_stack.import_model(%s, %s::jsonb)", (project, document)
    else:
        query, params = "SELECT ml_stack.import_model(%s, %s::jsonb, deploy => %s)", (project, document, deploy)
    return conn.execute(query, params).fetchone()[0]


def _predictions(conn, key, X, proba):
    """predict (and predict_proba) of ``key`` (project name or model id) for every row of ``X``.

    The rows go in as one float8[][] parameter (floats travel exactly) and come out one by one in order, so the
    target database needs no table of its own.
    """
    arg = sql.Literal(key) if isinstance(key, str) else sql.SQL("{}::bigint").format(sql.Literal(key))
    query = sql.SQL("""
        SELECT ml_stack.predict({arg}, r.f), {proba}
        FROM generate_subscripts(%(x)s::float8[][], 1) AS i,
             LATERAL (SELECT ARRAY(SELECT unnest((%(x)s::float8[][])[i:i])) AS f) AS r
        ORDER BY i""").format(
        arg=arg, proba=sql.SQL("ml_stack.predict_proba({}, r.f)").format(arg) if proba else sql.NULL)
    return conn.execute(query, {"x": X.tolist()}).fetchall()


def _registry_counts(conn):
    return conn.execute("SELECT (SELECT count(*) FROM ml_stack.projects), (SELECT count(*) FROM ml_stack.snapshots),"
                        " (SELECT count(*) FROM ml_stack.models), (SELECT count(*) FROM ml_stack.deployments)"
                        ).fetchone()


@pytest.fixture
def target(pg_server, new_db):
    """Another database with nothing but ml_stack."""
    with pg_server.connect(new_db("ml_stack_import")) as c:
        c.execute("CREATE EXTENSION ml_stack")
        yield c


# --------------------------------------------------------------------------------------------------------------
# tests


@pytest.mark.parametrize("kind", KINDS)
def test_imported_model_serves_identically(conn, target, kind):
    task = KINDS[kind][1]
    proba = task == "classification"
    model_id, X = _train(conn, kind)
    expected = _predictions(conn, model_id, X, proba)
    assert all(p is not None for p, _ in expected)

    imported = _import(target, "imported", _export(conn, model_id))
    assert _predictions(target, imported, X, proba) == expected
    # Deployed by default: the project serves it too.
    assert _predictions(target, "imported", X, proba) == expected


@pytest.mark.parametrize("kind", KINDS)
def test_document_carries_provenance(conn, target, kind):
    dataset, task, algorithm, hyperparams = KINDS[kind]
    model_id, _ = _train(conn, kind)
    doc = json.loads(_export(conn, model_id))
    source = conn.execute("SELECT metrics, hyperparams, classes, num_features FROM ml_stack.models WHERE id = %s",
                          (model_id,)).fetchone()

    assert doc["task"] == task and doc["algorithm"] == algorithm and doc["engine"] == "sql"
    assert [f["name"] for f in doc["features"]] == feature_columns(dataset)
    assert doc["num_features"] == len(feature_columns(dataset))
    assert doc["label"]["name"] == "target"
    assert doc["metrics"] == source[0] and set(doc["metrics"]) >= (
        {"r2", "mean_squared_error", "mean_absolute_error"} if task == "regression"
        else {"accuracy", "precision", "recall", "f1", "log_loss"})
    assert doc["hyperparams"] == source[1] and hyperparams.items() <= doc["hyperparams"].items()
    assert doc["classes"] == CLASSES[dataset] == source[2]
    assert doc["exported_by"].startswith("ml_stack ")

    # The provenance lands in the other registry, not only the artifact.
    imported = _import(target, "imported", json.dumps(doc))
    row = target.execute(
        "SELECT m.task, m.algorithm, m.engine, m.metrics, m.hyperparams, m.classes, m.num_features, m.status,"
        "       s.features, s.label ->> 'name'"
        " FROM ml_stack.models AS m JOIN ml_stack.snapshots AS s ON s.id = m.snapshot_id WHERE m.id = %s",
        (imported,)).fetchone()
    assert row == (task, algorithm, "sql", source[0], source[1], source[2], source[3], "imported",
                   doc["features"], "target")


def test_import_without_deploy(conn, target):
    model_id, X = _train(conn, "binary_logistic")
    document = _export(conn, model_id)

    # A new project: the model is registered and served by id, but the project serves nothing.
    first = _import(target, "bc", document, deploy=False)
    assert target.execute("SELECT count(*) FROM ml_stack.deployed_models").fetchone()[0] == 0
    assert target.execute("SELECT count(*) FROM ml_stack.deployments").fetchone()[0] == 0
    with pytest.raises(errors.Error, match="no deployed model") as info:
        target.execute("SELECT ml_stack.predict('bc', %s::float8[])", (X[0].tolist(),))
    assert info.value.diag.sqlstate == "PT503"   # PostgREST: 503
    assert _predictions(target, first, X, True) == _predictions(conn, model_id, X, True)

    # A project that serves a model: importing another without deploying leaves it serving the first.
    deployed = _import(target, "bc", document)
    _import(target, "bc", document, deploy=False)
    assert target.execute("SELECT model_id FROM ml_stack.deployed_models WHERE project_name = 'bc'"
                          ).fetchone()[0] == deployed


def test_import_into_project_of_other_task_fails_cleanly(conn, target):
    regression_id, X = _train(conn, "ols")
    classifier_id, _ = _train(conn, "multinomial")
    served = _import(target, "shared", _export(conn, regression_id))
    before = _registry_counts(target)
    predictions = _predictions(target, "shared", X, False)

    with pytest.raises(errors.InvalidParameterValue, match='project "shared" is a regression project') as exc:
        _import(target, "shared", _export(conn, classifier_id))
    assert exc.value.diag.message_hint  # says what to do instead

    # Nothing half-done: no orphan snapshot or model, no new predictor, and the project serves as before.
    assert _registry_counts(target) == before
    assert target.execute(r"SELECT count(*) FROM pg_proc WHERE proname ~ '^_model_\d+_predict$'"
                          ).fetchone()[0] == 1
    assert target.execute("SELECT model_id FROM ml_stack.deployed_models").fetchone()[0] == served
    assert _predictions(target, "shared", X, False) == predictions


def test_importing_twice_gives_two_models(conn, target):
    model_id, X = _train(conn, "multinomial")
    document = _export(conn, model_id)
    first = _import(target, "iris", document)
    second = _import(target, "iris", document)
    assert first != second
    assert target.execute("SELECT count(*) FROM ml_stack.models WHERE project_id ="
                          " (SELECT id FROM ml_stack.projects WHERE name = 'iris')").fetchone()[0] == 2
    # The newest import is the deployed one; both serve the same thing.
    assert target.execute("SELECT model_id FROM ml_stack.deployed_models WHERE project_name = 'iris'"
                          ).fetchone()[0] == second
    expected = _predictions(conn, model_id, X, True)
    assert _predictions(target, first, X, True) == expected
    assert _predictions(target, second, X, True) == expected


def test_project_name_is_data_not_sql(conn, target):
    """The project name ends up in the generated dispatch function: quotes and case must survive as written."""
    model_id, X = _train(conn, "ols")
    name = """Project 'quoted' "and" mixed; -- case"""
    _import(target, name, _export(conn, model_id))
    assert _predictions(target, name, X, False) == _predictions(conn, model_id, X, False)
    with pytest.raises(errors.Error, match="does not exist") as info:
        target.execute("SELECT ml_stack.predict('project ''quoted'' \"and\" mixed; -- case', %s::float8[])",
                       (X[0].tolist(),))
    assert info.value.diag.sqlstate == "PT404"


def test_export_of_unknown_model(conn):
    with pytest.raises(errors.UndefinedObject, match="model 12345 does not exist"):
        conn.execute("SELECT ml_stack.export_model(12345)")


# How to damage a document: (kind of model, JSON path, value, or None to delete the key). Each makes the document
# unusable or wrong; the artifact is turned into SQL text, so import_model must refuse each with its own check
# (22023, "damaged") before anything is compiled. tests/test_bad_input.py covers strings, injections and wrong
# counts; these are the JSON nulls, a missing link, and class lists that break "classes ascending".
DAMAGE = {
    "coefficient_null": ("ols", ["artifact", "coefficients", "0", "0"], "null"),
    "intercept_null": ("ols", ["artifact", "intercepts", "0"], "null"),
    "link_missing": ("ols", ["artifact", "link"], None),
    "classes_descending": ("binary_logistic", ["classes"], "[1, 0]"),
    "classes_duplicated": ("binary_logistic", ["classes"], "[0, 0]"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_document_is_refused_cleanly(conn, target, damage):
    kind, path, value = DAMAGE[damage]
    model_id, _ = _train(conn, kind)
    damaged = ("SELECT (ml_stack.export_model(%s::bigint) #- %s)::text" if value is None
               else "SELECT jsonb_set(ml_stack.export_model(%s::bigint), %s, %s::jsonb)::text")
    document = conn.execute(damaged, (model_id, path) + (() if value is None else (value,))).fetchone()[0]
    before = _registry_counts(target)
    with pytest.raises(errors.InvalidParameterValue, match="model document is damaged"):
        _import(target, "damaged", document)
    assert _registry_counts(target) == before
