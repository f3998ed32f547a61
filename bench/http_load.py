"""HTTP-endpoint load benchmark: pgbench runs single-row calls of ml_stack.expose() endpoints the way PostgREST does.

    .venv/bin/python bench/http_load.py [--duration S] [--clients 1,2] [--rows N]

The PostgREST server is not installable here, so this measures what it would run in PostgreSQL for one request
(DESIGN §3c): on a pooled connection of the LOGIN NOINHERIT role ``authenticator``, ``BEGIN READ ONLY``; one
``SELECT set_config('search_path', ...), set_config('role', 'web_anon', true), set_config('request.jwt.claims',
...)``; the call; ``COMMIT``. HTTP parsing, JSON rendering and PostgREST's own pool are not in these figures: read
them as the database's share of a request, an upper bound on what PostgREST could serve.

On a throwaway server (scripts/pgserver.py: Unix socket, trust authentication), two projects on tables of N rows
x 10 float8 features uniform in [0, 1), trained with ml_stack.train and exposed with
``ml_stack.expose(<project>, 'api', ARRAY['web_anon'])`` (roles web_anon NOLOGIN and authenticator LOGIN
NOINHERIT are made here):

  lin   regression, the linear model of the sql engine: y = 1 + sum(j * xj) + noise
  xgb   binary classification, XGBoost (CREATE EXTENSION ml_stack_python CASCADE; algorithm => 'xgboost', the
        engine's defaults: 100 trees of depth 6), its trees compiled to SQL: no Python at serving time

Before timing, the endpoints called as PostgREST would call them must give ml_stack.predict's answers. Then
pgbench (-M prepared, -n, threads = clients, each run --duration seconds, random features from ``\\set``) runs,
for each project, every case at each client count:

  (a)  PostgREST's transaction as authenticator: BEGIN READ ONLY; SELECT set_config(search_path),
       set_config(role), set_config(request.jwt.claims); SELECT api.predict_<p>(:x1, ..., :x10); COMMIT
  (a2) the same transaction with PostgREST's own call statement in place of the bare call: WITH pgrst_source AS
       (... json_to_record($1) ... LATERAL (SELECT api.predict_<p>(x1 := ..., ...)) ...) SELECT ... json_agg ...,
       the JSON body built per call with json_build_object (context: what PostgREST's statement adds)
  (b)  the endpoint call alone in autocommit, as authenticator with role web_anon set for the session (startup
       option ``-c role=web_anon``): (a) without its transaction and set_config round trips
  (c1) SELECT ml_stack.predict('<p>', ARRAY[:x1, ...]::float8[]) as the superuser (context)
  (c2) SELECT <deployed_models.serving_function>(:x1, ..., :x10) as the superuser: the typed serving function the
       endpoint calls, without SECURITY DEFINER and PL/pgSQL around it (context)
  (c3) BEGIN; 10 x (c2); COMMIT, per call (pred/s): what a call costs when calls share a transaction (context:
       a tree ensemble serves through a PL/pgSQL function, whose expression state PostgreSQL builds anew in each
       transaction, so one-call transactions pay that every time)

and, once, two floors: (f1) ``SELECT 1`` in autocommit, (f2) PostgREST's transaction with ``SELECT 1`` as the call.

Per case: tps (pgbench's, without connection time; a transaction is one run of the script), tps per core used (tps / min(clients, cores); pgbench itself
runs on the same cores, and other work may run beside), latency average, and p50/p95/p99 of the per-transaction
latencies of pgbench's --log files. A one-client run is a ping-pong of two processes that each wait for the
other: where waking an idle core is slow (virtual machines), that, not the query, can set its pace -- compare the
floors (f1, f2) at 1 and 2 clients. Beside them, PostgresML's published figure: 1,021,692 XGBoost predictions per
second on 5 x 36 vCPUs, about 5.7k per vCPU -- their figure, on their hardware and setup (HTTP included), not a
comparison made in one run. Results go to bench/results/http_load.json. A measurement, not a test: it exits 0
unless something fails outright (a setup step, a wrong answer, a pgbench error).
"""

import argparse
import datetime
import glob
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
from pgserver import clean_env, ml_stack_database, pg_bindir, terminate_on_signals  # noqa: E402

