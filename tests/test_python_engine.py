"""ml_stack_python, the Python engine (issue 3; contract: docs/python-engine.md).

The oracle is the same XGBoost 1.7 / scikit-learn 1.2 that the server's PL/Python sees: each model is fitted
again here on the rows the server trained on (reproduced from the snapshot's seed), with the hyperparameters
the registry recorded, and its test-split predictions must be the engine's. Also: installation checks,
load_dataset, hyperparameter search against scikit-learn's own, and bad inputs (SQLSTATE, hint, registry
unchanged).
"""

import math
import re
import time

import numpy as np
import psycopg
import pytest
import xgboost
from psycopg import sql
from sklearn import datasets as skdatasets
from sklearn import ensemble, linear_model, metrics as skm, neighbors, svm
from sklearn.model_selection import GridSearchCV, RandomizedSearchCV

from datasets import fetch_xy, feature_columns, load_sklearn_dataset, sanitize
from helpers import model_row, one_row, registry_rows, train
from test_split_metrics import train_mask

ORACLE = {
    "xgboost": (xgboost.XGBRegressor, xgboost.XGBClassifier),
    "random_forest": (ensemble.RandomForestRegressor, ensemble.RandomForestClassifier),
    "extra_trees": (ensemble.ExtraTreesRegressor, ensemble.ExtraTreesClassifier),
    "gradient_boosting_trees": (ensemble.GradientBoostingRegressor, ensemble.GradientBoostingClassifier),
    "hist_gradient_boosting": (ensemble.HistGradientBoostingRegressor, ensemble.HistGradientBoostingClassifier),
    "ada_boost": (ensemble.AdaBoostRegressor, ensemble.AdaBoostClassifier),
    "svm": (svm.SVR, svm.SVC),
    "knn": (neighbors.KNeighborsRegressor, neighbors.KNeighborsClassifier),
    "linear": (linear_model.LinearRegression, linear_model.LogisticRegression),
    "ridge": (linear_model.Ridge, linear_model.RidgeClassifier),
    "lasso": (linear_model.Lasso, None),
    "elastic_net": (linear_model.ElasticNet, None),
}
TREES = ("xgboost", "random_forest", "extra_trees", "gradient_boosting_trees", "hist_gradient_boosting")
LINEAR = ("linear", "ridge", "lasso", "elastic_net")
# task -> the dataset its tests train on
DATASET = {"regression": "diabetes", "binary": "breast_cancer", "multiclass": "iris"}


@pytest.fixture
def pconn(conn):
    """``conn`` with ml_stack_python installed."""
    conn.execute("CREATE EXTENSION ml_stack_python CASCADE")
    return conn


def sqlstate_of(excinfo):
    return excinfo.value.diag.sqlstate


# --------------------------------------------------------------------------------------------------------------
# the oracle


def oracle(conn, model_id, table, dataset):
    """The library's own fit of model ``model_id``: the same rows, hyperparameters, label encoding.

    Returns (estimator, X_test raw, y_test, classes or None, X raw, test mask)."""
    m = model_row(conn, model_id)
    X, y = fetch_xy(conn, table)
    y = y.astype(np.float64)
    train_, test_ = train_mask(conn, model_id, y)
    transform = m["artifact"]["transform"] if m["artifact"].get("transform") else None
    V = X.copy()
    if transform:
        for j, t in enumerate(transform):
            if t["impute"] is not None:
                V[np.isnan(V[:, j]), j] = t["impute"]
            V[:, j] = (V[:, j] - t["shift"]) / t["scale"]
    task = m["task"]
    cls = ORACLE[m["algorithm"]][task == "classification"]
    params = dict(m["hyperparams"])
    classes = m["classes"]
    y_fit = y[train_]
    if task == "classification":
        y_fit = np.searchsorted(np.asarray(classes), y_fit)
    est = cls(**params).fit(V[train_], y_fit)
    return est, V, y, train_, test_, classes


def library_outputs(est, V, classes):
    """(predictions as labels or values, probabilities or None) of the library on rows V."""
    if classes is None:
        return np.asarray(est.predict(V), dtype=np.float64), None
    pred = np.asarray(classes)[np.asarray(est.predict(V)).astype(int)]
    proba = est.predict_proba(V) if hasattr(est, "predict_proba") else None
    return pred, proba


