"""Vector jobs (DESIGN §3b; docs/vectors-jobs-search.md): create_vector_job, the triggers that keep a job's
embeddings in sync with every kind of write, failures recorded and retried, drop_vector_job and dropped tables,
bad input that leaves everything as it was, pg_cron schedules, pg_dump/pg_restore.

The oracle of every sync check is ``ml_stack.embed(transformer, text)`` of the row's text (its columns joined by
' ', NULLs skipped) and ``to_tsvector``, computed from the source table at the end (tests/vector_helpers.py).
"""

import json
import time

import pytest
from psycopg import errors, sql

from test_dump_restore import _restore
from test_scheduling import TICK_DEADLINE, cron_db, cron_diagnostics, cron_server_db, tick_db  # noqa: F401  (fixtures)
from vector_helpers import assert_in_sync, catalog_state, job_row, make_docs, queue, stored, view


def create(conn, *args, **kwargs):
    parts = [sql.Literal(a) for a in args]
    for name, value in kwargs.items():
        if isinstance(value, dict):
            value = json.dumps(value)
        cast = {"options": "::jsonb"}.get(name, "::text")
        parts.append(sql.SQL("{} => {}" + cast).format(sql.Identifier(name), sql.Literal(value)))
    return conn.execute(sql.SQL("SELECT ml_stack.create_vector_job({})").format(sql.SQL(", ").join(parts))).fetchone()[0]


def make_job(conn, name="docs_job", n=50, **kwargs):
    make_docs(conn, n)
    return create(conn, name, "docs", "id", ["title", "body"], **kwargs)


# --------------------------------------------------------------------------------------------------------------
# sync


def test_existing_rows_are_embedded_at_creation(conn):
    job_id = make_job(conn)
    got = assert_in_sync(conn, "docs_job")
    assert len(got) == 50
    row = job_row(conn, "docs_job")
    assert row["id"] == job_id and row["vectors_table"] == f"_vectors_{job_id}"
    assert row["spec"] == {"name": "hashing", "kind": "hashing", "dims": 1024, "config": "english", "signed": True}
    v = view(conn)["docs_job"]
    assert (v["relation_name"], v["transformer"], v["schedule"], v["source_rows"], v["embedded_rows"], v["pending"],
            v["failed"], v["dims"]) == ("public.docs", "hashing", "realtime", 50, 50, 0, 0, 1024)
    # the doc length is the number of lexeme positions
    for r in got.values():
        assert r["doc_length"] == sum(len(t.split(":")[1].split(",")) for t in r["lexemes"].split(" ") if t)


