"""Python-engine benchmark: XGBoost trained in the database, and its compiled SQL predictor, against the library.

    .venv/bin/python bench/python_engine.py [--rows N] [--features P] [--reps N]     (`make bench`)

On a throwaway server (scripts/pgserver.py), a table of N rows x P float8 features and a non-linear label
(the table of bench/train_linear.py). Timed side by side, alternating, --reps times each (medians):

  train
  (a) ml_stack.train(..., algorithm => 'xgboost'): everything: one read into a temporary table, split, the bulk
      read into numpy, XGBoost's fit, the test rows' predictions and metrics, the registry, the SQL compile
  (b) export then train: psycopg binary COPY of the rows into numpy, then XGBRegressor.fit on the same
      training rows with the same hyperparameters
  (c) the bare library: XGBRegressor.fit on numpy arrays already in memory
  predict (every row of the table)
  (d) SELECT sum(ml_stack.predict('bench', ARRAY[x1, ..])) FROM t: the compiled PL/pgSQL trees, no Python
  (e) the library's batch predict on numpy arrays already in memory
  (f) export then predict: binary COPY out, then the library's batch predict
  (g) SELECT sum(<the project's typed serving function>(x1, ..)) FROM t (0.4.0: deployed_models.serving_function)
  (h), (i) the first model imported into a second project, then (h) over the first 20,000 rows, and (i) the
      same after ml_stack.set_confidential (0.4.1): the stored nodes walked by PL/pgSQL instead of compiled CASEs

Before timing, the database's predictions of 2,000 rows must agree with the library's to 1e-5. Results go to
bench/results/python_engine.json. A measurement, not a test: it exits 0 whatever the ratios.
"""

import argparse
import datetime
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import xgboost

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
from pgserver import ml_stack_database, terminate_on_signals  # noqa: E402
from train_linear import SERVER_SETTINGS, export_numpy, make_table  # noqa: E402  (bench/ is on sys.path)

RESULTS = REPO / "bench" / "results" / "python_engine.json"
SAMPLE_ROWS = 20_000  # rows of (h) and (i): a confidential tree walk costs ~0.1 ms per row


# interactions and thresholds, so that trees have work to do
LABEL = "10 * x1 * x2 + 5 * (x3 > 0.5)::int - 3 * x4 ^ 2 + x5 + random()"


def train_in_database(conn) -> int:
    # the project stays (its split seed with it); the copies of (h) and (i) stay too
    for table in ("deployments", "models", "snapshots"):
        conn.execute(f"DELETE FROM ml_stack.{table} WHERE project_id IN (SELECT id FROM ml_stack.projects WHERE name = 'bench')")
    return conn.execute("SELECT model_id FROM ml_stack.train('bench', 'regression', 't', 'y', algorithm => 'xgboost')"
                        ).fetchone()[0]


