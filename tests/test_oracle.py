"""Oracle tests: the SQL engine against scikit-learn 1.2 (Debian's, the version the .venv sees) fitted on
exactly the same training rows, which test_split_metrics.train_mask reproduces from the model's snapshot.

Tolerances are stated in each assert. Every comparison prints its measured maximum difference (``-rA`` or ``-s``
shows them): they are far below the tolerances, which only leave room for the two solvers' own stopping rules.
"""

import re
import warnings

import numpy as np
import pytest
from psycopg import sql
from sklearn import metrics as skm
from sklearn.compose import ColumnTransformer
from sklearn.exceptions import ConvergenceWarning
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from datasets import LABEL, feature_columns, fetch_xy, load_sklearn_dataset
from helpers import model_row, predictions, train
from test_split_metrics import train_mask

TASKS = {"diabetes": "regression", "breast_cancer": "classification", "iris": "classification",
         "wine": "classification"}


def probabilities(conn, relation, columns, project):
    """predict_proba of the project's deployed model for every row of ``relation``, in its own order."""
    q = sql.SQL("SELECT ml_stack.predict_proba(%s::text, ARRAY[{}]) FROM {}").format(
        sql.SQL(", ").join(map(sql.Identifier, columns)), sql.Identifier(relation))
    return np.array([r[0] for r in conn.execute(q, (project,))], dtype=np.float64)


def max_rel(actual, expected):
    """Largest elementwise relative difference."""
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    return float(np.max(np.abs(actual - expected) / np.abs(expected)))


def max_normwise_rel(actual, expected):
    """Largest difference relative to the largest value: for weights, some of which may be near zero."""
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


def max_abs(actual, expected):
    return float(np.max(np.abs(np.asarray(actual, dtype=np.float64) - np.asarray(expected, dtype=np.float64))))


def trained(conn, dataset, **kwargs):
    """Load ``dataset``, train project 'p' on it; return (result row, X, y, train mask, test mask)."""
    X, y = load_sklearn_dataset(conn, dataset)
    m = train(conn, "p", TASKS[dataset], dataset, LABEL, **kwargs)
    assert m["engine"] == "sql" and m["deployed"]
    train_, test = train_mask(conn, m["model_id"], y)
    return m, X, y, train_, test


def exact_logistic(C=1.0, multinomial=False):
    """scikit-learn's LogisticRegression, solved to the optimum. Same objective as ml_stack's:
    sum of log-losses + ||w||^2 / (2 C), intercept not penalised.

    Not the default lbfgs: on unscaled breast_cancer (feature scales from 1e-3 to 4e3) lbfgs stops at
    max_iter far from the optimum (probabilities off by 0.67 at the default max_iter=100; with tol=1e-12 it stops
    on its own after ~1900 iterations, still 1.5e-2 off), so it would test lbfgs, not ml_stack. Newton-type solvers reach the optimum on the raw
    features.

    newton-cg's tol is 1e-8, not lower: below that, on wine and iris, its line search fails at every iteration
    (float64 cannot lower the loss any further) and it spins until max_iter (10000 iterations, ~1.3 s, for
    nothing): with tol=1e-12 its probabilities differ from tol=1e-8's by < 2e-10."""
    if multinomial:
        return LogisticRegression(C=C, multi_class="multinomial", solver="newton-cg", tol=1e-8, max_iter=10000)
    return LogisticRegression(C=C, solver="newton-cholesky", tol=1e-12, max_iter=10000)


def fit_quiet(model, X, y):
    # Should newton-cg still hit float64's limits ("Line Search failed"), the asserts judge the result.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.filterwarnings("ignore", "Line Search failed", UserWarning)
        warnings.filterwarnings("ignore", "The line search algorithm", RuntimeWarning)  # scipy's, same cause
        return model.fit(X, y)


def logistic_objective(intercepts, coefficients, X, y, C):
    """sum of log-losses + ||W||^2 / (2C): what both sides minimise (binary: one weight vector for class 1)."""
    classes = np.unique(y)
    Z = X @ np.asarray(coefficients, dtype=np.float64).T + np.asarray(intercepts, dtype=np.float64)
    if Z.shape[1] == 1:
        Z = np.column_stack([np.zeros(len(X)), Z[:, 0]])
    Z = Z - Z.max(axis=1, keepdims=True)
    logp = Z - np.log(np.exp(Z).sum(axis=1, keepdims=True))
    return -logp[np.arange(len(y)), np.searchsorted(classes, y)].sum() + np.sum(np.square(coefficients)) / (2 * C)