def test_every_kind_of_write_is_followed(conn):
    make_job(conn, n=30, options={"dims": 64})
    kw = {"options": '{"dims": 64}'}
    conn.execute("INSERT INTO docs (id, title, body) VALUES (100, 'brand new json row', NULL), (101, NULL, NULL)")
    assert_in_sync(conn, "docs_job", **kw)
    conn.execute("UPDATE docs SET title = 'changed title game' WHERE id = 1")
    conn.execute("UPDATE docs SET body = 'a body now' WHERE id = 101")
    assert_in_sync(conn, "docs_job", **kw)

    # a column the job does not embed: nothing re-embedded (updated_at unchanged)
    before = stored(conn, "docs_job")
    conn.execute("UPDATE docs SET note = 'other', n = n + 1")
    conn.execute("UPDATE docs SET title = title WHERE id <= 10")  # same value: the WHEN clause skips it
    after = stored(conn, "docs_job")
    assert after == before

    # the primary key: moved; swapped and shifted in one statement (a deferrable key allows it)
    conn.execute("UPDATE docs SET id = 1000 WHERE id = 2")
    got = assert_in_sync(conn, "docs_job", **kw)
    assert "2" not in got and "1000" in got
    conn.execute("CREATE TABLE sw (id integer PRIMARY KEY DEFERRABLE, title text, body text)")
    conn.execute("INSERT INTO sw SELECT i, 'title ' || i || ' game', NULL FROM generate_series(1, 6) AS i")
    create(conn, "sw", "sw", "id", ["title", "body"])
    conn.execute("UPDATE sw SET id = CASE id WHEN 1 THEN 2 WHEN 2 THEN 1 ELSE id + 1 END")
    assert set(assert_in_sync(conn, "sw", table="sw")) == {"1", "2", "4", "5", "6", "7"}

    conn.execute("DELETE FROM docs WHERE id IN (5, 6, 1000)")
    assert_in_sync(conn, "docs_job", **kw)
    conn.execute("INSERT INTO docs (id, title) VALUES (5, 'upserted') ON CONFLICT (id) DO UPDATE SET title = excluded.title")
    conn.execute("INSERT INTO docs (id, title) VALUES (7, 'conflict updates') ON CONFLICT (id) DO UPDATE SET title = excluded.title")
    assert_in_sync(conn, "docs_job", **kw)

    with conn.cursor() as cur:
        with cur.copy("COPY docs (id, title, body) FROM STDIN") as copy:
            for i in range(200, 220):
                copy.write_row((i, f"copied row {i} server", None if i % 2 else "with body"))
    got = assert_in_sync(conn, "docs_job", **kw)
    assert {str(i) for i in range(200, 220)} <= set(got)

    # a rolled-back write leaves the embeddings as they were
    before = stored(conn, "docs_job")
    conn.execute("BEGIN")
    conn.execute("UPDATE docs SET title = 'rolled back'")
    conn.execute("DELETE FROM docs WHERE id < 10")
    conn.execute("ROLLBACK")
    assert stored(conn, "docs_job") == before

    conn.execute("TRUNCATE docs")
    assert stored(conn, "docs_job") == {}
    conn.execute("INSERT INTO docs (id, title) VALUES (1, 'after truncate')")
    assert set(assert_in_sync(conn, "docs_job", **kw)) == {"1"}
    assert queue(conn) == []


def test_several_columns_text_key_and_fitted_vectorizer(conn):
    """A text primary key, three columns (varchar among them), a fitted tfidf vectorizer: the job keeps the
    vectorizer version it was made with when the name is refitted."""
    conn.execute("CREATE SCHEMA other")
    conn.execute("CREATE TABLE other.pkgs (name text PRIMARY KEY, a varchar(50), b text, c text)")
    conn.execute("INSERT INTO other.pkgs VALUES ('x''y', 'json parser', NULL, 'fast'), ('b', NULL, NULL, NULL),"
                 " ('c', 'game', 'chess game', 'puzzle')")
    conn.execute("SELECT ml_stack.fit_vectorizer('tf', 'other.pkgs', 'c', 'tfidf', '{\"config\": \"simple\"}')")
    conn.execute("SET search_path = other, public")
    create(conn, "pk", "pkgs", "name", ["a", "b", "c"], transformer="tf")
    conn.execute("RESET search_path")
    first = job_row(conn, "pk")["spec"]["vectorizer_id"]
    conn.execute("SELECT ml_stack.fit_vectorizer('tf', 'other.pkgs', 'a', 'tfidf', '{\"config\": \"simple\"}')")
    conn.execute("INSERT INTO other.pkgs VALUES ('d', 'fast chess', 'x', 'y')")
    got = stored(conn, "pk")
    want = {r[0]: r[1] for r in conn.execute(
        "SELECT name, ml_stack.embed('tf', concat_ws(' ', a, b, c), jsonb_build_object('version', 1)) FROM other.pkgs")}
    assert {k: v["embedding"] for k, v in got.items()} == want
    assert job_row(conn, "pk")["spec"]["vectorizer_id"] == first
    assert got["b"]["doc_length"] == 0 and got["b"]["norm"] == 0
    # lexemes use the vectorizer's configuration ('simple': no stemming)
    assert got["c"]["lexemes"] == "'chess':2 'game':1,3 'puzzle':4"


