"""Semantic search through ml_stack_python's numpy matrix (docs/vectors-jobs-search.md, "Semantic search in numpy";
python/ml_stack_python/vector_search.py; sql/python_engine/vector_search.sql).

Two references for every result:
- the SQL path itself: the same call with ``SET ml_stack.search_cache_mb = 0`` (the numpy path off) must give the
  same ids, the same float8 scores (bit for bit: the numpy path only picks candidates, the SQL expression scores
  them), the same ranks and records;
- a numpy float64 oracle of the cosine over the stored embeddings (test_search.check: scores to 1e-9, ties by id,
  nothing better left out).
And the numpy path must really be taken (``ml_stack._python_vector_search_stats()``: a load or a hit, no fallback),
across writes (insert, update, delete, truncate; inside one transaction, savepoints; by another session), filters,
ties, an empty job, a zero query, a dropped job, and the fallbacks (cap, disabled trigger, ragged vectors).
"""

import json

import numpy as np
import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from test_search import FILTERS, QUERIES, check, semantic_oracle
from vector_helpers import job_row, make_docs, stored


@pytest.fixture
def pconn(conn):
    conn.execute("CREATE EXTENSION ml_stack_python CASCADE")
    return conn


@pytest.fixture
def pdocs(pconn):
    """test_search's docs: 300 rows, a hashing job of 256 dims (made after ml_stack_python: the event trigger
    tracks it), exact ties at ids 17 and 18."""
    make_docs(pconn, 300)
    pconn.execute("UPDATE docs SET title = 'json json json', body = NULL WHERE id IN (17, 18)")
    pconn.execute("SELECT ml_stack.create_vector_job('j', 'docs', 'id', ARRAY['title', 'body'], 'hashing', 'realtime',"
                  " '{\"dims\": 256}')")
    with pconn.cursor(row_factory=dict_row) as cur:
        rows = {str(r["id"]): r for r in cur.execute("SELECT * FROM docs").fetchall()}
    return pconn, rows


def stats(conn):
    return conn.execute("SELECT ml_stack._python_vector_search_stats()").fetchone()[0]


def search(conn, job, query, k=10, filters=None, mode="semantic", numpy=True):
    """ml_stack.search with the numpy path (default) or the SQL path."""
    conn.execute("SELECT set_config('ml_stack.search_cache_mb', %s, false)", ("512" if numpy else "0",))
    try:
        with conn.cursor(row_factory=dict_row) as cur:
            return cur.execute("SELECT * FROM ml_stack.search(%s, %s, %s, %s::jsonb, %s)",
                               (job, query, k, None if filters is None else json.dumps(filters), mode)).fetchall()
    finally:
        conn.execute("RESET ml_stack.search_cache_mb")


def both(conn, job, query, k=10, filters=None, mode="semantic", expect_numpy=True):
    """The numpy path's result, asserted identical to the SQL path's; and that numpy answered (no fallback)."""
    before = stats(conn)
    got = search(conn, job, query, k, filters, mode)
    after = stats(conn)
    want = search(conn, job, query, k, filters, mode, numpy=False)
    assert got == want, (query, k, filters, mode)
    if expect_numpy:
        assert after["fallbacks"] == before["fallbacks"], after["last_fallback"]
        assert sum(after["loads"].values()) + after["hits"] > sum(before["loads"].values()) + before["hits"]
    return got


def loads(conn, job_id):
    return stats(conn)["loads"].get(str(job_id), 0)


def test_same_as_the_sql_path_for_every_mode_and_filter(pdocs):
    conn, rows = pdocs
    for filters, keep in FILTERS:
        ids = [i for i, r in rows.items() if keep(r)]
        for query in QUERIES:
            sem = semantic_oracle(conn, "j", query, ids)
            for k in (1, 10, 150):
                check(both(conn, "j", query, k, filters), sem, k, rows)
                both(conn, "j", query, k, filters, "hybrid")
    job = job_row(conn, "j")["id"]
    assert loads(conn, job) == 1   # one load for all of those: nothing changed