def assert_not_worse_than_sklearn(conn, model_id, ref, X, y, C, what):
    """The server's optimum is at least as good as scikit-learn's (up to rounding): so any difference in the
    probabilities is the reference solver stopping early, not ml_stack missing the optimum."""
    art = model_row(conn, model_id)["artifact"]
    ours = logistic_objective(art["intercepts"], art["coefficients"], X, y, C)
    theirs = logistic_objective(ref.intercept_, ref.coef_, X, y, C)
    print(f"{what}: objective ml_stack {ours:.12g}, scikit-learn {theirs:.12g} (difference {ours - theirs:.1e})")
    assert ours <= theirs + 1e-9 * abs(theirs)


# --- regression -----------------------------------------------------------------------------------------------

def test_linear_regression_diabetes(conn):
    m, X, y, train_, _ = trained(conn, "diabetes")
    cols = feature_columns("diabetes")
    ref = LinearRegression().fit(X[train_], y[train_])
    expected = ref.predict(X)

    by_project = predictions(conn, "diabetes", cols, "p")
    by_model = predictions(conn, "diabetes", cols, m["model_id"])
    art = model_row(conn, m["model_id"])["artifact"]
    d_pred = max(max_rel(by_project, expected), max_rel(by_model, expected))
    d_coef = max_normwise_rel(np.r_[art["intercepts"], art["coefficients"][0]], np.r_[ref.intercept_, ref.coef_])
    print(f"OLS diabetes: predictions max rel diff {d_pred:.2e}, weights max normwise rel diff {d_coef:.2e}")
    assert d_pred < 1e-6
    assert d_coef < 1e-6
    assert max_rel(art["coefficients"][0], ref.coef_) < 1e-6  # each weight too (none is near zero here)


@pytest.mark.parametrize("alpha", [0.5, None], ids=["alpha=0.5", "default"])
def test_ridge_diabetes(conn, alpha):
    hyper = {} if alpha is None else {"alpha": alpha}
    m, X, y, train_, _ = trained(conn, "diabetes", algorithm="ridge", hyperparams=hyper)
    ref = Ridge(alpha=1.0 if alpha is None else alpha).fit(X[train_], y[train_])
    got = predictions(conn, "diabetes", feature_columns("diabetes"), "p")
    d = max_rel(got, ref.predict(X))
    print(f"ridge diabetes {hyper}: predictions max rel diff {d:.2e}")
    assert d < 1e-6
    # the penalty really applied: OLS predicts otherwise (by far more than the tolerance)
    ols = LinearRegression().fit(X[train_], y[train_])
    assert max_rel(got, ols.predict(X)) > 1e-3


# --- classification -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("C", [None, 0.1], ids=["C=1", "C=0.1"])
def test_logistic_breast_cancer(conn, C):
    hyper = {} if C is None else {"C": C}
    m, X, y, train_, _ = trained(conn, "breast_cancer", hyperparams=hyper)
    cols = feature_columns("breast_cancer")
    ref = fit_quiet(exact_logistic(C=1.0 if C is None else C), X[train_], y[train_])

    proba = probabilities(conn, "breast_cancer", cols, "p")
    labels = predictions(conn, "breast_cancer", cols, "p")
    d = max_abs(proba, ref.predict_proba(X))
    print(f"logistic breast_cancer {hyper}: predict_proba max abs diff {d:.2e}")
    assert d < 1e-3
    assert np.array_equal(labels, ref.predict(X))
    assert np.allclose(proba.sum(axis=1), 1, rtol=0, atol=1e-12)
    assert_not_worse_than_sklearn(conn, m["model_id"], ref, X[train_], y[train_], C or 1.0, "breast_cancer")


@pytest.mark.parametrize("dataset", ["iris", "wine"])
def test_multinomial_logistic(conn, dataset):
    m, X, y, train_, _ = trained(conn, dataset)
    cols = feature_columns(dataset)
    ref = fit_quiet(exact_logistic(multinomial=True), X[train_], y[train_])
    art = model_row(conn, m["model_id"])["artifact"]
    assert art["link"] == "softmax" and len(art["coefficients"]) == 3

    proba = probabilities(conn, dataset, cols, "p")
    labels = predictions(conn, dataset, cols, "p")
    d = max_abs(proba, ref.predict_proba(X))
    print(f"multinomial {dataset}: predict_proba max abs diff {d:.2e}")
    assert d < 1e-3
    assert np.array_equal(labels, ref.predict(X)), f"{np.sum(labels != ref.predict(X))} labels differ"
    assert_not_worse_than_sklearn(conn, m["model_id"], ref, X[train_], y[train_], 1.0, dataset)