def train_rows_mask(conn, model_id: int, n: int) -> np.ndarray:
    """Which rows (in the table's order) the model trained on: the split is the server's, replayed by its key."""
    seed, test_rows = conn.execute(
        "SELECT s.seed, s.test_rows FROM ml_stack.models AS m JOIN ml_stack.snapshots AS s ON s.id = m.snapshot_id"
        " WHERE m.id = %s", (model_id,)).fetchone()
    ranks = conn.execute("SELECT array_agg(r ORDER BY md5(%s || ':' || r)) FROM generate_series(1, %s) AS r",
                         (str(seed), n)).fetchone()[0]
    mask = np.ones(n, dtype=bool)
    mask[np.array(ranks[:test_rows]) - 1] = False
    return mask


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--features", type=int, default=20)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--output", type=Path, default=RESULTS)
    args = ap.parse_args()
    terminate_on_signals()
    p = args.features
    columns = ", ".join(f"x{j}" for j in range(1, p + 1))

    print(f"bench: throwaway server; {args.rows:,} rows x {p} float8 features; xgboost {xgboost.__version__}", flush=True)
    with ml_stack_database(SERVER_SETTINGS, prefix="ml_stack_bench_", dbname="ml_stack_bench") as conn:
        conn.execute("CREATE EXTENSION ml_stack_python CASCADE")
        make_table(conn, args.rows, p, label=LABEL, seed=0.42)

        # agreement first, and the training rows and hyperparameters the library runs get
        model_id = train_in_database(conn)
        hyperparams = conn.execute("SELECT hyperparams FROM ml_stack.models WHERE id = %s", (model_id,)).fetchone()[0]
        data = export_numpy(conn, p)
        X, y = data[:, :p], data[:, p]
        mask = train_rows_mask(conn, model_id, args.rows)
        reference = xgboost.XGBRegressor(**hyperparams).fit(X[mask], y[mask])
        sample = conn.execute(f"SELECT ml_stack.predict('bench', ARRAY[{columns}]) FROM t LIMIT 2000").fetchall()
        diff = float(np.max(np.abs(np.array([r[0] for r in sample]) - reference.predict(X[:2000]))))
        print(f"bench: hyperparameters {hyperparams}; max |SQL - library| on 2,000 rows: {diff:.3g}", flush=True)
        if diff > 1e-5:
            print("bench: the database disagrees with the library: no timing", file=sys.stderr)
            return 1

        def export_then_train():
            d = export_numpy(conn, p)
            return xgboost.XGBRegressor(**hyperparams).fit(d[mask, :p], d[mask, p])

        def serving():
            return conn.execute("SELECT serving_function::oid::regproc::text FROM ml_stack.deployed_models "
                                "WHERE project_name = 'bench'").fetchone()[0]

        def export_then_predict():
            d = export_numpy(conn, p)
            return float(reference.predict(d[:, :p]).astype(np.float64).sum())

        # the same model twice more, public and confidential, for (h) and (i)
        for name in ("bench_public", "bench_secret"):
            conn.execute("SELECT ml_stack.import_model(%s, ml_stack.export_model(%s))", (name, model_id))
        conn.execute("SELECT ml_stack.set_confidential('bench_secret')")
        copies = dict(conn.execute("SELECT project_name, serving_function::oid::regproc::text FROM ml_stack.deployed_models "
                                   "WHERE project_name IN ('bench_public', 'bench_secret')").fetchall())
        few = f"(SELECT * FROM t LIMIT {SAMPLE_ROWS}) AS s"
        sums = [conn.execute(f"SELECT sum({copies[n]}({columns})) FROM {few}").fetchone()[0] for n in sorted(copies)]
        if sums[0] != sums[1]:
            print(f"bench: the confidential copy serves other numbers ({sums}): no timing", file=sys.stderr)
            return 1

        cases = {
            "a": ("ml_stack.train(algorithm => 'xgboost') (in the database, all included)", lambda: train_in_database(conn)),
            "b": ("binary COPY out + XGBRegressor.fit", export_then_train),
            "c": ("XGBRegressor.fit on numpy arrays in memory (bare library)",
                  lambda: xgboost.XGBRegressor(**hyperparams).fit(X[mask], y[mask])),
            "d": ("SELECT sum(ml_stack.predict('bench', ARRAY[...])) over every row (compiled SQL trees)",
                  lambda: conn.execute(f"SELECT sum(ml_stack.predict('bench', ARRAY[{columns}])) FROM t").fetchone()),
            "e": ("library batch predict on numpy arrays in memory", lambda: float(reference.predict(X).sum())),
            "f": ("binary COPY out + library batch predict", export_then_predict),
            "g": ("SELECT sum(<typed serving function>(x1, ..)) over every row (compiled SQL trees)",
                  lambda: conn.execute(f"SELECT sum({serving()}({columns})) FROM t").fetchone()),
            "h": (f"the same model's typed serving function over {SAMPLE_ROWS:,} rows (compiled SQL trees)",
                  lambda: conn.execute(f"SELECT sum({copies['bench_public']}({columns})) FROM {few}").fetchone()),
            "i": (f"the same, confidential project, over {SAMPLE_ROWS:,} rows (stored nodes walked by PL/pgSQL)",
                  lambda: conn.execute(f"SELECT sum({copies['bench_secret']}({columns})) FROM {few}").fetchone()),
        }
        times = {k: [] for k in cases}
        for rep in range(args.reps):
            for key, (_, fn) in cases.items():
                t, _ = timed(fn)
                times[key].append(round(t, 3))
            print(f"bench: rep {rep + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()), flush=True)

    med = {k: statistics.median(v) for k, v in times.items()}
    ratios = {"train_in_database_over_bare_library": med["a"] / med["c"],
              "train_in_database_over_export_then_train": med["a"] / med["b"],
              "compiled_predict_over_library_predict": med["d"] / med["e"],
              "compiled_predict_over_export_then_predict": med["d"] / med["f"],
              "typed_serving_over_library_predict": med["g"] / med["e"],
              "typed_serving_over_compiled_predict": med["g"] / med["d"],
              "confidential_over_compiled_typed_serving": med["i"] / med["h"]}
    report = {
        "benchmark": "python_engine", "rows": args.rows, "features": p, "reps": args.reps,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "xgboost": xgboost.__version__},
        "server_settings": SERVER_SETTINGS, "hyperparams": hyperparams, "max_abs_prediction_difference": diff,
        "results": {k: {"label": cases[k][0], "times_s": times[k], "median_s": med[k]} for k in cases},
        "ratios": {k: round(v, 2) for k, v in ratios.items()},
    }
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    for k in cases:
        print(f"  ({k}) {med[k]:7.2f} s  {cases[k][0]}")
    for k, v in ratios.items():
        print(f"  {k}: {v:.2f}")
    print(f"bench: wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