RESULTS = REPO / "bench" / "results" / "http_load.json"
P = 10  # features
FEATURES = [f"x{j}" for j in range(1, P + 1)]
COLUMNS = ", ".join(FEATURES)
SERVER_SETTINGS = {
    "shared_buffers": "256MB",
    "max_connections": "20",
    "autovacuum": "off",  # nothing may run beside the timed calls
}
ANON, AUTHENTICATOR = "web_anon", "authenticator"
SCHEMA = "api"
BATCHED_CALLS = 10  # case (c3): calls per transaction
# PostgresML's published figure: 1,021,692 predictions per second on 5 x 36 vCPUs, XGBoost. Their hardware and
# setup, not ours: printed beside ours for context only.
PGML_PREDICTIONS_PER_S = 1_021_692
PGML_VCPUS = 5 * 36

# the label of the classifier: interactions and thresholds, so that the trees have work to do
XGB_LABEL = "(10 * x1 * x2 + 5 * (x3 > 0.5)::int - 3 * x4 ^ 2 + x5 + random() > 4)::int"
LIN_LABEL = "1 + " + " + ".join(f"{j} * x{j}" for j in range(1, P + 1)) + " + random()"

# PostgREST's per-request settings statement (DESIGN §3c, step 2; request.* left out but the claims)
SET_CONFIG = (f"SELECT set_config('search_path', '\"{SCHEMA}\", \"public\"', true), "
              f"set_config('role', '{ANON}', true), "
              f"set_config('request.jwt.claims', '{{\"role\":\"{ANON}\"}}', true);")


def make_table(conn, name: str, rows: int, label: str, seed: float) -> None:
    cols = ", ".join(f"{x} float8" for x in FEATURES)
    conn.execute(f"CREATE TABLE {name} ({cols}, y float8)")
    conn.execute("SELECT setseed(%s)", (seed,))
    xs = ", ".join(f"random() AS {x}" for x in FEATURES)
    conn.execute(f"INSERT INTO {name} SELECT {COLUMNS}, {label} FROM (SELECT {xs} FROM generate_series(1, {rows})) AS g")
    conn.execute(f"VACUUM (FREEZE, ANALYZE) {name}")


def random_features() -> str:
    # pgbench: random(lb, ub) is an integer; / 1e6 makes a double in [0, 1)
    return "".join(f"\\set {x} random(0, 999999) / 1000000.0\n" for x in FEATURES)


def args_list() -> str:
    return ", ".join(f":{x}" for x in FEATURES)


def postgrest_call(endpoint: str) -> str:
    """PostgREST 12's statement for POST /rpc/<endpoint> with a JSON object body (tests/postgrest_replay.py's
    call_statement), the body built from the pgbench variables."""
    body = "json_build_object(" + ", ".join(f"'{x}', :{x}::float8" for x in FEATURES) + ")"
    names = ", ".join(f'"{x}"' for x in FEATURES)
    typed = ", ".join(f'"{x}" double precision' for x in FEATURES)
    named = ", ".join(f'"{x}" := pgrst_body."{x}"' for x in FEATURES)
    return (f"WITH pgrst_source AS (SELECT pgrst_call.pgrst_scalar FROM (SELECT {body} AS json_data) pgrst_payload, "
            f"LATERAL (SELECT {names} FROM json_to_record(pgrst_payload.json_data) AS _({typed}) LIMIT 1) pgrst_body, "
            f"LATERAL (SELECT \"{SCHEMA}\".\"{endpoint}\"({named}) pgrst_scalar) pgrst_call) "
            f"SELECT null::bigint AS total_result_set, 1 AS page_total, "
            f"coalesce(json_agg(_postgrest_t.pgrst_scalar)->0, 'null') AS body, "
            f"nullif(current_setting('response.headers', true), '') AS response_headers, "
            f"nullif(current_setting('response.status', true), '') AS response_status, '' AS response_inserted "
            f"FROM (SELECT \"pgrst_source\".* FROM \"pgrst_source\") _postgrest_t;")


def transaction(call: str) -> str:
    return f"BEGIN ISOLATION LEVEL READ COMMITTED READ ONLY;\n{SET_CONFIG}\n{call}\nCOMMIT;\n"


