"""Evaluation (0.5.0): evaluate, confusion_matrix, roc_curve, precision_recall_curve and feature_importance, each
checked against scikit-learn on the predictions the database serves (and the linear importances against the
library's own coefficients)."""

import math

import numpy as np
import pytest
from psycopg import errors
from sklearn import metrics as skm
from sklearn.linear_model import LinearRegression

from datasets import load_sklearn_dataset
from helpers import registry_rows, train


def served(conn, model_id, table, X, proba=True):
    """The model's predictions (and probabilities) of every row of X, as the database serves them."""
    yhat = [conn.execute("SELECT ml_stack.predict(%s::bigint, %s::float8[])", (model_id, list(map(float, x)))).fetchone()[0]
            for x in X]
    p = [conn.execute("SELECT ml_stack.predict_proba(%s::bigint, %s::float8[])", (model_id, list(map(float, x)))).fetchone()[0]
         for x in X] if proba else None
    return np.array(yhat), (np.array(p) if proba else None)


@pytest.fixture
def cancer(conn):
    X, y = load_sklearn_dataset(conn, "breast_cancer")
    model = train(conn, "cancer", "classification", "breast_cancer", "target", test_sampling="last")
    return conn, model, X, y


def test_evaluate_gives_the_metrics_of_scikit_learn(cancer):
    conn, model, X, y = cancer
    yhat, p = served(conn, model["model_id"], "breast_cancer", X)
    got = conn.execute("SELECT ml_stack.evaluate(%s, 'breast_cancer')", (model["model_id"],)).fetchone()[0]
    assert got["rows"] == len(y) and got["no_prediction"] == 0
    assert math.isclose(got["accuracy"], skm.accuracy_score(y, yhat), rel_tol=1e-12)
    assert math.isclose(got["f1"], skm.f1_score(y, yhat, average="macro"), rel_tol=1e-12)
    assert math.isclose(got["precision"], skm.precision_score(y, yhat, average="macro"), rel_tol=1e-12)
    assert math.isclose(got["recall"], skm.recall_score(y, yhat, average="macro"), rel_tol=1e-12)
    assert math.isclose(got["roc_auc"], skm.roc_auc_score(y, p[:, 1]), rel_tol=1e-12)
    assert math.isclose(got["log_loss"], skm.log_loss(y, p), rel_tol=1e-9)
    # on the test rows alone, the metrics stored at training
    n_test = math.ceil(len(y) * 0.25)
    conn.execute(f"CREATE VIEW test_rows AS SELECT * FROM (SELECT *, row_number() OVER () AS n FROM breast_cancer) AS t "
                 f"WHERE n > {len(y) - n_test}")
    on_test = conn.execute("SELECT ml_stack.evaluate(%s, 'test_rows')", (model["model_id"],)).fetchone()[0]
    for key in ("accuracy", "f1", "precision", "recall", "roc_auc", "log_loss"):
        assert math.isclose(on_test[key], model["metrics"][key], rel_tol=1e-12), key


def test_evaluate_a_regression(conn):
    X, y = load_sklearn_dataset(conn, "diabetes")
    model = train(conn, "diabetes", "regression", "diabetes", "target")
    yhat, _ = served(conn, model["model_id"], "diabetes", X, proba=False)
    got = conn.execute("SELECT ml_stack.evaluate(%s, 'diabetes')", (model["model_id"],)).fetchone()[0]
    assert math.isclose(got["r2"], skm.r2_score(y, yhat), rel_tol=1e-12)
    assert math.isclose(got["mean_squared_error"], skm.mean_squared_error(y, yhat), rel_tol=1e-12)
    assert math.isclose(got["mean_absolute_error"], skm.mean_absolute_error(y, yhat), rel_tol=1e-12)


