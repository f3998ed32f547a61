"""The python engine's training call: ``ml_stack._python_fit(task, algorithm, hyperparams, dataset)``.

Contract (docs/python-engine.md): read the train and test rows of ``pg_temp._ml_stack_rows`` (preprocessed as
``dataset.x`` says), fit on the train rows (classification labels as indexes into ``dataset.classes``), write
the library's predictions of the test rows to ``pg_temp._ml_stack_predictions``, and return
``{"artifact", "hyperparams", "search"}``.
"""

import time
import warnings

import numpy as np

from ml_stack_python import data, estimators, export, search
from ml_stack_python.errors import MLStackError, DATA_EXCEPTION
from ml_stack_python.jsonutil import dumps, loads

# algorithms whose estimators take NaN as "missing"; the others refuse NaN in their input
NAN_TOLERANT = ("xgboost", "hist_gradient_boosting")
# share of the training rows XGBoost's early stopping watches when early_stopping_rounds is set
EARLY_STOPPING_FRACTION = 0.1
# a tree model's conversion is checked against the library on up to this many test rows and training rows
# (evaluating the trees in numpy costs ~18 us per row for 100 trees of depth 6)
CHECK_TEST_ROWS = 3000
CHECK_TRAIN_ROWS = 2000
CHECK_SPARSE_ROWS = 300
# estimators that need dense input, or take an absent sparse entry as missing rather than zero (XGBoost): they get
# vectorized text dense, whatever its size up to data.MAX_DENSE_VALUES
DENSE_ONLY = ("xgboost", "hist_gradient_boosting")
MAX_WARNINGS = 5
# XGBoost reports its iteration (and the early-stopping loss) in a NOTICE at most this often
PROGRESS_SECONDS = 10.0
# and lets PostgreSQL check for a cancel (pg_cancel_backend, statement_timeout) at most this often
INTERRUPT_SECONDS = 0.5


def _xgboost_progress(plpy, total):
    """An XGBoost training callback that NOTICEs the iteration every PROGRESS_SECONDS and runs a trivial query
    every INTERRUPT_SECONDS, so that a cancel request stops the training between two iterations (the query
    raises it; the error goes through XGBoost's training loop unchanged)."""
    import xgboost

    class Progress(xgboost.callback.TrainingCallback):
        def __init__(self):
            super().__init__()
            self.start = self.last = self.checked = time.monotonic()

        def after_iteration(self, model, epoch, evals_log):
            now = time.monotonic()
            if now - self.checked >= INTERRUPT_SECONDS:
                self.checked = now
                plpy.execute("SELECT 1")
            if now - self.last >= PROGRESS_SECONDS:
                self.last = now
                loss = "".join(f", {data} {name} {values[-1]:.6g}" for data, metrics in evals_log.items()
                               for name, values in metrics.items() if values)
                plpy.notice(f"ml_stack_python: XGBoost iteration {epoch + 1} of {total}, "
                            f"{now - self.start:.1f} s{loss}")
            return False

    return Progress()


def _node_cap(plpy):
    try:
        value = plpy.execute("SELECT pg_catalog.current_setting('ml_stack.max_tree_nodes', true) AS v")[0]["v"]
    except Exception:  # pragma: no cover
        value = None
    if value in (None, ""):
        return export.MAX_TREE_NODES
    try:
        cap = int(value)
    except ValueError:
        raise MLStackError(f"setting ml_stack.max_tree_nodes must be an integer, got {value!r}",
                           hint="e.g. SET ml_stack.max_tree_nodes = 250000") from None
    return cap


def _check_finite(X, dataset, algorithm, which):
    bad = ~np.isfinite(X)
    if algorithm in NAN_TOLERANT:
        bad &= ~np.isnan(X)
    if bad.any():
        j = int(np.flatnonzero(bad.any(axis=0))[0])
        name = dataset["features"][j]["name"] if dataset.get("features") else f"x{j + 1}"
        count = int(bad[:, j].sum())
        raise MLStackError(
            f'feature "{name}" has {count} NaN or infinite value(s) in the {which} rows, which {algorithm} '
            "cannot take", sqlstate=DATA_EXCEPTION,
            hint="Filter them out in a view, or turn NaN into NULL there (NULLIF(col, 'NaN')) and add an impute "
                 f"rule; xgboost and hist_gradient_boosting take NaN as missing.")


def _fit_error(est, e):
    name = type(est).__name__
    message = str(e).strip()
    first, _, rest = message.partition("\n")
    return MLStackError(f"{name} could not be fitted: {first}",
                        hint=(rest.strip() or "Check the hyperparameters against the library's documentation of "
                              f"{name}.").split("\n")[0],
                        sqlstate="22023")