def cases_for(project: str, serving: str) -> dict:
    """key -> (label, script, connecting user, extra PGOPTIONS)."""
    endpoint = f"predict_{project}"
    call = f"SELECT {SCHEMA}.{endpoint}({args_list()});"
    return {
        f"{project}.a": (f"PostgREST transaction, {SCHEMA}.{endpoint}(...)", random_features() + transaction(call),
                         AUTHENTICATOR, ""),
        f"{project}.a2": ("PostgREST transaction, PostgREST's own call statement",
                          random_features() + transaction(postgrest_call(endpoint)), AUTHENTICATOR, ""),
        f"{project}.b": (f"{SCHEMA}.{endpoint}(...) alone, autocommit, as {ANON}", random_features() + call + "\n",
                         AUTHENTICATOR, f"-c role={ANON}"),
        f"{project}.c1": (f"ml_stack.predict('{project}', ARRAY[...]) as superuser",
                          random_features() + f"SELECT ml_stack.predict('{project}', ARRAY[{args_list()}]::float8[]);\n",
                          "postgres", ""),
        f"{project}.c2": ("typed serving function as superuser",
                          random_features() + f"SELECT {serving}({args_list()});\n", "postgres", ""),
        f"{project}.c3": (f"c2, {BATCHED_CALLS} calls in one transaction (per call)",
                          random_features() + "BEGIN;\n" + f"SELECT {serving}({args_list()});\n" * BATCHED_CALLS
                          + "COMMIT;\n", "postgres", ""),
    }


FLOORS = {
    "floor.f1": ("SELECT 1, autocommit", "SELECT 1;\n", AUTHENTICATOR, ""),
    "floor.f2": ("PostgREST transaction, SELECT 1 as the call", transaction("SELECT 1;"), AUTHENTICATOR, ""),
}


