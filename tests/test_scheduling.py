"""Scheduled retraining with pg_cron (issue 4; DESIGN "Cron helpers"; docs/design-notes/pg-cron.md).

pg_cron runs jobs only in ``cron.database_name`` (``ml_stack_cron`` in the harness), so the tests that schedule
work there, on a clean ml_stack and public schema per test (fixture ``cron_db``), and leave that shared database
as they found it (no pg_cron, no ml_stack). Fast tests CALL a job's command themselves, as pg_cron would; one
test waits for a real pg_cron tick (pg_cron 1.4: one minute is the finest schedule) and checks everything that
only a real run shows there: a good job and a failing job in the same minute.

``conn`` databases have no pg_cron extension (and are not cron.database_name): ml_stack works there, and the
helpers say why they cannot schedule.
"""

import json
import re
import time
import uuid
from datetime import datetime, timedelta

import psycopg
import pytest
from psycopg import errors, sql
from psycopg.rows import dict_row

import pgserver
from datasets import load_sklearn_dataset
from helpers import one_row, train

NEVER = "0 3 1 1 *"  # 03:00 on January 1st: a schedule that does not fire while a test runs
TICK_DEADLINE = 75  # seconds to wait for one pg_cron tick (design note)


# --------------------------------------------------------------------------------------------------------------
# fixtures and helpers


def _reset_cron_database(c):
    """The cron database as the harness made it, plus pg_cron: no jobs, no ml_stack, an empty public schema."""
    if c.execute("SELECT count(*) FROM pg_extension WHERE extname = 'pg_cron'").fetchone()[0]:
        c.execute("SELECT cron.unschedule(jobid) FROM cron.job")
        c.execute("DELETE FROM cron.job_run_details")
    c.execute("DROP EXTENSION IF EXISTS ml_stack CASCADE")
    c.execute("DROP SCHEMA IF EXISTS ml_stack CASCADE")  # the compiled predictors are not extension members
    c.execute("DROP SCHEMA public CASCADE")
    c.execute("CREATE SCHEMA public")


@pytest.fixture(scope="module")
def cron_server_db(pg_server):
    """pg_cron created in the harness's cron database for this module; the database left clean afterwards."""
    with pg_server.connect(pg_server.cron_dbname) as c:
        c.execute("CREATE EXTENSION IF NOT EXISTS pg_cron")
    yield pg_server.cron_dbname
    with pg_server.connect(pg_server.cron_dbname) as c:
        _reset_cron_database(c)
        c.execute("DROP EXTENSION IF EXISTS pg_cron")  # tests/test_harness.py creates it itself


@pytest.fixture
def cron_db(pg_server, cron_server_db):
    """Autocommit connection to the cron database with a fresh ml_stack and pg_cron, and no jobs."""
    with pg_server.connect(cron_server_db) as c:
        _reset_cron_database(c)
        c.execute("CREATE EXTENSION IF NOT EXISTS pg_cron")
        c.execute("CREATE EXTENSION ml_stack")
        c.execute("SET client_min_messages = warning")
        yield c
        _reset_cron_database(c)


@pytest.fixture
def tick_db(tick_server):
    """As cron_db, on the server of the tests that wait for a real pg_cron tick (conftest.tick_server)."""
    with tick_server.connect(tick_server.cron_dbname) as c:
        _reset_cron_database(c)
        c.execute("CREATE EXTENSION ml_stack")
        c.execute("SET client_min_messages = warning")
        yield c
        _reset_cron_database(c)


def rows(conn, query, params=None):
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, params).fetchall()


def schedule(conn, job_name, schedule_, project, **kwargs):
    """ml_stack.schedule_training(...) with named arguments; returns the jobid."""
    types = {"algorithm": "text", "hyperparams": "jsonb", "test_size": "real", "test_sampling": "text",
             "preprocess": "jsonb", "engine": "text", "automatic_deploy": "boolean"}
    args = [sql.Literal(job_name), sql.Literal(schedule_), sql.Literal(project)]
    for name, value in kwargs.items():
        if isinstance(value, (dict, list)):
            value = json.dumps(value)
        args.append(sql.SQL("{} => {}::{}").format(sql.Identifier(name), sql.Literal(value), sql.SQL(types[name])))
    q = sql.SQL("SELECT ml_stack.schedule_training({})").format(sql.SQL(", ").join(args))
    return conn.execute(q).fetchone()[0]


def job(conn, job_name):
    return one_row(conn, "SELECT * FROM cron.job WHERE jobname = %s", (job_name,))


def run_job(conn, job_name):
    """Run a job's command the way pg_cron does: the command text, as one top-level statement."""
    conn.execute(job(conn, job_name)["command"])


def history(conn):
    return rows(conn, "SELECT * FROM ml_stack.training_runs ORDER BY id")


def deployed_model(conn, project):
    return conn.execute("SELECT model_id FROM ml_stack.deployed_models WHERE project_name = %s",
                        (project,)).fetchone()[0]


def training_jobs(conn):
    return {r["job_name"]: r for r in rows(conn, "SELECT * FROM ml_stack.training_jobs")}


