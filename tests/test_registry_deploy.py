"""Registry and deploy semantics (DESIGN §3), serving visibility across sessions, and the SQL-level engineering
rules the serving path depends on (DESIGN §4).

Tests that write to the registry get a database of their own; the read-only checks at the end share one.
Regression runs on diabetes (442 rows, 10 features), classification on iris (150 rows, 3 classes): both train in
milliseconds on the SQL engine.
"""

import psycopg
import pytest
from psycopg.rows import dict_row

from datasets import feature_columns, load_sklearn_dataset
from helpers import one_row, private_database, train

DIABETES_COLUMNS = feature_columns("diabetes")
# One diabetes row as a predict() argument, in training column order.
X = "ARRAY[0.038, 0.05, 0.062, 0.022, -0.044, -0.035, -0.043, -0.003, 0.02, -0.018]::float8[]"


def deploy(conn, *args):
    """ml_stack.deploy(project[, strategy[, algorithm]]) or ml_stack.deploy(model_id); returns its row as a dict."""
    if len(args) == 1 and isinstance(args[0], int):
        return one_row(conn, "SELECT * FROM ml_stack.deploy(%s::bigint)", args)
    placeholders = ", ".join(["%s::text"] * len(args))
    return one_row(conn, f"SELECT * FROM ml_stack.deploy({placeholders})", args)


def deployed(conn, project):
    """Model id the project serves now (deployed_models), or None."""
    row = conn.execute("SELECT model_id FROM ml_stack.deployed_models WHERE project_name = %s", (project,)).fetchone()
    return row and row[0]


def deployments(conn, project):
    """The project's deployment history as (id, model_id, strategy), oldest first."""
    return conn.execute(
        "SELECT d.id, d.model_id, d.strategy FROM ml_stack.deployments AS d"
        " JOIN ml_stack.projects AS p ON p.id = d.project_id WHERE p.name = %s ORDER BY d.id", (project,)).fetchall()


def metric(conn, model_id, key):
    return conn.execute("SELECT (metrics->>%s)::float8 FROM ml_stack.models WHERE id = %s",
                        (key, model_id)).fetchone()[0]


def predict(conn, target, x=X):
    """ml_stack.predict by project name (str) or model id (int)."""
    cast = "bigint" if isinstance(target, int) else "text"
    return conn.execute(f"SELECT ml_stack.predict(%s::{cast}, {x})", (target,)).fetchone()[0]


def columns(conn, relation):
    return [r[0] for r in conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped"
        " ORDER BY attnum", (relation,))]


@pytest.fixture
def db(conn):
    load_sklearn_dataset(conn, "diabetes")
    load_sklearn_dataset(conn, "iris")
    return conn


# --- registry rows ---------------------------------------------------------------------------------------------

def test_train_creates_registry_rows(db):
    r = train(db, "p", "regression", "diabetes", "target")
    assert set(r) == {"project", "task", "algorithm", "engine", "model_id", "deployed", "metrics"}
    assert (r["project"], r["task"], r["algorithm"], r["engine"], r["deployed"]) == \
        ("p", "regression", "linear", "sql", True)
    assert {"r2", "mean_squared_error", "mean_absolute_error", "fit_time", "score_time"} <= set(r["metrics"])

    # the contract's columns (extra columns are welcome)
    assert {"id", "name", "task"} <= set(columns(db, "ml_stack.projects"))
    assert {"id", "project_id", "algorithm", "engine", "hyperparams", "metrics", "status", "created_at"} \
        <= set(columns(db, "ml_stack.models"))
    assert {"id", "project_id", "model_id", "strategy", "created_at"} <= set(columns(db, "ml_stack.deployments"))

    cur = db.cursor(row_factory=dict_row)
    project = cur.execute("SELECT * FROM ml_stack.projects").fetchall()
    assert len(project) == 1 and (project[0]["name"], project[0]["task"]) == ("p", "regression")

    model = cur.execute("SELECT * FROM ml_stack.models").fetchall()
    assert len(model) == 1
    model = model[0]
    assert model["id"] == r["model_id"] and model["project_id"] == project[0]["id"]
    assert (model["algorithm"], model["engine"], model["hyperparams"]) == ("linear", "sql", {})
    assert model["metrics"] == r["metrics"] and model["status"] == "successful" and model["created_at"]

    # the snapshot: what the model was trained on (DESIGN §2)
    snap = cur.execute("SELECT * FROM ml_stack.snapshots").fetchall()
    assert len(snap) == 1
    snap = snap[0]
    assert snap["project_id"] == project[0]["id"] and model["snapshot_id"] == snap["id"]
    assert db.execute("SELECT %s::regclass = 'diabetes'::regclass", (snap["relation_name"],)).fetchone()[0]
    assert snap["y_column_name"] == "target"
    assert [f["name"] for f in snap["features"]] == DIABETES_COLUMNS  # table order, label excluded
    assert all(f["type"] == "double precision" for f in snap["features"])
    assert (snap["rows"], snap["test_rows"], snap["train_rows"]) == (442, 111, 331)  # ceil(442 * 0.25)
    assert snap["test_sampling"] == "random" and snap["seed"] == project[0]["split_seed"]

    dep = cur.execute("SELECT * FROM ml_stack.deployments").fetchall()
    assert len(dep) == 1
    assert (dep[0]["project_id"], dep[0]["model_id"], dep[0]["strategy"]) == (project[0]["id"], r["model_id"],
                                                                              "automatic")


