"""Helpers of tests/test_vector_jobs.py and tests/test_search.py: a text table, a job's stored embeddings, and what
they must equal (``ml_stack.embed`` of each row's text, computed by the server independently of the job)."""

import random

import numpy as np
from psycopg import sql
from psycopg.rows import dict_row

WORDS = ("json parser fast library game puzzle chess network server client http proxy cache database sql query "
         "python rust compiler kernel driver audio video codec image viewer editor text terminal shell font theme "
         "icon desktop window manager mail calendar backup archive compression crypto ssl certificate dns").split()


def make_texts(n, seed=7, null_share=0.0):
    """n short texts from WORDS (reproducible); a share of them None."""
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        if rnd.random() < null_share:
            out.append(None)
        else:
            out.append(" ".join(rnd.choice(WORDS) for _ in range(rnd.randint(1, 8))))
    return out


def make_docs(conn, n=50, table="docs", seed=7):
    """Table ``table`` (id int PK, title, body, section, n, note) with n rows of generated text."""
    conn.execute(sql.SQL("CREATE TABLE {} (id integer PRIMARY KEY, title text, body text, section text, n integer,"
                         " note text)").format(sql.Identifier(table)))
    titles, bodies = make_texts(n, seed), make_texts(n, seed + 1, null_share=0.2)
    sections = ["games", "libs", "net", None]
    with conn.cursor() as cur:
        cur.executemany(sql.SQL("INSERT INTO {} VALUES (%s, %s, %s, %s, %s, %s)").format(sql.Identifier(table)),
                        [(i + 1, titles[i], bodies[i], sections[i % 4], i % 7, "it's") for i in range(n)])


def job_row(conn, job_name):
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("SELECT * FROM ml_stack.vector_job_definitions WHERE job_name = %s", (job_name,)).fetchone()


def stored(conn, job_name):
    """{id (as text): row of the job's embeddings table as a dict}."""
    table = job_row(conn, job_name)["vectors_table"]
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(sql.SQL("SELECT id::text AS id, embedding, norm, lexemes::text AS lexemes, doc_length,"
                                   " updated_at FROM ml_stack.{}").format(sql.Identifier(table))).fetchall()
    return {r["id"]: r for r in rows}


def expected(conn, job_name, table="docs", columns=("title", "body"), transformer="hashing", options="{}",
             config="english"):
    """What the job's table must hold for every row of the source: {id: (embedding of embed(), lexemes)}.

    The text is the columns joined by ' ' with NULLs skipped, written out here (not the job's own SQL)."""
    cols = sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c)) for c in columns)
    q = sql.SQL("SELECT id::text, ml_stack.embed(%s, d, %s::jsonb), to_tsvector(%s::regconfig, d)::text"
                " FROM (SELECT id, concat_ws(' ', {}) AS d FROM {}) AS s").format(cols, sql.Identifier(table))
    return {r[0]: (r[1], r[2]) for r in conn.execute(q, (transformer, options, config))}


def assert_in_sync(conn, job_name, **kwargs):
    got = stored(conn, job_name)
    want = expected(conn, job_name, **kwargs)
    assert set(got) == set(want), (sorted(set(got) - set(want)), sorted(set(want) - set(got)))
    for k, (embedding, lexemes) in want.items():
        assert got[k]["embedding"] == embedding, k
        assert got[k]["lexemes"] == lexemes, k
        e = np.array(embedding, dtype=np.float32).astype(np.float64)  # the text of a real is its float4 value
        assert abs(got[k]["norm"] - float(np.sqrt(e @ e))) < 1e-12
    return got


def queue(conn, job_name=None):
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("SELECT d.job_name, q.* FROM ml_stack.vector_job_queue AS q"
                           " JOIN ml_stack.vector_job_definitions AS d ON d.id = q.job_id"
                           " WHERE %s::text IS NULL OR d.job_name = %s ORDER BY q.job_id, q.key",
                           (job_name, job_name)).fetchall()


def view(conn):
    with conn.cursor(row_factory=dict_row) as cur:
        return {r["job_name"]: r for r in cur.execute("SELECT * FROM ml_stack.vector_jobs").fetchall()}


def catalog_state(conn, table="docs"):
    """What a failed create_vector_job must leave as it was: ml_stack's relations, the table's triggers, the jobs,
    the queue, pg_cron's jobs when there are any."""
    state = {
        "relations": conn.execute("SELECT array_agg(relname ORDER BY relname) FROM pg_class"
                                  " WHERE relnamespace = 'ml_stack'::regnamespace").fetchone()[0],
        "triggers": conn.execute("SELECT array_agg(tgname ORDER BY tgname) FROM pg_trigger"
                                 " WHERE tgrelid = to_regclass(%s) AND NOT tgisinternal", (table,)).fetchone()[0],
        "jobs": conn.execute("SELECT array_agg(d::text ORDER BY id) FROM ml_stack.vector_job_definitions AS d"
                             ).fetchone()[0],
        "queue": conn.execute("SELECT array_agg(q::text ORDER BY job_id, key) FROM ml_stack.vector_job_queue AS q"
                              ).fetchone()[0],
    }
    if conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'pg_cron'").fetchone()[0]:
        state["cron"] = conn.execute("SELECT array_agg(jobname ORDER BY jobid) FROM cron.job").fetchone()[0]
    return state