def model_count(conn):
    return conn.execute("SELECT count(*) FROM ml_stack.models").fetchone()[0]


# A label that the features explain exactly (up to rounding): any model retrained on it beats the old one.
EXACT_TARGET = "UPDATE diabetes SET target = 150 + 900 * bmi + 400 * bp - 300 * s5"
# A label that no feature explains: a model retrained on it is worse than the deployed one.
NOISE_TARGET = "UPDATE diabetes SET target = 150 + 80 * sin(1000 * (age + 3 * s1 + 7 * s3))"


# --------------------------------------------------------------------------------------------------------------
# scheduling, rescheduling, unscheduling (no tick)


def test_schedule_creates_a_pg_cron_job_with_one_call_command(cron_db):
    load_sklearn_dataset(cron_db, "diabetes")
    train(cron_db, "diabetes", "regression", "diabetes", "target")
    jobid = schedule(cron_db, "diabetes_nightly", "0 3 * * *", "diabetes", algorithm="ridge",
                     hyperparams={"alpha": 0.5}, test_size=0.2, test_sampling="last")
    j = job(cron_db, "diabetes_nightly")
    assert j["jobid"] == jobid
    assert j["schedule"] == "0 3 * * *"
    assert j["database"] == "ml_stack_cron" and j["username"] == "postgres" and j["active"] is True
    assert j["command"] == ("CALL ml_stack.run_training(job_name => 'diabetes_nightly', project_name => 'diabetes', "
                            "algorithm => 'ridge', hyperparams => '{\"alpha\": 0.5}', test_size => '0.2', "
                            "test_sampling => 'last')")
    view = training_jobs(cron_db)
    assert list(view) == ["diabetes_nightly"]
    assert {k: view["diabetes_nightly"][k] for k in ("jobid", "schedule", "project", "active", "username",
                                                     "last_run_start", "last_run_status", "model_id")} == {
        "jobid": jobid, "schedule": "0 3 * * *", "project": "diabetes", "active": True, "username": "postgres",
        "last_run_start": None, "last_run_status": None, "model_id": None}
    # scheduling trains nothing
    assert model_count(cron_db) == 1 and len(history(cron_db)) == 1


def test_hostile_names_are_quoted_in_the_command(cron_db):
    """Quotes, backslashes and a fake argument inside the names stay data: the command trains the right
    project, and training_jobs reads the project name back from the command."""
    project = "it's a \\ project_name => 'x'"
    job_name = "job', project_name => 'diabetes"
    load_sklearn_dataset(cron_db, "diabetes")
    train(cron_db, project, "regression", "diabetes", "target")
    train(cron_db, "diabetes", "regression", "diabetes", "target")
    schedule(cron_db, job_name, NEVER, project)
    assert training_jobs(cron_db)[job_name]["project"] == project
    run_job(cron_db, job_name)
    run = history(cron_db)[-1]
    assert (run["job_name"], run["project_name"], run["status"]) == (job_name, project, "succeeded")
    assert cron_db.execute("SELECT p.name FROM ml_stack.models AS m JOIN ml_stack.projects AS p"
                           " ON p.id = m.project_id WHERE m.id = %s", (run["model_id"],)).fetchone()[0] == project


def test_same_name_reschedules_in_place(cron_db):
    load_sklearn_dataset(cron_db, "diabetes")
    train(cron_db, "diabetes", "regression", "diabetes", "target")
    first = schedule(cron_db, "retrain", "0 3 * * *", "diabetes")
    other = schedule(cron_db, "other", NEVER, "diabetes")
    again = schedule(cron_db, "retrain", "30 4 * * 0", "diabetes", algorithm="ridge")
    assert again == first != other
    assert cron_db.execute("SELECT count(*) FROM cron.job WHERE jobname = 'retrain'").fetchone()[0] == 1
    j = job(cron_db, "retrain")
    assert j["schedule"] == "30 4 * * 0"
    assert j["command"].endswith("project_name => 'diabetes', algorithm => 'ridge')")
    assert training_jobs(cron_db)["retrain"]["schedule"] == "30 4 * * 0"


def test_unschedule_removes_the_job_and_keeps_the_history(cron_db):
    load_sklearn_dataset(cron_db, "diabetes")
    train(cron_db, "diabetes", "regression", "diabetes", "target")
    schedule(cron_db, "a", NEVER, "diabetes")
    kept = schedule(cron_db, "b", NEVER, "diabetes")
    run_job(cron_db, "a")
    assert cron_db.execute("SELECT ml_stack.unschedule_training('a')").fetchone()[0] is True
    assert [r["jobid"] for r in rows(cron_db, "SELECT jobid FROM cron.job")] == [kept]
    assert list(training_jobs(cron_db)) == ["b"]
    assert [(r["job_name"], r["status"]) for r in history(cron_db)] == [(None, "succeeded"), ("a", "succeeded")]
    with pytest.raises(errors.UndefinedObject, match='no training job named "a"') as e:
        cron_db.execute("SELECT ml_stack.unschedule_training('a')")
    assert "ml_stack.training_jobs" in e.value.diag.message_hint


