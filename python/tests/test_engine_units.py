"""Unit tests of the engine's checks and of python-format serving, with a stand-in for PL/Python's plpy."""

import json

import numpy as np
import pytest
from sklearn import datasets as skd
from sklearn.neighbors import KNeighborsClassifier

from ml_stack_python import estimators, export, search, serving
from ml_stack_python.errors import MLStackError
from ml_stack_python.jsonutil import dumps


class FakePlpy:
    """What serving needs of plpy: prepare/execute over a dict of model rows, notice and warning."""

    def __init__(self, models):
        self.models = models
        self.executed = 0
        self.messages = []

    def prepare(self, query, types):
        return query

    def execute(self, plan, args=()):
        self.executed += 1
        assert "FROM ml_stack.models" in plan
        row = self.models.get(args[0])
        return [] if row is None else [row]

    def notice(self, text, **kw):
        self.messages.append(text)

    warning = notice


def test_estimator_classes_and_wrong_tasks():
    assert estimators.estimator_class("regression", "xgboost").__name__ == "XGBRegressor"
    assert estimators.estimator_class("classification", "ridge").__name__ == "RidgeClassifier"
    with pytest.raises(MLStackError) as e:
        estimators.estimator_class("classification", "lasso")
    assert e.value.sqlstate == "0A000" and "linear" in e.value.hint
    with pytest.raises(MLStackError) as e:
        estimators.estimator_class("regression", "gpt")
    assert e.value.sqlstate == "22023" and "xgboost" in e.value.hint


def test_hyperparameter_checks():
    cls = estimators.estimator_class("regression", "random_forest")
    with pytest.raises(MLStackError) as e:
        estimators.check_names(cls, "random_forest", "regression", ["n_trees"])
    assert "n_estimators" in e.value.hint
    with pytest.raises(MLStackError) as e:
        estimators.make_estimator(cls, "random_forest", {"max_depth": -3})
    assert "max_depth" in e.value.message and "default: None" in e.value.hint
    xgb = estimators.estimator_class("regression", "xgboost")
    estimators.check_names(xgb, "xgboost", "regression", ["eta", "lambda", "max_depth"])
    with pytest.raises(MLStackError):
        estimators.check_names(xgb, "xgboost", "regression", ["callbacks"])
    for bad in ({"n_estimators": 0}, {"n_estimators": "10"}, {"n_estimators": True}, {"random_state": 1.5}):
        with pytest.raises(MLStackError):
            estimators.make_estimator(xgb, "xgboost", bad)
    rf = estimators.estimator_class("classification", "random_forest")
    est = estimators.make_estimator(rf, "random_forest", {"class_weight": {"3": 2.0, "5": 1.0}}, [3.0, 5.0])
    assert est.class_weight == {0: 2.0, 1: 1.0}


def test_defaults():
    svc = estimators.estimator_class("classification", "svm")
    assert estimators.defaults(svc, "classification", "svm", 42, {}) == {"random_state": 42, "probability": True}
    assert estimators.defaults(svc, "classification", "svm", 42, {"probability": False}) == {"random_state": 42}
    knn = estimators.estimator_class("regression", "knn")
    assert estimators.defaults(knn, "regression", "knn", 42, {}) == {}
    xgb = estimators.estimator_class("regression", "xgboost")
    assert estimators.defaults(xgb, "regression", "xgboost", 2 ** 31 + 5, {}) == {"random_state": 5,
                                                                                    "tree_method": "hist"}


