"""Vector jobs and search benchmark (docs/vectors-jobs-search.md).

    .venv/bin/python bench/vectors.py [--reps N] [--big ROWS]

On a throwaway server (scripts/pgserver.py), with real short text: the one-line package descriptions of the
Debian archive (the 63,681 of data/debian-packages.tsv.xz, scripts/debian_text.py; beyond that, rows join two
descriptions). Medians of --reps runs:

  insert   10,000 rows in one INSERT ... SELECT into a table with a realtime hashing job (1024 dims), against the
           same INSERT into a table without a job (ratio); also 1,000 single-row INSERTs
  embed    SELECT count(ml_stack.embed('hashing', t)) over 10,000 texts: embeddings per second
  search   ml_stack.search latency, semantic / keyword / hybrid, at 10k and --big rows, hashing 1024 dims
           (5 queries, median of each; the figure is the median over queries)
  dense    the semantic ranking alone (_semantic_ranking_sql) over random 384-dim vectors written into the job's
           table (what all-MiniLM-L6-v2 stores), a dense random query; and, at 10k, the sum-over-unnest way
  numpy    with ml_stack_python (when it installs): the same semantic search and dense ranking through the numpy
           matrix cached per backend (docs: "Semantic search in numpy"), its first call (the load) apart, and
           the ratio to the SQL path (ml_stack.search_cache_mb = 0); the results are checked to be identical
--dense-only skips the insert, embed and hashing-search measurements (quicker).
Results go to bench/results/vectors.json. A measurement, not a test.
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
from debian_text import package_descriptions  # noqa: E402
from pgserver import ml_stack_database, terminate_on_signals  # noqa: E402
from train_linear import SERVER_SETTINGS  # noqa: E402  (bench/ is on sys.path)

RESULTS = REPO / "bench" / "results" / "vectors.json"
QUERIES = ["fast json parser library", "chess game", "http proxy server", "audio video codec", "python web framework"]


def descriptions():
    return [r[4] for r in package_descriptions()]


def texts(n, base):
    return [base[i] if i < len(base) else base[i % len(base)] + " " + base[(i * 7919) % len(base)] for i in range(n)]


def timed(fn, reps):
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def load(conn, table, rows):
    conn.execute(f"INSERT INTO {table} SELECT i::int, t FROM unnest(%s::text[]) WITH ORDINALITY AS u(t, i)", (rows,))


def numpy_search(conn, r, table, n, mode, reps):
    """ml_stack.search through the numpy matrix: the load (first call), then medians over QUERIES; identical
    results to the SQL path asserted."""
    q = "SELECT id, score, rank FROM ml_stack.search(%s, %s, 10, NULL, %s)"
    conn.execute("SET ml_stack.search_cache_mb = 512")
    t0 = time.perf_counter()
    conn.execute(q, (table, QUERIES[0], mode)).fetchall()
    load = time.perf_counter() - t0
    per_query = [1000 * timed(lambda x=x: conn.execute(q, (table, x, mode)).fetchall(), reps) for x in QUERIES]
    got = [conn.execute(q, (table, x, mode)).fetchall() for x in QUERIES]
    conn.execute("SET ml_stack.search_cache_mb = 0")
    assert got == [conn.execute(q, (table, x, mode)).fetchall() for x in QUERIES], "numpy path differs from SQL"
    key = f"search_{mode}_numpy_{n}_ms"
    r[key] = statistics.median(per_query)
    r[f"search_{mode}_numpy_first_call_{n}_s"] = load
    print(f"bench: {n:,} rows x 1024 (hashing): {mode} search, numpy path {r[key]:.1f} ms "
          f"({r[f'search_{mode}_{n}_ms'] / r[key]:.1f}x; first call with the load {load:.2f} s)", flush=True)


def numpy_dense(conn, r, job, n, qv, reps):
    """The dense ranking through the numpy matrix: dense_<n>'s rows written into the job's own table (its change
    trigger fires), the ranking SQL of _semantic_ranking_sql with the numpy path on, against the SQL path's."""
    conn.execute(f"TRUNCATE ml_stack._vectors_{job}")
    conn.execute(f"INSERT INTO ml_stack._vectors_{job} SELECT * FROM dense_{n}")
    conn.execute(f"VACUUM ANALYZE ml_stack._vectors_{job}")
    sql_of = ("SELECT ml_stack._semantic_ranking_sql(d, %s::real[], 'true', 10) FROM ml_stack.vector_job_definitions"
              " AS d WHERE d.id = %s")

    def run():
        return conn.execute(conn.execute(sql_of, (qv, job)).fetchone()[0]).fetchall()

    conn.execute("SET jit = off")
    want = run()                                 # search_cache_mb = 0: the SQL path
    conn.execute("SET ml_stack.search_cache_mb = 512")
    t0 = time.perf_counter()
    got = run()
    r[f"dense384_numpy_first_call_{n}_s"] = time.perf_counter() - t0
    assert got == want, "numpy path differs from SQL"
    r[f"dense384_numpy_{n}_ms"] = 1000 * timed(run, max(reps, 5))
    r[f"dense384_numpy_ratio_{n}"] = r[f"dense384_semantic_{n}_ms"] / r[f"dense384_numpy_{n}_ms"]
    state = conn.execute("SELECT rows, dims, bytes FROM ml_stack._python_vector_cache() WHERE job_id = %s",
                         (job,)).fetchone()
    r[f"dense384_numpy_matrix_{n}_mb"] = state[2] / 2 ** 20
    print(f"bench: {n:,} rows x 384 dense: numpy path {r[f'dense384_numpy_{n}_ms']:.2f} ms "
          f"({r[f'dense384_numpy_ratio_{n}']:.0f}x the SQL path's {r[f'dense384_semantic_{n}_ms']:.0f} ms; "
          f"first call with the load {r[f'dense384_numpy_first_call_{n}_s']:.2f} s; matrix "
          f"{r[f'dense384_numpy_matrix_{n}_mb']:.0f} MB)", flush=True)
    conn.execute("SET ml_stack.search_cache_mb = 0")
    conn.execute("RESET jit")