def test_jobs_ml_stack_did_not_make_are_left_alone(cron_db):
    load_sklearn_dataset(cron_db, "diabetes")
    train(cron_db, "diabetes", "regression", "diabetes", "target")
    theirs = cron_db.execute("SELECT cron.schedule('vacuum_nightly', '0 2 * * *', 'VACUUM')").fetchone()[0]
    with pytest.raises(errors.DuplicateObject, match='pg_cron job "vacuum_nightly" exists and is not an ml_stack'):
        schedule(cron_db, "vacuum_nightly", NEVER, "diabetes")
    with pytest.raises(errors.WrongObjectType, match="not an ml_stack training job"):
        cron_db.execute("SELECT ml_stack.unschedule_training('vacuum_nightly')")
    assert rows(cron_db, "SELECT jobid, schedule, command FROM cron.job") == [
        {"jobid": theirs, "schedule": "0 2 * * *", "command": "VACUUM"}]
    assert training_jobs(cron_db) == {}


def test_schedule_checks_its_arguments_before_making_a_job(cron_db):
    load_sklearn_dataset(cron_db, "diabetes")
    model_id = train(cron_db, "diabetes", "regression", "diabetes", "target")["model_id"]
    cron_db.execute("SELECT ml_stack.import_model('copy', ml_stack.export_model(%s::bigint))", (model_id,))
    cases = [
        (("j", "0 3 * * *", "nope"), {}, errors.UndefinedObject, 'project "nope" does not exist'),
        (("j", "0 3 * * *", "copy"), {}, errors.ObjectNotInPrerequisiteState, "no training relation"),
        (("j", "30 seconds", "diabetes"), {}, errors.InvalidParameterValue, "invalid schedule: 30 seconds"),
        (("j", "", "diabetes"), {}, errors.InvalidParameterValue, "schedule is required"),
        (("j", "0 3 * * *", "diabetes"), {"algorithm": "forest"}, errors.InvalidParameterValue,
         'unknown algorithm "forest"'),
        (("j", "0 3 * * *", "diabetes"), {"algorithm": "xgboost", "engine": "sql"}, errors.FeatureNotSupported,
         "the sql engine has no xgboost"),
        (("j", "0 3 * * *", "diabetes"), {"hyperparams": [1]}, errors.InvalidParameterValue, "JSON object"),
        (("j", "0 3 * * *", "diabetes"), {"test_sampling": "middle"}, errors.InvalidParameterValue,
         'unknown test_sampling "middle"'),
        (("j" * 64, "0 3 * * *", "diabetes"), {}, errors.InvalidParameterValue, "longer than 63 bytes"),
        (("", "0 3 * * *", "diabetes"), {}, errors.InvalidParameterValue, "job_name is required"),
    ]
    for args, kwargs, error, message in cases:
        with pytest.raises(error, match=message) as e:
            schedule(cron_db, *args, **kwargs)
        assert e.value.diag.message_hint, message
    # pg_cron's own schedule check, with ours as the hint
    with pytest.raises(errors.InvalidParameterValue) as e:
        schedule(cron_db, "j", "61 * * * *", "diabetes")
    assert "'0 3 * * *'" in e.value.diag.message_hint
    assert cron_db.execute("SELECT count(*) FROM cron.job").fetchone()[0] == 0


# --------------------------------------------------------------------------------------------------------------
# the job's command, run by hand