def percentile(sorted_values: list, q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not sorted_values:
        return float("nan")
    pos = (len(sorted_values) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def run_pgbench(pgbench: str, conn_env: dict, dbname: str, user: str, options: str, script: str, clients: int,
                duration: int, workdir: Path, tag: str) -> dict:
    script_file = workdir / f"{tag}.sql"
    # A trailing meta-command: pgbench 15 reads the clock lazily, once per pass through a client's state machine,
    # and a meta-command resets it. Without it, a transaction whose answer is already there when pgbench looks
    # (2 clients on 2 cores: the backend runs while pgbench waits for a core) is logged with latency 0.
    script_file.write_text(script + "\\set ml_stack_end 0\n")
    prefix = workdir / f"{tag}.c{clients}"
    env = dict(conn_env)
    if options:
        env["PGOPTIONS"] = options
    cmd = [pgbench, "-n", "-M", "prepared", "-c", str(clients), "-j", str(clients), "-T", str(duration),
           "-f", str(script_file), "-l", "--log-prefix", str(prefix), "-U", user, dbname]
    res = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True)
    out = res.stdout + res.stderr
    if res.returncode != 0:
        raise RuntimeError(f"pgbench failed ({res.returncode}) for {tag}, {clients} client(s):\n{out}")

    def grab(pattern, cast=float):
        m = re.search(pattern, out, re.MULTILINE)
        return cast(m.group(1)) if m else None

    tps = grab(r"^tps = ([0-9.]+) \(without initial connection time\)")
    failed = grab(r"^number of failed transactions: (\d+)", int) or 0
    processed = grab(r"^number of transactions actually processed: (\d+)", int)
    if tps is None or processed is None or failed:
        raise RuntimeError(f"pgbench output not understood or transactions failed for {tag}:\n{out}")
    latencies = []
    for path in glob.glob(f"{prefix}.*"):
        with open(path) as f:
            for line in f:  # client_id transaction_no time(us) script_no time_epoch time_us
                latencies.append(int(line.split()[2]))
        os.unlink(path)
    latencies.sort()
    return {
        "tps": round(tps, 1),
        "transactions": processed,
        "latency_avg_ms": grab(r"^latency average = ([0-9.]+) ms"),
        "logged_mean_ms": round(statistics.fmean(latencies) / 1000, 4) if latencies else None,
        "logged_stddev_ms": round(statistics.pstdev(latencies) / 1000, 4) if latencies else None,
        "p50_ms": round(percentile(latencies, 0.50) / 1000, 4),
        "p95_ms": round(percentile(latencies, 0.95) / 1000, 4),
        "p99_ms": round(percentile(latencies, 0.99) / 1000, 4),
        "logged_transactions": len(latencies),
    }


def check_endpoints(conn, conninfo_authenticator: str, projects: list, sample: int = 200) -> None:
    """The endpoints, called as PostgREST calls them, answer what ml_stack.predict answers (and the
    authenticator alone may not call them)."""
    import psycopg

    with psycopg.connect(conninfo_authenticator, autocommit=True) as api:
        for project in projects:
            table = project
            rows = conn.execute(f"SELECT {COLUMNS}, ml_stack.predict('{project}', ARRAY[{COLUMNS}]) "
                                f"FROM {table} ORDER BY {FEATURES[0]} LIMIT {sample}").fetchall()
            placeholders = ", ".join(["%s"] * P)
            worst = 0.0
            for row in rows:
                with api.transaction():
                    api.execute("SET TRANSACTION READ ONLY")
                    api.execute(SET_CONFIG.rstrip(";"))
                    got = api.execute(f"SELECT {SCHEMA}.predict_{project}({placeholders})", row[:P]).fetchone()[0]
                worst = max(worst, abs(got - row[P]))
            if not worst <= 1e-9:
                raise RuntimeError(f"api.predict_{project} disagrees with ml_stack.predict by {worst:.3g}")
            try:
                api.execute(f"SELECT {SCHEMA}.predict_{project}({placeholders})", rows[0][:P])
            except psycopg.errors.InsufficientPrivilege:
                pass
            else:
                raise RuntimeError(f"{AUTHENTICATOR} called {SCHEMA}.predict_{project} without switching role")
            print(f"bench: {SCHEMA}.predict_{project} as {ANON} agrees with ml_stack.predict on {len(rows)} rows "
                  f"(max |difference| {worst:.3g}); {AUTHENTICATOR} alone is refused", flush=True)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=15, help="seconds per pgbench run (-T)")
    ap.add_argument("--clients", default="1,2", help="client counts, comma-separated (threads = clients)")
    ap.add_argument("--rows", type=int, default=20_000, help="rows of each training table")
    ap.add_argument("--output", type=Path, default=RESULTS)
    args = ap.parse_args()
    terminate_on_signals()
    clients_list = [int(c) for c in args.clients.split(",")]
    cores = os.cpu_count() or 1
    pgbench = str(pg_bindir() / "pgbench")
    version = subprocess.run([pgbench, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    load_before = os.getloadavg()
    started = time.perf_counter()

    print(f"bench: throwaway server; {version}; {cores} cores; load average {load_before[0]:.2f}", flush=True)
    with ml_stack_database(SERVER_SETTINGS, prefix="ml_stack_bench_", dbname="ml_stack_bench") as conn, \
            tempfile.TemporaryDirectory(prefix="ml_stack_http_load_") as tmp:
        workdir = Path(tmp)
        dbname = conn.info.dbname
        conn_env = clean_env()
        conn_env.update(PGHOST=conn.info.host, PGPORT=str(conn.info.port))
        conninfo_auth = f"host={conn.info.host} port={conn.info.port} user={AUTHENTICATOR} dbname={dbname}"

        conn.execute("CREATE EXTENSION ml_stack_python CASCADE")
        make_table(conn, "lin", args.rows, LIN_LABEL, 0.17)
        make_table(conn, "xgb", args.rows, XGB_LABEL, 0.42)
        train = {}
        for project, task, algorithm in (("lin", "regression", "linear"), ("xgb", "classification", "xgboost")):
            t0 = time.perf_counter()
            model_id, metrics = conn.execute(
                "SELECT model_id, metrics FROM ml_stack.train(%s, %s, %s, 'y', algorithm => %s)",
                (project, task, project, algorithm)).fetchone()
            train[project] = {"task": task, "algorithm": algorithm, "model_id": model_id, "metrics": metrics,
                              "train_seconds": round(time.perf_counter() - t0, 2)}
            shown = {k: round(v, 4) for k, v in metrics.items() if isinstance(v, (int, float))}
            print(f"bench: trained {project} ({algorithm}, {task}) in {train[project]['train_seconds']} s: {shown}",
                  flush=True)

        # roles as PostgREST wants them (made here if missing; the server is a throwaway one)
        if conn.execute("SELECT to_regrole(%s) IS NULL", (ANON,)).fetchone()[0]:
            conn.execute(f"CREATE ROLE {ANON} NOLOGIN")
        if conn.execute("SELECT to_regrole(%s) IS NULL", (AUTHENTICATOR,)).fetchone()[0]:
            conn.execute(f"CREATE ROLE {AUTHENTICATOR} LOGIN NOINHERIT")
        conn.execute(f"GRANT {ANON} TO {AUTHENTICATOR}")
        serving = {}
        for project in train:
            endpoints = [r[0] for r in conn.execute("SELECT ml_stack.expose(%s, %s, ARRAY[%s])::text",
                                                    (project, SCHEMA, ANON)).fetchall()]
            serving[project] = conn.execute(
                "SELECT serving_function::oid::regproc::text FROM ml_stack.deployed_models WHERE project_name = %s",
                (project,)).fetchone()[0]
            train[project]["endpoints"] = endpoints
            train[project]["serving_function"] = serving[project]
            print(f"bench: exposed {project}: {', '.join(endpoints)}; serving function {serving[project]}", flush=True)
        check_endpoints(conn, conninfo_auth, list(train))

        cases = {}
        for project in train:
            cases.update(cases_for(project, serving[project]))
        cases.update(FLOORS)
        runs = len(cases) * len(clients_list)
        print(f"bench: {runs} pgbench runs of {args.duration} s (about {runs * args.duration / 60:.1f} min)",
              flush=True)

        results = {}
        for key, (label, script, user, options) in cases.items():
            tag = key.replace(".", "_")
            results[key] = {"label": label, "user": user, "pgoptions": options or None, "script": script,
                            "runs": {}}
            for c in clients_list:
                r = run_pgbench(pgbench, conn_env, dbname, user, options, script, c, args.duration, workdir, tag)
                r["cores_used"] = min(c, cores)
                r["tps_per_core"] = round(r["tps"] / r["cores_used"], 1)
                r["calls_per_transaction"] = calls = BATCHED_CALLS if key.endswith(".c3") else 1
                r["predictions_per_s"] = round(r["tps"] * calls, 1) if not key.startswith("floor.") else None
                r["predictions_per_s_per_core"] = (round(r["tps"] * calls / r["cores_used"], 1)
                                                   if not key.startswith("floor.") else None)
                results[key]["runs"][str(c)] = r
                print(f"bench: ({key}) {c} client(s): {r['tps']:>9,.0f} tps, p50 {r['p50_ms']:.3f} ms, "
                      f"p99 {r['p99_ms']:.3f} ms", flush=True)
        settings = dict(conn.execute(
            "SELECT name, current_setting(name) FROM pg_settings WHERE name IN ('server_version', 'shared_buffers', "
            "'jit', 'plan_cache_mode', 'max_connections')").fetchall())
        ml_stack_ext_version = conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'ml_stack'").fetchone()[0]
    load_after = os.getloadavg()

    # the table
    cmax = str(max(clients_list))
    c1 = str(min(clients_list))
    print()
    print(f"{'case':<60} {'clients':>7} {'tps':>8} {'tps/core':>8} {'pred/s/core':>11} {'avg ms':>7} "
          f"{'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7}")
    for key, res in results.items():
        for c, r in res["runs"].items():
            per_core = f"{r['predictions_per_s_per_core']:>11,.0f}" if r["predictions_per_s_per_core"] else f"{'':>11}"
            print(f"({key:<8}) {res['label'][:49]:<49} {c:>7} {r['tps']:>8,.0f} {r['tps_per_core']:>8,.0f} "
                  f"{per_core} {r['latency_avg_ms']:>7.3f} {r['p50_ms']:>7.3f} {r['p95_ms']:>7.3f} "
                  f"{r['p99_ms']:>7.3f}")
    print(f"(pgbench -M prepared, -T {args.duration}, threads = clients; per core = / min(clients, {cores}), "
          f"pgbench sharing the cores; latencies per transaction, (c3): {BATCHED_CALLS} calls)")
    print()

    def tps(key, c):
        return results[key]["runs"][c]["tps"]

    ratios = {}
    # Cost per request as core time: min(clients, cores) / tps at the largest client count (the cores busy, so
    # no waiting for an idle core to wake up), in microseconds; pgbench's own share is in every case alike.
    def core_us(key, c=cmax):
        run = results[key]["runs"][c]
        return run["cores_used"] / run["tps"] * 1e6

    print(f"per-request core time at {cmax} clients (us = min(clients, cores) / tps; pgbench's share included):")
    f1, f2 = core_us("floor.f1"), core_us("floor.f2")
    for project in train:
        us = {k.split(".")[1]: core_us(k) for k in results if k.startswith(project + ".")}
        us["c3"] /= BATCHED_CALLS  # per call
        ratios[project] = {
            "clients": int(cmax),
            "core_us_per_request": {k: round(v, 1) for k, v in us.items()},
            "tps_a_over_b": round(tps(f"{project}.a", cmax) / tps(f"{project}.b", cmax), 3),
            "tps_b_over_c2": round(tps(f"{project}.b", cmax) / tps(f"{project}.c2", cmax), 3),
            "tps_a_over_c2": round(tps(f"{project}.a", cmax) / tps(f"{project}.c2", cmax), 3),
            "tps_a2_over_a": round(tps(f"{project}.a2", cmax) / tps(f"{project}.a", cmax), 3),
            "transaction_and_set_config_us": round(us["a"] - us["b"], 1),
            "security_definer_plpgsql_wrapper_us": round(us["b"] - us["c2"], 1),
            "postgrest_call_statement_us": round(us["a2"] - us["a"], 1),
            "serving_above_select_1_us": round(us["c2"] - f1, 1),
            "serving_per_call_in_shared_transaction_us": round(us["c3"], 1),
            "scaling_tps_max_clients_over_1": {k.split(".")[1]: round(tps(k, cmax) / tps(k, c1), 2)
                                               for k in results if k.startswith(project + ".")},
        }
        r = ratios[project]
        print(f"  {project}: (a) {us['a']:.1f}  (a2) {us['a2']:.1f}  (b) {us['b']:.1f}  (c1) {us['c1']:.1f}  "
              f"(c2) {us['c2']:.1f}  (c3, per call) {us['c3']:.1f}")
        print(f"  {project}: (a)-(b) transaction + set_config {r['transaction_and_set_config_us']:+.1f}; "
              f"(b)-(c2) SECURITY DEFINER PL/pgSQL endpoint {r['security_definer_plpgsql_wrapper_us']:+.1f}; "
              f"(a2)-(a) PostgREST's call statement {r['postgrest_call_statement_us']:+.1f}; "
              f"tps (a)/(c2) {r['tps_a_over_c2']:.2f}")
    print(f"  floors: (f1) SELECT 1 {f1:.1f}; (f2) PostgREST transaction around SELECT 1 {f2:.1f} "
          f"(f2 - f1 = {f2 - f1:+.1f})")
    ratios["floors_core_us"] = {"f1": round(f1, 1), "f2": round(f2, 1)}
    pgml_per_vcpu = PGML_PREDICTIONS_PER_S / PGML_VCPUS
    xgb_a = results["xgb.a"]["runs"][cmax]
    print()
    print(f"context, NOT a comparison in one run: PostgresML published {PGML_PREDICTIONS_PER_S:,} XGBoost predictions/s "
          f"on {PGML_VCPUS} vCPUs (5 x 36), about {pgml_per_vcpu:,.0f} per vCPU, on their hardware and setup.")
    print(f"here, (xgb.a) at {cmax} clients: {xgb_a['tps']:,.0f} tps, {xgb_a['tps_per_core']:,.0f} per core "
          f"(this {cores}-core machine, shared with pgbench and other work; no HTTP layer).")
    print(f"load average: {load_before[0]:.2f} before, {load_after[0]:.2f} after")

    doc = {
        "benchmark": "http_load",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": cores,
                    "cpu_model": cpu_model(), "load_average_before": [round(v, 2) for v in load_before],
                    "load_average_after": [round(v, 2) for v in load_after]},
        "pgbench_version": version,
        "ml_stack_version": ml_stack_ext_version,
        "server_settings": {**SERVER_SETTINGS, **settings},
        "pgbench": {"mode": "prepared", "duration_s": args.duration, "clients": clients_list,
                    "threads": "= clients", "latency_percentiles_from": "per-transaction --log files"},
        "rows": args.rows, "features": P,
        "projects": train,
        "results": results,
        "ratios": ratios,
        "postgresml_published": {
            "predictions_per_s": PGML_PREDICTIONS_PER_S, "vcpus": PGML_VCPUS,
            "per_vcpu": round(pgml_per_vcpu), "algorithm": "xgboost",
            "note": "their published figure on their hardware (HTTP included), not measured here; context only"},
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"bench: results in {args.output.relative_to(REPO) if args.output.is_relative_to(REPO) else args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