def test_deployed_models_view(db):
    first = train(db, "p", "regression", "diabetes", "target")["model_id"]
    train(db, "flowers", "classification", "iris", "target")
    assert columns(db, "ml_stack.deployed_models")[:6] == \
        ["project_name", "model_id", "algorithm", "engine", "metrics", "deployed_at"]
    rows = db.cursor(row_factory=dict_row).execute(
        "SELECT * FROM ml_stack.deployed_models ORDER BY project_name").fetchall()
    assert [r["project_name"] for r in rows] == ["flowers", "p"]
    p = rows[1]
    assert (p["model_id"], p["algorithm"], p["engine"]) == (first, "linear", "sql")
    assert p["metrics"]["r2"] == metric(db, first, "r2") and p["deployed_at"] is not None

    # one row per project: the newest deployment
    second = train(db, "p", algorithm="ridge", hyperparams={"alpha": 0.001}, automatic_deploy=False)["model_id"]
    deploy(db, second)
    assert db.execute("SELECT count(*) FROM ml_stack.deployed_models WHERE project_name = 'p'").fetchone()[0] == 1
    assert deployed(db, "p") == second


# --- automatic deploy ------------------------------------------------------------------------------------------

def test_automatic_deploy_regression_by_r2(db):
    # ridge with a huge alpha predicts about the mean (r2 ~ 0): a poor first model is still deployed
    weak = train(db, "p", "regression", "diabetes", "target", algorithm="ridge", hyperparams={"alpha": 1e6})
    assert weak["deployed"] and deployed(db, "p") == weak["model_id"]

    better = train(db, "p")  # ordinary least squares, same split
    assert better["metrics"]["r2"] > weak["metrics"]["r2"]
    assert better["deployed"] and deployed(db, "p") == better["model_id"]

    worse = train(db, "p", algorithm="ridge", hyperparams={"alpha": 1e4})
    assert worse["metrics"]["r2"] < better["metrics"]["r2"]
    assert not worse["deployed"] and deployed(db, "p") == better["model_id"]

    # same algorithm, same split: the same score does not beat the deployed model
    tie = train(db, "p")
    assert tie["metrics"]["r2"] == better["metrics"]["r2"]
    assert not tie["deployed"] and deployed(db, "p") == better["model_id"]

    assert [s for _, _, s in deployments(db, "p")] == ["automatic", "automatic"]
    assert [m for _, m, _ in deployments(db, "p")] == [weak["model_id"], better["model_id"]]


def test_automatic_deploy_classification_by_f1(db):
    # C = 1e-6 shrinks the weights to almost nothing: macro f1 falls far below the default C's
    weak = train(db, "c", "classification", "iris", "target", hyperparams={"C": 1e-6})
    assert weak["deployed"]
    better = train(db, "c")
    assert better["metrics"]["f1"] > weak["metrics"]["f1"]
    assert better["deployed"] and deployed(db, "c") == better["model_id"]
    worse = train(db, "c", hyperparams={"C": 1e-6})
    assert worse["metrics"]["f1"] < better["metrics"]["f1"]
    assert not worse["deployed"] and deployed(db, "c") == better["model_id"]