def test_retrain_uses_the_deployed_models_settings_and_deploys_only_a_better_model(cron_db):
    load_sklearn_dataset(cron_db, "diabetes")
    linear = train(cron_db, "diabetes", "regression", "diabetes", "target", test_size=0.2, test_sampling="last")
    ridge = train(cron_db, "diabetes", algorithm="ridge", hyperparams={"alpha": 0.01}, test_size=0.2,
                  test_sampling="last", automatic_deploy=False)
    cron_db.execute("SELECT * FROM ml_stack.deploy(%s::bigint)", (ridge["model_id"],))
    schedule(cron_db, "nightly", NEVER, "diabetes")

    # Same rows: the deployed model's algorithm, hyperparameters and split; the same score, so not deployed.
    run_job(cron_db, "nightly")
    same = history(cron_db)[-1]
    assert {k: same[k] for k in ("job_name", "project_name", "trigger", "status", "algorithm", "hyperparams",
                                 "deployed", "error", "sqlstate")} == {
        "job_name": "nightly", "project_name": "diabetes", "trigger": "manual", "status": "succeeded",
        "algorithm": "ridge", "hyperparams": {"alpha": 0.01}, "deployed": False, "error": None, "sqlstate": None}
    assert same["model_id"] == ridge["model_id"] + 1 and same["started_at"] < same["finished_at"]
    m = one_row(cron_db, "SELECT m.algorithm, m.hyperparams, m.metrics, s.test_size, s.test_sampling, s.test_rows,"
                         " s.relation_name FROM ml_stack.models AS m JOIN ml_stack.snapshots AS s"
                         " ON s.id = m.snapshot_id WHERE m.id = %s", (same["model_id"],))
    assert (m["algorithm"], m["hyperparams"], m["test_sampling"], m["test_rows"], m["relation_name"]) == (
        "ridge", {"alpha": 0.01}, "last", 89, "public.diabetes")  # ceil(442 * 0.2) = 89
    assert m["metrics"]["r2"] == ridge["metrics"]["r2"]
    assert deployed_model(cron_db, "diabetes") == ridge["model_id"]
    # the project's relation stays as the user gave it
    assert cron_db.execute("SELECT relation_name FROM ml_stack.projects").fetchone()[0] == "diabetes"

    # The label changed and the features now explain it: the retrained model is better, and deployed.
    cron_db.execute(EXACT_TARGET)
    run_job(cron_db, "nightly")
    better = history(cron_db)[-1]
    assert (better["status"], better["deployed"], better["model_id"]) == ("succeeded", True, same["model_id"] + 1)
    assert deployed_model(cron_db, "diabetes") == better["model_id"]
    assert cron_db.execute("SELECT (metrics->>'r2')::float8 FROM ml_stack.models WHERE id = %s",
                           (better["model_id"],)).fetchone()[0] > 0.999

    # Now noise: no feature explains the label. On today's rows the deployed model (fitted to the old label) does
    # worse than the retrained one, which is deployed: the decision is taken on the same rows (0.5.0).
    cron_db.execute(NOISE_TARGET)
    run_job(cron_db, "nightly")
    noise = history(cron_db)[-1]
    assert (noise["status"], noise["deployed"], noise["model_id"]) == ("succeeded", True, better["model_id"] + 1)
    # Again on the same rows: the same fit, no better than the deployed one: it stays undeployed.
    run_job(cron_db, "nightly")
    worse = history(cron_db)[-1]
    assert (worse["status"], worse["deployed"], worse["model_id"]) == ("succeeded", False, noise["model_id"] + 1)
    assert deployed_model(cron_db, "diabetes") == noise["model_id"]

    # An explicit algorithm: its own settings when the project has such a model, the split of the deployed one.
    schedule(cron_db, "linear_weekly", NEVER, "diabetes", algorithm="linear")
    run_job(cron_db, "linear_weekly")
    lin = history(cron_db)[-1]
    assert (lin["algorithm"], lin["hyperparams"], lin["status"]) == ("linear", {}, "succeeded")
    assert cron_db.execute("SELECT s.test_rows FROM ml_stack.models AS m JOIN ml_stack.snapshots AS s"
                           " ON s.id = m.snapshot_id WHERE m.id = %s", (lin["model_id"],)).fetchone()[0] == 89
    # the view shows the last run of each job (CALLed by hand: from ml_stack's history)
    view = training_jobs(cron_db)
    assert (view["nightly"]["run_id"], view["nightly"]["model_id"], view["nightly"]["deployed"],
            view["nightly"]["last_run_status"]) == (worse["id"], worse["model_id"], False, "succeeded")
    # and why it was not deployed: scored beside the deployed model on the same, current rows (0.5.0)
    assert re.fullmatch(rf"not deployed: r2 -?[\d.]+ on this split <= -?[\d.]+ of the deployed model {noise['model_id']} "
                        r"on this split", view["nightly"]["deploy_decision"]), view["nightly"]["deploy_decision"]
    assert view["linear_weekly"]["model_id"] == lin["model_id"]
    assert linear["model_id"] < ridge["model_id"]


def test_failed_runs_are_recorded_and_change_nothing_else(cron_db):
    load_sklearn_dataset(cron_db, "diabetes")
    load_sklearn_dataset(cron_db, "breast_cancer")
    reg = train(cron_db, "diabetes", "regression", "diabetes", "target")
    clf = train(cron_db, "cancer", "classification", "breast_cancer", "target")
    jobid = schedule(cron_db, "diabetes_job", NEVER, "diabetes")
    schedule(cron_db, "cancer_job", NEVER, "cancer")
    models_before = model_count(cron_db)

    # the relation is gone
    cron_db.execute("DROP TABLE diabetes")
    with pytest.raises(errors.UndefinedTable, match='relation "diabetes" does not exist'):
        run_job(cron_db, "diabetes_job")
    # the data is now one class
    cron_db.execute("UPDATE breast_cancer SET target = 1")
    with pytest.raises(errors.InvalidParameterValue,
                       match=r'label "target" has a single class \(1\): classification needs at least two'):
        run_job(cron_db, "cancer_job")

    runs = history(cron_db)[-2:]
    assert [(r["job_name"], r["project_name"], r["status"], r["sqlstate"], r["model_id"], r["deployed"])
            for r in runs] == [("diabetes_job", "diabetes", "failed", "42P01", None, None),
                               ("cancer_job", "cancer", "failed", "22023", None, None)]
    assert runs[0]["error"] == 'relation "diabetes" does not exist'
    assert runs[1]["error"] == 'label "target" has a single class (1): classification needs at least two'
    assert all(r["finished_at"] > r["started_at"] for r in runs)
    assert (runs[0]["algorithm"], runs[1]["algorithm"]) == ("linear", "linear")  # what it tried to train
    # nothing trained, the deployed models stay, the schedules stay
    assert model_count(cron_db) == models_before
    assert deployed_model(cron_db, "diabetes") == reg["model_id"]
    assert deployed_model(cron_db, "cancer") == clf["model_id"]
    assert job(cron_db, "diabetes_job")["jobid"] == jobid and job(cron_db, "diabetes_job")["active"] is True
    view = training_jobs(cron_db)
    assert (view["diabetes_job"]["last_run_status"], view["diabetes_job"]["last_run_message"],
            view["diabetes_job"]["model_id"]) == ("failed", 'relation "diabetes" does not exist', None)

    # the data is back: the next run of the same job succeeds
    load_sklearn_dataset(cron_db, "diabetes")
    run_job(cron_db, "diabetes_job")
    assert (history(cron_db)[-1]["status"], history(cron_db)[-1]["model_id"]) == ("succeeded", models_before + 1)


