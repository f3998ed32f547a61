"""Serving 'python'-format models: ``ml_stack._python_predict(model_id, generation, features)`` and
``ml_stack._python_predict_proba(...)``.

The estimator is loaded from ``ml_stack.models`` once per backend: its pickle's sha256 is checked against the
artifact's before unpickling, then it stays in this module's cache. ``generation`` comes from ml_stack's
compiled predictors of the model: the serving refresh recompiles them with the time of the latest deployment,
so after a deployment change a call carries a larger generation than the cache's, which drops everything
cached. Features are preprocessed with the artifact's transform; a
NULL (or NaN) feature without an impute rule gives NULL; classification returns the class label.
"""

import base64
import datetime
import hashlib
import json
import math
import pickle

import numpy as np

from ml_stack_python import signing
from ml_stack_python.errors import (MLStackError, DATA_CORRUPTED, FEATURE_NOT_SUPPORTED, INSUFFICIENT_PRIVILEGE,
                                     UNDEFINED_OBJECT)
from ml_stack_python.jsonutil import library_versions

_cache = {}                               # model id -> _Entry
_state = {"generation": None, "loads": {}}  # the cache's generation; loads per model id in this backend


class _Entry:
    __slots__ = ("model_id", "estimator", "classes", "impute", "shift", "scale", "has_proba", "num_features",
                 "task", "generation", "loaded_at", "calls", "name")

    def __init__(self, model_id, estimator, artifact, classes, num_features, task, generation):
        self.model_id = model_id
        self.estimator = estimator
        self.name = type(estimator).__name__
        self.classes = None if classes is None else np.asarray(classes, dtype=np.float64)
        transform = artifact.get("transform") or [{} for _ in range(num_features)]
        self.impute = [t.get("impute") for t in transform]
        self.shift = np.array([t.get("shift") or 0.0 for t in transform], dtype=np.float64)
        self.scale = np.array([t.get("scale") or 1.0 for t in transform], dtype=np.float64)
        self.has_proba = bool(artifact.get("has_proba"))
        self.num_features = num_features
        self.task = task
        self.generation = generation
        self.loaded_at = datetime.datetime.now(datetime.timezone.utc)
        self.calls = 0


def _load(plpy, model_id, generation):
    plan = plpy.prepare("SELECT m.artifact::text AS artifact, m.classes, m.num_features, m.task "
                        "FROM ml_stack.models AS m WHERE m.id = $1", ["bigint"])
    rows = plpy.execute(plan, [model_id])
    if len(rows) == 0:
        raise MLStackError(f"model {model_id} does not exist", sqlstate=UNDEFINED_OBJECT,
                           hint="SELECT id, algorithm FROM ml_stack.models lists the models.")
    row = rows[0]
    artifact = json.loads(row["artifact"])
    if artifact.get("format") != "python":
        raise MLStackError(f"model {model_id} has artifact format \"{artifact.get('format')}\": it is not served "
                           "by Python", sqlstate=FEATURE_NOT_SUPPORTED,
                           hint="Use ml_stack.predict(), which serves every format.")
    try:
        blob = base64.b64decode(artifact["pickle"], validate=True)
    except (KeyError, ValueError, TypeError):
        blob = None
    if blob is None or hashlib.sha256(blob).hexdigest() != artifact.get("sha256"):
        raise MLStackError(f"the pickled estimator of model {model_id} does not match its sha256: not loaded",
                           sqlstate=DATA_CORRUPTED,
                           hint="The artifact was altered after training; train the model again.")
    if not signing.verify(blob, artifact.get("signature")):
        raise MLStackError(f"the pickled estimator of model {model_id} is not signed by this server: not loaded",
                           sqlstate=INSUFFICIENT_PRIVILEGE,
                           hint="Unpickling runs code, so only pickles this server's engine made are loaded. If you "
                                f"trust this one (e.g. restored from another server), a superuser can run "
                                f"SELECT ml_stack.trust_python_model({model_id});")
    estimator = pickle.loads(blob)
    made = artifact.get("libraries") or {}
    here = library_versions()
    changed = [f"{lib} {made[lib]} -> {here.get(lib)}" for lib in ("sklearn", "xgboost")
               if lib in made and made[lib] != here.get(lib) and type(estimator).__module__.startswith(
                   "xgboost" if lib == "xgboost" else "sklearn")]
    if changed:
        plpy.warning(f"ml_stack_python: model {model_id} was trained with other library versions ({', '.join(changed)})",
                     hint="Its predictions may differ; train it again with the installed libraries.")
    _state["loads"][model_id] = _state["loads"].get(model_id, 0) + 1
    return _Entry(model_id, estimator, artifact, row["classes"], int(row["num_features"]), row["task"], generation)


