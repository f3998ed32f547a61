"""Artifacts of fitted estimators reproduce the libraries: tree ensembles converted to the 'trees' format give
the library's margins exactly (XGBoost: float32 sums bit for bit), also for values at every split's boundary;
linear models folded to raw space agree to 1e-12 relative."""

import base64
import hashlib
import pickle

import numpy as np
import pytest
import xgboost
from sklearn import datasets as skd
from sklearn import ensemble, linear_model

from ml_stack_python import export
from ml_stack_python import trees as T

RNG = np.random.default_rng(7)


def _data(task, k=2):
    if task == "regression":
        X, y = skd.load_diabetes(return_X_y=True)
    elif k == 2:
        X, y = skd.load_breast_cancer(return_X_y=True)
    else:
        X, y = skd.load_iris(return_X_y=True)
    return X.astype(np.float64), y


def _identity(p):
    return [{"impute": None, "shift": 0.0, "scale": 1.0} for _ in range(p)]


def _boundary_rows(artifact, X, limit=3000):
    """Rows of X with one feature set to a split's threshold or one ulp either side."""
    rows = []
    for tree in artifact["trees"]:
        for f, th, left in zip(tree["feature"], tree["threshold"], tree["left"]):
            if left == -1:
                continue
            for v in (th, np.nextafter(th, -np.inf), np.nextafter(th, np.inf)):
                row = X[RNG.integers(0, X.shape[0])].copy()
                row[f] = v
                rows.append(row)
        if len(rows) >= limit:
            break
    return np.array(rows)


CASES = [
    ("xgboost", "regression", 2, lambda: xgboost.XGBRegressor(n_estimators=30, max_depth=4, random_state=1)),
    ("xgboost", "regression", 2, lambda: xgboost.XGBRegressor(n_estimators=20, objective="count:poisson",
                                                                random_state=1)),
    ("xgboost", "classification", 2, lambda: xgboost.XGBClassifier(n_estimators=30, max_depth=3, random_state=1)),
    ("xgboost", "classification", 3, lambda: xgboost.XGBClassifier(n_estimators=10, random_state=1)),
    ("xgboost", "regression", 2, lambda: xgboost.XGBRegressor(n_estimators=5, num_parallel_tree=3, subsample=0.8,
                                                                colsample_bynode=0.8, random_state=1)),
    ("random_forest", "regression", 2, lambda: ensemble.RandomForestRegressor(n_estimators=10, random_state=1)),
    ("random_forest", "classification", 2, lambda: ensemble.RandomForestClassifier(n_estimators=10, random_state=1)),
    ("extra_trees", "classification", 3, lambda: ensemble.ExtraTreesClassifier(n_estimators=10, random_state=1)),
    ("extra_trees", "regression", 2, lambda: ensemble.ExtraTreesRegressor(n_estimators=10, random_state=1)),
    ("gradient_boosting_trees", "regression", 2, lambda: ensemble.GradientBoostingRegressor(random_state=1)),
    ("gradient_boosting_trees", "regression", 2,
     lambda: ensemble.GradientBoostingRegressor(loss="huber", n_estimators=20, random_state=1)),
    ("gradient_boosting_trees", "classification", 2,
     lambda: ensemble.GradientBoostingClassifier(n_estimators=30, random_state=1)),
    ("gradient_boosting_trees", "classification", 3,
     lambda: ensemble.GradientBoostingClassifier(n_estimators=20, random_state=1)),
    ("hist_gradient_boosting", "regression", 2, lambda: ensemble.HistGradientBoostingRegressor(random_state=1)),
    ("hist_gradient_boosting", "regression", 2,
     lambda: ensemble.HistGradientBoostingRegressor(loss="poisson", max_iter=30, random_state=1)),
    ("hist_gradient_boosting", "classification", 2,
     lambda: ensemble.HistGradientBoostingClassifier(max_iter=30, random_state=1)),
    ("hist_gradient_boosting", "classification", 3,
     lambda: ensemble.HistGradientBoostingClassifier(max_iter=20, random_state=1)),
]


@pytest.mark.parametrize("algorithm,task,k,make", CASES, ids=[f"{c[0]}-{c[1]}-{c[2]}-{i}" for i, c in enumerate(CASES)])
def test_trees_conversion_reproduces_the_library_margins(algorithm, task, k, make):
    X, y = _data(task, k)
    est = make().fit(X, y)
    artifact, reference = export.trees_artifact(est, algorithm, task, X.shape[1], k)
    artifact["transform"] = None
    probes = np.concatenate([X, _boundary_rows(artifact, X)])
    mine = T.margins(artifact, probes)
    lib = reference(probes)
    if artifact["sum"] == "float4":
        assert np.array_equal(mine.astype(np.float32), lib.astype(np.float32))   # bit for bit
    else:
        assert np.abs(mine - lib).max() <= 1e-12 * max(1.0, np.abs(lib).max())
    # and the outputs: the library's predictions and probabilities
    classes = list(range(k)) if task == "classification" else None
    pred, proba = T.outputs(artifact, T.margins(artifact, X), classes)
    if task == "classification":
        assert np.array_equal(pred, est.predict(X))
        assert np.abs(proba - est.predict_proba(X)).max() < 1e-6
    else:
        assert np.abs(pred - est.predict(X)).max() <= 1e-5 * max(1.0, np.abs(y).max())


