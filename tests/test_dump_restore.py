"""pg_dump / pg_restore keeps a working ml_stack (DESIGN §4).

The registry tables are extension configuration, so pg_dump dumps their rows; the compiled predictors
(``ml_stack._model_<id>_predict/_proba``) are created at run time, are not extension members, and so are dumped
as ordinary functions. The four dispatch functions behind ``predict()`` are members: pg_dump leaves them out and
``CREATE EXTENSION`` brings them back with their install-time body (no model). What brings them back to the
dumped state is the registry triggers firing while the restore COPYs the registry rows. If any link of that
chain breaks, a restored database silently loses its models or serves stale ones, hence every check here
compares the restored database with the source one exactly, right after the restore, with no extra call.
"""

import subprocess
import uuid
from typing import NamedTuple

import psycopg
import pytest
from psycopg import errors, sql

from helpers import REGISTRY_TABLES, registry_state, serving_state, train, train_every_kind


# --------------------------------------------------------------------------------------------------------------
# helpers


def _serving_functions(conn):
    """Bodies of the compiled predictors and of the dispatch functions, and whether each is an extension member.

    Equal bodies in source and restore mean the triggers rebuilt the dispatch exactly as it was; membership must
    stay as it was, or the next dump would lose the predictors (members are never dumped).
    """
    return conn.execute(r"""
        SELECT p.oid::regprocedure::text, p.prosrc, p.provolatile, p.proparallel,
               EXISTS (SELECT FROM pg_catalog.pg_depend AS d
                       WHERE d.classid = 'pg_catalog.pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')
        FROM pg_catalog.pg_proc AS p
        WHERE p.pronamespace = 'ml_stack'::regnamespace
          AND (p.proname ~ '^_model_\d+_(predict|proba)$'
               OR p.proname IN ('_predict_project', '_predict_proba_project', '_predict_model', '_predict_proba_model'))
        ORDER BY 1""").fetchall()


def _client(pg_server, program, *args):
    """Run a PostgreSQL client program against the test server; return the finished process.

    The tests may run as root while the server's only role is ``postgres``: name it explicitly.
    """
    cmd = [pg_server.bin(program), "-h", pg_server.host, "-p", str(pg_server.port), "-U", pg_server.user, *args]
    return subprocess.run(cmd, env=pg_server.env(), capture_output=True, text=True, timeout=300)


def _dump(pg_server, conn, path, fmt):
    dbname = conn.info.dbname
    res = _client(pg_server, "pg_dump", "-F", fmt, "-f", str(path), dbname)
    assert res.returncode == 0, res.stderr
    assert res.stderr == "", res.stderr


def _dump_text(path):
    """A plain dump's lines, without the random key of ``\\restrict`` (pg_dump >= 15.14) that differs per run."""
    return [line for line in path.read_text().splitlines() if not line.startswith(("\\restrict", "\\unrestrict"))]


def _restore(pg_server, new_db, tmp_path, conn, method):
    """Dump the source database and restore it into a new empty one with ``method``; return the new name."""
    target = new_db("ml_stack_restored")
    if method == "plain":
        dump = tmp_path / "dump.sql"
        _dump(pg_server, conn, dump, "p")
        # -X: no ~/.psqlrc; ON_ERROR_STOP: the first error fails the load, as --exit-on-error does.
        res = _client(pg_server, "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", target, "-f", str(dump))
    else:
        dump = tmp_path / "dump.custom"
        _dump(pg_server, conn, dump, "c")
        options = {
            "exit_on_error": ["--exit-on-error"],
            "single_transaction": ["--exit-on-error", "--single-transaction"],
            "jobs": ["--exit-on-error", "--jobs=2"],
        }[method]
        res = _client(pg_server, "pg_restore", *options, "-d", target, str(dump))
    assert res.returncode == 0, f"restore ({method}) failed:\n{res.stderr}"
    assert "ERROR" not in res.stderr and "error:" not in res.stderr, res.stderr
    return target


# --------------------------------------------------------------------------------------------------------------
# fixtures


class Source(NamedTuple):
    conn: psycopg.Connection
    ids: dict  # "ols", "ridge", "binary", "multinomial" -> model id
    served: dict  # serving_state() before the dump
    registry: dict  # registry_state() before the dump


@pytest.fixture
def source(conn):
    """The test database with trained models, and what it serves and holds before any dump."""
    ids = train_every_kind(conn)
    return Source(conn, ids, serving_state(conn), registry_state(conn))


def _restored(pg_server, new_db, tmp_path, source, method):
    """Connection to a new database restored from ``source`` with ``method``."""
    return pg_server.connect(_restore(pg_server, new_db, tmp_path, source.conn, method))


# --------------------------------------------------------------------------------------------------------------
# tests