# --------------------------------------------------------------------------------------------------------------
# failures


def test_failed_embedding_keeps_the_write_and_is_retried(conn):
    """A real failure: the job's text search configuration is dropped. Writes still succeed; their rows wait in
    the queue with the error; process_vector_jobs retries them (failing again while the configuration is missing,
    then succeeding)."""
    conn.execute("CREATE TEXT SEARCH CONFIGURATION my_cfg (COPY = english)")
    make_job(conn, n=10, options={"config": "public.my_cfg"})
    kw = {"options": '{"config": "public.my_cfg"}', "config": "public.my_cfg"}
    assert_in_sync(conn, "docs_job", **kw)
    conn.execute("DROP TEXT SEARCH CONFIGURATION my_cfg")
    conn.execute("INSERT INTO docs (id, title) VALUES (20, 'needs my_cfg'), (21, 'me too')")
    conn.execute("UPDATE docs SET title = 'changed' WHERE id = 1")
    assert conn.execute("SELECT count(*) FROM docs").fetchone()[0] == 12
    q = queue(conn)
    assert [r["key"] for r in q] == ["1", "20", "21"]
    assert all(r["attempts"] == 1 and r["failed_at"] is not None and "my_cfg" in r["last_error"] for r in q)
    v = view(conn)["docs_job"]
    assert (v["embedded_rows"], v["pending"], v["failed"]) == (10, 0, 3)

    assert conn.execute("SELECT ml_stack.process_vector_jobs()").fetchone()[0] == 0
    assert [r["attempts"] for r in queue(conn)] == [2, 2, 2]
    conn.execute("CREATE TEXT SEARCH CONFIGURATION my_cfg (COPY = english)")
    assert conn.execute("SELECT ml_stack.process_vector_jobs('docs_job')").fetchone()[0] == 3
    assert queue(conn) == []
    assert_in_sync(conn, "docs_job", **kw)
    v = view(conn)["docs_job"]
    assert (v["embedded_rows"], v["pending"], v["failed"]) == (12, 0, 0) and v["last_processed_at"] is not None


def test_a_failing_row_does_not_block_its_batch(conn):
    """Retry key by key: with batch_size 10, one key that fails (a queued key that does not read as the key type,
    written by hand) does not keep the others of its batch from being embedded (or deleted when their row is
    gone)."""
    make_job(conn, n=5, options={"batch_size": 10})
    job_id = job_row(conn, "docs_job")["id"]
    conn.execute("INSERT INTO ml_stack.vector_job_queue (job_id, key) VALUES (%s, 'not a number'), (%s, '1'), (%s, '999')",
                 (job_id, job_id, job_id))
    conn.execute("DELETE FROM ml_stack._vectors_%s WHERE id = 1" % job_id)
    assert conn.execute("SELECT ml_stack.process_vector_jobs('docs_job')").fetchone()[0] == 1
    q = queue(conn)
    assert [(r["key"], r["attempts"]) for r in q] == [("not a number", 1)]
    assert "invalid input syntax for type integer" in q[0]["last_error"]
    assert_in_sync(conn, "docs_job")


# A stand-in for ml_stack_python's model entry point (same signature, found by ml_stack._python_embedding_installed):
# 3-dim vectors (length, count of 'a', 1); fails for a batch holding 'FAIL'; logs each successful call's batch size.
FAKE_MODEL = r"""
CREATE TABLE public.model_calls (n integer);
CREATE FUNCTION ml_stack._python_embed(name text, inputs text[], options jsonb) RETURNS SETOF real[]
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT FROM unnest(inputs) AS t WHERE t LIKE '%FAIL%') THEN
        RAISE EXCEPTION 'the model cannot embed this';
    END IF;
    INSERT INTO public.model_calls VALUES (cardinality(inputs));
    RETURN QUERY SELECT ARRAY[length(t), length(t) - length(replace(t, 'a', '')), 1]::real[]
                 FROM unnest(inputs) WITH ORDINALITY AS u(t, i) ORDER BY i;
END $$;
"""


