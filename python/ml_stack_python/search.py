"""Hyperparameter search: ``search => 'grid' | 'random'`` through scikit-learn's model selection.

``search_params`` maps hyperparameter names to lists of values; ``search_args`` takes ``cv`` (folds, default
5, as scikit-learn) and, for random search, ``n_iter`` (default 10). Candidates are scored by cross-validation
on the training split with the project's key metric (``r2``, or ``f1_macro`` for classification); the best
one is refitted on the whole training split and becomes the model. Folds are scikit-learn's defaults for an
integer ``cv`` (KFold, or StratifiedKFold for a classifier, unshuffled); random search draws its candidates
with ``random_state`` = the dataset's seed, so a search is reproducible.
"""

from ml_stack_python.errors import MLStackError
from ml_stack_python import estimators

SEARCH_ARGS = ("cv", "n_iter")
SCORING = {"regression": "r2", "classification": "f1_macro"}


def _positive_int(value, name, minimum, hint):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise MLStackError(f"search_args {name} must be an integer >= {minimum}, got {value!r}", hint=hint)
    return value


def parse(dataset, cls, algorithm, task, hyperparams):
    """The search the dataset jsonb asks for (keys ``search``, ``search_params``, ``search_args``), checked:
    None when there is none, else {"method", "params", "cv", "n_iter", "scoring"}."""
    method = dataset.get("search")
    params = dataset.get("search_params")
    args = dataset.get("search_args")
    params = {} if params is None else params
    args = {} if args is None else args
    if not isinstance(params, dict):
        raise MLStackError("search_params must be a JSON object of lists",
                           hint='e.g. search_params => \'{"max_depth": [2, 4, 6]}\'')
    if not isinstance(args, dict):
        raise MLStackError("search_args must be a JSON object", hint='e.g. search_args => \'{"cv": 3}\'')
    if method is None:
        if params:
            raise MLStackError("search_params were given without a search",
                               hint="Add search => 'grid' or search => 'random', or leave search_params out.")
        if args:
            raise MLStackError("search_args were given without a search",
                               hint="Add search => 'grid' or search => 'random', or leave search_args out.")
        return None
    if method not in ("grid", "random"):
        raise MLStackError(f'unknown search "{method}"', hint="Use 'grid' or 'random' (or NULL for no search).")
    if not params:
        raise MLStackError(f"a {method} search needs search_params: the values to try",
                           hint='e.g. search_params => \'{"max_depth": [2, 4, 6]}\'')
    estimators.check_names(cls, algorithm, task, params, what="search parameter")
    for name, values in params.items():
        if not isinstance(values, list) or not values:
            raise MLStackError(f'search_params "{name}" must be a non-empty list of values, got {values!r}',
                               hint=f'e.g. search_params => \'{{"{name}": [...]}}\'')
        if name in hyperparams:
            raise MLStackError(f'"{name}" is both a hyperparameter and a search parameter',
                               hint="Fixed values go in hyperparams, the values to try in search_params: "
                                    "leave it out of one of them.")
    for key in args:
        if key not in SEARCH_ARGS:
            raise MLStackError(f'unknown search_args key "{key}"', hint="search_args takes cv and n_iter.")
    cv = _positive_int(args.get("cv", 5), "cv", 2, 'e.g. search_args => \'{"cv": 3}\'')
    n_iter = None
    if method == "random":
        n_iter = _positive_int(args.get("n_iter", 10), "n_iter", 1, 'e.g. search_args => \'{"n_iter": 10}\'')
    elif "n_iter" in args:
        raise MLStackError("search_args n_iter applies to a random search only",
                           hint="A grid search tries every combination: leave n_iter out, or use search => 'random'.")
    return {"method": method, "params": params, "cv": cv, "n_iter": n_iter, "scoring": SCORING[task]}


def check_candidates(spec, cls, algorithm, base_params, classes):
    """Each searched value must be a valid hyperparameter value (checked by the library where it can)."""
    for name, values in spec["params"].items():
        for value in values:
            try:
                estimators.make_estimator(cls, algorithm, {**base_params, name: value}, classes)
            except MLStackError as e:
                raise MLStackError(f"search_params {name}: {e.message}", hint=e.hint) from None


def candidate_count(spec):
    """How many candidates the search scores (a random search draws at most the grid's size)."""
    size = 1
    for values in spec["params"].values():
        size *= len(values)
    return size if spec["method"] == "grid" else min(size, spec["n_iter"])


def run(spec, estimator, X, y, seed, train_rows, fit_params=None, classes=None):
    """Search, refit the best candidate on all of (X, y). Returns (fitted best estimator, chosen params, the
    search's record for the registry). A searched class_weight is given per class label, as in hyperparams: the
    estimator sees it per class index, the record and the chosen params per label again."""
    from sklearn.model_selection import GridSearchCV, RandomizedSearchCV

    if spec["cv"] > train_rows:
        raise MLStackError(f"search_args cv = {spec['cv']} folds is more than the {train_rows} training rows",
                           hint="Use fewer folds.")
    grid, as_given = dict(spec["params"]), []
    if "class_weight" in grid and classes is not None:
        as_given = [(estimators.convert_class_weight({"class_weight": v}, classes)["class_weight"], v)
                    for v in grid["class_weight"]]
        grid["class_weight"] = [by_index for by_index, _ in as_given]

    def labelled(params):
        for by_index, given in as_given:
            if params.get("class_weight") == by_index:
                return {**params, "class_weight": given}
        return dict(params)

    common = dict(scoring=spec["scoring"], cv=spec["cv"], refit=True, error_score="raise", n_jobs=None)
    if spec["method"] == "grid":
        searcher = GridSearchCV(estimator, param_grid=grid, **common)
    else:
        searcher = RandomizedSearchCV(estimator, param_distributions=grid, n_iter=spec["n_iter"],
                                      random_state=int(seed) % (2 ** 31), **common)
    try:
        searcher.fit(X, y, **(fit_params or {}))
    except MLStackError:
        raise
    except Exception as e:  # a candidate failed to fit
        raise MLStackError(f"the {spec['method']} search failed: {type(e).__name__}: {e}",
                           hint="Check search_params: every value must be valid for the algorithm.") from None
    res = searcher.cv_results_
    folds = spec["cv"]
    candidates = []
    for i, params in enumerate(res["params"]):
        candidates.append({
            "params": labelled(params),
            "mean_score": res["mean_test_score"][i],
            "std_score": res["std_test_score"][i],
            "rank": res["rank_test_score"][i],
            "fold_scores": [res[f"split{f}_test_score"][i] for f in range(folds)],
            "mean_fit_time": res["mean_fit_time"][i],
        })
    record = {
        "method": spec["method"], "scoring": spec["scoring"], "cv": folds, "n_iter": spec["n_iter"],
        "params": spec["params"], "candidates": candidates,
        "best_index": searcher.best_index_, "best_params": labelled(searcher.best_params_),
        "best_score": searcher.best_score_,
    }
    return searcher.best_estimator_, labelled(searcher.best_params_), record