@pytest.mark.parametrize("method", ["exit_on_error", "single_transaction", "plain"])
def test_restore_serves_identical_predictions(pg_server, new_db, tmp_path, source, method):
    # The deploy by id took effect before the dump, so the project's dispatch is not simply "the newest model".
    assert source.served[("project", "diabetes")] == source.served[("model", source.ids["ridge"])]
    with _restored(pg_server, new_db, tmp_path, source, method) as restored:
        # First thing the new database is asked: no refresh call, no warm-up.
        after = serving_state(restored)
        assert after.keys() == source.served.keys()
        for key, rows in source.served.items():
            assert after[key] == rows, f"{key} serves other values after the restore"
        assert registry_state(restored) == source.registry
        assert _serving_functions(restored) == _serving_functions(source.conn)


@pytest.mark.parametrize("method", ["exit_on_error", "plain"])
def test_restored_database_dumps_like_the_source(pg_server, new_db, tmp_path, source, method):
    """Whatever a restore loses or adds shows in a second dump; and a restored database must restore again."""
    with _restored(pg_server, new_db, tmp_path, source, method) as restored:
        _dump(pg_server, source.conn, tmp_path / "source.sql", "p")
        _dump(pg_server, restored, tmp_path / "restored.sql", "p")
    assert _dump_text(tmp_path / "restored.sql") == _dump_text(tmp_path / "source.sql")


def test_training_continues_after_restore(pg_server, new_db, tmp_path, source):
    last = {t: source.conn.execute(sql.SQL("SELECT max(id) FROM ml_stack.{}").format(sql.Identifier(t))).fetchone()[0]
            for t in REGISTRY_TABLES}
    with _restored(pg_server, new_db, tmp_path, source, "single_transaction") as restored:
        # Retrain with only the project name: the restored project keeps its relation, label and task.
        row = restored.execute(
            "SELECT model_id, task, algorithm FROM ml_stack.train('diabetes', algorithm => 'ridge',"
            " hyperparams => '{\"alpha\": 0.1}', automatic_deploy => false)").fetchone()
        # Sequences restored: ids continue instead of colliding with (or reusing) the restored ones.
        assert row == (last["models"] + 1, "regression", "ridge")
        snapshot_id = restored.execute("SELECT snapshot_id FROM ml_stack.models WHERE id = %s", (row[0],)).fetchone()[0]
        assert snapshot_id == last["snapshots"] + 1
        restored.execute("SELECT ml_stack.train('diabetes_again', 'regression', 'diabetes', 'target')")
        project_id = restored.execute("SELECT id FROM ml_stack.projects WHERE name = 'diabetes_again'").fetchone()[0]
        assert project_id == last["projects"] + 1
        assert restored.execute("SELECT max(id) FROM ml_stack.deployments").fetchone()[0] == last["deployments"] + 1
        # the history continues too: one manual run per train above
        assert restored.execute("SELECT array_agg(id ORDER BY id) FROM ml_stack.training_runs WHERE id > %s",
                                (last["training_runs"],)).fetchone()[0] == [last["training_runs"] + 1,
                                                                           last["training_runs"] + 2]

        # The new model serves, and the restored ones still serve what they did.
        # (at all-zero features a linear model predicts its intercept, exactly)
        intercept = restored.execute("SELECT (artifact->'intercepts'->>0)::float8 FROM ml_stack.models WHERE id = %s",
                                     (row[0],)).fetchone()[0]
        assert restored.execute("SELECT ml_stack.predict(%s::bigint, ARRAY[0,0,0,0,0,0,0,0,0,0])",
                                (row[0],)).fetchone()[0] == intercept
        after = serving_state(restored)
        for key, rows in source.served.items():
            assert after[key] == rows, key


def test_rollback_on_restored_history(pg_server, new_db, tmp_path, source):
    ids, served = source.ids, source.served
    with _restored(pg_server, new_db, tmp_path, source, "exit_on_error") as restored:
        # The history was OLS (automatic) then ridge (specific): a rollback must go back to OLS.
        row = restored.execute(
            "SELECT project, strategy, algorithm, model_id FROM ml_stack.deploy('diabetes', 'rollback')").fetchone()
        assert row == ("diabetes", "rollback", "linear", ids["ols"])
        assert serving_state(restored)[("project", "diabetes")] == served[("model", ids["ols"])]
        # OLS is now the project's first deployment again: nothing left to roll back to.
        with pytest.raises(errors.ObjectNotInPrerequisiteState, match="nothing to roll back to"):
            restored.execute("SELECT * FROM ml_stack.deploy('diabetes', 'rollback')")
        # The restored metrics still drive deploy decisions: best_score picks the better r2 of the source.
        r2 = dict(source.conn.execute("SELECT id, (metrics ->> 'r2')::float8 FROM ml_stack.models"
                                      " WHERE id IN (%s, %s)", (ids["ols"], ids["ridge"])).fetchall())
        best = restored.execute("SELECT model_id FROM ml_stack.deploy('diabetes', 'best_score')").fetchone()[0]
        assert best == max(r2, key=r2.get)


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "pg_restore --jobs loads the registry tables in parallel: snapshots, models and deployments are COPYed before "
    "projects has committed, and their foreign keys to projects reject every row (without --exit-on-error only "
    "the projects survive); the FK order pg_dump gives extension configuration tables is not kept by --jobs"))
