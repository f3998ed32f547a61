"""Sparse logistic regression benchmark: the SQL engine's L-BFGS on text features against scikit-learn's
LogisticRegression on the same rows and the same numbers.

    .venv/bin/python bench/sparse_logistic.py [--rows N] [--reps N] [--cases a,b,c]     (`make bench`)

On a throwaway server (scripts/pgserver.py), the Debian archive's package descriptions of six sections
(scripts/debian_text.py; about 20k), in name order, the last 25% as the test split. Cases:

  hash_binary   hashing 1024 (signed), label: section libs or not
  hash_multi    hashing 1024 (signed), label: the section (6 classes, multinomial)
  tfidf_binary  tfidf over the training rows' vocabulary (~9k terms), libs or not

Timed side by side, alternating, --reps times each (medians):
  (a) ml_stack.train(algorithm => 'linear'): everything (read, split, vectorize, fit, test scoring, registry)
  (f) its fit alone (metrics.fit_time)
  (s) scikit-learn's LogisticRegression(C=1.0) (lbfgs, max_iter=10000, tol 1e-4 as by default) on the same
      features as a CSR matrix in memory: the server's sparse vectors, read once
Agreement: the largest difference of the test rows' probabilities against newton-cg at tol 1e-10 (the exact
optimum). Results go to bench/results/sparse_logistic.json. A measurement, not a test: it exits 0.
"""

import argparse
import datetime
import json
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import sklearn
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
from debian_text import load_packages  # noqa: E402
from pgserver import ml_stack_database, terminate_on_signals  # noqa: E402
from train_linear import SERVER_SETTINGS  # noqa: E402  (bench/ is on sys.path)

RESULTS = REPO / "bench" / "results" / "sparse_logistic.json"
SECTIONS = ["libs", "python", "utils", "admin", "devel", "net"]
CASES = {
    "hash_binary": ("docs2", {"vectorize": "hashing", "options": {"dims": 1024}}),
    "hash_multi": ("docs", {"vectorize": "hashing", "options": {"dims": 1024}}),
    "tfidf_binary": ("docs2", {"vectorize": "tfidf"}),
}


def train(conn, project, relation, rule):
    conn.execute("DELETE FROM ml_stack.deployments; DELETE FROM ml_stack.models; DELETE FROM ml_stack.snapshots; "
                 "DELETE FROM ml_stack.projects")
    t0 = time.perf_counter()
    model_id, metrics = conn.execute(
        "SELECT model_id, metrics FROM ml_stack.train(%s, 'classification', %s, 'label', test_sampling => 'last', "
        "preprocess => %s::jsonb)", (project, relation, json.dumps({"description": rule}))).fetchone()
    return time.perf_counter() - t0, model_id, metrics


def features(conn, project, relation, rule):
    """The server's sparse vectors of every row (as served: through real) as a CSR matrix, and the labels."""
    name = f"{project}.description" if rule["vectorize"] == "tfidf" else "hashing"
    spec = conn.execute("SELECT ml_stack._resolve_transformer(%s, %s::jsonb)",
                        (name, json.dumps(rule.get("options", {})))).fetchone()[0]
    rows = conn.execute(f"SELECT d.n, s.idx, s.val::real::float8 FROM (SELECT row_number() OVER () AS n, description "
                        f"FROM {relation}) AS d, ml_stack._sparse_terms(%s, d.description) AS s",
                        (json.dumps(spec),)).fetchall()
    y = np.array([r[0] for r in conn.execute(f"SELECT label FROM {relation}")])
    r, j, v = (np.array(c) for c in zip(*rows))
    X = sp.csr_matrix((v, (r - 1, j - 1)), shape=(len(y), spec["dims"]))
    return X, y


def sk_fit(X, y, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", UserWarning)
        return LogisticRegression(C=1.0, **kw).fit(X, y)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=None, help="first N packages (default: all of the six sections)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--output", type=Path, default=RESULTS)
    args = ap.parse_args()
    terminate_on_signals()
    report = {"benchmark": "sparse_logistic", "reps": args.reps,
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": {"python": platform.python_version(), "platform": platform.platform(),
                          "scikit-learn": sklearn.__version__},
              "server_settings": SERVER_SETTINGS, "cases": {}}
    with ml_stack_database(SERVER_SETTINGS, prefix="ml_stack_bench_", dbname="ml_stack_bench") as conn:
        load_packages(conn, sections=set(SECTIONS), limit=args.rows)
        conn.execute("CREATE TABLE docs AS SELECT description, array_position(%s::text[], section) - 1 AS label "
                     "FROM packages ORDER BY id", (SECTIONS,))
        conn.execute("CREATE TABLE docs2 AS SELECT description, (label = 0)::integer AS label FROM docs")
        n = conn.execute("SELECT count(*) FROM docs").fetchone()[0]
        ntrain = n - -(-n * 25 // 100)
        print(f"bench: throwaway server; {n:,} descriptions, {ntrain:,} training rows", flush=True)
        for case in args.cases.split(","):
            relation, rule = CASES[case]
            t, model_id, metrics = train(conn, "bench", relation, rule)
            X, y = features(conn, "bench", relation, rule)
            Xtr, ytr = X[:ntrain], y[:ntrain]
            exact = sk_fit(Xtr, ytr, solver="newton-cg", tol=1e-10, max_iter=10000)
            served = np.array([r[0] for r in conn.execute(
                f"SELECT ml_stack.predict_proba_row('bench', to_jsonb(d)) FROM (SELECT * FROM {relation} "
                f"OFFSET {ntrain}) AS d")])
            diff = float(np.max(np.abs(served - exact.predict_proba(X[ntrain:]))))
            sk_default = sk_fit(Xtr, ytr, max_iter=10000)
            diff_sk = float(np.max(np.abs(sk_default.predict_proba(X[ntrain:]) - exact.predict_proba(X[ntrain:]))))
            print(f"bench: {case}: {X.shape[1]} features, {X.nnz:,} non-zeros; max |p - exact| on the test rows: "
                  f"ml_stack {diff:.1e}, lbfgs (defaults) {diff_sk:.1e}", flush=True)
            times = {"a": [], "f": [], "s": []}
            for rep in range(args.reps):
                t, _, metrics = train(conn, "bench", relation, rule)
                times["a"].append(round(t, 3))
                times["f"].append(round(metrics["fit_time"], 3))
                t0 = time.perf_counter()
                sk_fit(Xtr, ytr, max_iter=10000)
                times["s"].append(round(time.perf_counter() - t0, 3))
                print(f"bench: {case} rep {rep + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()),
                      flush=True)
            med = {k: statistics.median(v) for k, v in times.items()}
            report["cases"][case] = {
                "relation": relation, "rule": rule, "rows": n, "train_rows": ntrain, "features": X.shape[1],
                "nonzeros": int(X.nnz), "classes": int(len(np.unique(y))),
                "max_abs_proba_difference_vs_exact": diff, "sklearn_lbfgs_default_vs_exact": diff_sk,
                "accuracy": metrics["accuracy"], "f1": metrics["f1"],
                "times_s": times, "median_s": med,
                "ratio_fit_over_sklearn": round(med["f"] / med["s"], 1),
                "ratio_train_over_sklearn": round(med["a"] / med["s"], 1)}
            print(f"  {case}: train {med['a']:.2f} s, fit {med['f']:.2f} s, scikit-learn {med['s']:.3f} s "
                  f"(fit/sklearn {med['f'] / med['s']:.1f}x)", flush=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"bench: wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