def test_model_transformer_queues_and_embeds_in_batches(conn):
    """A model transformer (python kind) on 'realtime': the triggers queue; process_vector_jobs embeds in batches
    of batch_size, one model call each; a failing row is isolated, recorded, retried after it changes."""
    conn.execute(FAKE_MODEL)
    make_docs(conn, 25)
    notices = []
    conn.add_notice_handler(lambda d: notices.append(d.message_primary))
    conn.execute("SET client_min_messages = notice")
    create(conn, "m", "docs", "id", ["title", "body"], transformer="test/model", options={"batch_size": 10})
    assert any("process_vector_jobs('m')" in n for n in notices)
    assert stored(conn, "m") == {} and len(queue(conn)) == 25
    conn.execute("INSERT INTO docs (id, title) VALUES (100, 'banana')")
    conn.execute("UPDATE docs SET id = 101 WHERE id = 1")
    assert len(queue(conn)) == 26 and view(conn)["m"]["pending"] == 26
    assert conn.execute("SELECT ml_stack.process_vector_jobs('m')").fetchone()[0] == 26
    assert [r[0] for r in conn.execute("SELECT n FROM model_calls")] == [10, 10, 6]
    kw = {"transformer": "test/model", "options": "{}"}
    got = assert_in_sync(conn, "m", **kw)
    assert got["100"]["embedding"] == [6.0, 3.0, 1.0] and "1" not in got

    conn.execute("DELETE FROM model_calls")
    conn.execute("INSERT INTO docs (id, title) VALUES (200, 'FAIL here'), (201, 'fine'), (202, 'also fine')")
    assert conn.execute("SELECT ml_stack.process_vector_jobs()").fetchone()[0] == 2
    (failed,) = queue(conn)
    assert (failed["key"], failed["attempts"], failed["last_error"]) == ("200", 1, "the model cannot embed this")
    assert view(conn)["m"]["failed"] == 1
    conn.execute("UPDATE docs SET title = 'no longer failing' WHERE id = 200")
    assert conn.execute("SELECT ml_stack.process_vector_jobs()").fetchone()[0] == 1
    assert queue(conn) == []
    assert_in_sync(conn, "m", **kw)
    # search embeds the query with the model too
    top = conn.execute("SELECT id FROM ml_stack.search('m', 'aaaa', 1)").fetchone()[0]
    assert top in stored(conn, "m")


# --------------------------------------------------------------------------------------------------------------
# dropping


def test_drop_vector_job_removes_everything(conn):
    make_docs(conn, 5)
    before = catalog_state(conn)
    create(conn, "j", "docs", "id", ["title"])
    assert catalog_state(conn) != before
    conn.execute("INSERT INTO ml_stack.vector_job_queue (job_id, key) SELECT id, '1' FROM ml_stack.vector_job_definitions")
    assert conn.execute("SELECT ml_stack.drop_vector_job('j')").fetchone()[0] is True
    assert catalog_state(conn) == before
    conn.execute("INSERT INTO docs (id, title) VALUES (99, 'no job any more')")  # no trigger left to fail
    with pytest.raises(errors.UndefinedObject, match='no vector job named "j"') as e:
        conn.execute("SELECT ml_stack.drop_vector_job('j')")
    assert "create_vector_job" in e.value.diag.message_hint