def test_confusion_matrix_and_curves_match_scikit_learn(cancer):
    conn, model, X, y = cancer
    yhat, p = served(conn, model["model_id"], "breast_cancer", X)
    cm = conn.execute("SELECT actual, predicted, count FROM ml_stack.confusion_matrix(%s, 'breast_cancer')",
                      (model["model_id"],)).fetchall()
    expected = skm.confusion_matrix(y, yhat, labels=[0, 1])
    assert cm == [(str(a), str(b), int(expected[a, b])) for a in (0, 1) for b in (0, 1)]

    roc = np.array(conn.execute("SELECT threshold, fpr, tpr FROM ml_stack.roc_curve(%s, 'breast_cancer')",
                                (model["model_id"],)).fetchall(), dtype=float)
    fpr, tpr, thresholds = skm.roc_curve(y, p[:, 1], drop_intermediate=False)
    np.testing.assert_allclose(roc[:, 1], fpr, rtol=1e-12)
    np.testing.assert_allclose(roc[:, 2], tpr, rtol=1e-12)
    assert roc[0, 0] == math.inf   # scikit-learn 1.2 writes max + 1 there, 1.3 and later inf
    np.testing.assert_array_equal(roc[1:, 0], thresholds[1:])

    pr = np.array(conn.execute('SELECT threshold, "precision", recall FROM ml_stack.precision_recall_curve(%s, '
                               "'breast_cancer')", (model["model_id"],)).fetchall(), dtype=float)
    precision, recall, thresholds = skm.precision_recall_curve(y, p[:, 1])
    np.testing.assert_array_equal(pr[:, 0], thresholds)
    np.testing.assert_allclose(pr[:, 1], precision[:-1], rtol=1e-12)
    np.testing.assert_allclose(pr[:, 2], recall[:-1], rtol=1e-12)


def test_a_confusion_matrix_by_class_name_with_a_class_the_model_never_saw(conn):
    conn.execute("""CREATE TABLE fruit AS SELECT i::float8 AS weight, (i % 7)::float8 AS colour,
                    CASE WHEN i % 3 = 0 THEN 'apple' WHEN i % 3 = 1 THEN 'pear' ELSE 'plum' END AS kind
                    FROM generate_series(1, 300) AS i""")
    model = train(conn, "fruit", "classification", "fruit", "kind")
    conn.execute("CREATE TABLE later AS SELECT * FROM fruit UNION ALL SELECT 5, 1, 'kiwi'")
    cm = conn.execute("SELECT actual, predicted, count FROM ml_stack.confusion_matrix(%s, 'later')",
                      (model["model_id"],)).fetchall()
    labels = ["apple", "pear", "plum"]
    assert [(a, b) for a, b, _ in cm] == [(a, b) for a in labels + ["(unseen)"] for b in labels]
    rows = conn.execute("SELECT kind, ml_stack.predict_label_row('fruit', to_jsonb(l)) FROM later AS l").fetchall()
    expected = skm.confusion_matrix([r[0] for r in rows], [r[1] for r in rows], labels=labels + ["kiwi"])
    assert [c for _, _, c in cm] == [int(expected[i, j]) for i in range(4) for j in range(3)]


def test_feature_importance_of_linear_models(conn):
    X, y = load_sklearn_dataset(conn, "diabetes")
    model = train(conn, "diabetes", "regression", "diabetes", "target", test_sampling="last")
    n_train = len(y) - math.ceil(len(y) * 0.25)
    ols = LinearRegression().fit(X[:n_train], y[:n_train])
    got = conn.execute("SELECT feature, importance, class FROM ml_stack.feature_importance(%s)",
                       (model["model_id"],)).fetchall()
    names = [r[0] for r in conn.execute("SELECT jsonb_array_elements(features) ->> 'name' FROM ml_stack.snapshots")]
    assert [g[0] for g in got] == names and all(g[2] is None for g in got)
    np.testing.assert_allclose([g[1] for g in got], ols.coef_ * X[:n_train].std(axis=0), rtol=1e-6)

    load_sklearn_dataset(conn, "iris")
    model = train(conn, "iris", "classification", "iris", "target")
    got = conn.execute("SELECT class, count(*) FROM ml_stack.feature_importance(%s) GROUP BY class ORDER BY class",
                       (model["model_id"],)).fetchall()
    assert got == [("0", 4), ("1", 4), ("2", 4)]


