"""The drop-in schemas (0.5.1): what pgml.predict and vectorize.search cost over the ml_stack calls they wrap.

    .venv/bin/python bench/dropin.py [--rows N] [--docs N] [--reps N]

Starts a throwaway server, trains a linear regression on N rows x 10 float8 features and reports, each as
SELECT sum(...) FROM t, medians of --reps alternating runs, jit off:

  (t)  the project's typed serving function (ml_stack's fast path, inlined);
  (m)  ml_stack.predict('b', ARRAY[x1, ..., x10]);
  (p)  pgml.predict('b', ARRAY[x1, ..., x10])            (float8[]: inlined into ml_stack's serving);
  (pr) pgml.predict('b', ARRAY[x1, ..., x10]::real[])    (PostgresML's own type: the real -> float8 conversion of
       ten elements makes the argument look costly, so ml_stack.predict with real[] is not inlined either);
  (pw) pgml.predict('b', t), the row form, on the first 20,000 rows only, as time per row.

Then a vector job ('hashing', 1024 dimensions) over --docs generated texts, and the latency of one semantic
search, median of 20: ml_stack.search against vectorize.search with the same query. Results go to
bench/results/dropin.json. A measurement, not a test: it exits 0 whatever the ratios.
"""

import argparse
import datetime
import json
import platform
import random
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
from pgserver import ml_stack_database, terminate_on_signals  # noqa: E402

RESULTS = REPO / "bench" / "results" / "dropin.json"
SETTINGS = {"shared_buffers": "512MB", "work_mem": "64MB", "max_wal_size": "4GB", "autovacuum": "off", "jit": "off"}
FEATURES = [f"x{i}" for i in range(1, 11)]
WORDS = ("json parser fast library game puzzle chess network server client http proxy cache database sql query "
         "python rust compiler kernel driver audio video codec image viewer editor text terminal shell font").split()


def timed(conn, query):
    started = time.perf_counter()
    conn.execute(query).fetchall()
    return time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--docs", type=int, default=10_000)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    terminate_on_signals()
    with ml_stack_database(SETTINGS, prefix="ml_stack_bench_", dbname="ml_stack_bench") as conn:
        conn.execute("SET client_min_messages = warning")
        conn.execute("CREATE EXTENSION ml_stack_pgml")
        conn.execute("CREATE EXTENSION ml_stack_vectorize")
        cols = ", ".join(f"random() AS {f}" for f in FEATURES)
        conn.execute(f"CREATE TABLE t AS SELECT {cols} FROM generate_series(1, {args.rows})")
        conn.execute("ALTER TABLE t ADD COLUMN y float8")
        conn.execute("UPDATE t SET y = " + " + ".join(f"{i} * {f}" for i, f in enumerate(FEATURES, 1)) + " + random()")
        conn.execute("VACUUM ANALYZE t")
        conn.execute("SELECT * FROM pgml.train('b', 'regression', 't', 'y')")
        typed = conn.execute("SELECT serving_function::regproc FROM ml_stack.deployed_models").fetchone()[0]
        array = f"ARRAY[{', '.join(FEATURES)}]"
        queries = {
            "t": f"SELECT sum({typed}({', '.join(FEATURES)})) FROM t",
            "m": f"SELECT sum(ml_stack.predict('b', {array})) FROM t",
            "p": f"SELECT sum(pgml.predict('b', {array})) FROM t",
            "pr": f"SELECT sum(pgml.predict('b', {array}::real[])) FROM t",
        }
        sums = {k: conn.execute(q).fetchone()[0] for k, q in queries.items()}
        assert all(abs(v - sums["t"]) <= 1e-4 * abs(sums["t"]) for v in sums.values()), sums   # real: 7 digits
        times = {k: [] for k in queries}
        for _ in range(args.reps):
            for k, q in queries.items():
                times[k].append(timed(conn, q))
        med = {k: statistics.median(v) for k, v in times.items()}
        row_s = timed(conn, "SELECT sum(pgml.predict('b', s)) FROM (SELECT * FROM t LIMIT 20000) AS s") / 20000

        rnd = random.Random(7)
        conn.execute("CREATE TABLE docs (id integer PRIMARY KEY, body text)")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO docs VALUES (%s, %s)",
                            [(i, " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(3, 12)))) for i in range(args.docs)])
        conn.execute("SELECT vectorize.table(job_name => 'docs', relation => 'docs', primary_key => 'id', "
                     "columns => ARRAY['body'], transformer => 'hashing', schedule => 'realtime')")
        search = {"ml_stack.search": "SELECT * FROM ml_stack.search('docs', 'fast json parser library', 10)",
                  "vectorize.search": "SELECT * FROM vectorize.search('docs', 'fast json parser library', num_results => 10)"}
        lat = {k: [] for k in search}
        for _ in range(20):
            for k, q in search.items():
                lat[k].append(timed(conn, q))
        lat_med = {k: statistics.median(v) for k, v in lat.items()}
    result = {
        "date": datetime.date.today().isoformat(), "machine": platform.node(), "rows": args.rows, "reps": args.reps,
        "predict_s": {k: round(v, 3) for k, v in med.items()},
        "ratios_to_ml_stack_predict": {k: round(v / med["m"], 2) for k, v in med.items()},
        "row_form_us_per_row": round(row_s * 1e6, 1),
        "search_ms": {k: round(v * 1e3, 1) for k, v in lat_med.items()}, "docs": args.docs,
        "search_ratio": round(lat_med["vectorize.search"] / lat_med["ml_stack.search"], 2),
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
