"""Algorithm names (PostgresML's) x task -> estimator classes, and the checks of hyperparameters.

Hyperparameters go to the estimator's constructor as named. Names are checked against the estimator's
``get_params()`` (an unknown one is an error that lists the valid ones); values are checked by the library
itself before fitting where it can (scikit-learn's ``_validate_params``), else by fitting.
"""

import importlib

from ml_stack_python.errors import MLStackError, FEATURE_NOT_SUPPORTED

# algorithm -> (regression class, classification class); None where the library has no such estimator
ALGORITHMS = {
    "xgboost": ("xgboost.XGBRegressor", "xgboost.XGBClassifier"),
    "random_forest": ("sklearn.ensemble.RandomForestRegressor", "sklearn.ensemble.RandomForestClassifier"),
    "extra_trees": ("sklearn.ensemble.ExtraTreesRegressor", "sklearn.ensemble.ExtraTreesClassifier"),
    "gradient_boosting_trees": ("sklearn.ensemble.GradientBoostingRegressor",
                                "sklearn.ensemble.GradientBoostingClassifier"),
    "hist_gradient_boosting": ("sklearn.ensemble.HistGradientBoostingRegressor",
                               "sklearn.ensemble.HistGradientBoostingClassifier"),
    "ada_boost": ("sklearn.ensemble.AdaBoostRegressor", "sklearn.ensemble.AdaBoostClassifier"),
    "svm": ("sklearn.svm.SVR", "sklearn.svm.SVC"),
    "knn": ("sklearn.neighbors.KNeighborsRegressor", "sklearn.neighbors.KNeighborsClassifier"),
    "linear": ("sklearn.linear_model.LinearRegression", "sklearn.linear_model.LogisticRegression"),
    "ridge": ("sklearn.linear_model.Ridge", "sklearn.linear_model.RidgeClassifier"),
    "lasso": ("sklearn.linear_model.Lasso", None),
    "elastic_net": ("sklearn.linear_model.ElasticNet", None),
}
TASKS = ("regression", "classification")

# XGBoost takes booster parameters beyond its constructor's named ones (as **kwargs); these are accepted too
XGBOOST_EXTRA_PARAMS = ("eta", "lambda", "alpha", "min_split_loss", "tweedie_variance_power", "huber_slope",
                        "seed_per_iteration", "disable_default_eval_metric", "sketch_eps", "refresh_leaf",
                        "max_cached_hist_node")
# hyperparameters that cannot come from JSON or that would break how the engine uses the estimator
REFUSED = {
    "xgboost": {"callbacks": "callbacks are Python objects", "enable_categorical": "ml_stack passes numeric features",
                "feature_types": "ml_stack passes numeric features", "seed": "use random_state"},
}


def estimator_class(task, algorithm):
    """The estimator class of ``algorithm`` for ``task``, or an MLStackError that says what to use instead."""
    if algorithm not in ALGORITHMS:
        raise MLStackError(f'unknown algorithm "{algorithm}"',
                           hint=f"The python engine's algorithms: {', '.join(ALGORITHMS)}.")
    if task not in TASKS:
        raise MLStackError(f'unknown task "{task}"', hint="Use 'regression' or 'classification'.")
    path = ALGORITHMS[algorithm][TASKS.index(task)]
    if path is None:
        others = [a for a, pair in ALGORITHMS.items() if pair[TASKS.index(task)] is not None]
        raise MLStackError(
            f"algorithm {algorithm} has no {task} estimator (scikit-learn has none)",
            hint=("For classification with an L1 or elastic-net penalty use algorithm 'linear' (logistic "
                  "regression) with hyperparams '{\"penalty\": \"l1\", \"solver\": \"saga\"}'; "
                  if task == "classification" else "") + f"algorithms for {task}: {', '.join(others)}.",
            sqlstate=FEATURE_NOT_SUPPORTED)
    module, name = path.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def valid_params(cls, algorithm):
    """Names ``cls`` accepts as hyperparameters, sorted."""
    names = set(cls().get_params(deep=False))
    if algorithm == "xgboost":
        names |= set(XGBOOST_EXTRA_PARAMS)
    names -= set(REFUSED.get(algorithm, {}))
    return sorted(names)