def test_runs_whose_process_died_are_marked_failed_by_the_next_run(cron_db):
    """A run cancelled with its job (unschedule) or killed never finishes its row: the next run says so."""
    load_sklearn_dataset(cron_db, "diabetes")
    train(cron_db, "diabetes", "regression", "diabetes", "target")
    schedule(cron_db, "nightly", NEVER, "diabetes")
    with pytest.raises(psycopg.OperationalError):
        with psycopg.connect(cron_db.info.dsn, autocommit=True) as doomed:
            pid = doomed.info.backend_pid
            doomed.execute("INSERT INTO ml_stack.training_runs (project_name, job_name, trigger, status)"
                           " VALUES ('diabetes', 'nightly', 'cron', 'running')")
            cron_db.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))
            doomed.execute("SELECT 1")
    stale = history(cron_db)[-1]
    assert (stale["status"], stale["pid"]) == ("running", pid)
    run_job(cron_db, "nightly")
    before, after = history(cron_db)[-2:]
    assert (before["id"], before["status"], before["error"], before["finished_at"]) == (
        stale["id"], "failed", "the run did not finish: its server process ended first", None)
    assert after["status"] == "succeeded"


def test_project_deleted_after_scheduling(cron_db):
    """A job of a deleted project fails, recorded under the project's name; the project's own history went with
    it (ON DELETE CASCADE, like its models and deployments)."""
    load_sklearn_dataset(cron_db, "diabetes")
    train(cron_db, "diabetes", "regression", "diabetes", "target")
    schedule(cron_db, "nightly", NEVER, "diabetes")
    run_job(cron_db, "nightly")
    assert len(history(cron_db)) == 2
    cron_db.execute("DELETE FROM ml_stack.projects WHERE name = 'diabetes'")
    assert history(cron_db) == []
    with pytest.raises(errors.UndefinedObject, match='project "diabetes" does not exist'):
        run_job(cron_db, "nightly")
    (run,) = history(cron_db)
    assert (run["project_id"], run["project_name"], run["status"], run["algorithm"]) == (
        None, "diabetes", "failed", None)


def test_run_training_inside_a_transaction_block_is_refused(cron_db):
    """pg_cron runs the command as one top-level statement; inside a transaction block the COMMIT that puts the
    run on record is impossible, and nothing is left behind."""
    load_sklearn_dataset(cron_db, "diabetes")
    train(cron_db, "diabetes", "regression", "diabetes", "target")
    schedule(cron_db, "nightly", NEVER, "diabetes")
    command = job(cron_db, "nightly")["command"]
    with pytest.raises(errors.InvalidTransactionTermination):
        with cron_db.transaction():
            cron_db.execute(command)
    assert len(history(cron_db)) == 1 and model_count(cron_db) == 1


# --------------------------------------------------------------------------------------------------------------
# manual trains, and ml_stack without pg_cron (``conn``: a database without the pg_cron extension)