def test_ties_zero_query_and_empty_job(pdocs):
    conn, rows = pdocs
    got = both(conn, "j", "json")
    top = [g for g in got if g["score"] == got[0]["score"]]
    assert {"17", "18"} <= {g["id"] for g in top}
    assert [int(g["id"]) for g in top] == sorted(int(g["id"]) for g in top)
    zero = both(conn, "j", "the and of", 5)
    assert [(g["id"], g["score"]) for g in zero] == [(str(i), 0.0) for i in range(1, 6)]
    both(conn, "j", "the and of", 5, {"section": "net"})
    conn.execute("CREATE TABLE e (id int PRIMARY KEY, t text)")
    conn.execute("SELECT ml_stack.create_vector_job('e', 'e', 'id', ARRAY['t'])")
    assert both(conn, "e", "json", expect_numpy=False) == []   # an empty table: the plan may not even ask numpy
    # a job whose rows all embed to zero vectors (no words): every score 0, by id
    conn.execute("INSERT INTO e SELECT i, 'the' FROM generate_series(1, 30) AS i")
    assert [g["id"] for g in both(conn, "e", "json", 3)] == ["1", "2", "3"]


def test_writes_between_searches(pdocs):
    conn, rows = pdocs
    job = job_row(conn, "j")["id"]
    both(conn, "j", "json parser")
    n = loads(conn, job)
    both(conn, "j", "json parser")
    assert loads(conn, job) == n                       # unchanged: a cache hit
    conn.execute("INSERT INTO docs (id, title) VALUES (1000, 'json parser json parser')")
    got = both(conn, "j", "json parser")
    assert got[0]["id"] == "1000" and loads(conn, job) == n + 1
    conn.execute("UPDATE docs SET title = 'chess' WHERE id = 1000")
    assert "1000" not in [g["id"] for g in both(conn, "j", "json parser")]
    assert both(conn, "j", "chess", 1)[0]["id"] == "1000"
    conn.execute("UPDATE docs SET id = 1001 WHERE id = 1000")   # a changed key moves the embedding
    assert both(conn, "j", "chess", 1)[0]["id"] == "1001"
    conn.execute("UPDATE docs SET note = 'x' WHERE id = 1001")  # no embedded column: nothing changes
    m = loads(conn, job)
    both(conn, "j", "chess", 1)
    assert loads(conn, job) == m
    conn.execute("DELETE FROM docs WHERE id IN (1001, 17)")
    got = both(conn, "j", "json", 20)
    assert "17" not in [g["id"] for g in got] and "18" in [g["id"] for g in got]
    conn.execute("DELETE FROM docs WHERE id = 18")
    conn.execute("INSERT INTO docs (id, title) VALUES (18, 'json json json')")  # delete + insert, same key
    assert both(conn, "j", "json", 1)[0]["id"] == "18"
    conn.execute("TRUNCATE docs")
    assert both(conn, "j", "json", expect_numpy=False) == []
    conn.execute("INSERT INTO docs (id, title) VALUES (5, 'json')")
    assert [g["id"] for g in both(conn, "j", "json")] == ["5"]
    with conn.cursor(row_factory=dict_row) as cur:
        rows = {str(r["id"]): r for r in cur.execute("SELECT * FROM docs").fetchall()}
    check(both(conn, "j", "json"), semantic_oracle(conn, "j", "json", list(rows)), 10, rows)


