"""A fitted estimator -> the artifact that ml_stack stores and serves (formats: docs/python-engine.md).

- XGBoost gbtree models and scikit-learn's tree ensembles (random_forest, extra_trees, gradient_boosting_trees,
  hist_gradient_boosting) -> 'trees', compiled to SQL by ml_stack; XGBoost's own JSON model is kept in
  "booster". Every conversion is checked against the library's own margins before it is used; a model whose
  conversion is not possible (another objective, a categorical split, more than the node cap) or does not
  check out is stored as 'python' instead, with a NOTICE.
- scikit-learn's linear models (LinearRegression, Ridge, Lasso, ElasticNet, LogisticRegression) -> 'linear',
  the preprocessing folded into raw-space weights as the SQL engine does.
- anything else -> 'python': the pickled estimator, base64, with its sha256.
"""

import base64
import hashlib
import json
import pickle

import numpy as np

from ml_stack_python import signing, trees as T
from ml_stack_python.errors import MLStackError, DATA_EXCEPTION
from ml_stack_python.jsonutil import library_versions

# A 'trees' model of more nodes than this (over all trees, one copy per class for random forests) is served by
# Python instead: its SQL would be too large to compile and run well. The setting ml_stack.max_tree_nodes
# overrides it.
MAX_TREE_NODES = 250_000


class Unconvertible(Exception):
    """The estimator cannot be written in the format asked for; the message says why."""


# ----------------------------------------------------------------------------------------------------------
# trees: XGBoost

XGB_LINKS = {
    "reg:squarederror": "identity", "reg:squaredlogerror": "identity", "reg:pseudohubererror": "identity",
    "reg:absoluteerror": "identity",
    "count:poisson": "exp", "reg:gamma": "exp", "reg:tweedie": "exp",
    "binary:logistic": "logistic", "multi:softprob": "softmax",
}


def _xgb_base_margin(base_score_text, link):
    """ProbToMargin(float32(base_score)) in float32, as XGBoost 1.7 computes it."""
    b = T.parse_float32([base_score_text])[0]
    one = np.float32(1)
    if link == "logistic":
        return np.float32(-np.log(np.float64(np.float32(one / b - one))))
    if link == "exp":
        return np.float32(np.log(np.float64(b)))
    return b


