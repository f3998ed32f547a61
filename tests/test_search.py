"""ml_stack.search (DESIGN §3b; docs/vectors-jobs-search.md) against oracles computed here in Python:

- semantic: cosine similarity (numpy) of the embeddings fetched from the job's table with ``ml_stack.embed`` of the
  query;
- keyword: BM25 (k1 = 1.2, b = 0.75, idf = ln(1 + (N - df + 0.5) / (df + 0.5))) recomputed from the lexemes and term
  frequencies of each row's text as ``ml_stack._lexemes`` gives them;
- hybrid: reciprocal rank fusion (k = 60) of the two oracle rankings, each cut at max(num_results, 100);
- filters applied in Python to the source rows; injection attempts stay data.
"""

import math

import numpy as np
import pytest
from psycopg import errors
from psycopg.rows import dict_row

from vector_helpers import make_docs, stored

K1, B, RRF_K = 1.2, 0.75, 60
QUERIES = ["json parser", "game chess puzzle", "network server http proxy", "the", "database sql query python",
           "video"]


def search(conn, job, query, k=10, filters=None, mode="semantic"):
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("SELECT * FROM ml_stack.search(%s, %s, %s, %s::jsonb, %s)",
                           (job, query, k, None if filters is None else __import__("json").dumps(filters),
                            mode)).fetchall()


@pytest.fixture
def docs(conn):
    """300 rows of generated text, a hashing job of 256 dims, and the source rows as dicts."""
    make_docs(conn, 300)
    conn.execute("UPDATE docs SET title = 'json json json', body = NULL WHERE id IN (17, 18)")  # exact ties
    conn.execute("SELECT ml_stack.create_vector_job('j', 'docs', 'id', ARRAY['title', 'body'], 'hashing', 'realtime',"
                 " '{\"dims\": 256}')")
    with conn.cursor(row_factory=dict_row) as cur:
        rows = {str(r["id"]): r for r in cur.execute("SELECT * FROM docs").fetchall()}
    return conn, rows


def semantic_oracle(conn, job, query, ids, options='{"dims": 256}'):
    """{id: cosine} over the ids, from the stored embeddings."""
    emb = stored(conn, job)
    q = np.array(conn.execute("SELECT ml_stack.embed('hashing', %s, %s::jsonb)", (query, options)).fetchone()[0],
                 dtype=np.float32).astype(np.float64)
    out = {}
    for i in ids:
        e = np.array(emb[i]["embedding"], dtype=np.float32).astype(np.float64)
        ne, nq = math.sqrt(e @ e), math.sqrt(q @ q)
        out[i] = 0.0 if ne == 0 or nq == 0 else float(e @ q) / (ne * nq)
    return out


def bm25_oracle(conn, query, ids, config="english"):
    """{id: BM25} of the rows (among ids) that hold a query term; N, df and avgdl over every embedded row."""
    tf = {}
    for i, term, f in conn.execute("SELECT s.id::text, l.term, l.tf FROM (SELECT id, concat_ws(' ', title, body) AS d"
                                   " FROM docs) AS s, ml_stack._lexemes(%s::regconfig, s.d) AS l", (config,)):
        tf.setdefault(i, {})[term] = f
    all_ids = [r[0] for r in conn.execute("SELECT id::text FROM docs")]
    n = len(all_ids)
    dl = {i: sum(tf.get(i, {}).values()) for i in all_ids}
    avgdl = sum(dl.values()) / n
    terms = {r[0] for r in conn.execute("SELECT term FROM ml_stack._lexemes(%s::regconfig, %s)", (config, query))}
    df = {t: sum(1 for i in all_ids if t in tf.get(i, {})) for t in terms}
    out = {}
    for i in ids:
        s, hit = 0.0, False
        for t in terms:
            f = tf.get(i, {}).get(t)
            if f:
                hit = True
                idf = math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5))
                s += idf * f * (K1 + 1) / (f + K1 * (1 - B + B * dl[i] / avgdl))
        if hit:
            out[i] = s
    return out


def ranked(scores):
    """ids by score descending, ties by id (integer keys) ascending."""
    return sorted(scores, key=lambda i: (-scores[i], int(i)))