def test_writes_inside_one_transaction(pdocs, pg_server):
    conn, _ = pdocs
    with pg_server.connect(conn.info.dbname, autocommit=False) as t:
        def ids(query, k=3):
            with t.cursor() as cur:
                return [r[0] for r in cur.execute("SELECT id FROM ml_stack.search('j', %s, %s)", (query, k))]

        def sql_ids(query, k=3):
            t.execute("SET LOCAL ml_stack.search_cache_mb = 0")
            try:
                return ids(query, k)
            finally:
                t.execute("SET LOCAL ml_stack.search_cache_mb = 512")

        before = ids("zebra")
        t.execute("INSERT INTO docs (id, title) VALUES (2000, 'zebra zebra')")
        assert ids("zebra")[0] == "2000" == sql_ids("zebra")[0]
        t.execute("SAVEPOINT a")
        t.execute("INSERT INTO docs (id, title) VALUES (2001, 'zebra zebra zebra')")
        assert ids("zebra", 2) == ["2000", "2001"] == sql_ids("zebra", 2)   # tie: by id
        t.execute("ROLLBACK TO SAVEPOINT a")
        assert ids("zebra", 2)[0] == "2000" and "2001" not in ids("zebra", 5)
        t.execute("SAVEPOINT b")
        t.execute("DELETE FROM docs WHERE id = 2000")
        assert "2000" not in ids("zebra")
        t.execute("ROLLBACK TO SAVEPOINT b")
        assert ids("zebra")[0] == "2000"
        t.execute("UPDATE docs SET title = 'giraffe' WHERE id = 2000")
        assert ids("giraffe", 1) == ["2000"] == sql_ids("giraffe", 1)
        t.execute("TRUNCATE docs")
        assert ids("giraffe") == []
        t.execute("INSERT INTO docs (id, title) VALUES (1, 'giraffe')")
        assert ids("giraffe") == ["1"]
        t.execute("TRUNCATE docs")   # a second TRUNCATE in the transaction is done in place (same relfilenode)
        t.execute("INSERT INTO docs (id, title) VALUES (2, 'giraffe')")
        assert ids("giraffe") == ["2"] == sql_ids("giraffe")
        t.rollback()
        assert ids("zebra") == before                      # the same backend, after the rollback
        assert ids("giraffe") == sql_ids("giraffe")
        t.rollback()


def test_changes_by_another_session(pdocs, pg_server):
    conn, _ = pdocs
    with pg_server.connect(conn.info.dbname) as other, pg_server.connect(conn.info.dbname, autocommit=False) as w:
        def top(c, q):
            return c.execute("SELECT id FROM ml_stack.search('j', %s, 1)", (q,)).fetchone()
        assert top(other, "okapi") is not None                   # other has loaded the matrix
        w.execute("INSERT INTO docs (id, title) VALUES (3000, 'okapi')")
        assert top(other, "okapi")[0] != "3000"                  # not committed: not seen
        assert top(w, "okapi")[0] == "3000"                      # the writer sees its own row
        w.commit()
        assert top(other, "okapi")[0] == "3000"
        # a REPEATABLE READ transaction keeps its snapshot, the cache follows it
        other.autocommit = False
        other.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        assert top(other, "okapi")[0] == "3000"
        w.execute("DELETE FROM docs WHERE id = 3000")
        w.commit()
        assert top(other, "okapi")[0] == "3000"
        other.commit()
        assert top(other, "okapi")[0] != "3000"
        other.rollback()
        w.rollback()
        st = other.execute("SELECT ml_stack._python_vector_search_stats()").fetchone()[0]
        assert st["fallbacks"] == {}, st