def expected_metrics(task, y, pred, proba, classes):
    if task == "regression":
        return {"r2": skm.r2_score(y, pred), "mean_squared_error": skm.mean_squared_error(y, pred),
                "mean_absolute_error": skm.mean_absolute_error(y, pred)}
    out = {"accuracy": skm.accuracy_score(y, pred),
           "precision": skm.precision_score(y, pred, average="macro", zero_division=0),
           "recall": skm.recall_score(y, pred, average="macro", zero_division=0),
           "f1": skm.f1_score(y, pred, average="macro", zero_division=0)}
    if proba is not None:
        # ml_stack's definition: the mean of -ln(p of the true class), clipped to [eps, 1 - eps] (scikit-learn's
        # log_loss also renormalises each row, which moves XGBoost's float32 probabilities by ~1e-7)
        eps = 2.220446049250313e-16
        proba = np.asarray(proba, dtype=np.float64)
        p_true = proba[np.arange(len(y)), np.searchsorted(np.asarray(classes), y)]
        out["log_loss"] = float(np.mean(-np.log(np.clip(p_true, eps, 1 - eps))))
        if len(classes) == 2 and len(np.unique(y)) == 2:
            out["roc_auc"] = skm.roc_auc_score(y == classes[1], proba[:, 1])
    return out


def served(conn, table, columns, model):
    """ml_stack.predict / predict_proba of ``model`` (id or project) on every row of ``table``, in its order."""
    ref = sql.SQL("%s::bigint") if isinstance(model, int) else sql.SQL("%s::text")
    arr = sql.SQL("ARRAY[{}]::float8[]").format(sql.SQL(", ").join(map(sql.Identifier, columns)))
    q = sql.SQL("SELECT ml_stack.predict({r}, {a}) FROM {t}").format(r=ref, a=arr, t=sql.SQL(table))
    pred = np.array([r[0] for r in conn.execute(q, (model,))], dtype=np.float64)
    return pred


def served_proba(conn, table, columns, model):
    ref = sql.SQL("%s::bigint") if isinstance(model, int) else sql.SQL("%s::text")
    arr = sql.SQL("ARRAY[{}]::float8[]").format(sql.SQL(", ").join(map(sql.Identifier, columns)))
    q = sql.SQL("SELECT ml_stack.predict_proba({r}, {a}) FROM {t}").format(r=ref, a=arr, t=sql.SQL(table))
    return np.array([r[0] for r in conn.execute(q, (model,))], dtype=np.float64)


# --------------------------------------------------------------------------------------------------------------
# installation


def test_install_creates_the_engine_with_pinned_functions_and_comments(pconn):
    rows = pconn.execute(
        "SELECT p.oid::regprocedure::text, p.proconfig, obj_description(p.oid, 'pg_proc') FROM pg_catalog.pg_proc AS p"
        " JOIN pg_catalog.pg_depend AS d ON d.classid = 'pg_catalog.pg_proc'::regclass AND d.objid = p.oid"
        " AND d.deptype = 'e' JOIN pg_catalog.pg_extension AS e ON e.oid = d.refobjid"
        " WHERE e.extname = 'ml_stack_python'").fetchall()
    names = {r[0] for r in rows}
    assert {"ml_stack._python_fit(text,text,jsonb,jsonb)", "ml_stack._python_predict(bigint,bigint,double precision[])",
            "ml_stack._python_predict_proba(bigint,bigint,double precision[])", "ml_stack._python_cache()",
            "ml_stack.load_dataset(text)", "ml_stack._python_import()", "ml_stack._python_source(text)",
            "ml_stack._python_modules()"} <= names
    for name, config, comment in rows:
        assert config[0] == "search_path=pg_catalog, pg_temp", name   # (then e.g. extra_float_digits)
        if not name.startswith("ml_stack._python_so") and not name.startswith("ml_stack._python_mo"):
            assert comment, name
    # the serving entry points: not STRICT, STABLE, PARALLEL UNSAFE (test_python_serving says why)
    for fn in ("_python_predict", "_python_predict_proba"):
        strict, vol, par = pconn.execute(
            "SELECT proisstrict, provolatile, proparallel FROM pg_catalog.pg_proc WHERE proname = %s", (fn,)).fetchone()
        assert (strict, vol, par) == (False, "s", "u")
    modules = pconn.execute("SELECT ml_stack._python_modules()").fetchone()[0]
    assert set(modules) >= {"ml_stack_python", "ml_stack_python.engine", "ml_stack_python.serving",
                            "ml_stack_python.export", "ml_stack_python.trees", "ml_stack_python.data"}


def test_the_package_loads_once_per_backend_and_again_when_its_sources_change(pconn):
    assert pconn.execute("SELECT ml_stack._python_import()").fetchone()[0] == "ml_stack_python 0.4.0 (imported)"
    assert pconn.execute("SELECT ml_stack._python_import()").fetchone()[0] == "ml_stack_python 0.4.0 (loaded)"
    # the loaded package no longer matches the installed sources (as after an update in another session)
    pconn.execute("DO LANGUAGE plpython3u $$ import sys; sys.modules['ml_stack_python'].__ml_stack_digest__ = 'old' $$")
    assert pconn.execute("SELECT ml_stack._python_import()").fetchone()[0] == "ml_stack_python 0.4.0 (reloaded)"
    # a module imports its siblings through the package, as from files
    assert pconn.execute(
        "DO LANGUAGE plpython3u $$\nimport ml_stack_python.engine as e, ml_stack_python.data as d\n"
        "assert e.data is d\n$$") is not None


