"""Naive Bayes benchmark: ml_stack's SQL-engine MultinomialNB on text against scikit-learn's, on real text.

    .venv/bin/python bench/naive_bayes.py [--reps N]     (`make bench`)

On a throwaway server (scripts/pgserver.py), the Debian archive's package descriptions of 8 sections
(scripts/debian_text.py; about 29k), label the section, the last 25% of the rows (in md5 order of the package names: a random share) as the test split. Timed side
by side, alternating, --reps times each (medians):

  (a) ml_stack.train(algorithm => 'naive_bayes', preprocess => counts): everything: the read, the split, the
      vocabulary fitted on the training rows, the grouped pass, the test rows scored, metrics, registry, compile
  (b) export then train: psycopg COPY of the rows out, then scikit-learn's CountVectorizer (its own tokenizer)
      and MultinomialNB on the same training rows
  (c) the bare library: MultinomialNB.fit on the count matrix already in memory
Accuracy and macro f1 on the same test rows: ml_stack's; scikit-learn on the server's lexemes (what ml_stack
counts: must be equal); scikit-learn with its own default tokenizer (no stemming, no stop words).
Results go to bench/results/naive_bayes.json. A measurement, not a test: it exits 0 whatever the ratios.
"""

import argparse
import datetime
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.metrics import accuracy_score, f1_score
from sklearn.naive_bayes import MultinomialNB

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
from debian_text import load_packages  # noqa: E402
from pgserver import ml_stack_database, terminate_on_signals  # noqa: E402

RESULTS = REPO / "bench" / "results" / "naive_bayes.json"
SECTIONS = ["admin", "devel", "doc", "libs", "net", "perl", "python", "utils"]


def train_in_database(conn):
    conn.execute("DELETE FROM ml_stack.deployments; DELETE FROM ml_stack.models; DELETE FROM ml_stack.snapshots; "
                 "DELETE FROM ml_stack.vectorizers")
    return conn.execute("SELECT metrics FROM ml_stack.train('nb', 'classification', 'docs', 'label', "
                        "algorithm => 'naive_bayes', test_sampling => 'last', "
                        "preprocess => '{\"description\": {\"vectorize\": \"counts\"}}')").fetchone()[0]


def export(conn):
    with conn.cursor() as cur:
        rows = []
        with cur.copy("COPY docs TO STDOUT") as cp:
            for row in cp.rows():
                rows.append(row)
    return [r[0] or "" for r in rows], np.array([int(r[1]) for r in rows])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    terminate_on_signals()
    with ml_stack_database(prefix="ml_stack_bench_") as conn:
        load_packages(conn, sections=set(SECTIONS))
        conn.execute("CREATE TABLE docs AS SELECT description, array_position(%s::text[], section) - 1 AS label "
                     "FROM packages ORDER BY md5(package)", (SECTIONS,))  # the last 25%: a random share
        n = conn.execute("SELECT count(*) FROM docs").fetchone()[0]
        ntrain = n - math.ceil(n * 0.25)
        times = {"ml_stack_train": [], "export_then_train": [], "bare_fit": []}
        for _ in range(args.reps):
            t0 = time.perf_counter()
            metrics = train_in_database(conn)
            times["ml_stack_train"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            texts, y = export(conn)
            vec = CountVectorizer().fit(texts[:ntrain])
            x = vec.transform(texts)
            nb = MultinomialNB().fit(x[:ntrain], y[:ntrain])
            times["export_then_train"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            MultinomialNB().fit(x[:ntrain], y[:ntrain])
            times["bare_fit"].append(time.perf_counter() - t0)
        own = nb.predict(x[ntrain:])
        # scikit-learn on the server's lexemes: the same features ml_stack counts
        lexemes = {t: [lex for lex, tf in conn.execute(
            "SELECT lexeme, cardinality(positions) FROM unnest(to_tsvector('english', %s::text))", (t,)).fetchall()
            for _ in range(tf)] for t in set(texts)}
        same = CountVectorizer(analyzer=lambda t: lexemes[t]).fit(texts[:ntrain])
        xs = same.transform(texts)
        nb_same = MultinomialNB().fit(xs[:ntrain], y[:ntrain]).predict(xs[ntrain:])
        med = {k: statistics.median(v) for k, v in times.items()}
        result = {
            "date": datetime.date.today().isoformat(), "machine": platform.machine(), "rows": n, "train_rows": ntrain,
            "reps": args.reps, "seconds": med,
            "ratios": {"ml_stack_vs_export_then_train": med["ml_stack_train"] / med["export_then_train"],
                       "ml_stack_vs_bare_fit": med["ml_stack_train"] / med["bare_fit"]},
            "accuracy": {"ml_stack": metrics["accuracy"],
                         "sklearn_on_server_lexemes": accuracy_score(y[ntrain:], nb_same),
                         "sklearn_own_tokenizer": accuracy_score(y[ntrain:], own)},
            "f1": {"ml_stack": metrics["f1"], "sklearn_on_server_lexemes": f1_score(y[ntrain:], nb_same, average="macro"),
                   "sklearn_own_tokenizer": f1_score(y[ntrain:], own, average="macro")},
        }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