def dense_only(conn, args, base, r, numpy_path):
    """--dense-only: for 10k and --big rows, a job over short texts, its vectors replaced by random dense
    384-dim ones; the SQL ranking and the numpy path."""
    for n in (10_000, args.big):
        table = f"docs_{n}"
        conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, t text)")
        conn.execute(f"INSERT INTO {table} SELECT i, 'x' FROM generate_series(1, {n}) AS i")
        conn.execute(f"SELECT ml_stack.create_vector_job('{table}', '{table}', 'id', ARRAY['t'])")
        job = conn.execute("SELECT id FROM ml_stack.vector_job_definitions WHERE job_name = %s", (table,)).fetchone()[0]
        conn.execute(f"CREATE TABLE dense_{n} AS SELECT * FROM ml_stack._vectors_{job}")
        conn.execute("SELECT setseed(0.5)")
        conn.execute(f"UPDATE dense_{n} SET embedding = (SELECT array_agg(random()::real - 0.5::real) FROM "
                     f"generate_series(1, 384) WHERE id IS NOT NULL)")
        conn.execute(f"UPDATE dense_{n} SET norm = (SELECT sqrt(sum(x::float8 * x)) FROM unnest(embedding) AS x)")
        conn.execute(f"VACUUM ANALYZE dense_{n}")
        qv = conn.execute("SELECT array_agg(random()::real - 0.5::real) FROM generate_series(1, 384)").fetchone()[0]
        ranking = conn.execute(
            "SELECT ml_stack._semantic_ranking_sql(d, %s::real[], 'true', 10) FROM ml_stack.vector_job_definitions AS d"
            " WHERE d.id = %s", (qv, job)).fetchone()[0].replace(f"ml_stack._vectors_{job}", f"dense_{n}")
        conn.execute("SET jit = off")
        r[f"dense384_semantic_{n}_ms"] = 1000 * timed(lambda: conn.execute(ranking).fetchall(), args.reps)
        print(f"bench: {n:,} rows x 384 dense: semantic ranking {r[f'dense384_semantic_{n}_ms']:.1f} ms", flush=True)
        conn.execute("RESET jit")
        if numpy_path:
            numpy_dense(conn, r, job, n, qv, args.reps)
    print(json.dumps(r, indent=2))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--big", type=int, default=100_000)
    ap.add_argument("--output", type=Path, default=RESULTS)
    ap.add_argument("--dense-only", action="store_true")
    args = ap.parse_args()
    terminate_on_signals()
    base = descriptions()
    print(f"bench: {len(base):,} package descriptions", flush=True)
    r = {"descriptions": len(base)}
    with ml_stack_database(SERVER_SETTINGS, prefix="ml_stack_bench_", dbname="ml_stack_bench") as conn:
        ten_k = texts(10_000, base)
        try:
            conn.execute("CREATE EXTENSION ml_stack_python CASCADE")
            numpy_path = True
        except Exception as e:  # noqa: BLE001 -- no PL/Python or numpy here: the numpy column is left out
            print(f"bench: no ml_stack_python ({str(e).splitlines()[0]}): SQL path only", flush=True)
            numpy_path = False
        # the SQL path, as before ml_stack_python: the numpy figures are taken apart, below
        conn.execute("SET ml_stack.search_cache_mb = 0")
        if args.dense_only:
            return dense_only(conn, args, base, r, numpy_path)
        # insert throughput
        conn.execute("CREATE TABLE plain (id int PRIMARY KEY, t text)")
        conn.execute("CREATE TABLE synced (id int PRIMARY KEY, t text)")
        conn.execute("SELECT ml_stack.create_vector_job('synced', 'synced', 'id', ARRAY['t'])")

        def insert(table):
            conn.execute(f"TRUNCATE {table}")
            load(conn, table, ten_k)

        r["insert_10k_plain_s"] = timed(lambda: insert("plain"), args.reps)
        r["insert_10k_job_s"] = timed(lambda: insert("synced"), args.reps)
        r["insert_ratio"] = r["insert_10k_job_s"] / r["insert_10k_plain_s"]
        print(f"bench: INSERT 10k rows: {r['insert_10k_plain_s']:.3f} s plain, {r['insert_10k_job_s']:.3f} s with a "
              f"hashing job ({r['insert_ratio']:.1f}x; {10_000 / r['insert_10k_job_s']:,.0f} rows/s)", flush=True)

        def single_rows(table):
            conn.execute(f"TRUNCATE {table}")
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(f"INSERT INTO {table} VALUES (%s, %s)", list(enumerate(ten_k[:1000], start=1)))

        r["insert_1k_single_plain_s"] = timed(lambda: single_rows("plain"), args.reps)
        r["insert_1k_single_job_s"] = timed(lambda: single_rows("synced"), args.reps)
        r["insert_single_ratio"] = r["insert_1k_single_job_s"] / r["insert_1k_single_plain_s"]
        print(f"bench: 1,000 single-row INSERTs: {r['insert_1k_single_plain_s']:.3f} s plain, "
              f"{r['insert_1k_single_job_s']:.3f} s with the job ({r['insert_single_ratio']:.1f}x)", flush=True)

        # embeddings per second
        insert("plain")
        t = timed(lambda: conn.execute("SELECT count(ml_stack.embed('hashing', t)) FROM plain").fetchone(), args.reps)
        r["hashing_embeddings_per_s"] = 10_000 / t
        print(f"bench: hashing: {r['hashing_embeddings_per_s']:,.0f} embeddings/s", flush=True)

        # search latency
        for n in (10_000, args.big):
            table = f"docs_{n}"
            conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, t text)")
            load(conn, table, texts(n, base))
            t0 = time.perf_counter()
            conn.execute(f"SELECT ml_stack.create_vector_job('{table}', '{table}', 'id', ARRAY['t'])")
            r[f"create_job_{n}_s"] = time.perf_counter() - t0
            job = conn.execute("SELECT id FROM ml_stack.vector_job_definitions WHERE job_name = %s", (table,)).fetchone()[0]
            conn.execute(f"VACUUM ANALYZE ml_stack._vectors_{job}")
            print(f"bench: {n:,} rows: create_vector_job (embeds them) {r[f'create_job_{n}_s']:.1f} s", flush=True)
            for mode in ("semantic", "keyword", "hybrid"):
                per_query = [1000 * timed(lambda q=q: conn.execute(
                    "SELECT count(*) FROM ml_stack.search(%s, %s, 10, NULL, %s)", (table, q, mode)).fetchone(), args.reps)
                    for q in QUERIES]
                r[f"search_{mode}_{n}_ms"] = statistics.median(per_query)
                print(f"bench: {n:,} rows x 1024 (hashing): {mode} search {r[f'search_{mode}_{n}_ms']:.1f} ms "
                      f"(queries: {', '.join(f'{x:.0f}' for x in per_query)})", flush=True)
                if numpy_path and mode != "keyword":
                    numpy_search(conn, r, table, n, mode, args.reps)
            filtered = [1000 * timed(lambda q=q: conn.execute(
                "SELECT count(*) FROM ml_stack.search(%s, %s, 10, '{\"id\": {\"<\": 5000}}', 'hybrid')",
                (table, q)).fetchone(), args.reps) for q in QUERIES]
            r[f"search_hybrid_filtered_{n}_ms"] = statistics.median(filtered)
            print(f"bench: {n:,} rows: hybrid with a filter (id < 5000): {r[f'search_hybrid_filtered_{n}_ms']:.1f} ms",
                  flush=True)

            # dense 384-dim vectors, as a sentence-transformers job stores them
            conn.execute(f"CREATE TABLE dense_{n} AS SELECT * FROM ml_stack._vectors_{job}")
            conn.execute("SELECT setseed(0.5)")
            conn.execute(f"UPDATE dense_{n} SET embedding = (SELECT array_agg(random()::real - 0.5::real) FROM "
                         f"generate_series(1, 384) WHERE id IS NOT NULL)")
            conn.execute(f"UPDATE dense_{n} SET norm = (SELECT sqrt(sum(x::float8 * x)) FROM unnest(embedding) AS x)")
            conn.execute(f"VACUUM ANALYZE dense_{n}")
            qv = conn.execute("SELECT array_agg(random()::real - 0.5::real) FROM generate_series(1, 384)").fetchone()[0]
            ranking = conn.execute(
                "SELECT ml_stack._semantic_ranking_sql(d, %s::real[], 'true', 10) FROM ml_stack.vector_job_definitions AS d"
                " WHERE d.id = %s", (qv, job)).fetchone()[0].replace(f"ml_stack._vectors_{job}", f"dense_{n}")
            conn.execute("SET jit = off")
            r[f"dense384_semantic_{n}_ms"] = 1000 * timed(lambda: conn.execute(ranking).fetchall(), args.reps)
            print(f"bench: {n:,} rows x 384 dense: semantic ranking {r[f'dense384_semantic_{n}_ms']:.1f} ms", flush=True)
            if numpy_path:
                numpy_dense(conn, r, job, n, qv, args.reps)
            if n == 10_000:
                unnest = (f"SELECT v.id, (SELECT sum(a::float8 * b) FROM unnest(v.embedding, %s::real[]) AS u(a, b))"
                          f" / v.norm AS s FROM dense_{n} AS v ORDER BY 2 DESC, 1 LIMIT 10")
                r["dense384_unnest_10000_ms"] = 1000 * timed(lambda: conn.execute(unnest, (qv,)).fetchall(), args.reps)
                print(f"bench: 10,000 rows x 384 dense: sum over unnest {r['dense384_unnest_10000_ms']:.1f} ms", flush=True)
            conn.execute("RESET jit")
        r["postgres"] = conn.execute("SHOW server_version").fetchone()[0]

    r["when"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    r["machine"] = f"{platform.machine()}, {platform.processor() or 'cpu'}, {__import__('os').cpu_count()} cores"
    r["reps"] = args.reps
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(r, indent=2) + "\n")
    print(f"bench: wrote {args.output}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