def test_install_needs_ml_stack_0_3_0(pg_server, new_db):
    db = new_db()
    with pg_server.connect(db) as c:
        c.execute("CREATE EXTENSION ml_stack VERSION '0.1.0'")
        with pytest.raises(psycopg.Error) as e:
            c.execute("CREATE EXTENSION ml_stack_python CASCADE")
        assert "ml_stack 0.3.0 or later" in str(e.value) and "0.1.0" in str(e.value)
        assert e.value.diag.message_hint.startswith("ALTER EXTENSION ml_stack UPDATE")
        assert sqlstate_of(e) == "55000"
        c.execute("ALTER EXTENSION ml_stack UPDATE")
        c.execute("CREATE EXTENSION ml_stack_python CASCADE")


def test_install_refuses_a_registry_that_a_non_superuser_can_write(pg_server, new_db):
    """Pickled models run code as the server when loaded: a database owner who is not a superuser may create
    ml_stack (and so own ml_stack.models), but then a superuser's CREATE EXTENSION ml_stack_python is refused."""
    db = new_db()
    with pg_server.connect() as admin:
        admin.execute("CREATE ROLE ml_stack_db_owner LOGIN")
        try:
            admin.execute(f'ALTER DATABASE "{db}" OWNER TO ml_stack_db_owner')
            with psycopg.connect(pg_server.dsn(db), user="ml_stack_db_owner", autocommit=True) as owner:
                owner.execute("CREATE EXTENSION ml_stack")
            with pg_server.connect(db) as c:
                with pytest.raises(psycopg.Error) as e:
                    c.execute("CREATE EXTENSION ml_stack_python CASCADE")
                assert sqlstate_of(e) == "42501"
                assert "ml_stack_db_owner, who is not a superuser" in e.value.diag.message_primary
                assert "as a superuser" in e.value.diag.message_hint
                assert c.execute("SELECT count(*) FROM pg_extension WHERE extname = 'ml_stack_python'").fetchone()[0] == 0
                c.execute("DROP EXTENSION ml_stack")
                c.execute("CREATE EXTENSION ml_stack_python CASCADE")     # now owned by a superuser
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            admin.execute("DROP ROLE ml_stack_db_owner")


def test_install_without_the_libraries_names_the_debian_packages(pconn):
    pconn.execute("DROP EXTENSION ml_stack_python")
    # this backend's Python can no longer import xgboost (as if python3-xgboost were not installed)
    pconn.execute("DO LANGUAGE plpython3u $$ import sys; sys.modules['xgboost'] = None $$")
    with pytest.raises(psycopg.Error) as e:
        pconn.execute("CREATE EXTENSION ml_stack_python")
    assert "missing: xgboost" in e.value.diag.message_primary
    assert "apt-get install python3-sklearn python3-xgboost" in e.value.diag.message_hint
    assert sqlstate_of(e) == "58P01"
    assert pconn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'ml_stack_python'").fetchone()[0] == 0


# --------------------------------------------------------------------------------------------------------------
# load_dataset


@pytest.mark.parametrize("name", ["iris", "breast_cancer", "diabetes", "wine", "digits", "linnerud"])
def test_load_dataset(pconn, name):
    table, rows = pconn.execute("SELECT * FROM ml_stack.load_dataset(%s)", (name,)).fetchone()
    bunch = getattr(skdatasets, f"load_{name}")()
    assert table == f"ml_stack.{name}" and rows == len(bunch.data)
    cols = pconn.execute(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = %s::regclass"
        " AND attnum > 0 AND NOT attisdropped ORDER BY attnum", (table,)).fetchall()
    assert [c[0] for c in cols] == [sanitize(f) for f in bunch.feature_names] + ["target"]
    assert all(t == "double precision" for _, t in cols[:-1])
    assert cols[-1][1] == ("double precision" if name in ("diabetes", "linnerud") else "integer")
    X, y = fetch_xy(pconn, table)   # the table name works as written in a query
    assert np.array_equal(X, bunch.data)
    target = bunch.target[:, 0] if name == "linnerud" else bunch.target
    assert np.array_equal(y, target)
    # loading again replaces the table
    assert pconn.execute("SELECT rows FROM ml_stack.load_dataset(%s)", (name,)).fetchone()[0] == rows
    assert pconn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == rows