def test_dropping_the_table_drops_its_job_event_trigger(conn):
    assert conn.execute("SELECT evtenabled FROM pg_event_trigger WHERE evtname = 'ml_stack_vector_jobs_drop'"
                        ).fetchone() == ("O",)
    make_docs(conn, 5)
    make_docs(conn, 5, table="keep")
    before = catalog_state(conn, "keep")
    create(conn, "j", "docs", "id", ["title"])
    table = job_row(conn, "j")["vectors_table"]
    conn.execute("DROP TABLE docs")
    assert conn.execute("SELECT to_regclass(%s)", (f"ml_stack.{table}",)).fetchone()[0] is None
    assert job_row(conn, "j") is None
    assert catalog_state(conn, "keep") == before


def test_dropping_the_table_without_event_trigger_cleans_up_lazily(conn):
    """ml_stack installed by a non-superuser has no event trigger: the next call that looks at the jobs removes
    those of dropped tables (here: the view, then process_vector_jobs, then create_vector_job)."""
    conn.execute("ALTER EVENT TRIGGER ml_stack_vector_jobs_drop DISABLE")
    for t in ("a", "b", "c"):
        make_docs(conn, 3, table=t)
        create(conn, f"job_{t}", t, "id", ["title"])
    conn.execute("DROP TABLE a")
    assert job_row(conn, "job_a") is not None  # nothing fired
    assert set(view(conn)) == {"job_b", "job_c"}
    assert job_row(conn, "job_a") is None
    conn.execute("DROP TABLE b")
    conn.execute("SELECT ml_stack.process_vector_jobs()")
    assert job_row(conn, "job_b") is None
    conn.execute("DROP TABLE c")
    make_docs(conn, 3, table="c")
    create(conn, "job_c", "c", "id", ["title"])  # the name is free again
    assert conn.execute("SELECT count(*) FROM pg_class WHERE relnamespace = 'ml_stack'::regnamespace"
                        " AND relname LIKE '\\_vectors\\_%' AND relkind = 'r'").fetchone()[0] == 1


# --------------------------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize("args, kwargs, error, message, hint", [
    (("docs_job", "docs", "id", ["title"]), {}, errors.DuplicateObject, 'vector job "docs_job" exists', "drop_vector_job"),
    (("j", "missing_table", "id", ["title"]), {}, errors.UndefinedTable, 'relation "missing_table" does not exist', "schema"),
    (("j", "docs", "id", ["title"]), {"transformer": "nope"}, errors.InvalidParameterValue, 'unknown transformer "nope"', "hashing"),
    (("j", "docs", "id", ["n"]), {}, errors.DatatypeMismatch, 'column "n" of public.docs has type integer, not text', "title"),
    (("j", "docs", "id", ["nope"]), {}, errors.UndefinedColumn, 'column "nope" does not exist', "title"),
    (("j", "docs", "title", ["body"]), {}, errors.InvalidParameterValue, 'its primary key is "id"', "primary_key => 'id'"),
    (("j", "nokey", "id", ["t"]), {}, errors.InvalidTableDefinition, "has no primary key", "ADD PRIMARY KEY"),
    (("j", "twokey", "a", ["t"]), {}, errors.InvalidTableDefinition, r"has 2 columns \(a, b\)", "single-column"),
    (("j", "docs", "id", ["title"]), {"options": '{"dims": 0}'}, errors.InvalidParameterValue, "from 1 to 65536", "default"),
    (("j", "docs", "id", ["title"]), {"options": '{"dims": 100000}'}, errors.InvalidParameterValue, "from 1 to 65536", "default"),
    (("j", "docs", "id", ["title"]), {"options": '{"batch_size": 0}'}, errors.InvalidParameterValue, '"batch_size"', "default"),
    (("j", "docs", "id", ["title"]), {"options": '{"colour": 1}'}, errors.InvalidParameterValue, 'unknown option "colour"', "dims"),
    (("j", "docs", "id", ["title"]), {"schedule": "hourly"}, errors.InvalidParameterValue, 'unknown schedule "hourly"', "realtime"),
    (("j", "docs", "id", ["title"]), {"schedule": "*/5 * * * *"}, errors.ObjectNotInPrerequisiteState, "needs pg_cron", "pg_cron"),
    (("j", "docs", "id", ["title", "title"]), {}, errors.InvalidParameterValue, "twice", "once"),
    (("j", "docs", "id", []), {}, errors.InvalidParameterValue, "one or more text columns", "columns"),
    (("j", "docs_view", "id", ["title"]), {}, errors.WrongObjectType, "is not a table", "view"),
    (("", "docs", "id", ["title"]), {}, errors.InvalidParameterValue, "job_name is required", "create_vector_job"),
    (("j", "parted", "id", ["t"]), {}, errors.FeatureNotSupported, "partitioned tables are not supported", "partition"),
    (("j", "docs", "id", ["title"]), {"transformer": "sentence-transformers/all-MiniLM-L6-v2"},
     errors.FeatureNotSupported, "needs ml_stack_python", "CREATE EXTENSION ml_stack_python"),
])
def test_bad_input_leaves_everything_as_it_was(conn, args, kwargs, error, message, hint):
    make_job(conn, n=5)
    conn.execute("CREATE TABLE nokey (id int, t text)")
    conn.execute("CREATE TABLE twokey (a int, b int, t text, PRIMARY KEY (a, b))")
    conn.execute("CREATE VIEW docs_view AS SELECT * FROM docs")
    conn.execute("CREATE TABLE parted (id int PRIMARY KEY, t text) PARTITION BY RANGE (id)")
    conn.execute("INSERT INTO nokey VALUES (1, 'x')")
    before = {t: catalog_state(conn, t) for t in ("docs", "nokey", "twokey")}
    rows_before = stored(conn, "docs_job")
    with pytest.raises(error, match=message) as e:
        create(conn, *args, **kwargs)
    assert hint in (e.value.diag.message_hint or ""), e.value.diag.message_hint
    assert len(e.value.diag.context or "") < 600  # no pages of SQL
    assert {t: catalog_state(conn, t) for t in ("docs", "nokey", "twokey")} == before
    assert stored(conn, "docs_job") == rows_before