def test_manual_trains_are_recorded_and_failed_ones_leave_no_trace(conn):
    load_sklearn_dataset(conn, "diabetes")
    t0 = conn.execute("SELECT clock_timestamp()").fetchone()[0]
    first = train(conn, "diabetes", "regression", "diabetes", "target")
    second = train(conn, "diabetes", algorithm="ridge", hyperparams={"alpha": 100})
    with pytest.raises(errors.UndefinedColumn):
        train(conn, "other", "regression", "diabetes", "no_such_label")
    with pytest.raises(errors.InvalidParameterValue):
        train(conn, "diabetes", algorithm="ridge", hyperparams={"alpha": -1})
    # two trains in one statement: each run starts when the previous one ended
    conn.execute("""
        DO $$ BEGIN
            PERFORM * FROM ml_stack.train('loop', 'regression', 'diabetes', 'target');
            PERFORM * FROM ml_stack.train('loop', algorithm => 'ridge');
        END $$""")
    runs = history(conn)
    assert [(r["project_name"], r["job_name"], r["trigger"], r["status"], r["algorithm"], r["hyperparams"],
             r["model_id"], r["deployed"], r["error"]) for r in runs] == [
        ("diabetes", None, "manual", "succeeded", "linear", {}, first["model_id"], True, None),
        ("diabetes", None, "manual", "succeeded", "ridge", {"alpha": 100}, second["model_id"], False,
         None),
        ("loop", None, "manual", "succeeded", "linear", {}, second["model_id"] + 1, True, None),
        ("loop", None, "manual", "succeeded", "ridge", {}, second["model_id"] + 2, runs[3]["deployed"], None),
    ]
    assert second["deployed"] is False  # ridge, alpha 100: far below least squares
    assert t0 <= runs[0]["started_at"] < runs[0]["finished_at"] <= runs[1]["started_at"] < runs[1]["finished_at"]
    assert runs[2]["finished_at"] <= runs[3]["started_at"] < runs[3]["finished_at"]
    assert {r["username"] for r in runs} == {"postgres"}
    # history follows the project: deleting it deletes its runs
    conn.execute("DELETE FROM ml_stack.projects WHERE name = 'loop'")
    assert [r["project_name"] for r in history(conn)] == ["diabetes", "diabetes"]


def test_without_pg_cron_in_this_database(conn):
    """The harness's server preloads pg_cron for database ml_stack_cron: this one cannot schedule, and says why
    and what to do; the rest of ml_stack, the view and the job's procedure work."""
    load_sklearn_dataset(conn, "diabetes")
    first = train(conn, "diabetes", "regression", "diabetes", "target")
    dbname = conn.info.dbname
    for statement in ("SELECT ml_stack.schedule_training('j', '0 3 * * *', 'diabetes')",
                      "SELECT ml_stack.unschedule_training('j')"):
        with pytest.raises(errors.ObjectNotInPrerequisiteState) as e:
            conn.execute(statement)
        diag = e.value.diag
        assert diag.message_primary == (f'pg_cron is not usable in database "{dbname}": pg_cron runs its jobs in '
                                        f'database "ml_stack_cron" (cron.database_name), not in this database '
                                        f'"{dbname}"')
        for needed in ("shared_preload_libraries = 'pg_cron'", f"cron.database_name = '{dbname}'",
                       f"CREATE EXTENSION pg_cron in database {dbname}", "restart PostgreSQL"):
            assert needed in diag.message_hint
    assert conn.execute("SELECT count(*) FROM ml_stack.training_jobs").fetchone()[0] == 0
    # the job's procedure needs no pg_cron: a retrain on demand, recorded
    conn.execute("CALL ml_stack.run_training(NULL, 'diabetes')")
    run = history(conn)[-1]
    assert (run["job_name"], run["trigger"], run["status"], run["model_id"], run["deployed"]) == (
        None, "manual", "succeeded", first["model_id"] + 1, False)


def test_pg_cron_extension_not_created(cron_db):
    cron_db.execute("DROP EXTENSION pg_cron")
    load_sklearn_dataset(cron_db, "diabetes")
    train(cron_db, "diabetes", "regression", "diabetes", "target")
    with pytest.raises(errors.ObjectNotInPrerequisiteState,
                       match='pg_cron is not usable in database "ml_stack_cron": the pg_cron extension is not created'
                             ' in this database') as e:
        schedule(cron_db, "j", NEVER, "diabetes")
    assert "CREATE EXTENSION pg_cron in database ml_stack_cron" in e.value.diag.message_hint
    assert "shared_preload_libraries" in e.value.diag.message_hint
    assert cron_db.execute("SELECT count(*) FROM ml_stack.training_jobs").fetchone()[0] == 0
    # pg_cron added later: the view lists jobs with no reinstall of ml_stack
    cron_db.execute("CREATE EXTENSION pg_cron")
    jobid = schedule(cron_db, "j", NEVER, "diabetes")
    assert training_jobs(cron_db)["j"]["jobid"] == jobid


def test_pg_cron_not_preloaded():
    """A server without pg_cron in shared_preload_libraries: ml_stack installs and trains; scheduling says what
    to configure."""
    with pgserver.PgServer.start(prefix="ml_stack_nocron_") as server:
        with psycopg.connect(server.conninfo("postgres"), autocommit=True) as c:
            c.execute("CREATE DATABASE plain")
        with psycopg.connect(server.conninfo("plain"), autocommit=True) as c:
            c.execute("SET client_min_messages = warning")
            c.execute("CREATE EXTENSION ml_stack")
            load_sklearn_dataset(c, "diabetes")
            model_id = train(c, "diabetes", "regression", "diabetes", "target")["model_id"]
            with pytest.raises(errors.ObjectNotInPrerequisiteState) as e:
                c.execute("SELECT ml_stack.schedule_training('j', '0 3 * * *', 'diabetes')")
            assert e.value.diag.message_primary == ('pg_cron is not usable in database "plain": pg_cron is not '
                                                    'loaded: shared_preload_libraries does not include pg_cron')
            assert "cron.database_name = 'plain'" in e.value.diag.message_hint
            assert c.execute("SELECT count(*) FROM ml_stack.training_jobs").fetchone()[0] == 0
            assert [(r["model_id"], r["trigger"]) for r in history(c)] == [(model_id, "manual")]