def rrf_oracle(sem, kw, window):
    fused = {}
    for lst in (ranked(sem)[:window], ranked(kw)[:window]):
        for r, i in enumerate(lst, start=1):
            fused[i] = fused.get(i, 0.0) + 1.0 / (RRF_K + r)
    return fused


def check(got, oracle, k, rows, tol=1e-9):
    """The server's ranking is the oracle's top k: same scores position by position, every id's score is its oracle
    score, ranks 1..n, ties in id order, records are the source rows."""
    want = ranked(oracle)[:k]
    assert len(got) == len(want), (len(got), len(want))
    assert [g["rank"] for g in got] == list(range(1, len(got) + 1))
    for g, w in zip(got, want):
        assert abs(g["score"] - oracle[w]) <= tol * max(1.0, abs(oracle[w])), (g, w, oracle[w])
        assert abs(g["score"] - oracle[g["id"]]) <= tol * max(1.0, abs(oracle[w])), g
        assert g["record"] == {k_: v for k_, v in rows[g["id"]].items()}
    for a, b in zip(got, got[1:]):
        assert a["score"] >= b["score"] - tol
        if a["score"] == b["score"]:
            assert int(a["id"]) < int(b["id"])
    # nothing better than the last one returned was left out
    if got:
        last = got[-1]["score"]
        missing = {i for i, s in oracle.items() if s > last + tol} - {g["id"] for g in got}
        assert not missing, missing


FILTERS = [
    (None, lambda r: True),
    ({"section": "games"}, lambda r: r["section"] == "games"),
    ({"section": None}, lambda r: r["section"] is None),
    ({"section": {"<>": "games"}}, lambda r: r["section"] is not None and r["section"] != "games"),
    ({"n": {">": 2, "<=": 5}}, lambda r: 2 < r["n"] <= 5),
    ({"section": {"in": ["games", "net"]}, "n": {">=": 1}}, lambda r: r["section"] in ("games", "net") and r["n"] >= 1),
    ({"title": {"like": "%json%"}}, lambda r: r["title"] is not None and "json" in r["title"]),
    ({"id": {"<": 40}}, lambda r: r["id"] < 40),
    ({"note": "it's"}, lambda r: True),
]


@pytest.mark.parametrize("filters, keep", FILTERS, ids=[str(f[0]) for f in FILTERS])
def test_every_mode_against_its_oracle(docs, filters, keep):
    conn, rows = docs
    ids = [i for i, r in rows.items() if keep(r)]
    for query in QUERIES:
        sem = semantic_oracle(conn, "j", query, ids)
        kw = bm25_oracle(conn, query, ids)
        for k in (1, 10, 150):
            check(search(conn, "j", query, k, filters, "semantic"), sem, k, rows)
            check(search(conn, "j", query, k, filters, "keyword"), kw, k, rows)
            check(search(conn, "j", query, k, filters, "hybrid"), rrf_oracle(sem, kw, max(k, 100)), k, rows)


def test_ties_and_defaults(docs):
    conn, rows = docs
    got = search(conn, "j", "json")
    assert len(got) == 10
    top = [g for g in got if g["score"] == got[0]["score"]]
    assert top[0]["score"] > 0.999999 and {"17", "18"} <= {g["id"] for g in top}
    assert [int(g["id"]) for g in top] == sorted(int(g["id"]) for g in top)
    # the default mode is semantic, num_results 10
    assert conn.execute("SELECT array_agg(id) FROM ml_stack.search('j', 'json')").fetchone()[0] == [g["id"] for g in got]
    # a query without lexemes: no keyword match; semantic scores are all 0, in id order
    assert search(conn, "j", "the and of", mode="keyword") == []
    zero = search(conn, "j", "the and of", 5)
    assert [(g["id"], g["score"]) for g in zero] == [(str(i), 0.0) for i in range(1, 6)]