def dense_job(conn, n=3000, dims=384, seed=3):
    """A job over a table of n rows whose embeddings are replaced by random dense vectors (as all-MiniLM-L6-v2
    stores them; written into the job's table directly, as bench/vectors.py does), with exact ties (copies),
    zero rows, and returns (job id, {id: vector})."""
    conn.execute("CREATE TABLE dense (id bigint PRIMARY KEY, t text)")
    conn.execute("INSERT INTO dense SELECT i, 'x' FROM generate_series(1, %s) AS i", (n,))
    conn.execute("SELECT ml_stack.create_vector_job('dense', 'dense', 'id', ARRAY['t'])")
    job = job_row(conn, "dense")
    rng = np.random.default_rng(seed)
    vecs = (rng.random((n, dims), dtype=np.float32) - np.float32(0.5)).astype(np.float32)
    vecs[10] = vecs[20] = vecs[30]            # exact ties
    vecs[40] = 0                              # zero rows
    vecs[41] = 0
    with conn.cursor() as cur:
        cur.execute(f"CREATE TEMP TABLE incoming (id bigint, e real[])")
        with cur.copy("COPY incoming FROM STDIN") as cp:
            for i in range(n):
                cp.write_row((i + 1, "{" + ",".join(repr(float(x)) for x in vecs[i]) + "}"))
        cur.execute(f"UPDATE ml_stack.{job['vectors_table']} AS v SET embedding = i.e,"
                    " norm = (SELECT coalesce(sqrt(sum(x::float8 * x)), 0) FROM unnest(i.e) AS x)"
                    " FROM incoming AS i WHERE i.id = v.id")
    return job, {str(i + 1): vecs[i] for i in range(n)}


def ranking(conn, job_id, qvec, lim, numpy=True, filters=None):
    """The semantic ranking alone, for a given query vector (through _search_filter_sql when filtered)."""
    conn.execute("SELECT set_config('ml_stack.search_cache_mb', %s, false)", ("512" if numpy else "0",))
    try:
        q = conn.execute("SELECT ml_stack._semantic_ranking_sql(d, %s::real[], f.clause, %s), f.values::text"
                         " FROM ml_stack.vector_job_definitions AS d,"
                         " ml_stack._search_filter_sql(d.relation, %s::jsonb) AS f WHERE d.id = %s",
                         (qvec, lim, None if filters is None else json.dumps(filters), job_id)).fetchone()
        conn.execute(f"PREPARE ranking_q(jsonb) AS {q[0]}")
        try:
            return conn.execute(sql.SQL("EXECUTE ranking_q({}::jsonb)").format(sql.Literal(q[1]))).fetchall()
        finally:
            conn.execute("DEALLOCATE ranking_q")
    finally:
        conn.execute("RESET ml_stack.search_cache_mb")


def dense_oracle(vecs, q, ids=None):
    q64 = np.asarray(q, dtype=np.float32).astype(np.float64)
    nq = np.sqrt(q64 @ q64)
    out = {}
    for i, v in vecs.items():
        if ids is not None and i not in ids:
            continue
        v64 = v.astype(np.float64)
        nv = np.sqrt(v64 @ v64)
        out[i] = 0.0 if nv == 0 or nq == 0 else float(v64 @ q64 / (nv * nq))
    return out


def test_dense_vectors_exact(pconn):
    job, vecs = dense_job(pconn)
    rng = np.random.default_rng(11)
    queries = [(rng.random(384, dtype=np.float32) - np.float32(0.5)) for _ in range(4)]
    queries.append(vecs["31"].copy())             # the tied rows score 1
    queries.append(np.zeros(384, dtype=np.float32))
    sparse = np.zeros(384, dtype=np.float32)
    sparse[[3, 100, 200]] = [0.5, -1.0, 0.25]
    queries.append(sparse)
    before = stats(pconn)
    for q in queries:
        qv = [float(x) for x in q]
        for lim in (1, 10, 100, 1000):
            got = ranking(pconn, job["id"], qv, lim)
            assert got == ranking(pconn, job["id"], qv, lim, numpy=False)
            want = sorted(dense_oracle(vecs, q).items(), key=lambda kv: (-kv[1], int(kv[0])))[:lim]
            assert len(got) == len(want)
            for (gid, gs), (wid, ws) in zip(got, want):
                assert abs(gs - ws) < 1e-9
            scores = [g[1] for g in got]
            assert scores == sorted(scores, reverse=True)
    assert ranking(pconn, job["id"], [float(x) for x in vecs["31"]], 3)[:3] == [(11, 1.0), (21, 1.0), (31, 1.0)] or \
        [g[0] for g in ranking(pconn, job["id"], [float(x) for x in vecs["31"]], 3)] == [11, 21, 31]
    zero = ranking(pconn, job["id"], [0.0] * 384, 5)
    assert zero == [(i, 0.0) for i in range(1, 6)]
    after = stats(pconn)
    assert after["fallbacks"] == before["fallbacks"], after["last_fallback"]
    # filters: the numpy path ranks within the filtered ids
    q = [float(x) for x in queries[0]]
    for filters in ({"id": {"<": 500}}, {"id": {"in": [1, 2, 3, 41]}}, {"t": "x"}, {"t": "y"}):
        assert ranking(pconn, job["id"], q, 10, filters=filters) == \
            ranking(pconn, job["id"], q, 10, numpy=False, filters=filters)
    assert stats(pconn)["fallbacks"] == before["fallbacks"]