def test_automatic_deploy_false_never_deploys(db):
    first = train(db, "p", "regression", "diabetes", "target", automatic_deploy=False)
    assert not first["deployed"] and deployed(db, "p") is None
    assert deployments(db, "p") == []
    with pytest.raises(psycopg.Error, match="no deployed model") as info:
        predict(db, "p")
    assert info.value.diag.sqlstate == "PT503"

    # nor a better model over a deployed one
    weak = train(db, "q", "regression", "diabetes", "target", algorithm="ridge", hyperparams={"alpha": 1e6})
    better = train(db, "q", automatic_deploy=False)
    assert better["metrics"]["r2"] > weak["metrics"]["r2"]
    assert not better["deployed"] and deployed(db, "q") == weak["model_id"]


# --- deploy strategies -----------------------------------------------------------------------------------------

@pytest.fixture
def three_models(db):
    """Project 'p' with three regression models, none deployed: OLS, a near-OLS ridge, a very weak ridge."""
    ids = {}
    ids["linear"] = train(db, "p", "regression", "diabetes", "target", automatic_deploy=False)["model_id"]
    ids["ridge_good"] = train(db, "p", algorithm="ridge", hyperparams={"alpha": 0.01},
                              automatic_deploy=False)["model_id"]
    ids["ridge_bad"] = train(db, "p", algorithm="ridge", hyperparams={"alpha": 1e5},
                             automatic_deploy=False)["model_id"]
    return ids


def test_deploy_best_score(db, three_models):
    r2 = {name: metric(db, mid, "r2") for name, mid in three_models.items()}
    best = max(r2, key=r2.get)
    row = deploy(db, "p", "best_score")
    assert row == {"project": "p", "strategy": "best_score", "algorithm": best.split("_")[0],
                   "model_id": three_models[best]}
    assert deployed(db, "p") == three_models[best]

    # restricted to an algorithm: the best among those only
    best_ridge = max(["ridge_good", "ridge_bad"], key=r2.get)
    row = deploy(db, "p", "best_score", "ridge")
    assert (row["algorithm"], row["model_id"]) == ("ridge", three_models[best_ridge])
    # the default strategy is best_score
    assert deploy(db, "p")["model_id"] == three_models[best]


def test_deploy_best_score_classification_uses_f1(db):
    ids = [train(db, "c", "classification", "iris", "target", hyperparams=h, automatic_deploy=False)["model_id"]
           for h in ({"C": 1e-6}, {}, {"C": 1e-3})]
    f1 = {mid: metric(db, mid, "f1") for mid in ids}
    assert deploy(db, "c", "best_score")["model_id"] == max(ids, key=lambda m: (f1[m], m))


def test_deploy_most_recent(db, three_models):
    assert deploy(db, "p", "most_recent")["model_id"] == three_models["ridge_bad"]
    row = deploy(db, "p", "most_recent", "linear")
    assert row == {"project": "p", "strategy": "most_recent", "algorithm": "linear",
                   "model_id": three_models["linear"]}
    assert deployed(db, "p") == three_models["linear"]


def test_deploy_specific_model(db, three_models):
    train(db, "other", "regression", "diabetes", "target")
    row = deploy(db, three_models["ridge_bad"])
    assert row == {"project": "p", "strategy": "specific", "algorithm": "ridge",
                   "model_id": three_models["ridge_bad"]}
    assert deployed(db, "p") == three_models["ridge_bad"]
    assert deployed(db, "other") != three_models["ridge_bad"]  # the model's own project only


def test_rollback_walks_back_the_history(db, three_models):
    a, b, c = three_models["linear"], three_models["ridge_good"], three_models["ridge_bad"]
    for m in (a, b, c):
        deploy(db, m)

    row = deploy(db, "p", "rollback")
    assert row == {"project": "p", "strategy": "rollback", "algorithm": "ridge", "model_id": b}
    assert deployed(db, "p") == b and predict(db, "p") == predict(db, b)
    # twice in a row: further back, not back and forth between two models
    assert deploy(db, "p", "rollback")["model_id"] == a
    assert deployed(db, "p") == a

    # only the first deployment remains: nothing to roll back to, and nothing recorded
    history = deployments(db, "p")
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState) as info:
        deploy(db, "p", "rollback")
    assert "roll back" in info.value.diag.message_primary and info.value.diag.message_hint
    assert deployments(db, "p") == history and deployed(db, "p") == a

    # a new deployment after rollbacks: rolling back returns to what served before it
    deploy(db, c)
    assert deploy(db, "p", "rollback")["model_id"] == a


