"""``ml_stack.load_dataset(name)``: scikit-learn's bundled toy datasets as tables in schema ml_stack.

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