def test_parallel_restore(pg_server, new_db, tmp_path, source):
    with _restored(pg_server, new_db, tmp_path, source, "jobs") as restored:
        assert registry_state(restored) == source.registry
        assert serving_state(restored) == source.served


def test_text_models_and_vectorizers_survive_a_restore(pg_server, new_db, tmp_path, conn):
    """0.3.0: a naive Bayes model over a vocabulary fitted at training, a fitted vectorizer and array features
    serve the same predictions after pg_restore, and embed() by the vectorizer's name gives the same vectors."""
    conn.execute("CREATE TABLE heads (title text, n integer, label integer)")
    conn.execute("INSERT INTO heads SELECT CASE WHEN g % 3 = 0 THEN 'you will never guess what this cat did ' || g "
                 "ELSE 'parliament votes on the budget for ' || (g % 11) || ' regions' END, g % 5, (g % 3 = 0)::integer "
                 "FROM generate_series(1, 300) AS g")
    conn.execute("CREATE TABLE arrays AS SELECT ARRAY[g, g % 7]::real[] AS v, 3.0 * g - (g % 7) AS y "
                 "FROM generate_series(1, 50) AS g")
    train(conn, "heads", "classification", "heads", "label", algorithm="naive_bayes",
          preprocess={"title": {"vectorize": "tfidf", "options": {"min_df": 2}}})
    train(conn, "arrays", "regression", "arrays", "y")
    conn.execute("SELECT ml_stack.fit_vectorizer('titles', 'heads', 'title', 'counts')")
    probe = ("SELECT ml_stack.predict_proba_row('heads', to_jsonb(h)), ml_stack.embed('titles', h.title) "
             "FROM heads AS h ORDER BY h.title LIMIT 40")
    arrays = "SELECT ml_stack.predict_row('arrays', to_jsonb(a)) FROM arrays AS a ORDER BY a.y"
    before = (conn.execute(probe).fetchall(), conn.execute(arrays).fetchall(), registry_state(conn))
    with pg_server.connect(_restore(pg_server, new_db, tmp_path, conn, "exit_on_error")) as restored:
        after = (restored.execute(probe).fetchall(), restored.execute(arrays).fetchall(), registry_state(restored))
        terms = "SELECT vectorizer_id, term, idx, df, idf FROM ml_stack.vectorizer_terms ORDER BY 1, 2"
        assert restored.execute(terms).fetchall() == conn.execute(terms).fetchall()
    assert after == before


@pytest.mark.parametrize("method", ["exit_on_error", "plain"])
def test_exposed_endpoints_and_their_grants_survive_a_restore(pg_server, new_db, tmp_path, conn, method):
    """0.4.0: the API schema, its endpoints, their grants (the roles exist before the restore: roles belong to the
    cluster) and the typed serving functions come back, answer the same, and follow a deployment made after."""
    anon = f"web_anon_{uuid.uuid4().hex[:8]}"
    conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(anon)))
    try:
        train_every_kind(conn)
        for project in ("diabetes", "iris"):
            conn.execute("SELECT ml_stack.expose(%s, 'api', %s)", (project, [anon]))
        as_anon = sql.SQL("SET ROLE {}").format(sql.Identifier(anon))
        grants = ("SELECT p.oid::regprocedure::text, p.proacl::text[], p.prosrc FROM pg_proc AS p "
                  "WHERE p.pronamespace IN ('api'::regnamespace, 'ml_stack'::regnamespace) AND p.proname ~ "
                  "'^(predict|classify|_project_)' ORDER BY 1")

        def state(c):
            c.execute(as_anon)
            answers = c.execute("SELECT api.predict_diabetes(0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09, 0.1), "
                                "api.classify_iris(5.1, 3.5, 1.4, 0.2)").fetchone()
            c.execute("RESET ROLE")
            return answers, c.execute(grants).fetchall(), c.execute("SELECT * FROM ml_stack.endpoints ORDER BY 1").fetchall()

        before = state(conn)
        with pg_server.connect(_restore(pg_server, new_db, tmp_path, conn, method)) as restored:
            assert state(restored) == before
            ridge = restored.execute("SELECT id FROM ml_stack.models WHERE algorithm = 'ridge'").fetchone()[0]
            ols = restored.execute("SELECT id FROM ml_stack.models WHERE algorithm = 'linear' AND task = 'regression'"
                                   ).fetchone()[0]
            restored.execute("SELECT * FROM ml_stack.deploy(%s::bigint)", (ols,))
            assert ridge != ols
            after = state(restored)[0][0]
            assert after == restored.execute(f"SELECT ml_stack.predict({ols}::bigint, ARRAY[0.01, 0.02, 0.03, 0.04, "
                                             "0.05, 0.06, 0.07, 0.08, 0.09, 0.1])").fetchone()[0] != before[0][0]
            restored.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(anon)))
    finally:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(anon)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(anon)))