def test_process_unknown_job(conn):
    with pytest.raises(errors.UndefinedObject, match='no vector job named "x"') as e:
        conn.execute("SELECT ml_stack.process_vector_jobs('x')")
    assert "create_vector_job" in e.value.diag.message_hint
    assert conn.execute("SELECT ml_stack.process_vector_jobs()").fetchone()[0] == 0


# --------------------------------------------------------------------------------------------------------------
# pg_cron


def test_cron_schedule_queues_and_the_cron_job_embeds(cron_db):
    """A cron schedule: the triggers only queue; the pg_cron job's command embeds; drop_vector_job removes the cron
    job."""
    make_docs(cron_db, 10)
    job_id = create(cron_db, "cj", "docs", "id", ["title", "body"], schedule="*/5 * * * *")
    (jobname, schedule, command), = cron_db.execute("SELECT jobname, schedule, command FROM cron.job").fetchall()
    assert (jobname, schedule, command) == (f"ml_stack_vector_job_{job_id}", "*/5 * * * *",
                                           "SELECT ml_stack.process_vector_jobs('cj')")
    assert stored(cron_db, "cj") == {} and len(queue(cron_db)) == 10
    cron_db.execute("INSERT INTO docs (id, title) VALUES (50, 'queued')")
    cron_db.execute("UPDATE docs SET title = 'queued too' WHERE id = 1")
    assert len(queue(cron_db)) == 11 and view(cron_db)["cj"]["pending"] == 11
    cron_db.execute(command)  # as pg_cron runs it
    assert queue(cron_db) == []
    assert_in_sync(cron_db, "cj")
    cron_db.execute("SELECT ml_stack.drop_vector_job('cj')")
    assert cron_db.execute("SELECT count(*) FROM cron.job").fetchone()[0] == 0


