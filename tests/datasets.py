"""scikit-learn's bundled toy datasets as tables, and tables back as numpy arrays.

Tables hold only the features (float8, sklearn's feature names sanitized) and the label ``target`` last, as
ml_stack trains on every column but the label. Row order is the dataset's order: rows go in with one COPY
and come back with a plain scan, the relation's own order (what ``test_sampling => 'last'`` sees).
"""

import re

import numpy as np
from psycopg import sql
from sklearn import datasets as skdatasets

# name -> (loader, SQL type of the label)
DATASETS = {
    "diabetes": (skdatasets.load_diabetes, "float8"),
    "breast_cancer": (skdatasets.load_breast_cancer, "integer"),
    "iris": (skdatasets.load_iris, "integer"),
    "wine": (skdatasets.load_wine, "integer"),
    "digits": (skdatasets.load_digits, "integer"),
}
LABEL = "target"
_INTEGER_OIDS = {20, 21, 23}  # int8, int2, int4


def sanitize(name: str) -> str:
    """'sepal length (cm)' -> 'sepal_length_cm', 'od280/od315_of_diluted_wines' -> 'od280_od315_of_diluted_wines'."""
    col = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    return col if col and not col[0].isdigit() else f"f_{col}"


def feature_columns(name: str) -> list[str]:
    """Column names of a dataset's features, in table order."""
    loader, _ = DATASETS[name]
    return [sanitize(n) for n in loader().feature_names]


def _qualified(table: str) -> sql.Identifier:
    # "name" or "schema.name", unquoted identifiers.
    return sql.Identifier(*table.split("."))


def load_sklearn_dataset(conn, name: str, table: str | None = None):
    """Create table ``table`` (default: the dataset's name) holding dataset ``name``; return (X, y) in table order."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    loader, label_type = DATASETS[name]
    bunch = loader()
    X, y = np.asarray(bunch.data, dtype=np.float64), np.asarray(bunch.target)
    columns = [sanitize(n) for n in bunch.feature_names]
    assert len(set(columns)) == len(columns) and LABEL not in columns, columns

    rel = _qualified(table or name)
    coldefs = sql.SQL(", ").join(sql.SQL("{} float8").format(sql.Identifier(c)) for c in columns)
    collist = sql.SQL(", ").join(map(sql.Identifier, columns + [LABEL]))
    # One transaction (a savepoint if the caller has one open): no half-loaded table on error.
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE TABLE {} ({}, {} {})").format(
            rel, coldefs, sql.Identifier(LABEL), sql.SQL(label_type)))
        with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(rel, collist)) as copy:
            copy.set_types(["float8"] * len(columns) + ["int4" if label_type == "integer" else "float8"])
            for features, label in zip(X.tolist(), y.tolist()):
                copy.write_row((*features, label))
    return X, y


def fetch_xy(conn, table: str, columns: list[str] | None = None, label: str | None = LABEL):
    """Read ``table`` (as written in SQL, may be schema-qualified) in its own order.

    Returns (X, y): X float64 of ``columns`` (default: every column but ``label``, in table order; NULL -> nan),
    y int64 for an integer label, else float64; y is None when ``label`` is None.
    """
    relid, relname = conn.execute("SELECT %s::regclass::oid, %s::regclass::text", (table, table)).fetchone()
    attrs = conn.execute(
        "SELECT attname, atttypid FROM pg_catalog.pg_attribute"
        " WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped ORDER BY attnum", (relid,)).fetchall()
    types = dict(attrs)
    if columns is None:
        columns = [a for a, _ in attrs if a != label]
    missing = [c for c in columns + ([label] if label else []) if c not in types]
    if missing:
        raise ValueError(f"{relname} has no column(s) {missing}")

    targets = [sql.SQL("{}::float8").format(sql.Identifier(c)) for c in columns]
    label_is_int = label is not None and types[label] in _INTEGER_OIDS
    if label is not None:
        targets.append(sql.SQL("{}::{}").format(sql.Identifier(label), sql.SQL("int8" if label_is_int else "float8")))
    query = sql.SQL("COPY (SELECT {} FROM {}) TO STDOUT (FORMAT BINARY)").format(
        sql.SQL(", ").join(targets), sql.SQL(relname))  # relname: regclass output, already quoted
    # Binary COPY: about twice as fast as fetchall for wide numeric results.
    with conn.cursor() as cur, cur.copy(query) as copy:
        copy.set_types(["float8"] * len(columns) + ([("int8" if label_is_int else "float8")] if label else []))
        rows = list(copy.rows())

    X = np.array([r[:len(columns)] for r in rows], dtype=np.float64).reshape(len(rows), len(columns))
    if label is None:
        return X, None
    y = np.array([r[-1] for r in rows], dtype=np.int64 if label_is_int else np.float64)
    return X, y