def test_search_parse():
    cls = estimators.estimator_class("regression", "xgboost")

    def parse(**kw):
        return search.parse(kw, cls, "xgboost", "regression", kw.pop("hyper", {}))

    assert parse() is None
    assert parse(search="grid", search_params={"max_depth": [1, 2]}) == {
        "method": "grid", "params": {"max_depth": [1, 2]}, "cv": 5, "n_iter": None, "scoring": "r2"}
    assert parse(search="random", search_params={"max_depth": [1, 2]}, search_args={"cv": 3})["n_iter"] == 10
    for bad in (dict(search="grid"), dict(search="grid", search_params={"max_depth": []}),
                dict(search="grid", search_params=[1]), dict(search_params={"max_depth": [1]}),
                dict(search_args={"cv": 3}), dict(search="grid", search_params={"max_depth": [1]}, search_args=[]),
                dict(search="grid", search_params={"max_depth": [1]}, search_args={"cv": True}),
                dict(search="grid", search_params={"max_depth": [1]}, hyper={"max_depth": 2})):
        with pytest.raises(MLStackError) as e:
            parse(**bad)
        assert e.value.hint and e.value.sqlstate == "22023", bad


def test_dumps_makes_numpy_and_nan_json():
    text = dumps({"a": np.float32(0.5), "b": np.int64(3), "c": [np.nan, np.inf, 1.0], "d": np.array([1, 2]),
                  "e": (np.bool_(True),)})
    assert json.loads(text) == {"a": 0.5, "b": 3, "c": [None, None, 1.0], "d": [1, 2], "e": [True]}
    assert json.loads(dumps(0.1 + 0.2)) == 0.1 + 0.2


def _python_model(model_id=1):
    X, y = skd.load_iris(return_X_y=True)
    transform = [{"impute": 5.0 if j == 0 else None, "shift": 1.0, "scale": 2.0} for j in range(4)]
    V = (X - 1.0) / 2.0
    est = KNeighborsClassifier().fit(V, y)
    art = export.python_artifact(est, "classification", transform)
    row = {"artifact": json.dumps(art), "classes": [10.0, 20.0, 30.0], "num_features": 4, "task": "classification"}
    return est, X, V, row


def test_serving_loads_once_and_evicts_on_a_larger_generation():
    serving.clear()
    est, X, V, row = _python_model()
    plpy = FakePlpy({1: row})
    for x, v in zip(X[:20], V[:20]):
        assert serving.predict(plpy, 1, 5, list(x)) == [10.0, 20.0, 30.0][int(est.predict(v[None])[0])]
    assert plpy.executed == 1
    assert serving.predict_proba(plpy, 1, 0, list(X[0])) == list(est.predict_proba(V[:1])[0])
    assert plpy.executed == 1                       # a smaller generation: no eviction
    serving.predict(plpy, 1, 6, list(X[0]))
    assert plpy.executed == 2                       # a larger one: reloaded
    (state,) = serving.cache_state()
    assert state["model_id"] == 1 and state["generation"] == 6 and state["loads"] == 2 and state["calls"] == 1
    # NULL / NaN: imputed where there is a rule, else NULL
    assert serving.predict(plpy, 1, 6, [None, *X[0, 1:]]) == serving.predict(plpy, 1, 6, [5.0, *X[0, 1:]])
    assert serving.predict(plpy, 1, 6, [X[0, 0], None, *X[0, 2:]]) is None
    assert serving.predict(plpy, 1, 6, [X[0, 0], float("nan"), *X[0, 2:]]) is None
    assert serving.predict(plpy, 1, 6, None) is None
    with pytest.raises(MLStackError) as e:
        serving.predict(plpy, 1, 6, [1.0, 2.0])
    assert "takes 4 features, got 2" in e.value.message
    serving.clear()


def test_serving_checks_the_sha256():
    serving.clear()
    est, X, V, row = _python_model()
    art = json.loads(row["artifact"])
    art["sha256"] = "0" * 64
    plpy = FakePlpy({1: {**row, "artifact": json.dumps(art)}})
    with pytest.raises(MLStackError) as e:
        serving.predict(plpy, 1, 1, list(X[0]))
    assert e.value.sqlstate == "XX001"
    assert serving.cache_state() == []
    with pytest.raises(MLStackError) as e:
        serving.predict(plpy, 2, 1, list(X[0]))
    assert e.value.sqlstate == "42704"