@pytest.mark.parametrize("classes", [2, 3])
def test_logistic_on_large_data_starts_from_a_sample(conn, classes):
    """From 160k training rows, Newton first runs on a 1/16 sample, then on all rows from there: the result
    must still be the optimum on all training rows."""
    # the helpers read rows in table order; a parallel scan of this larger table would return them shuffled
    conn.execute("SET max_parallel_workers_per_gather = 0")
    conn.execute("SELECT setseed(0.5)")
    conn.execute(f"""
        CREATE TABLE big AS
        SELECT x1, x2, x3,
               width_bucket(x1 + 0.5 * x2 - x3 + random() - 0.5, (ARRAY[-1e9, 2.5, 3.5]::float8[])[1:{classes}]) - 1
                   AS target
        FROM (SELECT random() AS x1, random() * 10 AS x2, random() AS x3 FROM generate_series(1, 200000)) AS g""")
    X, y = fetch_xy(conn, "big", ["x1", "x2", "x3"])
    notices = []
    conn.add_notice_handler(lambda diag: notices.append(diag.message_primary))
    m = train(conn, "p", "classification", "big", "target", test_size=0.1)
    train_, _ = train_mask(conn, m["model_id"], y)
    assert train_.sum() >= 160000
    # the summary line says how many Newton steps each phase took (progress lines appear only after 5 s)
    phases = [re.search(r"\((\d+) on a 1/16 sample, then (\d+) on all rows\)", n) for n in notices]
    assert any(m and int(m[1]) > 0 and int(m[2]) > 0 for m in phases), notices
    ref = fit_quiet(exact_logistic(multinomial=classes > 2), X[train_], y[train_])
    proba = probabilities(conn, "big", ["x1", "x2", "x3"], "p")
    d = max_abs(proba, ref.predict_proba(X))
    print(f"logistic on 200k rows, {classes} classes: predict_proba max abs diff {d:.2e}")
    assert d < 1e-6
    assert_not_worse_than_sklearn(conn, m["model_id"], ref, X[train_], y[train_], 1.0, f"big, {classes} classes")


# --- preprocessing ----------------------------------------------------------------------------------------------

def test_standard_scaling_wine_proline(conn):
    """Scaling changes a penalised model (the penalty sees the scaled weight), so the result must equal a
    pipeline that scales proline with the training split's mean and population std (StandardScaler's)."""
    m, X, y, train_, _ = trained(conn, "wine", preprocess={"proline": {"scale": "standard"}})
    cols = feature_columns("wine")
    j = cols.index("proline")
    scaler = ColumnTransformer([("scale", "passthrough", [i for i in range(len(cols)) if i != j])]
                               + [("proline", StandardScaler(), [j])])
    ref = fit_quiet(make_pipeline(scaler, exact_logistic(multinomial=True)), X[train_], y[train_])

    proba = probabilities(conn, "wine", cols, "p")
    d = max_abs(proba, ref.predict_proba(X))
    print(f"wine, proline standard-scaled: predict_proba max abs diff {d:.2e}")
    assert d < 1e-3
    assert np.array_equal(predictions(conn, "wine", cols, "p"), ref.predict(X))
    # and the scaling mattered: the unscaled optimum is another model (by more than the tolerance)
    unscaled = fit_quiet(exact_logistic(multinomial=True), X[train_], y[train_])
    assert max_abs(proba, unscaled.predict_proba(X)) > 1e-2


def _diabetes_with_null_bmi(conn):
    """Table diabetes_nulls: diabetes with bmi NULL in every 7th row (63 rows), as (X with NaN, y)."""
    X, y = load_sklearn_dataset(conn, "diabetes")
    cols = feature_columns("diabetes")
    select = sql.SQL(", ").join(
        sql.SQL("CASE WHEN r % 7 <> 3 THEN bmi END AS bmi") if c == "bmi" else sql.Identifier(c)
        for c in cols + [LABEL])
    conn.execute(sql.SQL("CREATE TABLE diabetes_nulls AS SELECT {} FROM"
                         " (SELECT *, row_number() OVER () AS r FROM diabetes) AS s").format(select))
    X = X.copy()
    X[np.arange(len(y)) % 7 == 2, cols.index("bmi")] = np.nan
    # the copy kept the row order (the metrics and the split depend on it)
    Xt, yt = fetch_xy(conn, "diabetes_nulls")
    assert np.array_equal(Xt, X, equal_nan=True) and np.array_equal(yt, y)
    return X, y