def test_a_real_pg_cron_tick_drains_the_queue(tick_db, tick_server):
    """A '* * * * *' job: pg_cron's own tick embeds the queued rows."""
    make_docs(tick_db, 10)
    create(tick_db, "tick", "docs", "id", ["title", "body"], schedule="* * * * *")
    tick_db.execute("INSERT INTO docs (id, title) VALUES (51, 'embedded by pg_cron')")
    assert len(queue(tick_db)) == 11
    deadline = time.monotonic() + TICK_DEADLINE
    while queue(tick_db) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert queue(tick_db) == [], cron_diagnostics(tick_db, tick_server)
    status = tick_db.execute("SELECT status, return_message FROM cron.job_run_details ORDER BY runid DESC LIMIT 1"
                             ).fetchone()
    assert status == ("succeeded", "1 row"), status
    assert_in_sync(tick_db, "tick")
    tick_db.execute("SELECT ml_stack.drop_vector_job('tick')")
    assert tick_db.execute("SELECT count(*) FROM cron.job").fetchone()[0] == 0


def test_bad_cron_schedule_makes_nothing(cron_db):
    make_docs(cron_db, 3)
    before = catalog_state(cron_db)
    with pytest.raises(errors.InvalidParameterValue, match='unknown schedule "99 \\* \\* \\* \\*"') as e:
        create(cron_db, "cj", "docs", "id", ["title"], schedule="99 * * * *")
    assert "five fields" in e.value.diag.message_hint
    assert catalog_state(cron_db) == before


# --------------------------------------------------------------------------------------------------------------
# pg_dump / pg_restore


@pytest.mark.parametrize("method", ["exit_on_error", "plain"])
def test_jobs_survive_dump_and_restore(pg_server, new_db, tmp_path, conn, method):
    make_job(conn, n=40)
    conn.execute("CREATE TEXT SEARCH CONFIGURATION my_cfg (COPY = english)")
    make_docs(conn, 5, table="other")
    create(conn, "queued", "other", "id", ["title"], options={"config": "public.my_cfg"})
    conn.execute("DROP TEXT SEARCH CONFIGURATION my_cfg")
    conn.execute("INSERT INTO other (id, title) VALUES (9, 'fails: queued with its error')")
    source_rows = stored(conn, "docs_job")
    source_queue = queue(conn)
    source_search = conn.execute("SELECT * FROM ml_stack.search('docs_job', 'json game', 20, mode => 'hybrid')").fetchall()
    target = _restore(pg_server, new_db, tmp_path, conn, method)
    with pg_server.connect(target) as restored:
        assert stored(restored, "docs_job") == source_rows
        assert queue(restored) == source_queue
        assert restored.execute("SELECT * FROM ml_stack.search('docs_job', 'json game', 20, mode => 'hybrid')"
                                ).fetchall() == source_search
        # the embeddings table is no extension member (so that a second dump has it too)
        assert restored.execute("SELECT count(*) FROM pg_depend WHERE classid = 'pg_class'::regclass AND deptype = 'e'"
                                " AND objid = 'ml_stack._vectors_1'::regclass").fetchone()[0] == 0
        # sync goes on
        restored.execute("INSERT INTO docs (id, title) VALUES (500, 'restored and inserted')")
        restored.execute("UPDATE docs SET body = 'new body' WHERE id = 1")
        restored.execute("DELETE FROM docs WHERE id = 2")
        got = assert_in_sync(restored, "docs_job")
        assert "500" in got and "2" not in got
        # a new job gets a new id (the sequence came back)
        make_docs(restored, 3, table="third")
        assert create(restored, "third", "third", "id", ["title"]) == 3
        restored.execute("CREATE TEXT SEARCH CONFIGURATION my_cfg (COPY = english)")
        assert restored.execute("SELECT ml_stack.process_vector_jobs('queued')").fetchone()[0] == 1
        assert_in_sync(restored, "queued", table="other", columns=("title",), options='{"config": "public.my_cfg"}',
                       config="public.my_cfg")