def test_roles_without_rights_see_no_jobs_and_cannot_schedule(pg_server, cron_db):
    load_sklearn_dataset(cron_db, "diabetes")
    train(cron_db, "diabetes", "regression", "diabetes", "target")
    schedule(cron_db, "nightly", NEVER, "diabetes")
    role = f"ml_stack_app_{uuid.uuid4().hex[:8]}"
    ident = sql.Identifier(role)
    cron_db.execute(sql.SQL("CREATE ROLE {} LOGIN").format(ident))
    try:
        cron_db.execute(sql.SQL("GRANT USAGE ON SCHEMA ml_stack TO {}").format(ident))
        cron_db.execute(sql.SQL("GRANT SELECT ON ml_stack.training_jobs TO {}").format(ident))
        with psycopg.connect(host=pg_server.host, port=pg_server.port, user=role, dbname=cron_db.info.dbname,
                             autocommit=True) as app:
            # no USAGE on schema cron: no rows, not an error
            assert app.execute("SELECT * FROM ml_stack.training_jobs").fetchall() == []
            # the settings check is SECURITY DEFINER: not for PUBLIC
            with pytest.raises(errors.InsufficientPrivilege) as e:
                app.execute("SELECT ml_stack.schedule_training('mine', '0 3 * * *', 'diabetes')")
            assert "GRANT EXECUTE ON FUNCTION ml_stack._cron_problem()" in e.value.diag.message_hint
            cron_db.execute(sql.SQL("GRANT USAGE ON SCHEMA cron TO {}").format(ident))
            # pg_cron's row-level security: the postgres role's job is not this role's
            assert app.execute("SELECT * FROM ml_stack.training_jobs").fetchall() == []
    finally:
        cron_db.execute(sql.SQL("DROP OWNED BY {}").format(ident))
        cron_db.execute(sql.SQL("DROP ROLE {}").format(ident))


# --------------------------------------------------------------------------------------------------------------
# one real pg_cron tick


def cron_diagnostics(conn, pg_server) -> str:
    """What to know when pg_cron ran nothing: its launcher and every backend, its jobs and log, the server log's
    lines about cron."""
    activity = rows(conn, "SELECT pid, datname, usename, backend_type, state, wait_event_type, wait_event,"
                          " backend_start, left(query, 80) AS query FROM pg_stat_activity ORDER BY backend_start")
    jobs = rows(conn, "SELECT * FROM cron.job")
    runs = rows(conn, "SELECT * FROM cron.job_run_details ORDER BY runid")
    log = [line for line in pg_server.logfile.read_text(errors="replace").splitlines()
           if "cron" in line.lower() or "FATAL" in line or "PANIC" in line or "terminated" in line][-40:]
    return "\n".join([f"now: {datetime.now().astimezone()}", f"backends ({len(activity)}):",
                      *map(str, activity), "cron.job:", *map(str, jobs), "cron.job_run_details:", *map(str, runs),
                      "server log (cron, FATAL, PANIC, terminated):", *log])


def _wait_for_runs(conn, jobids, deadline):
    """Poll cron.job_run_details until every job in ``jobids`` has a finished run; return {jobid: run}."""
    while True:
        done = {r["jobid"]: r for r in rows(
            conn, "SELECT * FROM cron.job_run_details WHERE jobid = ANY(%s) AND end_time IS NOT NULL"
                  " ORDER BY runid", (list(jobids),))}
        if done.keys() == set(jobids) or time.monotonic() > deadline:
            return done
        conn.execute("SELECT pg_sleep(0.2)")