def test_load_dataset_errors_and_comment(pconn):
    with pytest.raises(psycopg.Error) as e:
        pconn.execute("SELECT * FROM ml_stack.load_dataset('titanic')")
    assert sqlstate_of(e) == "22023" and "iris" in e.value.diag.message_hint
    with pytest.raises(psycopg.Error) as e:
        pconn.execute("SELECT * FROM ml_stack.load_dataset(NULL)")
    assert sqlstate_of(e) == "22023" and e.value.diag.message_hint
    assert "linnerud" in pconn.execute("SELECT obj_description('ml_stack.load_dataset(text)'::regprocedure)").fetchone()[0]


def test_load_dataset_then_train_with_the_table_name_as_returned(pconn):
    table = pconn.execute("SELECT table_name FROM ml_stack.load_dataset('wine')").fetchone()[0]
    res = train(pconn, "wine", "classification", table, "target", algorithm="xgboost")
    assert res["engine"] == "python" and res["metrics"]["f1"] > 0.8


# --------------------------------------------------------------------------------------------------------------
# agreement with the libraries

def _cases():
    cases = []
    for algorithm, (reg, clf) in ORACLE.items():
        cases.append((algorithm, "regression"))
        if clf is not None:
            cases += [(algorithm, "binary"), (algorithm, "multiclass")]
    return cases