@pytest.mark.parametrize("case", ["linear+impute", "ridge+impute+scale"])
def test_mean_imputation_diabetes(conn, case):
    """bmi NULL in 63 rows: impute the training split's mean of bmi (SimpleImputer's), then fit. With ridge and
    a standard scale on top, the scaler must see the imputed column (its mean and std after imputation)."""
    X, y = _diabetes_with_null_bmi(conn)
    cols = feature_columns("diabetes")
    if case == "linear+impute":
        rule, algorithm, model = {"impute": "mean"}, "linear", LinearRegression()
        steps = [SimpleImputer(strategy="mean")]
    else:
        rule, algorithm, model = {"impute": "mean", "scale": "standard"}, "ridge", Ridge(alpha=1.0)
        steps = [SimpleImputer(strategy="mean"), StandardScaler()]
    m = train(conn, "p", "regression", "diabetes_nulls", LABEL, algorithm=algorithm, preprocess={"bmi": rule})
    train_, _ = train_mask(conn, m["model_id"], y)
    assert np.isnan(X[train_, cols.index("bmi")]).any()  # the training rows do have NULLs to impute

    j = cols.index("bmi")
    pre = ColumnTransformer([("bmi", make_pipeline(*steps), [j])]
                            + [("rest", "passthrough", [i for i in range(len(cols)) if i != j])])
    ref = make_pipeline(pre, model).fit(X[train_], y[train_])
    got = predictions(conn, "diabetes_nulls", cols, "p")  # NULL bmi in the feature array -> imputed
    d = max_rel(got, ref.predict(X))
    print(f"diabetes with NULL bmi, {case}: predictions max rel diff {d:.2e}")
    assert d < 1e-6
    art = model_row(conn, m["model_id"])["artifact"]
    assert np.isclose(art["impute"][j], np.nanmean(X[train_, j]), rtol=1e-12, atol=0)


# --- metrics ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dataset", ["diabetes", "breast_cancer", "iris", "wine"])
def test_stored_metrics_equal_sklearn(conn, dataset):
    """ml_stack.models.metrics are scikit-learn's metrics of the model's own predictions on the test split."""
    m, X, y, _, test = trained(conn, dataset)
    cols = feature_columns(dataset)
    stored = model_row(conn, m["model_id"])["metrics"]
    assert stored == m["metrics"]  # train() returns what it stored
    yhat = predictions(conn, dataset, cols, m["model_id"])[test]
    yt = y[test]
    if TASKS[dataset] == "regression":
        expected = {"r2": skm.r2_score(yt, yhat), "mean_squared_error": skm.mean_squared_error(yt, yhat),
                    "mean_absolute_error": skm.mean_absolute_error(yt, yhat)}
    else:
        proba = probabilities(conn, dataset, cols, "p")[test]
        classes = np.unique(y)
        expected = {
            "accuracy": skm.accuracy_score(yt, yhat),
            "precision": skm.precision_score(yt, yhat, average="macro", zero_division=0),
            "recall": skm.recall_score(yt, yhat, average="macro", zero_division=0),
            "f1": skm.f1_score(yt, yhat, average="macro", zero_division=0),
            "log_loss": skm.log_loss(yt, proba, labels=classes),
        }
        if len(classes) == 2:
            expected["roc_auc"] = skm.roc_auc_score(yt, proba[:, 1])
        else:
            assert stored.get("roc_auc") is None  # binary only
    assert {"fit_time", "score_time"} <= stored.keys()
    diffs = {k: abs(stored[k] - v) for k, v in expected.items()}
    print(f"metrics {dataset}: max abs diff {max(diffs.values()):.2e} ({', '.join(f'{k}={v:.1e}' for k, v in diffs.items())})")
    for k, d in diffs.items():
        assert d <= 1e-9 * max(1.0, abs(expected[k])), (k, stored[k], expected[k])