def test_filters_carrying_sql_are_harmless(docs):
    conn, rows = docs
    with pytest.raises(errors.UndefinedColumn, match='unknown column "id\\); DROP TABLE docs; --"') as e:
        search(conn, "j", "json", filters={"id); DROP TABLE docs; --": 1})
    assert "id, title, body, section, n, note" in e.value.diag.message_hint
    for f in ({"title": "x'; DROP TABLE docs; --"}, {"section": {"in": ["games'); DROP TABLE docs; --"]}},
              {"title": {"like": "%'||(SELECT 1)||'%"}}, {"note": "it''s"}):
        assert search(conn, "j", "json", filters=f) == []
    with pytest.raises(errors.InvalidParameterValue, match="is not a valid integer"):
        search(conn, "j", "json", filters={"n": "1; DROP TABLE docs"})
    with pytest.raises(errors.InvalidParameterValue, match='unknown filter operator "; DROP"'):
        search(conn, "j", "json", filters={"section": {"; DROP": 1}})
    with pytest.raises(errors.InvalidParameterValue, match='"in" on column "section" needs a JSON array'):
        search(conn, "j", "json", filters={"section": {"in": "games"}})
    with pytest.raises(errors.InvalidParameterValue, match="filters must be a JSON object"):
        search(conn, "j", "json", filters=["section"])
    assert conn.execute("SELECT count(*) FROM docs").fetchone()[0] == 300
    assert len(stored(conn, "j")) == 300


@pytest.mark.parametrize("args, error, message", [
    (("j", None, 10, None, "semantic"), errors.InvalidParameterValue, "query text is required"),
    (("j", "  ", 10, None, "semantic"), errors.InvalidParameterValue, "query text is required"),
    (("j", "json", 0, None, "semantic"), errors.InvalidParameterValue, "num_results must be from 1 to 10000"),
    (("j", "json", 10001, None, "semantic"), errors.InvalidParameterValue, "num_results must be from 1 to 10000"),
    (("j", "json", 10, None, "fuzzy"), errors.InvalidParameterValue, 'unknown search mode "fuzzy"'),
    (("nope", "json", 10, None, "semantic"), errors.UndefinedObject, 'no vector job named "nope"'),
])
def test_bad_arguments(docs, args, error, message):
    conn, _ = docs
    with pytest.raises(error, match=message) as e:
        conn.execute("SELECT * FROM ml_stack.search(%s, %s, %s, %s, %s)", args)
    assert e.value.diag.message_hint


def test_rows_still_queued_are_not_searched(conn):
    conn.execute("CREATE TEXT SEARCH CONFIGURATION my_cfg (COPY = english)")
    make_docs(conn, 20)
    conn.execute("SELECT ml_stack.create_vector_job('j', 'docs', 'id', ARRAY['title'], 'hashing', 'realtime',"
                 " '{\"config\": \"public.my_cfg\"}')")
    conn.execute("DROP TEXT SEARCH CONFIGURATION my_cfg")
    conn.execute("INSERT INTO docs (id, title) VALUES (100, 'zebra zebra')")  # queued with the error
    conn.execute("CREATE TEXT SEARCH CONFIGURATION my_cfg (COPY = english)")
    assert [g["id"] for g in search(conn, "j", "zebra", mode="keyword")] == []
    conn.execute("SELECT ml_stack.process_vector_jobs()")
    assert [g["id"] for g in search(conn, "j", "zebra", mode="keyword")] == ["100"]
    assert search(conn, "j", "zebra", 1)[0]["id"] == "100"


def test_text_key_and_keyword_config(conn):
    """A text primary key (ties in text order), a fitted vectorizer, keyword_config 'simple' (no stemming: 'games'
    does not match 'game')."""
    conn.execute("CREATE TABLE p (name text PRIMARY KEY, d text)")
    conn.execute("INSERT INTO p VALUES ('b', 'game games'), ('a', 'game'), ('c', 'games'), ('it''s', 'chess')")
    conn.execute("SELECT ml_stack.fit_vectorizer('v', 'p', 'd', 'counts')")
    conn.execute("SELECT ml_stack.create_vector_job('p', 'p', 'name', ARRAY['d'], 'v', options => '{\"keyword_config\": \"simple\"}')")
    got = search(conn, "p", "games", mode="keyword")
    assert [g["id"] for g in got] == ["c", "b"]
    sem = search(conn, "p", "game")
    assert [g["id"] for g in sem] == ["a", "b", "c", "it's"]
    assert [g["record"] for g in sem][3] == {"name": "it's", "d": "chess"}