def test_feature_importance_of_trees_counts_the_splits_as_xgboost(conn):
    xgboost = pytest.importorskip("xgboost")
    conn.execute("CREATE EXTENSION IF NOT EXISTS ml_stack_python CASCADE")
    X, y = load_sklearn_dataset(conn, "diabetes")
    model = train(conn, "xgb", "regression", "diabetes", "target", algorithm="xgboost", test_sampling="last",
                  hyperparams={"n_estimators": 15, "max_depth": 3})
    n_train = len(y) - math.ceil(len(y) * 0.25)
    lib = xgboost.XGBRegressor(n_estimators=15, max_depth=3).fit(X[:n_train], y[:n_train])
    weight = lib.get_booster().get_score(importance_type="weight")
    got = conn.execute("SELECT importance FROM ml_stack.feature_importance(%s, 'weight')", (model["model_id"],)).fetchall()
    assert [g[0] for g in got] == [weight.get(f"f{j}", 0.0) for j in range(X.shape[1])]
    # XGBoost's other importance types, from the booster's own statistics; gain is the default (0.5.1)
    for kind in ("gain", "total_gain", "cover", "total_cover"):
        score = lib.get_booster().get_score(importance_type=kind)
        got = conn.execute("SELECT importance FROM ml_stack.feature_importance(%s, %s)", (model["model_id"], kind)).fetchall()
        np.testing.assert_allclose([g[0] for g in got], [score.get(f"f{j}", 0.0) for j in range(X.shape[1])], rtol=1e-5)
    assert conn.execute("SELECT array_agg(importance ORDER BY feature) FROM ml_stack.feature_importance(%s)", (model["model_id"],)).fetchone() == \
        conn.execute("SELECT array_agg(importance ORDER BY feature) FROM ml_stack.feature_importance(%s, 'gain')", (model["model_id"],)).fetchone()
    with pytest.raises(errors.InvalidParameterValue, match="total_cover"):
        conn.execute("SELECT * FROM ml_stack.feature_importance(%s, 'shap')", (model["model_id"],))


def _booster(conn, model_id):
    """The model's own XGBoost booster, from the JSON its artifact keeps: the oracle runs on the same trees."""
    xgboost = pytest.importorskip("xgboost")
    import json
    booster = xgboost.Booster()
    booster.load_model(bytearray(json.dumps(conn.execute("SELECT artifact -> 'booster' FROM ml_stack.models WHERE id = %s",
                                                         (model_id,)).fetchone()[0]).encode()))
    return xgboost, booster


@pytest.mark.parametrize("dataset, task", [("diabetes", "regression"), ("breast_cancer", "classification"),
                                           ("iris", "classification")])