def test_fallbacks_give_the_sql_result(pdocs):
    conn, rows = pdocs
    job = job_row(conn, "j")
    vt = job["vectors_table"]
    # a cap below the job's size: the SQL path
    conn.execute("SET ml_stack.search_cache_mb = 0.01")
    got = conn.execute("SELECT array_agg(id) FROM ml_stack.search('j', 'json parser')").fetchone()[0]
    conn.execute("RESET ml_stack.search_cache_mb")
    assert got == [g["id"] for g in search(conn, "j", "json parser", numpy=False)]
    assert "larger than" in stats(conn)["last_fallback"]
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="search_cache_mb must be"):
        conn.execute("SET ml_stack.search_cache_mb = 'lots'")
        conn.execute("SELECT * FROM ml_stack.search('j', 'json')")
    conn.execute("RESET ml_stack.search_cache_mb")
    # the change trigger disabled: no exact staleness check, so the SQL path
    conn.execute(f"ALTER TABLE ml_stack.{vt} DISABLE TRIGGER ml_stack_vectors_changed")
    conn.execute("INSERT INTO docs (id, title) VALUES (4000, 'json parser json')")
    both(conn, "j", "json parser", expect_numpy=False)
    assert "change trigger" in stats(conn)["last_fallback"]
    assert conn.execute("SELECT ml_stack._python_vector_job_track(%s)", (job["id"],)).fetchone()[0]  # still there
    conn.execute(f"ALTER TABLE ml_stack.{vt} ENABLE ALWAYS TRIGGER ml_stack_vectors_changed")
    assert both(conn, "j", "json parser")[0]["id"] == "4000"
    # vectors the bound does not cover: a ragged one, a NULL element
    conn.execute(f"UPDATE ml_stack.{vt} SET embedding = embedding[1:10] WHERE id = 4000")
    both(conn, "j", "json parser", expect_numpy=False)
    conn.execute(f"UPDATE ml_stack.{vt} SET embedding = array_fill(NULL::real, ARRAY[256]) WHERE id = 4000")
    both(conn, "j", "json parser", expect_numpy=False)
    conn.execute("DELETE FROM docs WHERE id = 4000")
    both(conn, "j", "json parser")