@pytest.mark.parametrize("algorithm,kind", _cases())
def test_agreement_with_the_library(pconn, algorithm, kind):
    """Every algorithm x task: the stored metrics are the library's on the test split, and what ml_stack serves
    (compiled trees, folded linear weights or the cached estimator) is the library's prediction."""
    name = DATASET[kind]
    load_sklearn_dataset(pconn, name)
    task = "regression" if kind == "regression" else "classification"
    hyper = {"max_iter": 20} if algorithm == "hist_gradient_boosting" else \
        {"n_estimators": 20} if algorithm in TREES + ("ada_boost",) else {}
    if algorithm == "xgboost" and task == "classification":
        hyper["max_depth"] = 3
    res = train(pconn, name, task, name, "target", algorithm=algorithm, hyperparams=hyper, engine="python")
    assert res["engine"] == "python"
    mid = res["model_id"]
    m = model_row(pconn, mid)
    assert m["artifact"]["libraries"]["sklearn"] == __import__("sklearn").__version__
    expected_format = "trees" if algorithm in TREES else "linear" if algorithm in LINEAR and not (
        algorithm == "ridge" and task == "classification") else "python"
    assert m["artifact"]["format"] == expected_format
    est, V, y, train_, test_, classes = oracle(pconn, mid, name, name)
    for key, value in hyper.items():
        assert m["hyperparams"][key] == value
    if "random_state" in est.get_params():
        seed = pconn.execute("SELECT split_seed FROM ml_stack.projects WHERE name = %s", (name,)).fetchone()[0]
        assert m["hyperparams"]["random_state"] == seed
    pred, proba = library_outputs(est, V, classes)

    # metrics: of the library's predictions on the test rows
    want = expected_metrics(task, y[test_], pred[test_], None if proba is None else proba[test_], classes)
    for key, value in want.items():
        assert m["metrics"][key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
    if task == "classification" and proba is None:
        assert m["metrics"]["log_loss"] is None

    # serving, on every row of the table
    columns = feature_columns(name)
    got = served(pconn, name, columns, mid)
    if task == "classification":
        agree = np.mean(got == pred)
        assert agree == 1.0, f"{agree:.4f} of the classes agree"
        if proba is not None:
            gp = served_proba(pconn, name, columns, mid)
            assert np.abs(gp - proba).max() <= 1e-5
    else:
        assert np.abs(got - pred).max() <= 1e-5 * max(1.0, np.abs(pred).max())
    # by project name too (the deployed model)
    assert np.array_equal(served(pconn, name, columns, name), got)


def test_xgboost_float32_margins_are_served_bit_for_bit(pconn):
    load_sklearn_dataset(pconn, "diabetes")
    mid = train(pconn, "d", "regression", "diabetes", "target", algorithm="xgboost",
                hyperparams={"n_estimators": 50, "max_depth": 5})["model_id"]
    est, V, y, *_ = oracle(pconn, mid, "diabetes", "diabetes")
    got = served(pconn, "diabetes", feature_columns("diabetes"), mid)
    assert np.array_equal(got, est.predict(V).astype(np.float64))


def test_xgboost_early_stopping_serves_the_best_iteration(pconn):
    load_sklearn_dataset(pconn, "diabetes")
    mid = train(pconn, "d", "regression", "diabetes", "target", algorithm="xgboost",
                hyperparams={"n_estimators": 300, "learning_rate": 0.3, "early_stopping_rounds": 5})["model_id"]
    art = model_row(pconn, mid)["artifact"]
    best = int(art["booster"]["learner"]["attributes"]["best_iteration"])
    assert best < 299 and len(art["trees"]) == best + 1 == art["iteration_range"][1]


def test_python_engine_with_preprocessing_and_nulls(pconn):
    """A transform (impute, standard scale) is applied exactly as the SQL engine does it, in training and in
    serving; a NULL without an impute rule gives NULL."""
    load_sklearn_dataset(pconn, "diabetes")
    pconn.execute("UPDATE diabetes SET bmi = NULL WHERE bmi < -0.07")
    pre = {"bmi": {"impute": "mean", "scale": "standard"}, "age": {"scale": "min_max"}}
    for algorithm, fmt in (("xgboost", "trees"), ("ridge", "linear"), ("knn", "python")):
        mid = train(pconn, f"d_{algorithm}", "regression", "diabetes", "target", algorithm=algorithm,
                    preprocess=pre, engine="python")["model_id"]
        assert model_row(pconn, mid)["artifact"]["format"] == fmt
        est, V, y, *_ = oracle(pconn, mid, "diabetes", "diabetes")
        got = served(pconn, "diabetes", feature_columns("diabetes"), mid)
        assert np.abs(got - est.predict(V)).max() <= 1e-5 * np.abs(y).max(), algorithm
        nulls = pconn.execute(
            "SELECT ml_stack.predict(%s::bigint, ARRAY[NULL, 0, 0, 0, 0, 0, 0, 0, 0, 0]::float8[]),"
            " ml_stack.predict(%s::bigint, ARRAY[0, 0, NULL, 0, 0, 0, 0, 0, 0, 0]::float8[])", (mid, mid)).fetchone()
        assert nulls[0] is None, algorithm           # age has no impute rule
        imputed = model_row(pconn, mid)["artifact"]["transform"][2]["impute"]
        assert nulls[1] == pconn.execute(          # bmi has one: NULL serves as its value
            "SELECT ml_stack.predict(%s::bigint, ARRAY[0, 0, %s, 0, 0, 0, 0, 0, 0, 0]::float8[])",
            (mid, imputed)).fetchone()[0], algorithm


def test_training_is_reproducible(pconn):
    load_sklearn_dataset(pconn, "breast_cancer")
    a = train(pconn, "bc", "classification", "breast_cancer", "target", algorithm="random_forest",
              hyperparams={"n_estimators": 10})
    b = train(pconn, "bc", algorithm="random_forest", hyperparams={"n_estimators": 10})
    ma, mb = model_row(pconn, a["model_id"]), model_row(pconn, b["model_id"])
    assert ma["hyperparams"] == mb["hyperparams"] and ma["artifact"]["trees"] == mb["artifact"]["trees"]


# --------------------------------------------------------------------------------------------------------------
# search


def test_grid_search_matches_scikit_learn(pconn):
    load_sklearn_dataset(pconn, "diabetes")
    grid = {"max_depth": [1, 3], "n_estimators": [5, 20]}
    res = train(pconn, "d", "regression", "diabetes", "target", algorithm="random_forest", search="grid",
                search_params=grid, search_args={"cv": 3})
    m = model_row(pconn, res["model_id"])
    X, y = fetch_xy(pconn, "diabetes")
    train_, _ = train_mask(pconn, res["model_id"], y.astype(float))
    seed = m["hyperparams"]["random_state"]
    gs = GridSearchCV(ensemble.RandomForestRegressor(random_state=seed), grid, scoring="r2", cv=3)
    gs.fit(X[train_], y[train_])
    s = m["search"]
    assert s["method"] == "grid" and s["cv"] == 3 and s["scoring"] == "r2" and len(s["candidates"]) == 4
    for i, cand in enumerate(s["candidates"]):
        assert cand["params"] == gs.cv_results_["params"][i]
        assert cand["mean_score"] == pytest.approx(gs.cv_results_["mean_test_score"][i], rel=1e-12)
        assert cand["std_score"] == pytest.approx(gs.cv_results_["std_test_score"][i], rel=1e-9, abs=1e-15)
        assert cand["rank"] == gs.cv_results_["rank_test_score"][i]
    assert s["best_params"] == gs.best_params_
    for key, value in gs.best_params_.items():
        assert m["hyperparams"][key] == value
    # the model is the best candidate refitted on the whole training split
    got = served(pconn, "diabetes", feature_columns("diabetes"), res["model_id"])
    assert np.abs(got - gs.best_estimator_.predict(X)).max() < 1e-9 * np.abs(y).max()


def test_class_weight_can_be_searched_per_class_label(pconn):
    """class_weight is written per class label, in search_params as in hyperparams; labels 5 and 7 are class
    indexes 0 and 1 for the estimator, and the registry records the labels."""
    load_sklearn_dataset(pconn, "breast_cancer")
    pconn.execute("UPDATE breast_cancer SET target = CASE target WHEN 0 THEN 5 ELSE 7 END")
    weights = [{"5": 1.0, "7": 1.0}, {"5": 3.0, "7": 1.0}]
    res = train(pconn, "bc", "classification", "breast_cancer", "target", algorithm="random_forest",
                hyperparams={"n_estimators": 10}, search="grid", search_params={"class_weight": weights},
                search_args={"cv": 3})
    m = model_row(pconn, res["model_id"])
    X, y = fetch_xy(pconn, "breast_cancer")
    train_, _ = train_mask(pconn, res["model_id"], y.astype(float))
    seed = m["hyperparams"]["random_state"]
    gs = GridSearchCV(ensemble.RandomForestClassifier(n_estimators=10, random_state=seed),
                      {"class_weight": [{0: 1.0, 1: 1.0}, {0: 3.0, 1: 1.0}]}, scoring="f1_macro", cv=3)
    gs.fit(X[train_], (y[train_] == 7).astype(int))
    assert [c["params"]["class_weight"] for c in m["search"]["candidates"]] == weights
    assert [c["mean_score"] for c in m["search"]["candidates"]] == pytest.approx(
        list(gs.cv_results_["mean_test_score"]), rel=1e-12)
    chosen = weights[gs.best_index_]
    assert m["search"]["best_params"] == {"class_weight": chosen} and m["hyperparams"]["class_weight"] == chosen


def test_random_search_matches_scikit_learn(pconn):
    load_sklearn_dataset(pconn, "iris")
    dist = {"max_depth": [1, 2, 3, 4], "learning_rate": [0.05, 0.1, 0.3], "n_estimators": [5, 10]}
    res = train(pconn, "i", "classification", "iris", "target", algorithm="xgboost", search="random",
                search_params=dist, search_args={"n_iter": 4, "cv": 3})
    m = model_row(pconn, res["model_id"])
    X, y = fetch_xy(pconn, "iris")
    train_, _ = train_mask(pconn, res["model_id"], y.astype(float))
    seed = pconn.execute("SELECT split_seed FROM ml_stack.projects WHERE name = 'i'").fetchone()[0]
    rs = RandomizedSearchCV(xgboost.XGBClassifier(random_state=seed, tree_method="hist"), dist, n_iter=4,
                            scoring="f1_macro", cv=3, random_state=seed)
    rs.fit(X[train_], y[train_])
    s = m["search"]
    assert s["method"] == "random" and s["n_iter"] == 4 and s["scoring"] == "f1_macro"
    assert [c["params"] for c in s["candidates"]] == rs.cv_results_["params"]
    assert [c["mean_score"] for c in s["candidates"]] == pytest.approx(list(rs.cv_results_["mean_test_score"]),
                                                                       rel=1e-12)
    assert s["best_params"] == rs.best_params_
    assert {k: m["hyperparams"][k] for k in dist} == rs.best_params_


# --------------------------------------------------------------------------------------------------------------
# bad inputs: an error with its SQLSTATE and a hint, and the registry as it was

BAD = [
    # (what, train arguments, SQLSTATE, words in the message)
    ("unknown algorithm", dict(algorithm="deep_forest"), "22023", "unknown algorithm"),
    ("unknown hyperparameter", dict(algorithm="xgboost", hyperparams={"max_deep": 3}), "22023",
     'unknown hyperparameter "max_deep"'),
    ("xgboost max_depth -3", dict(algorithm="xgboost", hyperparams={"max_depth": -3}), "22023", "max_depth"),
    ("xgboost max_depth 'abc'", dict(algorithm="xgboost", hyperparams={"max_depth": "abc"}), "22023", "max_depth"),
    ("xgboost n_estimators 0", dict(algorithm="xgboost", hyperparams={"n_estimators": 0}), "22023", "n_estimators"),
    ("forest max_depth -3", dict(algorithm="random_forest", hyperparams={"max_depth": -3}), "22023", "max_depth"),
    ("forest max_depth 'abc'", dict(algorithm="random_forest", hyperparams={"max_depth": "abc"}), "22023",
     "max_depth"),
    ("svm kernel", dict(algorithm="svm", hyperparams={"kernel": "cubic"}), "22023", "kernel"),
    ("lasso classification", dict(algorithm="lasso"), "0A000", "no classification estimator"),
    ("elastic_net classification", dict(algorithm="elastic_net"), "0A000", "no classification estimator"),
    ("search without search_params", dict(algorithm="xgboost", search="grid"), "22023", "needs search_params"),
    ("unknown search", dict(algorithm="xgboost", search="bayes", search_params={"max_depth": [1]}), "22023",
     'unknown search "bayes"'),
    ("search_params not lists", dict(algorithm="xgboost", search="grid", search_params={"max_depth": 3}), "22023",
     "non-empty list"),
    ("search_params unknown name", dict(algorithm="xgboost", search="grid", search_params={"depth": [1, 2]}),
     "22023", 'unknown search parameter "depth"'),
    ("search_params bad value", dict(algorithm="random_forest", search="grid",
                                     search_params={"max_depth": [2, -1]}), "22023", "max_depth"),
    ("search value in hyperparams", dict(algorithm="xgboost", hyperparams={"max_depth": 2}, search="grid",
                                         search_params={"max_depth": [1, 2]}), "22023", "both"),
    ("cv 1", dict(algorithm="xgboost", search="grid", search_params={"max_depth": [1, 2]}, search_args={"cv": 1}),
     "22023", "cv must be an integer >= 2"),
    ("cv 'x'", dict(algorithm="xgboost", search="grid", search_params={"max_depth": [1, 2]},
                    search_args={"cv": "x"}), "22023", "cv must be an integer"),
    ("n_iter 0", dict(algorithm="xgboost", search="random", search_params={"max_depth": [1, 2]},
                      search_args={"n_iter": 0}), "22023", "n_iter must be an integer >= 1"),
    ("n_iter with grid", dict(algorithm="xgboost", search="grid", search_params={"max_depth": [1, 2]},
                              search_args={"n_iter": 3}), "22023", "random search only"),
    ("unknown search_args key", dict(algorithm="xgboost", search="grid", search_params={"max_depth": [1, 2]},
                                     search_args={"folds": 3}), "22023", 'unknown search_args key "folds"'),
    ("search_params without search", dict(algorithm="xgboost", search_params={"max_depth": [1, 2]}), "22023",
     "without a search"),
    ("class_weight of an unknown class", dict(algorithm="random_forest", hyperparams={"class_weight": {"7": 2}}),
     "22023", "class_weight"),
]


@pytest.mark.parametrize("what,kwargs,state,words", BAD, ids=[b[0] for b in BAD])
def test_bad_inputs(pconn, what, kwargs, state, words):
    load_sklearn_dataset(pconn, "iris")
    train(pconn, "iris", "classification", "iris", "target", algorithm="xgboost", hyperparams={"n_estimators": 5})
    before = registry_rows(pconn)
    with pytest.raises(psycopg.Error) as e:
        train(pconn, "iris", **kwargs)
    assert sqlstate_of(e) == state, e.value
    assert words in e.value.diag.message_primary, e.value.diag.message_primary
    assert e.value.diag.message_hint, "every error has a hint"
    assert registry_rows(pconn) == before


def test_unknown_hyperparameter_lists_the_valid_names(pconn):
    load_sklearn_dataset(pconn, "diabetes")
    with pytest.raises(psycopg.Error) as e:
        train(pconn, "d", "regression", "diabetes", "target", algorithm="random_forest",
              hyperparams={"n_trees": 10})
    hint = e.value.diag.message_hint
    assert hint.startswith("Valid hyperparameters: ") and "n_estimators" in hint and "max_depth" in hint


def test_nan_features_are_a_clear_error_except_where_the_library_takes_them(pconn):
    load_sklearn_dataset(pconn, "diabetes")
    pconn.execute("UPDATE diabetes SET bmi = 'NaN' WHERE bmi < -0.07")
    with pytest.raises(psycopg.Error) as e:
        train(pconn, "d", "regression", "diabetes", "target", algorithm="random_forest")
    assert sqlstate_of(e) == "22000" and '"bmi"' in e.value.diag.message_primary and e.value.diag.message_hint
    # XGBoost takes NaN as missing: its metrics are the library's, fitted on the same rows, NaN included
    res = train(pconn, "d", "regression", "diabetes", "target", algorithm="xgboost")
    est, V, y, _, test_, _ = oracle(pconn, res["model_id"], "diabetes", "diabetes")
    assert np.isnan(V[:, 2]).any()
    assert res["metrics"]["r2"] == pytest.approx(skm.r2_score(y[test_], est.predict(V[test_])), rel=1e-9)


def test_python_fit_refuses_what_is_not_a_dataset(pconn):
    with pytest.raises(psycopg.Error) as e:
        pconn.execute("SELECT ml_stack._python_fit('regression', 'xgboost', '{}', '{}')")
    assert sqlstate_of(e) == "22023" and e.value.diag.message_hint
    with pytest.raises(psycopg.Error) as e:
        pconn.execute("SELECT ml_stack._python_fit('regression', 'xgboost', '[]', '{\"x\": []}')")
    assert sqlstate_of(e) == "22023" and "hyperparams must be a JSON object" in str(e.value)


# --------------------------------------------------------------------------------------------------------------
# data movement


def test_large_splits_are_read_in_chunks_with_progress_notices(pconn):
    pconn.execute("CREATE TABLE wide AS SELECT " + ", ".join(f"random() AS x{j}" for j in range(1, 21))
                  + " FROM generate_series(1, 70000)")
    pconn.execute("ALTER TABLE wide ADD COLUMN target float8")
    pconn.execute("UPDATE wide SET target = x1 + 2 * x2 - 3 * x3 + random() / 10")
    notices = []
    pconn.add_notice_handler(lambda d: notices.append(d.message_primary))
    one = train(pconn, "w1", "regression", "wide", "target", algorithm="linear", engine="python")
    assert any("read 52500 of 52500 train rows x 20 features" in n for n in notices), notices
    # the same split read in chunks of ~1 MB (r ranges): the same model
    pconn.execute("SELECT ml_stack._python_import()")
    pconn.execute("DO LANGUAGE plpython3u $$ import ml_stack_python.data as d; d.CHUNK_BYTES = 1000000 $$")
    notices.clear()
    two = train(pconn, "w2", "regression", "wide", "target", algorithm="linear", engine="python")
    chunks = [n for n in notices if "train rows" in n]
    assert len(chunks) >= 8 and chunks[-1].startswith("ml_stack_python: read 52500 of 52500 train rows")
    # a 'last' split is one contiguous run of rows: its chunks still hold about equal shares of it
    notices.clear()
    train(pconn, "w3", "regression", "wide", "target", algorithm="linear", engine="python",
          test_sampling="last", test_size=0.7)
    pconn.execute("DO LANGUAGE plpython3u $$ import ml_stack_python.data as d; d.CHUNK_BYTES = 128 * 1024 * 1024 $$")
    for which, total in (("test", 49000),):   # the train split (21000 x 22 values) reads without NOTICEs
        counts = [int(re.search(r"read (\d+) of", n).group(1)) for n in notices if f" {which} rows" in n]
        sizes = np.diff([0] + counts)
        assert counts[-1] == total and len(sizes) >= 2, (which, counts)
        assert sizes.max() <= 1.05 * total / len(sizes) + 1, (which, sizes)
    a, b = model_row(pconn, one["model_id"]), model_row(pconn, two["model_id"])
    # the two projects have their own seeds: compare each with the library on its own split
    for m in (a, b):
        est, V, y, train_, test_, _ = oracle(pconn, m["id"], "wide", "wide")
        assert np.allclose(m["artifact"]["coefficients"][0], est.coef_, rtol=1e-10, atol=1e-12)
        assert m["artifact"]["intercepts"][0] == pytest.approx(est.intercept_, rel=1e-10)


def test_xgboost_reports_its_iterations(pconn):
    load_sklearn_dataset(pconn, "diabetes")
    notices = []
    pconn.add_notice_handler(lambda d: notices.append(d.message_primary))
    pconn.execute("SELECT ml_stack._python_import()")
    pconn.execute("DO LANGUAGE plpython3u $$ import ml_stack_python.engine as e; e.PROGRESS_SECONDS = 0 $$")
    train(pconn, "d", "regression", "diabetes", "target", algorithm="xgboost",
          hyperparams={"n_estimators": 5, "early_stopping_rounds": 3})
    iterations = [n for n in notices if "XGBoost iteration" in n]
    assert iterations[0].startswith("ml_stack_python: XGBoost iteration 1 of 5, ")
    assert "validation_0 rmse" in iterations[0]
    res = train(pconn, "d", algorithm="random_forest", search="grid", search_params={"max_depth": [2, 3]},
                search_args={"cv": 3})
    assert any("(grid search: 2 candidates x 3 folds)" in n for n in notices)
    assert model_row(pconn, res["model_id"])["search"]["best_params"]["max_depth"] in (2, 3)


def test_a_cancel_stops_xgboost_training_between_iterations(pconn):
    load_sklearn_dataset(pconn, "diabetes")
    before = registry_rows(pconn)
    pconn.execute("SET statement_timeout = '2s'")
    started = time.monotonic()
    with pytest.raises(psycopg.errors.QueryCanceled):
        train(pconn, "d", "regression", "diabetes", "target", algorithm="xgboost",
              hyperparams={"n_estimators": 1000000, "max_depth": 8})
    assert time.monotonic() - started < 10
    pconn.execute("RESET statement_timeout")
    assert registry_rows(pconn) == before
    # the backend is fine afterwards
    assert train(pconn, "d", "regression", "diabetes", "target", algorithm="xgboost",
                 hyperparams={"n_estimators": 5})["engine"] == "python"