def test_real_pg_cron_tick_retrains_and_records_success_and_failure(tick_db, tick_server):
    """Two jobs run by pg_cron in the same minute: one retrains on improved data and deploys, the other fails on
    a dropped relation; ml_stack's history, pg_cron's log and training_jobs agree on both."""
    load_sklearn_dataset(tick_db, "diabetes")
    load_sklearn_dataset(tick_db, "diabetes", table="doomed")
    good = train(tick_db, "diabetes", "regression", "diabetes", "target")
    bad = train(tick_db, "doomed", "regression", "doomed", "target")
    tick_db.execute(EXACT_TARGET)  # the next retrain of diabetes beats the deployed model
    tick_db.execute("DROP TABLE doomed")
    scheduled_at = datetime.now().astimezone()
    good_job = schedule(tick_db, "good_every_minute", "* * * * *", "diabetes")
    bad_job = schedule(tick_db, "bad_every_minute", "* * * * *", "doomed")

    done = _wait_for_runs(tick_db, {good_job, bad_job}, time.monotonic() + TICK_DEADLINE)
    diagnostics = "" if len(done) == 2 else cron_diagnostics(tick_db, tick_server)
    view = training_jobs(tick_db)  # before unscheduling: the view lists scheduled jobs only
    schedules_after_the_run = {r["jobname"]: r["active"] for r in rows(tick_db, "SELECT * FROM cron.job")}
    for name in ("good_every_minute", "bad_every_minute"):
        tick_db.execute("SELECT ml_stack.unschedule_training(%s)", (name,))
    assert done.keys() == {good_job, bad_job}, f"no pg_cron run within {TICK_DEADLINE} s: {done}\n{diagnostics}"
    runs = {r["job_name"]: r for r in history(tick_db) if r["job_name"]}
    assert runs.keys() == {"good_every_minute", "bad_every_minute"}

    # the good job: pg_cron ran our procedure (same server process), it retrained and deployed
    g, gr = done[good_job], runs["good_every_minute"]
    assert (g["status"], g["return_message"]) == ("succeeded", "CALL")
    assert (gr["trigger"], gr["status"], gr["project_name"], gr["algorithm"], gr["deployed"], gr["error"]) == (
        "cron", "succeeded", "diabetes", "linear", True, None)
    # pg_cron's launcher stamps start_time once it has sent the command, which the job's process may already be
    # running: start_time came 0.7 ms after our started_at once. 5 ms of slack on each side
    slack = timedelta(milliseconds=5)
    assert gr["pid"] == g["job_pid"] and g["start_time"] - slack <= gr["started_at"] < gr["finished_at"] \
        <= g["end_time"] + slack
    assert g["start_time"] > scheduled_at
    assert gr["model_id"] > bad["model_id"] and deployed_model(tick_db, "diabetes") == gr["model_id"] != good[
        "model_id"]
    v = view["good_every_minute"]
    assert (v["jobid"], v["project"], v["active"], v["last_run_start"], v["last_run_end"], v["last_run_status"],
            v["last_run_message"], v["run_id"], v["model_id"], v["deployed"]) == (
        good_job, "diabetes", True, g["start_time"], g["end_time"], "succeeded", "CALL", gr["id"], gr["model_id"],
        True)

    # the failing job: recorded by ml_stack, and failed for pg_cron with the same error; nothing else changed
    b, br = done[bad_job], runs["bad_every_minute"]
    assert b["status"] == "failed"
    assert b["return_message"].startswith('ERROR:  relation "doomed" does not exist')
    assert (br["trigger"], br["status"], br["error"], br["sqlstate"], br["model_id"], br["deployed"]) == (
        "cron", "failed", 'relation "doomed" does not exist', "42P01", None, None)
    assert br["pid"] == b["job_pid"]
    assert deployed_model(tick_db, "doomed") == bad["model_id"]
    assert schedules_after_the_run == {"good_every_minute": True, "bad_every_minute": True}  # the schedule stayed
    v = view["bad_every_minute"]
    assert (v["last_run_status"], v["run_id"], v["model_id"], v["deployed"]) == ("failed", br["id"], None, None)
    assert v["last_run_message"] == b["return_message"]
    # only the two runs and the two manual trains: no second tick was recorded before the unschedule
    assert model_count(tick_db) == 3


def test_a_trainer_schedules_python_engine_retraining_without_being_a_superuser(pg_server, cron_db):
    """A login role with ml_stack_trainer (and, from a superuser, USAGE on schema cron and SELECT on its table)
    trains XGBoost, schedules its retraining and runs the job's command as pg_cron would as that user: the run
    is recorded, the model trained by the python engine."""
    cron_db.execute("CREATE EXTENSION IF NOT EXISTS ml_stack_python CASCADE")
    load_sklearn_dataset(cron_db, "diabetes")
    trainer = f"trainer_{uuid.uuid4().hex[:8]}"
    cron_db.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(trainer)))
    try:
        for grant in ("GRANT ml_stack_trainer TO {}", "GRANT USAGE ON SCHEMA cron TO {}", "GRANT USAGE ON SCHEMA public TO {}",
                      "GRANT SELECT ON diabetes TO {}"):
            cron_db.execute(sql.SQL(grant).format(sql.Identifier(trainer)))
        with psycopg.connect(host=pg_server.host, port=pg_server.port, user=trainer, dbname=cron_db.info.dbname,
                             autocommit=True) as t:
            t.execute("SET client_min_messages = warning")
            first = train(t, "diabetes", "regression", "diabetes", "target", algorithm="xgboost",
                          hyperparams={"n_estimators": 5})
            assert first["engine"] == "python"
            schedule(t, "nightly_xgb", NEVER, "diabetes")
            assert job(t, "nightly_xgb")["username"] == trainer
            run_job(t, "nightly_xgb")
            run = history(t)[-1]
            assert (run["job_name"], run["status"], run["algorithm"], run["error"]) == ("nightly_xgb", "succeeded",
                                                                                        "xgboost", None)
            assert t.execute("SELECT engine FROM ml_stack.models WHERE id = %s", (run["model_id"],)).fetchone()[0] == "python"
            t.execute("SELECT ml_stack.unschedule_training('nightly_xgb')")
    finally:
        cron_db.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(trainer)))
        cron_db.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(trainer)))