def test_drop_job_and_jobs_made_before_the_extension(conn):
    make_docs(conn, 40)
    conn.execute("SELECT ml_stack.create_vector_job('old', 'docs', 'id', ARRAY['title'])")   # before ml_stack_python
    conn.execute("CREATE EXTENSION ml_stack_python CASCADE")
    old = job_row(conn, "old")
    assert conn.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid = %s::regclass"
                        " AND tgname = 'ml_stack_vectors_changed' AND tgenabled = 'A'",
                        (f"ml_stack.{old['vectors_table']}",)).fetchone()[0] == 1
    first = both(conn, "old", "json parser")
    conn.execute("SELECT ml_stack.drop_vector_job('old')")
    assert conn.execute("SELECT count(*) FROM ml_stack.vector_job_changes WHERE job_id = %s",
                        (old["id"],)).fetchone()[0] == 0
    with pytest.raises(psycopg.errors.UndefinedObject):
        conn.execute("SELECT * FROM ml_stack.search('old', 'json parser')")
    conn.execute("SELECT ml_stack.create_vector_job('old', 'docs', 'id', ARRAY['title'])")
    assert both(conn, "old", "json parser") == first
    # the source table dropped: the job goes (event trigger of ml_stack), searching it is an error
    conn.execute("DROP TABLE docs")
    with pytest.raises(psycopg.errors.UndefinedObject):
        conn.execute("SELECT * FROM ml_stack.search('old', 'json parser')")
    # DROP EXTENSION ml_stack_python needs CASCADE while jobs have the trigger; it takes the triggers only
    make_docs(conn, 10)
    conn.execute("SELECT ml_stack.create_vector_job('again', 'docs', 'id', ARRAY['title'])")
    want = search(conn, "again", "json", numpy=False)
    with pytest.raises(psycopg.errors.DependentObjectsStillExist):
        conn.execute("DROP EXTENSION ml_stack_python")
    conn.execute("DROP EXTENSION ml_stack_python CASCADE")
    assert conn.execute("SELECT array_agg(id) FROM ml_stack.search('again', 'json')").fetchone()[0] == \
        [g["id"] for g in want]
    conn.execute("INSERT INTO docs (id, title) VALUES (99, 'json')")   # writes work without the extension
    conn.execute("CREATE EXTENSION ml_stack_python")
    both(conn, "again", "json")


def test_many_transactions_fold_and_stay_exact(pdocs, pg_server):
    conn, _ = pdocs
    job = job_row(conn, "j")["id"]
    with pg_server.connect(conn.info.dbname) as other:
        for i in range(150):
            conn.execute("INSERT INTO docs (id, title) VALUES (%s, 'kudu')", (5000 + i,))
            if i % 37 == 0:
                assert other.execute("SELECT array_agg(id) FROM ml_stack.search('j', 'kudu', 3)").fetchone()[0][
                    :min(i + 1, 3)] == [str(5000 + j) for j in range(min(i + 1, 3))]
        counts = conn.execute("SELECT count(*), count(*) FILTER (WHERE xid IS NULL), sum(n)"
                              " FROM ml_stack.vector_job_changes WHERE job_id = %s", (job,)).fetchone()
        assert counts[1] >= 1 and counts[0] < 150 <= counts[2], counts
        conn.execute("DELETE FROM docs WHERE id = 5000")
        assert other.execute("SELECT array_agg(id) FROM ml_stack.search('j', 'kudu', 3)").fetchone()[0] == \
            ["5001", "5002", "5003"]
    both(conn, "j", "kudu", 200)


@pytest.mark.parametrize("method", ["exit_on_error", "plain"])
def test_a_job_searched_in_numpy_survives_dump_and_restore(pdocs, pg_server, new_db, tmp_path, method):
    """With ml_stack_python installed, a hashing job's searches come back identical after pg_dump/pg_restore,
    through the numpy path (its change trigger is restored with the job's table), and writes after the restore
    reach the matrix: an inserted row is found, a deleted one is gone, with the SQL path's answers."""
    from test_dump_restore import _restore
    conn, _ = pdocs
    before = {q: both(conn, "j", q) for q in QUERIES[:3]}
    target = _restore(pg_server, new_db, tmp_path, conn, method)
    with pg_server.connect(target) as restored:
        for q, want in before.items():
            assert both(restored, "j", q) == want, q
        restored.execute("INSERT INTO docs (id, title) VALUES (5000, 'zebra quagga json parser')")
        restored.execute("DELETE FROM docs WHERE id = 17")
        got = both(restored, "j", "zebra quagga json parser", k=300)
        ids = [r["id"] for r in got]
        assert ids[0] == "5000" and "17" not in ids