def test_trees_conversion_with_a_transform_and_nan():
    X, y = _data("regression")
    transform = [{"impute": (0.5 if j == 2 else None), "shift": float(X[:, j].mean()), "scale": float(X[:, j].std())}
                 for j in range(X.shape[1])]
    V = np.column_stack([(X[:, j] - t["shift"]) / t["scale"] for j, t in enumerate(transform)])
    est = xgboost.XGBRegressor(n_estimators=20, random_state=1).fit(V, y)
    dataset = {"transform": transform, "classes": None}
    artifact = export.to_artifact(est, "xgboost", "regression", dataset, V)
    assert artifact["format"] == "trees" and artifact["checked"]["max_margin_difference"] == 0.0
    lib = est.predict(V, output_margin=True)
    assert np.array_equal(T.margins(artifact, X)[:, 0].astype(np.float32), lib)
    # NULL (NaN) with an impute rule: the imputed value; without one: NULL ("missing": "null")
    Xn = X[:3].copy()
    Xn[0, 2] = np.nan
    Xn[1, 0] = np.nan
    m = T.margins(artifact, Xn)[:, 0]
    Vn = V[:3].copy()
    Vn[0, 2] = (0.5 - transform[2]["shift"]) / transform[2]["scale"]
    assert m[0] == est.predict(Vn[:1], output_margin=True)[0]
    assert np.isnan(m[1]) and not np.isnan(m[2])


def test_early_stopping_uses_the_best_iteration():
    X, y = _data("regression")
    est = xgboost.XGBRegressor(n_estimators=200, learning_rate=0.3, early_stopping_rounds=5, random_state=1)
    est.fit(X[:300], y[:300], eval_set=[(X[300:], y[300:])], verbose=False)
    assert est.best_iteration < 190
    artifact, reference = export.trees_artifact(est, "xgboost", "regression", X.shape[1], 0)
    assert len(artifact["trees"]) == est.best_iteration + 1
    artifact["transform"] = None
    assert np.array_equal(T.margins(artifact, X)[:, 0].astype(np.float32), est.predict(X, output_margin=True))


def test_unconvertible_models_become_python_artifacts():
    X, y = _data("classification", 2)
    notes = []
    dataset = {"transform": _identity(X.shape[1]), "classes": [0.0, 1.0]}
    est = xgboost.XGBClassifier(n_estimators=3, booster="dart", random_state=1).fit(X, y)
    art = export.to_artifact(est, "xgboost", "classification", dataset, X, notice=notes.append)
    assert art["format"] == "python" and "dart" in notes[-1]
    est = ensemble.RandomForestClassifier(n_estimators=10, random_state=1).fit(X, y)
    art = export.to_artifact(est, "random_forest", "classification", dataset, X, node_cap=100, notice=notes.append)
    assert art["format"] == "python" and "cap of 100" in notes[-1]
    blob = base64.b64decode(art["pickle"])
    assert hashlib.sha256(blob).hexdigest() == art["sha256"]
    assert np.array_equal(pickle.loads(blob).predict(X), est.predict(X))
    assert art["has_proba"] is True and set(art["libraries"]) >= {"python", "numpy", "sklearn", "xgboost"}


@pytest.mark.parametrize("name,task,k", [("LinearRegression", "regression", 0), ("Ridge", "regression", 0),
                                         ("Lasso", "regression", 0), ("ElasticNet", "regression", 0),
                                         ("LogisticRegression", "classification", 2),
                                         ("LogisticRegression", "classification", 3)])
def test_linear_models_fold_the_transform(name, task, k):
    X, y = _data(task, k)
    transform = [{"impute": None, "shift": float(X[:, j].mean()), "scale": float(X[:, j].std() * 2)}
                 for j in range(X.shape[1])]
    V = np.column_stack([(X[:, j] - t["shift"]) / t["scale"] for j, t in enumerate(transform)])
    kwargs = {"alpha": 0.01} if name in ("Lasso", "ElasticNet") else {}
    est = getattr(linear_model, name)(**kwargs).fit(V, y)
    art = export.linear_artifact(est, task, transform)
    W = np.array(art["coefficients"])
    scores = X @ W.T + np.array(art["intercepts"])
    if task == "regression":
        assert art["link"] == "identity"
        assert np.abs(scores[:, 0] - est.predict(V)).max() < 1e-9 * np.abs(y).max()
    else:
        assert np.abs(scores - np.atleast_2d(est.decision_function(V)).reshape(len(X), -1)).max() < 1e-8
        assert art["link"] == ("logistic" if k == 2 else "softmax")