def test_rollback_of_automatic_deploys(db):
    first = train(db, "p", "regression", "diabetes", "target", algorithm="ridge", hyperparams={"alpha": 1e6})
    second = train(db, "p")
    assert second["deployed"]
    assert deploy(db, "p", "rollback")["model_id"] == first["model_id"]


def test_rollback_skips_redeploys_of_the_serving_model(db, three_models):
    # deploying the model that already serves (e.g. most_recent right after it was deployed) is recorded, but
    # rollback still returns to the model that served before it, never to itself
    a, b = three_models["linear"], three_models["ridge_good"]
    deploy(db, a)
    deploy(db, b)
    deploy(db, b)
    assert deploy(db, "p", "rollback")["model_id"] == a


def test_deployments_are_append_only_history(db, three_models):
    a, b, c = three_models["linear"], three_models["ridge_good"], three_models["ridge_bad"]
    expected = []
    for call, strategy in [(lambda: deploy(db, a), "specific"),
                           (lambda: deploy(db, "p", "best_score"), "best_score"),
                           (lambda: deploy(db, "p", "most_recent"), "most_recent"),
                           (lambda: deploy(db, b), "specific"),
                           (lambda: deploy(db, "p", "rollback"), "rollback")]:
        before = db.execute("SELECT * FROM ml_stack.deployments ORDER BY id").fetchall()
        model_id = call()["model_id"]
        after = db.execute("SELECT * FROM ml_stack.deployments ORDER BY id").fetchall()
        # earlier rows untouched, exactly one new row, the newest
        assert after[:-1] == before and len(after) == len(before) + 1
        expected.append((model_id, strategy))
        assert [(m, s) for _, m, s in deployments(db, "p")] == expected
    assert c == expected[2][0]  # most_recent picked the newest model
    # redeploying the same model still adds a row: the history is of deploy calls
    deploy(db, b)
    assert len(deployments(db, "p")) == len(expected) + 1


# --- retraining ------------------------------------------------------------------------------------------------

def test_retrain_with_only_the_project_name(db):
    first = train(db, "p", "regression", "diabetes", "target")
    again = train(db, "p")
    assert (again["project"], again["task"], again["algorithm"]) == ("p", "regression", "linear")
    snaps = db.cursor(row_factory=dict_row).execute(
        "SELECT relation_name, y_column_name, seed, test_rows, train_rows FROM ml_stack.snapshots ORDER BY id"
    ).fetchall()
    assert len(snaps) == 2 and snaps[0] == snaps[1]  # same relation, label, seed, split sizes
    # same seed, same split, same algorithm: the very same scores
    assert again["metrics"]["r2"] == first["metrics"]["r2"]
    assert again["metrics"]["mean_squared_error"] == first["metrics"]["mean_squared_error"]
    assert db.execute("SELECT count(*) FROM ml_stack.projects").fetchone()[0] == 1

    # test_size comes from the call, the split seed still from the project
    third = train(db, "p", test_size=0.5)
    snap = db.execute("SELECT seed, test_rows FROM ml_stack.snapshots WHERE id = "
                      "(SELECT snapshot_id FROM ml_stack.models WHERE id = %s)", (third["model_id"],)).fetchone()
    assert snap == (snaps[0]["seed"], 221)


def test_retrain_classification_keeps_task(db):
    train(db, "c", "classification", "iris", "target")
    again = train(db, "c", hyperparams={"C": 0.5})
    assert again["task"] == "classification" and "f1" in again["metrics"]


# --- serving follows the registry ------------------------------------------------------------------------------

def test_predict_follows_the_deployment(db, three_models):
    a, c = three_models["linear"], three_models["ridge_bad"]
    pa, pc = predict(db, a), predict(db, c)
    assert pa != pytest.approx(pc)
    deploy(db, a)
    assert predict(db, "p") == pa
    deploy(db, c)
    assert predict(db, "p") == pc
    # by model id: any model, deployed or not
    b = three_models["ridge_good"]
    art = db.execute("SELECT artifact FROM ml_stack.models WHERE id = %s", (b,)).fetchone()[0]
    x = [float(v) for v in X[len("ARRAY["):X.index("]")].split(",")]
    expected_b = art["intercepts"][0] + sum(w * v for w, v in zip(art["coefficients"][0], x))
    assert predict(db, a) == pa and predict(db, b) == pytest.approx(expected_b, rel=1e-12)
    # the same arithmetic serves a whole table
    n = db.execute(f"SELECT count(*) FROM diabetes WHERE ml_stack.predict('p', ARRAY[{', '.join(DIABETES_COLUMNS)}])"
                   f" IS DISTINCT FROM ml_stack.predict({c}::bigint, ARRAY[{', '.join(DIABETES_COLUMNS)}])"
                   ).fetchone()[0]
    assert n == 0