def xgboost_trees(est, n_classes):
    """XGBoost scikit-learn model -> 'trees' artifact (without transform/libraries)."""
    booster = est.get_booster()
    text = bytes(booster.save_raw("json")).decode()
    model = json.loads(text)
    exact = json.loads(text, parse_float=str)  # float32 numbers as written, parsed exactly below
    learner = exact["learner"]
    gb = learner["gradient_booster"]
    if gb.get("name") != "gbtree":
        raise Unconvertible(f"booster {gb.get('name')} (only gbtree compiles to SQL)")
    objective = learner["objective"]["name"]
    link = XGB_LINKS.get(objective)
    if link is None:
        raise Unconvertible(f"objective {objective}")
    missing = est.get_params().get("missing", np.nan)
    if missing is not None and not (isinstance(missing, float) and np.isnan(missing)):
        raise Unconvertible(f"missing = {missing!r} (only NaN as missing compiles)")
    k = n_classes if link == "softmax" else 1
    base = float(_xgb_base_margin(learner["learner_model_param"]["base_score"], link))
    mp = gb["model"]
    per_round = k * int(mp["gbtree_model_param"]["num_parallel_tree"])
    best = learner.get("attributes", {}).get("best_iteration")
    n_trees = len(mp["trees"])
    if best is not None:
        n_trees = min(n_trees, (int(best) + 1) * per_round)
    out_trees = []
    for i in range(n_trees):
        t = mp["trees"][i]
        if any(int(s) != 0 for s in t.get("split_type", [])):
            raise Unconvertible("categorical splits")
        cond = T.parse_float32(t["split_conditions"])
        threshold, inclusive = T.xgboost_boundary(cond)
        out_trees.append(T.make_tree(mp["tree_info"][i], t["left_children"], t["right_children"],
                                     t["split_indices"], threshold, inclusive,
                                     [bool(int(d)) for d in t["default_left"]], cond.astype(np.float64)))
    return {"format": "trees", "library": "xgboost", "outputs": k, "base": [base] * k, "sum": "float4",
            "link": link, "missing": "null", "trees": out_trees, "booster": model,
            "iteration_range": [0, n_trees // per_round], "objective": objective}


def xgboost_reference(est, X):
    """XGBoost's own margins (float32 sums), the trees the wrapper predicts with."""
    return np.asarray(est.predict(X, output_margin=True), dtype=np.float64).reshape(X.shape[0], -1)


# ----------------------------------------------------------------------------------------------------------
# trees: scikit-learn

def _sk_tree(tree_, output, values):
    threshold, inclusive = T.sklearn_boundary(tree_.threshold)
    return T.make_tree(output, tree_.children_left, tree_.children_right, tree_.feature, threshold, inclusive,
                       np.zeros(tree_.node_count, dtype=bool), values)


def forest_trees(est, task):
    """RandomForest / ExtraTrees -> 'trees': the mean of the trees' predictions (classification: of their class
    probabilities, one tree copy per class)."""
    trees = []
    if task == "regression":
        for e in est.estimators_:
            trees.append(_sk_tree(e.tree_, 0, e.tree_.value[:, 0, 0]))
        k, link = 1, "identity"
    else:
        k, link = int(est.n_classes_), "probability"
        for e in est.estimators_:
            v = e.tree_.value[:, 0, :k]
            norm = v.sum(axis=1)[:, np.newaxis]
            norm[norm == 0.0] = 1.0
            proba = v / norm
            for c in range(k):
                trees.append(_sk_tree(e.tree_, c, proba[:, c]))
    return {"format": "trees", "library": "sklearn", "outputs": k, "base": [0.0] * k, "sum": "float8",
            "divisor": len(est.estimators_), "link": link, "missing": "null", "trees": trees}


def forest_reference(est, X, task):
    return est.predict(X).reshape(-1, 1) if task == "regression" else est.predict_proba(X)


GB_LINKS = {"LeastSquaresError": "identity", "LeastAbsoluteError": "identity", "HuberLossFunction": "identity",
            "QuantileLossFunction": "identity", "BinomialDeviance": "logistic", "MultinomialDeviance": "softmax"}


def gradient_boosting_trees(est, n_features):
    """GradientBoosting{Regressor,Classifier} -> 'trees': init + learning_rate x each stage's trees."""
    loss = type(est._loss).__name__
    link = GB_LINKS.get(loss)
    if link is None:
        raise Unconvertible(f"loss {loss}")
    if est.init_ != "zero" and type(est.init_).__name__ not in ("DummyRegressor", "DummyClassifier"):
        raise Unconvertible(f"init estimator {type(est.init_).__name__}")
    base = est._raw_predict_init(np.zeros((1, n_features), dtype=np.float32))[0]
    stages, k = est.estimators_.shape
    lr = est.learning_rate
    trees = []
    for i in range(stages):
        for c in range(k):
            tree_ = est.estimators_[i, c].tree_
            trees.append(_sk_tree(tree_, c, lr * tree_.value[:, 0, 0]))
    return {"format": "trees", "library": "sklearn", "outputs": k, "base": [float(b) for b in base],
            "sum": "float8", "link": link, "missing": "null", "trees": trees}


def gradient_boosting_reference(est, X):
    return est._raw_predict(X.astype(np.float32)).reshape(X.shape[0], -1)


HIST_LINKS = {"IdentityLink": "identity", "LogLink": "exp", "LogitLink": "logistic", "MultinomialLogit": "softmax"}


def hist_gradient_boosting_trees(est):
    """HistGradientBoosting{Regressor,Classifier} -> 'trees': float64 thresholds compared in float64
    (inclusive), a baseline per output, float64 sums in iteration order."""
    link_name = type(est._loss.link).__name__
    link = HIST_LINKS.get(link_name)
    if link is None:
        raise Unconvertible(f"link {link_name}")
    base = np.asarray(est._baseline_prediction, dtype=np.float64).reshape(-1)
    k = base.shape[0]
    trees = []
    for predictors in est._predictors:
        for c, predictor in enumerate(predictors):
            nodes = predictor.nodes
            if nodes["is_categorical"].any():
                raise Unconvertible("categorical splits")
            leaf = nodes["is_leaf"].astype(bool)
            left = np.where(leaf, -1, nodes["left"].astype(np.int64))
            right = np.where(leaf, -1, nodes["right"].astype(np.int64))
            trees.append(T.make_tree(c, left, right, nodes["feature_idx"], nodes["num_threshold"],
                                     np.ones(len(nodes), dtype=bool), nodes["missing_go_to_left"].astype(bool),
                                     nodes["value"]))
    return {"format": "trees", "library": "sklearn", "outputs": k, "base": [float(b) for b in base],
            "sum": "float8", "link": link, "missing": "null", "trees": trees}


def hist_gradient_boosting_reference(est, X):
    return est._raw_predict(X).reshape(X.shape[0], -1)


def trees_artifact(est, algorithm, task, n_features, n_classes):
    """(artifact without transform, reference function X -> library margins) or Unconvertible."""
    if algorithm == "xgboost":
        return xgboost_trees(est, n_classes), lambda X: xgboost_reference(est, X)
    if algorithm in ("random_forest", "extra_trees"):
        return forest_trees(est, task), lambda X: forest_reference(est, X, task)
    if algorithm == "gradient_boosting_trees":
        return gradient_boosting_trees(est, n_features), lambda X: gradient_boosting_reference(est, X)
    if algorithm == "hist_gradient_boosting":
        return hist_gradient_boosting_trees(est), lambda X: hist_gradient_boosting_reference(est, X)
    raise Unconvertible(f"algorithm {algorithm}")


def check_trees(artifact, reference, V):
    """Largest difference between the artifact's margins and the library's on the preprocessed rows V (the
    artifact is evaluated without its transform: V is already preprocessed). Relative above 1."""
    plain = {**artifact, "transform": None}
    mine = T.margins(plain, V)
    lib = reference(V)
    ok = ~np.isnan(V).any(axis=1)
    if not ok.any():
        return 0.0
    diff = np.abs(mine[ok] - lib[ok]) / np.maximum(1.0, np.abs(lib[ok]))
    return float(diff.max()) if diff.size else 0.0


# ----------------------------------------------------------------------------------------------------------
# linear

LINEAR_ESTIMATORS = ("LinearRegression", "Ridge", "Lasso", "ElasticNet", "LogisticRegression")


def linear_artifact(est, task, transform):
    """scikit-learn linear model -> 'linear' artifact in raw feature space."""
    name = type(est).__name__
    coef = np.atleast_2d(np.asarray(est.coef_, dtype=np.float64))
    intercept = np.atleast_1d(np.asarray(est.intercept_, dtype=np.float64))
    if intercept.shape[0] == 1 and coef.shape[0] > 1:  # pragma: no cover
        intercept = np.repeat(intercept, coef.shape[0])
    if task == "regression":
        link = "identity"
    elif coef.shape[0] == 1:
        link = "logistic"
        if est.multi_class == "multinomial":
            # binary multinomial: softmax([-d, d]) = sigmoid(2d)
            coef, intercept = coef * 2, intercept * 2
    else:
        multinomial = est.multi_class == "multinomial" or (est.multi_class == "auto" and est.solver != "liblinear")
        if not multinomial:
            raise Unconvertible("one-vs-rest logistic regression")
        link = "softmax"
    coefficients, intercepts = [], []
    for w, b in zip(coef, intercept):
        raw = []
        for j, tr in enumerate(transform):
            wj = w[j] / float(tr["scale"])
            b = b - wj * float(tr["shift"])
            raw.append(float(wj))
        if not np.isfinite(b) or not np.all(np.isfinite(raw)):
            raise MLStackError(f"training {name} diverged: the weights are not finite numbers",
                               hint="Scale the features (preprocess => '{\"col\": {\"scale\": \"standard\"}}') "
                                    "or regularise more.", sqlstate=DATA_EXCEPTION)
        coefficients.append(raw)
        intercepts.append(float(b))
    return {"format": "linear", "library": "sklearn", "estimator": name, "link": link, "intercepts": intercepts,
            "coefficients": coefficients, "impute": [tr.get("impute") for tr in transform],
            # provenance: the preprocessing folded into the weights above (serving does not read it)
            "transform": transform}


# ----------------------------------------------------------------------------------------------------------
# python

def python_artifact(est, task, transform):
    blob = pickle.dumps(est, protocol=pickle.HIGHEST_PROTOCOL)
    library = "xgboost" if type(est).__module__.startswith("xgboost") else "sklearn"
    return {"format": "python", "library": library, "estimator": type(est).__name__,
            "pickle": base64.b64encode(blob).decode("ascii"), "sha256": hashlib.sha256(blob).hexdigest(),
            "signature": signing.sign(blob),
            "transform": transform, "has_proba": task == "classification" and hasattr(est, "predict_proba")}


# ----------------------------------------------------------------------------------------------------------

def to_artifact(est, algorithm, task, dataset, check_rows, node_cap=MAX_TREE_NODES, notice=print):
    """The artifact of a fitted estimator. ``check_rows``: preprocessed rows (float64) to check a tree
    conversion on. ``notice(text)`` reports why a model is stored in the 'python' format."""
    transform = dataset["transform"]
    p = len(transform)
    n_classes = len(dataset["classes"]) if task == "classification" else 0
    artifact = None
    if algorithm in ("xgboost", "random_forest", "extra_trees", "gradient_boosting_trees", "hist_gradient_boosting"):
        try:
            artifact, reference = trees_artifact(est, algorithm, task, p, n_classes)
            nodes = T.node_count(artifact)
            if nodes > node_cap:
                raise Unconvertible(f"{nodes} tree nodes, more than the cap of {node_cap} "
                                    "(setting ml_stack.max_tree_nodes)")
            diff = check_trees(artifact, reference, check_rows)
            tolerance = 1e-6 if artifact["sum"] == "float4" else 1e-9
            if not diff <= tolerance:
                raise Unconvertible(f"its SQL form differs from {type(est).__name__} by {diff:.3g} on the "
                                    "training data")
            artifact["transform"] = transform
            artifact["checked"] = {"rows": int(check_rows.shape[0]), "max_margin_difference": diff}
        except Unconvertible as why:
            notice(f"ml_stack_python: {algorithm} model served by Python, not compiled to SQL: {why}")
            artifact = None
    elif type(est).__name__ in LINEAR_ESTIMATORS:
        try:
            artifact = linear_artifact(est, task, transform)
        except Unconvertible as why:
            notice(f"ml_stack_python: {algorithm} model served by Python, not compiled to SQL: {why}")
            artifact = None
    if artifact is None:
        artifact = python_artifact(est, task, transform)
    artifact["libraries"] = library_versions()
    return artifact
