"""Models trained by the python engine, exported with export_model and imported into a database that has only
ml_stack (no PL/Python there), predict exactly what they predicted at home, and what the library predicts."""

import numpy as np
import pytest
from psycopg import errors
from psycopg.types.json import Jsonb

from datasets import feature_columns, load_sklearn_dataset
from helpers import train
from test_python_engine import library_outputs, oracle

CASES = [
    # project, dataset, task, algorithm, hyperparams, format
    ("xgb_reg", "diabetes", "regression", "xgboost", {"n_estimators": 30}, "trees"),
    ("xgb_bin", "breast_cancer", "classification", "xgboost", {"n_estimators": 30}, "trees"),
    ("xgb_multi", "iris", "classification", "xgboost", {"n_estimators": 20}, "trees"),
    ("forest", "wine", "classification", "random_forest", {"n_estimators": 15}, "trees"),
    ("hist", "diabetes", "regression", "hist_gradient_boosting", {"max_iter": 20}, "trees"),
    ("lasso", "diabetes", "regression", "lasso", {"alpha": 0.1}, "linear"),
]


def _serve(conn, project, table, columns, classification):
    arr = "ARRAY[" + ", ".join(f'"{c}"' for c in columns) + "]::float8[]"
    pred = np.array([r[0] for r in conn.execute(
        f"SELECT ml_stack.predict(%s, {arr}) FROM {table} ORDER BY row_number() OVER ()", (project,))], dtype=float)
    proba = None
    if classification:
        proba = np.array([r[0] for r in conn.execute(
            f"SELECT ml_stack.predict_proba(%s, {arr}) FROM {table} ORDER BY row_number() OVER ()", (project,))])
    return pred, proba


@pytest.fixture
def pure_sql(pg_server, new_db):
    """A database with ml_stack only: no plpython3u, no ml_stack_python."""
    name = new_db("ml_stack_pure_sql")
    with pg_server.connect(name) as c:
        c.execute("CREATE EXTENSION ml_stack")
        yield c


@pytest.mark.parametrize("project, dataset, task, algorithm, hyperparams, fmt", CASES, ids=[c[0] for c in CASES])
def test_python_models_serve_identically_in_a_database_without_python(conn, pure_sql, project, dataset, task,
                                                                       algorithm, hyperparams, fmt):
    conn.execute("CREATE EXTENSION ml_stack_python CASCADE")
    load_sklearn_dataset(conn, dataset)
    model_id = train(conn, project, task, dataset, "target", algorithm=algorithm, hyperparams=hyperparams)["model_id"]
    document = conn.execute("SELECT ml_stack.export_model(%s)", (model_id,)).fetchone()[0]
    assert document["artifact"]["format"] == fmt
    if algorithm == "xgboost":
        assert "learner" in document["artifact"]["booster"]          # XGBoost's own JSON travels with it
    columns = feature_columns(dataset)
    classification = task == "classification"
    home = _serve(conn, project, dataset, columns, classification)

    load_sklearn_dataset(pure_sql, dataset)
    assert pure_sql.execute("SELECT count(*) FROM pg_extension WHERE extname IN ('plpython3u', 'ml_stack_python')"
                            ).fetchone()[0] == 0
    pure_sql.execute("SELECT ml_stack.import_model(%s, %s)", (project, Jsonb(document)))
    away = _serve(pure_sql, project, dataset, columns, classification)
    assert np.array_equal(away[0], home[0])
    if classification:
        assert np.array_equal(np.stack(away[1]), np.stack(home[1]))

    # and what the library itself predicts on the same rows
    est, V, y, _, _, classes = oracle(conn, model_id, dataset, dataset)
    expected, expected_proba = library_outputs(est, V, classes)
    if classification:
        assert np.array_equal(away[0], expected)
        assert np.abs(np.stack(away[1]) - expected_proba).max() <= 1e-5
    else:
        assert np.abs(away[0] - expected).max() <= 1e-5 * np.abs(y).max()


def test_pickled_models_are_exported_but_not_imported(conn, pure_sql):
    conn.execute("CREATE EXTENSION ml_stack_python CASCADE")
    load_sklearn_dataset(conn, "diabetes")
    model_id = train(conn, "svr", "regression", "diabetes", "target", algorithm="svm")["model_id"]
    document = conn.execute("SELECT ml_stack.export_model(%s)", (model_id,)).fetchone()[0]
    assert document["artifact"]["format"] == "python" and len(document["artifact"]["sha256"]) == 64
    with pytest.raises(errors.FeatureNotSupported) as exc:
        pure_sql.execute("SELECT ml_stack.import_model('svr', %s)", (Jsonb(document),))
    assert "runs code" in exc.value.diag.message_hint
    assert pure_sql.execute("SELECT count(*) FROM ml_stack.models").fetchone()[0] == 0