def check_names(cls, algorithm, task, names, what="hyperparameter"):
    """Every name must be a hyperparameter of ``cls``."""
    valid = valid_params(cls, algorithm)
    for name in names:
        refused = REFUSED.get(algorithm, {}).get(name)
        if refused:
            raise MLStackError(f'{what} "{name}" of {cls.__name__} is not supported by ml_stack: {refused}',
                               hint="Leave it out.")
        if name not in valid:
            raise MLStackError(f'unknown {what} "{name}" for algorithm {algorithm} ({task}, {cls.__name__})',
                               hint=f"Valid hyperparameters: {', '.join(valid)}.")


def _check_xgboost_values(params):
    # what XGBoost's scikit-learn wrapper uses itself, without passing it to the booster's checks
    for name in ("n_estimators", "early_stopping_rounds"):
        value = params.get(name)
        if value is None and name == "early_stopping_rounds":
            continue
        if name in params and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise MLStackError(f"hyperparameter {name} must be a positive integer, got {value!r}",
                               hint=f"e.g. hyperparams => '{{\"{name}\": 10}}'")
    for name in ("random_state", "n_jobs"):
        value = params.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise MLStackError(f"hyperparameter {name} must be an integer, got {value!r}",
                               hint=f"e.g. hyperparams => '{{\"{name}\": 1}}'")


def convert_class_weight(params, classes):
    """class_weight given per class label ({"3": 2.0}) -> per class index, as the estimator sees the labels."""
    cw = params.get("class_weight")
    if not isinstance(cw, dict) or classes is None:
        return params
    converted = {}
    for key, weight in cw.items():
        try:
            label = float(key)
        except ValueError:
            label = None
        if label is None or label not in classes:
            raise MLStackError(f'class_weight names class "{key}", which is not a class of the label',
                               hint=f"The classes are: {', '.join(format(c, 'g') for c in classes)}.")
        converted[classes.index(label)] = weight
    return {**params, "class_weight": converted}


def defaults(cls, task, algorithm, seed, given):
    """Hyperparameters the engine sets unless the caller did: a random_state derived from the dataset's seed
    (reproducible fits), probabilities for SVC (metrics need them), XGBoost's tree_method 'hist' (XGBoost 2's
    default; 1.7's 'auto' picks 'exact', which took 21 s instead of 0.95 s on 150k rows x 20 features)."""
    names = set(cls().get_params(deep=False))
    out = {}
    if "random_state" in names and "random_state" not in given:
        out["random_state"] = int(seed) % (2 ** 31)
    if algorithm == "svm" and task == "classification" and "probability" not in given:
        out["probability"] = True
    if algorithm == "xgboost" and "tree_method" not in given:
        out["tree_method"] = "hist"
    return out


def make_estimator(cls, algorithm, params, classes=None):
    """``cls(**params)`` with values checked (MLStackError on a bad one) before any fitting."""
    if algorithm == "xgboost":
        _check_xgboost_values(params)
    kwargs = convert_class_weight(params, classes)
    try:
        est = cls(**kwargs)
    except TypeError as e:  # pragma: no cover - names are checked first
        raise MLStackError(f"{cls.__name__} refused the hyperparameters: {e}",
                           hint=f"Valid hyperparameters: {', '.join(valid_params(cls, algorithm))}.")
    check_values(est, algorithm)
    return est


def check_values(est, algorithm):
    """scikit-learn's own parameter validation (1.2+), raised as an MLStackError naming the default."""
    validate = getattr(est, "_validate_params", None)
    if validate is None or algorithm == "xgboost":
        return
    try:
        validate()
    except (ValueError, TypeError) as e:
        name = _param_in_message(str(e), est.get_params(deep=False))
        default = type(est)().get_params(deep=False).get(name) if name else None
        raise MLStackError(f"bad hyperparameter for {type(est).__name__}: {e}",
                           hint=(f"Fix {name} or leave it out (default: {default!r})." if name
                                 else "Fix the hyperparameter values; see scikit-learn's documentation of "
                                      f"{type(est).__name__}."))


def _param_in_message(message, params):
    for name in params:
        if f"'{name}'" in message:
            return name
    return None