def test_feature_contributions_are_xgboosts_and_add_up_to_the_margin(conn, dataset, task):
    conn.execute("CREATE EXTENSION IF NOT EXISTS ml_stack_python CASCADE")
    X, y = load_sklearn_dataset(conn, dataset)
    model = train(conn, "xgb", task, dataset, "target", algorithm="xgboost", hyperparams={"n_estimators": 12, "max_depth": 3})
    xgboost, booster = _booster(conn, model["model_id"])
    rows = X[:25]
    dm = xgboost.DMatrix(rows)
    oracle = booster.predict(dm, pred_contribs=True, approx_contribs=True)   # (n, p + 1) or (n, k, p + 1)
    margin = booster.predict(dm, output_margin=True)
    if oracle.ndim == 2:
        oracle, margin = oracle[:, None, :], margin.reshape(-1, 1)
    for i, row in enumerate(rows):
        got = conn.execute("SELECT feature, contribution, class FROM ml_stack.feature_contributions(%s, %s::float8[])",
                           (model["model_id"], row.tolist())).fetchall()
        k = oracle.shape[1]
        values = np.array([g[1] for g in got]).reshape(k, X.shape[1] + 1)
        np.testing.assert_allclose(values, oracle[i], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(values.sum(axis=1), margin[i], rtol=1e-5, atol=1e-4)
        assert got[-1][0] == "(bias)" and (got[-1][2] is None) == (k == 1)
    # the row form: the deployed model, the row by column names
    first = conn.execute(f"SELECT to_jsonb(t) FROM {dataset} AS t LIMIT 1").fetchone()[0]
    by_row = conn.execute("SELECT contribution FROM ml_stack.feature_contributions_row('xgb', %s)", (psycopg_json(first),)).fetchall()
    np.testing.assert_allclose([r[0] for r in by_row], oracle[0].ravel(), rtol=1e-4, atol=1e-5)


def psycopg_json(value):
    from psycopg.types.json import Jsonb
    return Jsonb(value)


def test_feature_contributions_refuse_other_models(conn):
    load_sklearn_dataset(conn, "diabetes")
    linear = train(conn, "lin", "regression", "diabetes", "target")["model_id"]
    with pytest.raises(errors.FeatureNotSupported, match="XGBoost models only"):
        conn.execute("SELECT * FROM ml_stack.feature_contributions(%s, ARRAY[1,2,3,4,5,6,7,8,9,10])", (linear,))
    with pytest.raises(errors.UndefinedObject):
        conn.execute("SELECT * FROM ml_stack.feature_contributions(999, ARRAY[1])")


def test_evaluation_refuses_what_it_cannot_do(conn):
    load_sklearn_dataset(conn, "diabetes")
    load_sklearn_dataset(conn, "iris")
    reg = train(conn, "diabetes", "regression", "diabetes", "target")["model_id"]
    multi = train(conn, "iris", "classification", "iris", "target")["model_id"]
    conn.execute("CREATE TABLE partial AS SELECT age, sex, target FROM diabetes")
    before = registry_rows(conn)
    cases = [
        ("SELECT ml_stack.evaluate(%s, 'partial')" % reg, errors.UndefinedColumn, 'lacks columns of model 1: "bmi"'),
        ("SELECT ml_stack.evaluate(%s, 'nope')" % reg, errors.UndefinedTable, "nope"),
        ("SELECT ml_stack.evaluate(999, 'diabetes')", errors.UndefinedObject, "model 999 does not exist"),
        ("SELECT * FROM ml_stack.confusion_matrix(%s, 'diabetes')" % reg, errors.WrongObjectType, "regression"),
        ("SELECT * FROM ml_stack.roc_curve(%s, 'iris')" % multi, errors.WrongObjectType, "not a binary classifier"),
        ("SELECT * FROM ml_stack.feature_importance(999)", errors.UndefinedObject, "does not exist"),
    ]
    for query, error, message in cases:
        with pytest.raises(error, match=message) as e:
            conn.execute(query)
        assert e.value.diag.message_hint, query
    assert registry_rows(conn) == before


def test_feature_importance_names_the_dimensions_of_vectorized_text(conn):
    conn.execute("""CREATE TABLE tx AS SELECT (ARRAY['red apple', 'green pear', 'blue plum'])[1 + i % 3] AS note,
                    (i % 7)::float8 AS x, (i % 3 = 0 OR i % 7 > 4)::integer AS y FROM generate_series(1, 300) AS i""")
    model = train(conn, "tx", "classification", "tx", "y", preprocess={"note": {"vectorize": "hashing", "options": {"dims": 4}}})
    got = conn.execute("SELECT feature, importance FROM ml_stack.feature_importance(%s)", (model["model_id"],)).fetchall()
    assert [g[0] for g in got] == ["note[1]", "note[2]", "note[3]", "note[4]", "x"]
    art, x_std = conn.execute("SELECT m.artifact, (s.features -> 0 ->> 'std')::float8 FROM ml_stack.models AS m "
                              "JOIN ml_stack.snapshots AS s ON s.id = m.snapshot_id WHERE m.id = %s",
                              (model["model_id"],)).fetchone()
    assert math.isclose(got[4][1], art["coefficients"][0][4] * x_std, rel_tol=1e-12)
    assert [g[1] for g in got[:4]] == art["coefficients"][0][:4]


def test_evaluate_a_classifier_without_probabilities(conn):
    conn.execute("CREATE EXTENSION IF NOT EXISTS ml_stack_python CASCADE")
    X, y = load_sklearn_dataset(conn, "breast_cancer")
    model = train(conn, "rc", "classification", "breast_cancer", "target", algorithm="ridge")
    yhat, _ = served(conn, model["model_id"], "breast_cancer", X, proba=False)
    got = conn.execute("SELECT ml_stack.evaluate(%s, 'breast_cancer')", (model["model_id"],)).fetchone()[0]
    assert math.isclose(got["accuracy"], skm.accuracy_score(y, yhat), rel_tol=1e-12)
    assert got["roc_auc"] is None and got["log_loss"] is None
    assert conn.execute("SELECT sum(count) FROM ml_stack.confusion_matrix(%s, 'breast_cancer')",
                        (model["model_id"],)).fetchone()[0] == len(y)