def test_predict_by_model_id_serves_other_projects_models(db):
    r = train(db, "p", "regression", "diabetes", "target")["model_id"]
    c = train(db, "c", "classification", "iris", "target")["model_id"]
    assert predict(db, r) == predict(db, "p")
    x = "ARRAY[5.1, 3.5, 1.4, 0.2]"
    assert predict(db, c, x) == predict(db, "c", x) == 0  # a setosa
    proba = db.execute(f"SELECT ml_stack.predict_proba({c}::bigint, {x})").fetchone()[0]
    assert len(proba) == 3 and sum(proba) == pytest.approx(1) and max(proba) == proba[0]


def test_redeploy_is_visible_to_other_sessions_at_commit(db, pg_server, three_models):
    """A deploy takes effect in every session as soon as it commits, not before — including statements those
    sessions prepared earlier (their cached plans inline the previous model)."""
    a, c = three_models["linear"], three_models["ridge_bad"]
    deploy(db, a)
    pa, pc = predict(db, a), predict(db, c)
    assert pa != pytest.approx(pc)

    with psycopg.connect(pg_server.dsn(db.info.dbname), autocommit=True) as other:
        other.execute(f"PREPARE q AS SELECT ml_stack.predict('p', {X})")

        def seen():
            prepared = other.execute("EXECUTE q").fetchone()[0]
            fresh = other.execute(f"SELECT ml_stack.predict('p', {X})").fetchone()[0]
            return prepared, fresh

        assert seen() == (pa, pa)
        with db.transaction():
            deploy(db, c)
            assert predict(db, "p") == pc       # the deploying session sees its own change
            assert seen() == (pa, pa)           # the others do not, yet
        assert seen() == (pc, pc)               # committed: everyone serves the new model

        # a deploy that rolls back changes nothing anywhere
        with db.transaction(force_rollback=True):
            deploy(db, a)
        assert seen() == (pc, pc) and predict(db, "p") == pc


# --- read-only checks: one database for all of them --------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(pg_server):
    """Projects 'p' (regression, diabetes) and 'c' (classification, iris), one deployed model each. Shared by the
    tests below, which only read: a fresh database each would cost more than the tests themselves."""
    with private_database(pg_server, "ml_stack_registry_ro") as conn:
        load_sklearn_dataset(conn, "diabetes")
        load_sklearn_dataset(conn, "iris")
        train(conn, "p", "regression", "diabetes", "target")
        train(conn, "c", "classification", "iris", "target")
        yield conn


# --- the serving path is inlined -------------------------------------------------------------------------------

@pytest.mark.parametrize("call", ["predict('p', {x})", "predict({p_id}::bigint, {x})",
                                  "predict('c', {xi})", "predict_proba('c', {xi})",
                                  "predict_proba({c_id}::bigint, {xi})"])
def test_explain_shows_inlined_arithmetic(trained, call):
    """EXPLAIN VERBOSE of a predict over a table shows the model's own expression: no call to predict, to the
    dispatch functions or to the compiled predictor is left in the plan (DESIGN §2, §4)."""
    p_id, c_id = (deployed(trained, name) for name in ("p", "c"))
    iris_cols = [c for c in columns(trained, "iris") if c != "target"]
    on_iris = "{xi}" in call
    query = "SELECT ml_stack." + call.format(
        x=f"ARRAY[{', '.join(DIABETES_COLUMNS)}]", xi=f"ARRAY[{', '.join(iris_cols)}]", p_id=p_id, c_id=c_id)
    query += " FROM iris" if on_iris else " FROM diabetes"
    plan = "\n".join(r[0] for r in trained.execute("EXPLAIN (VERBOSE) " + query))
    for name in ("predict", "_predict_project", "_predict_model", "_model_"):
        assert name not in plan, plan
    # the coefficients are in the plan as constants
    artifact = trained.execute("SELECT artifact FROM ml_stack.models WHERE id = %s",
                               (c_id if on_iris else p_id,)).fetchone()[0]
    assert repr(artifact["coefficients"][0][1]) in plan, plan


# --- engineering rules, checked on the catalog -----------------------------------------------------------------

