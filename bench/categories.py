"""Categorical features (0.5.0): what training and serving a table of categories costs, side by side.

    .venv/bin/python bench/categories.py [--rows N] [--reps N]

Starts a throwaway server, makes a table of N rows: a text category of 50 values, an enum of 3, a nullable text
category of 2 (NULL a category of its own), a date, a boolean and a number. Trains a linear regression on it
(one-hot, the first category of each column left out) and reports:

  train: the train() call, against the same train() on a table of the same rows with the one-hot columns
         precomputed as float8 columns (what a user's encoding view materialized would give);
  serving, each as SELECT sum(...) FROM t, medians of --reps alternating runs, jit off:
  (t) the project's typed serving function over the raw columns (inlined: one comparison per one-hot feature);
  (h) the hand-written expression of the same model (a CASE per category column, over the raw columns);
  (r) ml_stack.predict_row('bench', to_jsonb(t)) (PL/pgSQL per row: the layout walked, categories looked up).

Results go to bench/results/categories.json. A measurement, not a test: it exits 0 whatever the ratios.
"""

import argparse
import datetime
import json
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
from pgserver import ml_stack_database, terminate_on_signals  # noqa: E402

RESULTS = REPO / "bench" / "results" / "categories.json"
SETTINGS = {"shared_buffers": "512MB", "temp_buffers": "512MB", "work_mem": "64MB", "max_wal_size": "4GB",
            "autovacuum": "off", "jit": "off"}
TABLE = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE t AS
SELECT 'c' || (i * 7919 % 50) AS region, (ARRAY['sad', 'ok', 'happy'])[1 + i % 3]::mood AS m,
       CASE WHEN i % 7 = 0 THEN NULL ELSE (ARRAY['a', 'b'])[1 + (i / 2) % 2] END AS grade,
       date '2020-01-01' + (i % 365) AS built, (i % 5 = 0) AS pool, (i % 13)::float8 AS rooms,
       (i * 7919 % 50) + 5 * (i % 3) + 2 * (i % 13) + (i % 5 = 0)::int * 7 + sin(i) AS y
FROM generate_series(1, ROWS) AS i;
"""


def timed(conn, query):
    started = time.perf_counter()
    conn.execute(query).fetchone()
    return time.perf_counter() - started


def hand_written(conn, model_id):
    """b + sum of the model's weights, a CASE per category column, over the raw columns."""
    art = conn.execute("SELECT artifact FROM ml_stack.models WHERE id = %s", (model_id,)).fetchone()[0]
    layout = conn.execute("SELECT s.columns FROM ml_stack.models m JOIN ml_stack.snapshots s ON s.id = m.snapshot_id "
                          "WHERE m.id = %s", (model_id,)).fetchone()[0]
    w = art["coefficients"][0]
    terms, j = [repr(art["intercepts"][0])], 0
    for col in layout:
        name, width = col["name"], col["width"]
        if col["kind"] == "category":
            enc = col["encoding"]
            cats = enc["categories"][1:] if enc.get("drop") == "first" else enc["categories"]
            arms = " ".join(f"WHEN {name}::text = '{c}' THEN {w[j + k]!r}" for k, c in enumerate(cats))
            null = f"WHEN {name} IS NULL THEN {w[j + width - 1]!r} " if enc.get("null") else ""
            terms.append(f"(CASE {null}{arms} ELSE 0 END)")
        elif col["kind"] == "temporal":
            terms.append(f"date_part('epoch', {name}) * {w[j]!r}")
        elif col["kind"] == "boolean":
            terms.append(f"{name}::int * {w[j]!r}")
        else:
            terms.append(f"{name} * {w[j]!r}")
        j += width
    return " + ".join(terms)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    terminate_on_signals()
    with ml_stack_database(SETTINGS, prefix="ml_stack_bench_", dbname="ml_stack_bench") as conn:
        conn.execute(TABLE.replace("ROWS", str(args.rows)))
        started = time.perf_counter()
        model_id = conn.execute("SELECT model_id FROM ml_stack.train('bench', 'regression', 't', 'y')").fetchone()[0]
        train_categories = time.perf_counter() - started
        # the same rows with the one-hot columns precomputed, as a materialized encoding view would hold them
        onehot = ", ".join([f"(region = 'c{k}')::int::float8 AS region_c{k}" for k in range(1, 50)]
                           + ["(m = 'ok')::int::float8 AS m_ok", "(m = 'happy')::int::float8 AS m_happy",
                              "coalesce(grade = 'b', false)::int::float8 AS grade_b",
                              "(grade IS NULL)::int::float8 AS grade_null"])
        conn.execute(f"CREATE TABLE t_encoded AS SELECT {onehot}, date_part('epoch', built) AS built, pool, rooms, y FROM t")
        started = time.perf_counter()
        conn.execute("SELECT model_id FROM ml_stack.train('bench_encoded', 'regression', 't_encoded', 'y')")
        train_encoded = time.perf_counter() - started

        typed = conn.execute("SELECT serving_function::regproc FROM ml_stack.deployed_models "
                             "WHERE project_name = 'bench'").fetchone()[0]
        queries = {
            "t": f"SELECT sum({typed}(region, m, grade, built, pool, rooms)) FROM t",
            "h": f"SELECT sum({hand_written(conn, model_id)}) FROM t",
            "r": "SELECT sum(ml_stack.predict_row('bench', to_jsonb(t))) FROM t",
        }
        sums = {k: conn.execute(q).fetchone()[0] for k, q in queries.items()}
        assert abs(sums["t"] - sums["h"]) <= 1e-6 * abs(sums["h"]) and abs(sums["r"] - sums["h"]) <= 1e-6 * abs(sums["h"]), sums
        times = {k: [] for k in queries}
        for _ in range(args.reps):
            for k, q in queries.items():
                times[k].append(timed(conn, q))
        med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "date": datetime.date.today().isoformat(), "machine": platform.node(), "rows": args.rows, "reps": args.reps,
        "train_s": {"categories": round(train_categories, 2), "precomputed_one_hot": round(train_encoded, 2),
                    "ratio": round(train_categories / train_encoded, 2)},
        "serving_s": {k: round(v, 3) for k, v in med.items()},
        "ratios": {"typed/hand_written": round(med["t"] / med["h"], 2), "predict_row/hand_written": round(med["r"] / med["h"], 1)},
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
