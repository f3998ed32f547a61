"""Load scikit-learn's bundled toy datasets into tables, for the demo.

    .venv/bin/python demo/load_dataset.py diabetes breast_cancer

Connects with libpq's environment (PGHOST, PGPORT, PGUSER, PGDATABASE). Each table holds the features as
float8 columns named after scikit-learn's feature names ('mean radius' -> mean_radius), then the label
``target`` last, rows in the dataset's order. An existing table of the same name is replaced.
"""

import re
import sys

import psycopg
from psycopg import sql
from sklearn import datasets

# name -> (loader, SQL type of the label)
DATASETS = {
    "diabetes": (datasets.load_diabetes, "float8"),  # age, sex, bmi, bp, s1 .. s6 (scikit-learn's scaled version)
    "breast_cancer": (datasets.load_breast_cancer, "integer"),
    "iris": (datasets.load_iris, "integer"),
    "wine": (datasets.load_wine, "integer"),
}


def column_name(feature: str) -> str:
    col = re.sub(r"[^a-z0-9]+", "_", feature.lower()).strip("_")
    return col if col and not col[0].isdigit() else f"f_{col}"


def load(conn: psycopg.Connection, name: str) -> int:
    loader, label_type = DATASETS[name]
    bunch = loader()
    columns = [column_name(f) for f in bunch.feature_names]
    table = sql.Identifier(name)
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table))
        cur.execute(sql.SQL("CREATE TABLE {} ({}, target {})").format(
            table, sql.SQL(", ").join(sql.SQL("{} float8").format(sql.Identifier(c)) for c in columns),
            sql.SQL(label_type)))
        with cur.copy(sql.SQL("COPY {} FROM STDIN").format(table)) as copy:
            for features, label in zip(bunch.data.tolist(), bunch.target.tolist()):
                copy.write_row([*features, label])
    return len(bunch.target)


def main(argv: list[str]) -> int:
    unknown = [n for n in argv if n not in DATASETS]
    if not argv or unknown:
        print(f"usage: load_dataset.py NAME...  (NAME: {', '.join(DATASETS)})", file=sys.stderr)
        return 2
    with psycopg.connect(autocommit=True) as conn:
        for name in argv:
            rows = load(conn, name)
            print(f"loaded {name}: {rows} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