SERVING = {"predict", "predict_proba", "_predict_project", "_predict_proba_project", "_predict_model",
           "_predict_proba_model",
           # the sparse text transforms, inlined into training and job queries and reached by predict_row
           "_lexemes", "_hashing_terms", "_vocabulary_terms"}


def _functions(conn):
    """Every function in schema ml_stack (members and run-time compiled predictors alike)."""
    return conn.cursor(row_factory=dict_row).execute("""
        SELECT p.oid::regprocedure::text AS signature, p.proname, p.proconfig, p.proisstrict, p.prosecdef,
               l.lanname, obj_description(p.oid, 'pg_proc') AS comment
        FROM pg_proc AS p JOIN pg_language AS l ON l.oid = p.prolang
        WHERE p.pronamespace = 'ml_stack'::regnamespace ORDER BY 1""").fetchall()


def _is_serving(proname):
    return proname in SERVING or (proname.startswith(("_model_", "_project_")) and proname.endswith(("_predict", "_proba")))


def test_public_objects_have_comments(trained):
    # what \\df+ and \\d+ show users (DESIGN §4); internal helpers start with '_'
    missing = [f["signature"] for f in _functions(trained) if not f["proname"].startswith("_") and not f["comment"]]
    assert missing == []
    missing = [r[0] for r in trained.execute("""
        SELECT c.oid::regclass::text FROM pg_class AS c
        WHERE c.relnamespace = 'ml_stack'::regnamespace AND c.relkind IN ('r', 'v', 'm', 'p')
          AND c.relname NOT LIKE '\\_%' AND obj_description(c.oid, 'pg_class') IS NULL""")]
    assert missing == []


# ml_stack.train is the one deliberate exception outside serving: it must read the caller's search_path so that
# relation_name resolves as the caller typed it (a SET clause would hide it). Its body is a single call with every
# name schema-qualified, and the function it calls is pinned.
# ml_stack.run_training (the command of scheduled jobs) is a procedure that COMMITs, which PostgreSQL forbids to a
# procedure with a SET clause: it pins search_path itself with set_config() in each of its transactions.
# train, fit_vectorizer, create_vector_job and the evaluation functions resolve relation names with the caller's
# search_path (LANGUAGE sql wrappers)
UNPINNED_ON_PURPOSE = {"train", "run_training", "fit_vectorizer", "create_vector_job",
                       "evaluate", "confusion_matrix", "roc_curve", "precision_recall_curve"}


def test_non_serving_functions_pin_search_path(trained):
    # DESIGN §4: every function pins search_path, except the serving path, which must stay inlinable
    unpinned = [f["signature"] for f in _functions(trained)
                if not _is_serving(f["proname"]) and f["proname"] not in UNPINNED_ON_PURPOSE
                and "search_path=pg_catalog, pg_temp" not in (f["proconfig"] or [])]
    assert unpinned == []


def test_train_resolves_relation_with_callers_search_path(conn):
    # the reason train is unpinned: an unqualified relation name resolves in the caller's schemas
    conn.execute("CREATE SCHEMA sales")
    conn.execute("CREATE TABLE sales.houses AS SELECT g::float8 AS size, 2.0 * g + 1 AS price "
                 "FROM generate_series(1, 40) AS g")
    conn.execute("SET search_path = sales, public")
    row = conn.execute("SELECT model_id FROM ml_stack.train('houses', 'regression', 'houses', 'price')").fetchone()
    assert row is not None
    assert conn.execute("SELECT relation_name FROM ml_stack.snapshots").fetchone()[0] == "sales.houses"
    conn.execute("RESET search_path")


def test_serving_functions_stay_inlinable(trained):
    # The planner inlines only LANGUAGE sql functions without SET, STRICT or SECURITY DEFINER; one SET clause made
    # a 1M-row predict 4.7x slower (DESIGN §4).
    serving = [f for f in _functions(trained) if _is_serving(f["proname"])]
    names = {f["proname"] for f in serving}
    assert SERVING <= names
    compiled = names - SERVING
    # _model_<id>_predict and _proba of both models, and the typed _project_<id>_predict of both projects with the
    # classifier's _proba
    assert len(compiled) == 7, compiled
    bad = [(f["signature"], f["lanname"], f["proconfig"], f["proisstrict"], f["prosecdef"]) for f in serving
           if f["lanname"] != "sql" or f["proconfig"] or f["proisstrict"] or f["prosecdef"]]
    assert bad == []