def _entry(plpy, model_id, generation):
    generation = 0 if generation is None else int(generation)
    if _state["generation"] is None or generation > _state["generation"]:
        if _state["generation"] is not None:
            _cache.clear()
        _state["generation"] = generation
    entry = _cache.get(model_id)
    if entry is None:
        entry = _load(plpy, model_id, generation)
        _cache[model_id] = entry
    entry.calls += 1
    return entry


def _row(entry, features):
    """The preprocessed feature row (1, p), or None when a feature without an impute rule is NULL or NaN."""
    if len(features) != entry.num_features:
        raise MLStackError(f"model {entry.model_id} takes {entry.num_features} features, got {len(features)}",
                           hint="Pass the features in the order of the training relation's columns, label excluded.")
    v = np.empty(entry.num_features, dtype=np.float64)
    for j, x in enumerate(features):
        if x is None or math.isnan(x):
            x = entry.impute[j]
            if x is None:
                return None
        v[j] = x
    return ((v - entry.shift) / entry.scale).reshape(1, -1)


def predict(plpy, model_id, generation, features):
    if model_id is None or features is None:
        return None
    entry = _entry(plpy, model_id, generation)
    row = _row(entry, features)
    if row is None:
        return None
    out = entry.estimator.predict(row)[0]
    if entry.task == "classification":
        return float(entry.classes[int(out)])
    return float(out)


def predict_proba(plpy, model_id, generation, features):
    if model_id is None or features is None:
        return None
    entry = _entry(plpy, model_id, generation)
    if entry.task != "classification":
        raise MLStackError(f"model {model_id} is a regression model: it has no class probabilities",
                           sqlstate=FEATURE_NOT_SUPPORTED, hint="Use ml_stack.predict() for regression models.")
    if not entry.has_proba:
        raise MLStackError(f"model {model_id} ({entry.name}) has no class probabilities",
                           sqlstate=FEATURE_NOT_SUPPORTED,
                           hint="Use ml_stack.predict() for its class, or train an estimator with probabilities "
                                "(svm needs hyperparams '{\"probability\": true}', the default).")
    row = _row(entry, features)
    if row is None:
        return None
    return [float(p) for p in entry.estimator.predict_proba(row)[0]]


def cache_state():
    """What this backend holds: one row per cached model, as ml_stack._python_cache() returns it."""
    return [{"model_id": e.model_id, "generation": e.generation, "estimator": e.name,
             "loads": _state["loads"].get(e.model_id, 0), "calls": e.calls, "loaded_at": e.loaded_at.isoformat()}
            for e in sorted(_cache.values(), key=lambda e: e.model_id)]


def clear():
    """Empty the cache (the next call of each model loads it again)."""
    _cache.clear()
    _state["generation"] = None


def trust(plpy, model_id):
    """Sign model ``model_id``'s pickle with this server's key (ml_stack.trust_python_model, superuser only)."""
    plan = plpy.prepare("SELECT m.artifact ->> 'format' AS format, m.artifact ->> 'pickle' AS pickle, "
                        "m.artifact ->> 'sha256' AS sha256 FROM ml_stack.models AS m WHERE m.id = $1", ["bigint"])
    rows = plpy.execute(plan, [model_id])
    if len(rows) == 0 or rows[0]["format"] != "python":
        raise MLStackError(f"model {model_id} is not a pickled model of the registry", sqlstate=UNDEFINED_OBJECT,
                           hint="SELECT id FROM ml_stack.models WHERE artifact ->> 'format' = 'python' lists them.")
    try:
        blob = base64.b64decode(rows[0]["pickle"] or "", validate=True)
    except ValueError:
        blob = b""
    if hashlib.sha256(blob).hexdigest() != rows[0]["sha256"]:
        raise MLStackError(f"the pickled estimator of model {model_id} does not match its sha256: not signed",
                           sqlstate=DATA_CORRUPTED, hint="The artifact was altered after training; train the model again.")
    plpy.execute(plpy.prepare("UPDATE ml_stack.models SET artifact = pg_catalog.jsonb_set(artifact, '{signature}', "
                              "pg_catalog.to_jsonb($1::text)) WHERE id = $2", ["text", "bigint"]),
                 [signing.sign(blob), model_id])