def fit(plpy, task, algorithm, hyperparams_json, dataset_json):
    """Entry point of ml_stack._python_fit: returns the result jsonb as text."""
    started = time.monotonic()
    hyperparams = loads(hyperparams_json)
    dataset = loads(dataset_json)
    if hyperparams is None:
        hyperparams = {}
    if not isinstance(hyperparams, dict):
        raise MLStackError("hyperparams must be a JSON object", hint='e.g. hyperparams => \'{"max_depth": 3}\'')
    if not isinstance(dataset, dict) or "x" not in dataset:
        raise MLStackError("dataset is not a dataset description made by ml_stack._prepare_dataset",
                           hint="ml_stack._python_fit is called by ml_stack.train; train with it.")
    cls = estimators.estimator_class(task, algorithm)
    estimators.check_names(cls, algorithm, task, hyperparams)
    classes = [float(c) for c in dataset["classes"]] if task == "classification" else None
    spec = search.parse(dataset, cls, algorithm, task, hyperparams)
    seed = int(dataset.get("seed") or 0)
    searched = set(spec["params"]) if spec else set()
    added = {k: v for k, v in estimators.defaults(cls, task, algorithm, seed, hyperparams).items()
             if k not in searched}
    params = {**added, **hyperparams}
    est = estimators.make_estimator(cls, algorithm, params, classes)
    if spec:
        search.check_candidates(spec, cls, algorithm, params, classes)

    t0 = time.monotonic()
    r_train, y_train, X_train = data.read_split(plpy, dataset, "train")
    r_test, y_test, X_test = data.read_split(plpy, dataset, "test")
    _check_finite(X_train, dataset, algorithm, "training")
    _check_finite(X_test, dataset, algorithm, "test")
    if dataset.get("blocks"):
        # vectorized text: the full feature vector in the model's order, preprocessing as served (dense, or
        # sparse for the estimators that take sparse input with zeros as zeros when dense would be too large)
        sparse_ok = algorithm not in DENSE_ONLY
        X_train = data.expand_blocks(plpy, dataset, "train", r_train, X_train, sparse_ok)
        X_test = data.expand_blocks(plpy, dataset, "test", r_test, X_test, sparse_ok)
        dataset = {**dataset, "transform": data.full_transform(dataset),
                   "features": [{"name": name} for name in data.feature_names(dataset)]}
    read_seconds = time.monotonic() - t0
    if task == "classification":
        y_fit = data.encode_labels(y_train, classes)
        missing = sorted(set(range(len(classes))) - set(np.unique(y_fit).tolist()))
        if missing:
            raise MLStackError(
                f"class {classes[missing[0]]:g} of the label has no row in the training split "
                f"({len(missing)} class(es) only in the test split)",
                hint="Use test_sampling => 'stratified', a smaller test_size, or leave out the rare class.")
    else:
        y_fit = y_train

    fit_params = {}
    X_fit, y_fit_rows = X_train, y_fit
    if algorithm == "xgboost" and params.get("early_stopping_rounds") is not None:
        from sklearn.model_selection import train_test_split
        stratify = y_fit if task == "classification" else None
        try:
            X_fit, X_val, y_fit_rows, y_val = train_test_split(
                X_train, y_fit, test_size=EARLY_STOPPING_FRACTION, random_state=seed % (2 ** 31),
                stratify=stratify)
        except ValueError as e:
            raise MLStackError(f"early stopping needs a validation share of the training rows: {e}",
                               hint="Train on more rows, or leave early_stopping_rounds out.") from None
        fit_params = {"eval_set": [(X_val, y_val)], "verbose": False}

    plpy.notice(f"ml_stack_python: fitting {cls.__name__} on {X_fit.shape[0]} rows x {X_fit.shape[1]} features"
                + (f" ({spec['method']} search: {search.candidate_count(spec)} candidates x {spec['cv']} folds)"
                   if spec else ""))
    fit_started = time.monotonic()
    record = None
    chosen = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if spec:
            est, chosen, record = search.run(spec, est, X_fit, y_fit_rows, seed, X_fit.shape[0], fit_params,
                                              classes)
        else:
            if algorithm == "xgboost":
                est.set_params(callbacks=[_xgboost_progress(plpy, est.get_params()["n_estimators"] or 100)])
            try:
                est.fit(X_fit, y_fit_rows, **fit_params)
            except (MLStackError, plpy.SPIError):  # ours, or PostgreSQL's (a cancel)
                raise
            except Exception as e:  # the library refused a hyperparameter value or a combination of them
                raise _fit_error(est, e) from None
            finally:
                if algorithm == "xgboost":
                    est.set_params(callbacks=None)
    seen = []
    for w in caught:
        text = f"{w.category.__name__}: {w.message}"
        if text not in seen:
            seen.append(text)
    for text in seen[:MAX_WARNINGS]:
        plpy.notice(f"ml_stack_python: {text}")
    fit_seconds = time.monotonic() - fit_started

    # the library's predictions of the test rows: ml_stack's metrics are computed from them
    t0 = time.monotonic()
    proba = None
    if task == "classification":
        index = np.asarray(est.predict(X_test)).astype(np.int64)
        yhat = np.asarray(classes)[index]
        if hasattr(est, "predict_proba"):
            proba = np.asarray(est.predict_proba(X_test), dtype=np.float64)
    else:
        yhat = np.asarray(est.predict(X_test), dtype=np.float64).reshape(-1)
    data.write_predictions(plpy, r_test, yhat, proba)
    predict_seconds = time.monotonic() - t0
    t0 = time.monotonic()

    if data.is_sparse(X_train):   # fewer rows: a dense copy of them is rows x (a vocabulary)
        check_rows = data.sparse_vstack([X_test[:CHECK_SPARSE_ROWS], X_train[:CHECK_SPARSE_ROWS]]).toarray()
    else:
        check_rows = np.concatenate([X_test[:CHECK_TEST_ROWS], X_train[:CHECK_TRAIN_ROWS]])
    artifact = export.to_artifact(est, algorithm, task, dataset, check_rows, node_cap=_node_cap(plpy),
                                  notice=plpy.notice)
    result = {"artifact": artifact, "hyperparams": {**params, **chosen}, "search": record}
    out = dumps(result)
    plpy.notice(f"ml_stack_python: {time.monotonic() - started:.2f} s in all: read {read_seconds:.2f} s, "
                f"fit {fit_seconds:.2f} s, test predictions {predict_seconds:.2f} s, {artifact['format']} "
                f"artifact ({len(out) / 1e6:.2f} MB) {time.monotonic() - t0:.2f} s")
    return out
