"""Training benchmark: ml_stack.train in the database against exporting the rows and fitting scikit-learn.

    .venv/bin/python bench/train_linear.py [--rows N] [--features P] [--reps N]     (`make bench`)

On a throwaway server (scripts/pgserver.py), a table of N rows x P float8 features and a label. Timed side by
side, alternating, --reps times each (medians):

  (a) ml_stack.train('bench', 'regression', 't', 'y', test_size => 0.01)
      everything: one read into a temporary table, split, statistics, the least-squares pass, metrics, registry
  (b) export then fit: psycopg binary COPY of the same rows into numpy, then scikit-learn's LinearRegression
  (c) the fit alone: LinearRegression on numpy arrays already in memory (the bare library)

Before timing, the coefficients of (a) and of LinearRegression on (a)'s training rows must agree to 1e-6
relative. Results go to bench/results/train_linear.json. A measurement, not a test: it exits 0 whatever the
ratios.
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
from sklearn.linear_model import LinearRegression

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
from pgserver import ml_stack_database, terminate_on_signals  # noqa: E402

RESULTS = REPO / "bench" / "results" / "train_linear.json"
SERVER_SETTINGS = {"shared_buffers": "1GB", "temp_buffers": "1GB", "work_mem": "64MB", "max_wal_size": "4GB",
                   "autovacuum": "off"}


def make_table(conn, rows: int, p: int, label: str | None = None, seed: float = 0.17) -> None:
    """Table t: p float8 features uniform in [0, 1) and a label y (SQL over x1 .. xp; by default linear)."""
    cols = ", ".join(f"x{j} float8" for j in range(1, p + 1))
    conn.execute(f"CREATE TABLE t ({cols}, y float8)")
    conn.execute("SELECT setseed(%s)", (seed,))
    xs = ", ".join(f"random() AS x{j}" for j in range(1, p + 1))
    label = label or f"1 + {' + '.join(f'{j} * x{j}' for j in range(1, p + 1))} + random()"
    conn.execute(f"INSERT INTO t SELECT *, {label} FROM (SELECT {xs} FROM generate_series(1, {rows})) AS g")
    conn.execute("VACUUM (FREEZE, ANALYZE) t")


def export_numpy(conn, p: int) -> np.ndarray:
    """All rows as an (N, p + 1) float64 array, through binary COPY (the fastest way out with psycopg)."""
    cols = ", ".join([f"x{j}" for j in range(1, p + 1)] + ["y"])
    rows = []
    with conn.cursor().copy(f"COPY (SELECT {cols} FROM t) TO STDOUT (FORMAT BINARY)") as copy:
        copy.set_types(["float8"] * (p + 1))
        for row in copy.rows():
            rows.append(row)
    return np.asarray(rows, dtype=np.float64)


def train_in_database(conn) -> int:
    conn.execute("DELETE FROM ml_stack.deployments; DELETE FROM ml_stack.models; DELETE FROM ml_stack.snapshots")
    return conn.execute("SELECT model_id FROM ml_stack.train('bench', 'regression', 't', 'y', "
                        "test_size => 0.01)").fetchone()[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--features", type=int, default=20)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--output", type=Path, default=RESULTS)
    args = ap.parse_args()
    terminate_on_signals()
    p = args.features

    print(f"bench: throwaway server; {args.rows:,} rows x {p} float8 features", flush=True)
    with ml_stack_database(SERVER_SETTINGS, prefix="ml_stack_bench_", dbname="ml_stack_bench") as conn:
        make_table(conn, args.rows, p)

        # agreement first: LinearRegression on the rows ml_stack trained on
        model_id = train_in_database(conn)
        art = conn.execute("SELECT artifact FROM ml_stack.models WHERE id = %s", (model_id,)).fetchone()[0]
        seed, n_test = conn.execute("SELECT seed, test_rows FROM ml_stack.snapshots").fetchone()
        train_rows = [r for (r,) in conn.execute(
            "SELECT r FROM generate_series(1, %s) AS r ORDER BY md5(%s || ':' || r) OFFSET %s",
            (args.rows, seed, n_test))]
        data = export_numpy(conn, p)
        mask = np.zeros(args.rows, dtype=bool)
        mask[np.asarray(train_rows) - 1] = True
        oracle = LinearRegression().fit(data[mask, :p], data[mask, p])
        ours = np.asarray(art["coefficients"][0])
        rel = float(np.max(np.abs(ours - oracle.coef_) / np.abs(oracle.coef_)))
        print(f"bench: coefficients agree with scikit-learn: max relative difference {rel:.2e}")
        if not rel <= 1e-6:
            print("bench: FAILED: coefficients differ", file=sys.stderr)
            return 1
        del data

        times = {"a": [], "b": [], "c": []}
        for _ in range(args.reps):
            t0 = time.perf_counter()
            train_in_database(conn)
            times["a"].append(time.perf_counter() - t0)

            t0 = time.perf_counter()
            data = export_numpy(conn, p)
            t_export = time.perf_counter() - t0
            t0 = time.perf_counter()
            LinearRegression().fit(data[:, :p], data[:, p])
            t_fit = time.perf_counter() - t0
            times["b"].append(t_export + t_fit)
            times["c"].append(t_fit)
            del data

    med = {k: statistics.median(v) for k, v in times.items()}
    labels = {"a": "ml_stack.train (in the database, all included)",
              "b": "binary COPY out + LinearRegression.fit",
              "c": "LinearRegression.fit alone (numpy in memory)"}
    print()
    for k in "abc":
        print(f"({k}) {labels[k]:<50} {med[k]:>7.2f} s  {med[k] / med['a']:>5.2f}x of (a)")
    print(f"ratio train/export-then-fit = {med['a'] / med['b']:.2f}; train/bare library = {med['a'] / med['c']:.2f}")
    doc = {
        "benchmark": "train_linear", "rows": args.rows, "features": p, "reps": args.reps,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "server_settings": SERVER_SETTINGS, "max_relative_coefficient_difference": rel,
        "results": {k: {"label": labels[k], "times_s": [round(t, 3) for t in times[k]],
                        "median_s": round(med[k], 3)} for k in "abc"},
        "ratio_train_vs_export_then_fit": round(med["a"] / med["b"], 3),
        "ratio_train_vs_bare_fit": round(med["a"] / med["c"], 3),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
