"""Bad input: every mistake a user can make gets a clear error and leaves no trace.

Each rejected call must
- fail with the expected SQLSTATE class (so applications can tell a bad argument from a missing object),
- name the problem in its message and say how to fix it in a HINT (DESIGN §4),
- leave the registry exactly as it was (a failed call is one rolled-back transaction, DESIGN §4), and leave the
  catalog untouched: no relation created or dropped, no function created, replaced or dropped.

Names that reach dynamic SQL (relations, columns, preprocess keys, hyperparameters, project names, numbers in an
imported model) get hostile values; a canary table shows that none of them was ever executed.
"""

import json
import re

import psycopg
import pytest
from psycopg import sql

from datasets import load_sklearn_dataset
from helpers import private_database, registry_rows, train_query

# SQLSTATE classes (the first two characters of the code).
DATA = "22"          # data exception: invalid_parameter_value, null_value_not_allowed
UNDEFINED = "42"     # undefined_table / undefined_column / undefined_object, datatype_mismatch
UNSUPPORTED = "0A"   # feature_not_supported
PREREQ = "55"        # object_not_in_prerequisite_state
# serving errors PostgREST answers by status (0.4.0): PT404 unknown project or model, PT503 nothing deployed
NOT_FOUND = "PT404"
UNAVAILABLE = "PT503"
NO_DATA = "P0"       # no_data_found

DIABETES_FEATURES = 10
IRIS_FEATURES = 4
CANARY_ROWS = 3


def catalog_state(conn):
    """Relations of the database and ml_stack's functions with their bodies (compiled predictors, dispatch)."""
    relations = conn.execute(
        "SELECT oid, relnamespace::regnamespace::text, relname FROM pg_class ORDER BY oid").fetchall()
    functions = conn.execute(
        "SELECT oid, proname, prosrc FROM pg_proc WHERE pronamespace = 'ml_stack'::regnamespace ORDER BY oid"
    ).fetchall()
    return relations, functions


def assert_canary_alive(conn):
    assert conn.execute("SELECT count(*) FROM public.canary").fetchone()[0] == CANARY_ROWS


def assert_rejected(conn, query, sqlstate_class, message, hint=None):
    """Run ``query``, expect an error of ``sqlstate_class`` (a class, or a whole SQLSTATE) whose message matches
    ``message`` (regex, case-insensitive) and that has a HINT (matching ``hint`` if given); nothing in the registry
    or catalog changes."""
    registry, catalog = registry_rows(conn), catalog_state(conn)
    with pytest.raises(psycopg.Error) as info:
        conn.execute(query)
    diag = info.value.diag
    assert diag.sqlstate is not None and diag.sqlstate.startswith(sqlstate_class), (diag.sqlstate, diag.message_primary)
    assert re.search(message, diag.message_primary, re.I), diag.message_primary
    assert diag.message_hint, f"no HINT for: {diag.message_primary}"
    if hint:
        assert re.search(hint, diag.message_hint, re.I), diag.message_hint
    assert registry_rows(conn) == registry, "a rejected call changed the registry"
    assert catalog_state(conn) == catalog, "a rejected call changed the catalog"
    assert_canary_alive(conn)
    return info.value


def _prepare(conn):
    """A registry with something to lose, and the odd relations the cases below train on.

    - 'diab': regression on diabetes, deployed (one deployment);
    - 'flowers': classification on iris (three classes: softmax), deployed;
    - 'two': classification on two iris classes (logistic link), deployed;
    - 'parked': regression on diabetes, trained with automatic_deploy => false (no deployment).
    """
    load_sklearn_dataset(conn, "diabetes")
    load_sklearn_dataset(conn, "iris")
    conn.execute(f"""
        CREATE TABLE canary AS SELECT g AS id FROM generate_series(1, {CANARY_ROWS}) AS g;
        CREATE TABLE empty_rel (x float8, target float8);
        CREATE TABLE null_labels AS SELECT g::float8 AS x, NULL::float8 AS target FROM generate_series(1, 20) AS g;
        CREATE TABLE one_class AS SELECT age, bmi, 1 AS target FROM diabetes;
        CREATE TABLE with_nulls AS SELECT * FROM diabetes;
        UPDATE with_nulls SET bmi = NULL WHERE ctid IN (SELECT ctid FROM with_nulls LIMIT 7);
        CREATE TABLE text_feature AS SELECT age, to_tsvector('simple', 'x') AS note, target FROM diabetes;
        CREATE TABLE constant_category AS SELECT age, 'x'::text AS note, target FROM diabetes;
        CREATE TABLE text_label AS SELECT age, bmi, target::text AS target FROM diabetes;
        CREATE VIEW iris2 AS SELECT * FROM iris WHERE target < 2;
    """)
    conn.execute("SELECT ml_stack.train('diab', 'regression', 'diabetes', 'target')")
    conn.execute("SELECT ml_stack.train('flowers', 'classification', 'iris', 'target')")
    conn.execute("SELECT ml_stack.train('two', 'classification', 'iris2', 'target')")
    conn.execute("SELECT ml_stack.train('parked', 'regression', 'diabetes', 'target', automatic_deploy => false)")


@pytest.fixture(scope="module")
def shared_db(pg_server):
    """One database for the whole module: a rejected call changes nothing (each case checks it), so the cases
    can share it, and a fresh database per case would cost more than all the cases together."""
    with private_database(pg_server, "ml_stack_bad_input") as conn:
        _prepare(conn)
        yield conn


@pytest.fixture
def db(shared_db):
    yield shared_db
    # the next case must not inherit an open or aborted transaction
    assert shared_db.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


# (id, call, SQLSTATE class, message regex, hint regex or None)
TRAIN_CASES = [
    ("missing relation", train_query("p", "regression", "no_such_table", "target"),
     UNDEFINED, r'relation "no_such_table" does not exist', None),
    ("missing schema", train_query("p", "regression", "no_schema.diabetes", "target"),
     UNDEFINED, r'"no_schema.diabetes" does not exist', None),
    ("missing label column", train_query("p", "regression", "diabetes", "no_such_column"),
     UNDEFINED, r'column "no_such_column" does not exist', r"\bage\b.*\bbmi\b"),
    ("unknown algorithm", train_query("p", "regression", "diabetes", "target", algorithm="lineer"),
     DATA, r'unknown algorithm "lineer"', r"\blinear\b"),
    ("unknown task", train_query("p", "clustering", "diabetes", "target"),
     DATA, r'unknown task "clustering"', r"regression.*classification"),
    ("unknown engine", train_query("p", "regression", "diabetes", "target", engine="gpu"),
     DATA, r'unknown engine "gpu"', r"\bsql\b"),
    ("ridge classification on the sql engine",
     train_query("p", "classification", "iris", "target", algorithm="ridge", engine="sql"),
     UNSUPPORTED, r"sql engine has no ridge .*classification", r"\blinear\b"),
    # Without the engine named, an algorithm the sql engine lacks must point at the extension that has it.
    ("ridge classification, engine chosen", train_query("p", "classification", "iris", "target", algorithm="ridge"),
     UNSUPPORTED, r"python engine", r"ml_stack_python"),
    ("xgboost needs the python engine", train_query("p", "regression", "diabetes", "target", algorithm="xgboost"),
     UNSUPPORTED, r"xgboost.*python engine", r"ml_stack_python"),
    ("empty relation", train_query("p", "regression", "empty_rel", "target"),
     NO_DATA, r"no rows", None),
    ("all labels NULL", train_query("p", "regression", "null_labels", "target"),
     NO_DATA, r"no rows with a label", r"NULL"),
    ("one class", train_query("p", "classification", "one_class", "target"),
     DATA, r"single class", None),
    ("test_size above the row count", train_query("p", "regression", "diabetes", "target", test_size=500),
     DATA, r"test_size 500 leaves no training rows", None),
    ("test_size equal to the row count", train_query("p", "regression", "diabetes", "target", test_size=442),
     DATA, r"leaves no training rows", None),
    ("test_size 0", train_query("p", "regression", "diabetes", "target", test_size=0),
     DATA, r"test_size", None),
    ("test_size negative", train_query("p", "regression", "diabetes", "target", test_size=-0.25),
     DATA, r"test_size", None),
    ("test_size NaN", train_query("p", "regression", "diabetes", "target", test_size=float("nan")),
     DATA, r"test_size", None),
    ("test_size fractional count", train_query("p", "regression", "diabetes", "target", test_size=10.5),
     DATA, r"test_size 10.5 is neither a fraction .* nor a whole row count", None),
    ("unknown test_sampling", train_query("p", "regression", "diabetes", "target", test_sampling="sequential"),
     DATA, r'unknown test_sampling "sequential"', r"random"),
    ("stratified regression", train_query("p", "regression", "diabetes", "target", test_sampling="stratified"),
     DATA, r"stratified.*classification", None),
    # The message must say which column and how many NULLs, so the user knows what to impute.
    ("NULL features, no impute rule", train_query("p", "regression", "with_nulls", "target"),
     DATA, r"bmi \(7 NULLs\)", r'"bmi": \{"impute"'),
    ("unknown impute rule",
     train_query("p", "regression", "with_nulls", "target", preprocess={"bmi": {"impute": "mostly"}}),
     DATA, r'unknown impute rule "mostly" for column "bmi"', r"mean"),
    ("unknown scale rule", train_query("p", "regression", "diabetes", "target", preprocess={"bmi": {"scale": "log"}}),
     DATA, r'unknown scale rule "log" for column "bmi"', r"standard"),
    ("unknown preprocess rule", train_query("p", "regression", "diabetes", "target", preprocess={"bmi": {"clip": 3}}),
     DATA, r'unknown preprocess rule "clip"', r"impute"),
    ("preprocess names a missing column",
     train_query("p", "regression", "diabetes", "target", preprocess={"weight": {"impute": "mean"}}),
     UNDEFINED, r'"weight".*not a feature', r"\bbmi\b"),
    ("preprocess names the label",
     train_query("p", "regression", "diabetes", "target", preprocess={"target": {"scale": "standard"}}),
     UNDEFINED, r'"target".*not a feature', None),
    ("hyperparameter not a number",
     train_query("p", "regression", "diabetes", "target", algorithm="ridge", hyperparams={"alpha": "abc"}),
     DATA, r'"alpha" must be a number', r"alpha"),
    ("negative alpha",
     train_query("p", "regression", "diabetes", "target", algorithm="ridge", hyperparams={"alpha": -1}),
     DATA, r'"alpha" must be >= 0', None),
    ("C = 0", train_query("p", "classification", "iris", "target", hyperparams={"C": 0}),
     DATA, r'"C" must be > 0', None),
    ("C < 0", train_query("p", "classification", "iris", "target", hyperparams={"C": -2.5}),
     DATA, r'"C" must be > 0', None),
    ("unknown hyperparameter",
     train_query("p", "regression", "diabetes", "target", algorithm="ridge", hyperparams={"alpah": 1}),
     DATA, r'unknown hyperparameter "alpah"', r"\balpha\b"),
    ("unknown hyperparameter of logistic",
     train_query("p", "classification", "iris", "target", hyperparams={"penalty": "l1"}),
     DATA, r'unknown hyperparameter "penalty"', r"\bC\b.*max_iter"),
    ("hyperparams not an object", train_query("p", "regression", "diabetes", "target", hyperparams=[1, 2]),
     DATA, r"hyperparams must be a JSON object", None),
    ("unusable feature column", train_query("p", "regression", "text_feature", "target"),
     UNDEFINED, r'feature column "note" \(tsvector\) cannot be used', r"exclude => ARRAY\['note'\]"),
    ("one-hot of a single category", train_query("p", "regression", "constant_category", "target"),
     DATA, r'column "note" has a single value in the training rows', r"exclude => ARRAY\['note'\]"),
    ("text label", train_query("p", "regression", "text_label", "target"),
     UNDEFINED, r'label column "target" has type text', None),
    ("changing the task of a project", train_query("diab", "classification"),
     DATA, r'"diab" is a regression project', r"new project name"),
    ("retraining a project that does not exist", train_query("ghost"),
     DATA, r'"ghost" does not exist', r"ml_stack\.train\('ghost'"),
    ("empty project name", train_query("", "regression", "diabetes", "target"),
     DATA, r"project_name is required", None),
    ("search on the sql engine", train_query("p", "regression", "diabetes", "target", search="grid"),
     UNSUPPORTED, r"search needs the python engine", r"ml_stack_python"),
    ("search_params without a search", train_query("p", "regression", "diabetes", "target",
                                                   search_params={"alpha": [0.1, 1]}),
     DATA, r"search_params or search_args given without a search", r"search => 'grid'"),
    ("search_args without a search", train_query("p", "regression", "diabetes", "target", search_args={"cv": 3}),
     DATA, r"without a search", r"hyperparams"),
]


@pytest.mark.parametrize("query, sqlstate_class, message, hint",
                         [c[1:] for c in TRAIN_CASES], ids=[c[0] for c in TRAIN_CASES])
def test_train_rejects(db, query, sqlstate_class, message, hint):
    assert_rejected(db, query, sqlstate_class, message, hint)


def test_retrain_error_keeps_the_project_as_it_was(db):
    # A retrain that fails after the project row was found (here: on the new relation) must not move the
    # project to that relation, nor leave a snapshot or model behind.
    assert_rejected(db, train_query("diab", relation_name="with_nulls"), DATA, r"bmi \(7 NULLs\)")


DEPLOY_CASES = [
    ("unknown strategy", "SELECT * FROM ml_stack.deploy('diab', 'newest')",
     DATA, r'unknown deploy strategy "newest"', r"best_score"),
    ("unknown project", "SELECT * FROM ml_stack.deploy('ghost')",
     UNDEFINED, r'project "ghost" does not exist', None),
    ("unknown model id", "SELECT * FROM ml_stack.deploy(999999)",
     UNDEFINED, r"model 999999 does not exist", None),
    ("no model of that algorithm", "SELECT * FROM ml_stack.deploy('diab', 'best_score', 'ridge')",
     NO_DATA, r'no model to deploy with algorithm "ridge"', None),
    # 'diab' has had one deployment only: there is nothing before it.
    ("rollback past the first deployment", "SELECT * FROM ml_stack.deploy('diab', 'rollback')",
     PREREQ, r'"diab" has nothing to roll back to', None),
    ("rollback without any deployment", "SELECT * FROM ml_stack.deploy('parked', 'rollback')",
     PREREQ, r'"parked" has nothing to roll back to', None),
    # 'specific' is the strategy of deploy(model_id); by project name it has no model to name
    ("'specific' by project name", "SELECT * FROM ml_stack.deploy('diab', 'specific')",
     DATA, r"model_id is required", None),
    ("NULL model id", "SELECT * FROM ml_stack.deploy(NULL::bigint)",
     DATA, r"model_id is required", None),
]


@pytest.mark.parametrize("query, sqlstate_class, message, hint",
                         [c[1:] for c in DEPLOY_CASES], ids=[c[0] for c in DEPLOY_CASES])
def test_deploy_rejects(db, query, sqlstate_class, message, hint):
    assert_rejected(db, query, sqlstate_class, message, hint)


def features(n, null_at=None):
    """An ARRAY literal of n plausible feature values (a NULL at position null_at, 1-based)."""
    values = ["NULL" if i == null_at else repr(0.01 * i) for i in range(1, n + 1)]
    return f"ARRAY[{', '.join(values)}]::float8[]"


PREDICT_CASES = [
    ("predict, unknown project", f"SELECT ml_stack.predict('ghost', {features(4)})",
     NOT_FOUND, r'project "ghost" does not exist', None),
    ("predict_proba, unknown project", f"SELECT ml_stack.predict_proba('ghost', {features(4)})",
     NOT_FOUND, r'project "ghost" does not exist', None),
    ("predict, nothing deployed", f"SELECT ml_stack.predict('parked', {features(DIABETES_FEATURES)})",
     UNAVAILABLE, r'"parked" has no deployed model', r"deploy"),
    ("predict_proba, nothing deployed", f"SELECT ml_stack.predict_proba('parked', {features(DIABETES_FEATURES)})",
     UNAVAILABLE, r'"parked" has no deployed model', r"deploy"),
    ("predict, unknown model id", f"SELECT ml_stack.predict(999999, {features(4)})",
     NOT_FOUND, r"model 999999 does not exist", None),
    ("predict_proba, unknown model id", f"SELECT ml_stack.predict_proba(999999, {features(4)})",
     NOT_FOUND, r"model 999999 does not exist", None),
    ("too few features", f"SELECT ml_stack.predict('diab', {features(DIABETES_FEATURES - 1)})",
     DATA, r"takes 10 features, got 9", r"order"),
    ("too many features", f"SELECT ml_stack.predict('diab', {features(DIABETES_FEATURES + 1)})",
     DATA, r"takes 10 features, got 11", None),
    ("no features", "SELECT ml_stack.predict('diab', '{}'::float8[])",
     DATA, r"takes 10 features, got 0", None),
    ("too few features, by model id",
     f"SELECT ml_stack.predict((SELECT model_id FROM ml_stack.deployed_models WHERE project_name = 'diab'),"
     f" {features(3)})",
     DATA, r"takes 10 features, got 3", None),
    ("too many features, predict_proba", f"SELECT ml_stack.predict_proba('flowers', {features(IRIS_FEATURES + 1)})",
     DATA, r"takes 4 features, got 5", None),
    ("predict_proba of a regression model",
     f"SELECT ml_stack.predict_proba('diab', {features(DIABETES_FEATURES)})",
     UNSUPPORTED, r"regression model", r"predict\(\)"),
]


@pytest.mark.parametrize("query, sqlstate_class, message, hint",
                         [c[1:] for c in PREDICT_CASES], ids=[c[0] for c in PREDICT_CASES])
def test_predict_rejects(db, query, sqlstate_class, message, hint):
    assert_rejected(db, query, sqlstate_class, message, hint)


def test_predict_errors_in_a_table_scan(db):
    # Row by row, as applications call it: the wrong-count error must come from the data, not only from
    # constant folding at plan time.
    assert_rejected(db, "SELECT ml_stack.predict('diab', ARRAY[age, sex, bmi]) FROM diabetes",
                    DATA, r"takes 10 features, got 3")


@pytest.mark.parametrize("project, n", [("diab", DIABETES_FEATURES), ("flowers", IRIS_FEATURES),
                                        ("two", IRIS_FEATURES)])
@pytest.mark.parametrize("null_at", [1, "last"])
def test_null_feature_predicts_null(db, project, n, null_at):
    """Without an impute rule a NULL feature must give NULL, never a number (DESIGN §3) — by project and by
    model id, for the value and the probabilities."""
    pos = n if null_at == "last" else null_at
    x = features(n, null_at=pos)
    model_id, task = db.execute(
        "SELECT model_id, task FROM ml_stack.deployed_models WHERE project_name = %s", (project,)).fetchone()
    assert db.execute(f"SELECT ml_stack.predict(%s, {x})", (project,)).fetchone()[0] is None
    assert db.execute(f"SELECT ml_stack.predict(%s::bigint, {x})", (model_id,)).fetchone()[0] is None
    if task == "classification":
        assert db.execute(f"SELECT ml_stack.predict_proba(%s, {x})", (project,)).fetchone()[0] is None
        assert db.execute(f"SELECT ml_stack.predict_proba(%s::bigint, {x})", (model_id,)).fetchone()[0] is None
    # and the same model gives a number once the feature is there
    assert db.execute(f"SELECT ml_stack.predict(%s, {features(n)})", (project,)).fetchone()[0] is not None


def test_null_feature_array_predicts_null(db):
    for project in ("diab", "flowers", "two"):
        assert db.execute("SELECT ml_stack.predict(%s, NULL::float8[])", (project,)).fetchone()[0] is None


# --- hostile names -------------------------------------------------------------------------------------------

INJECTION = "); DROP TABLE public.canary; --"

HOSTILE_CASES = [
    ("relation with semicolon", train_query("p", "regression", "diabetes; DROP TABLE public.canary; --", "target"),
     UNDEFINED, r"does not exist"),
    ("relation with paren", train_query("p", "regression", "diabetes" + INJECTION, "target"),
     UNDEFINED, r"does not exist"),
    ("relation with a closing quote", train_query("p", "regression", 'diabetes"' + INJECTION, "target"),
     UNDEFINED, r"does not exist"),
    ("relation with an unbalanced quote", train_query("p", "regression", '"diabetes', "target"),
     UNDEFINED, r"does not exist"),
    ("relation with a single quote", train_query("p", "regression", "diabetes' OR '1'='1", "target"),
     UNDEFINED, r"does not exist"),
    ("relation as a subquery", train_query("p", "regression", "(SELECT * FROM diabetes) AS s", "target"),
     UNDEFINED, r"does not exist"),
    ("label with semicolon", train_query("p", "regression", "diabetes", "target; DROP TABLE public.canary; --"),
     UNDEFINED, r"does not exist"),
    ("label with a closing quote", train_query("p", "regression", "diabetes", 'target"' + INJECTION),
     UNDEFINED, r"does not exist"),
    ("label as an expression", train_query("p", "regression", "diabetes", "target * 2"),
     UNDEFINED, r"does not exist"),
    ("preprocess key", train_query("p", "regression", "diabetes", "target",
                                   preprocess={'bmi"' + INJECTION: {"impute": "mean"}}),
     UNDEFINED, r"not a feature"),
    ("impute rule", train_query("p", "regression", "with_nulls", "target",
                                preprocess={"bmi": {"impute": "mean'" + INJECTION}}),
     DATA, r"unknown impute rule"),
    ("scale rule", train_query("p", "regression", "diabetes", "target",
                               preprocess={"bmi": {"scale": "standard'" + INJECTION}}),
     DATA, r"unknown scale rule"),
    ("hyperparameter value", train_query("p", "regression", "diabetes", "target", algorithm="ridge",
                                         hyperparams={"alpha": "1" + INJECTION}),
     DATA, r"must be a number"),
    ("hyperparameter name", train_query("p", "regression", "diabetes", "target", algorithm="ridge",
                                        hyperparams={"alpha" + INJECTION: 1}),
     DATA, r"unknown hyperparameter"),
    ("test_sampling", train_query("p", "regression", "diabetes", "target", test_sampling="last'" + INJECTION),
     DATA, r"unknown test_sampling"),
]


@pytest.mark.parametrize("query, sqlstate_class, message",
                         [c[1:] for c in HOSTILE_CASES], ids=[c[0] for c in HOSTILE_CASES])
def test_hostile_names_are_never_executed(db, query, sqlstate_class, message):
    # assert_rejected checks that the canary survived and pg_class is unchanged.
    assert_rejected(db, query, sqlstate_class, message)


def test_hostile_but_real_names_train_and_serve(conn):
    """Names full of quotes and semicolons are legal SQL identifiers: they must work as data, not run as code."""
    db = conn  # this one trains: a database of its own
    _prepare(db)
    diab_before = db.execute(f"SELECT ml_stack.predict('diab', {features(DIABETES_FEATURES)})").fetchone()[0]
    assert diab_before is not None
    table = 'we"ird' + INJECTION
    cols = ["a'" + INJECTION, 'b"' + INJECTION]
    label = "y;" + INJECTION
    project = "p'" + INJECTION
    q = lambda name: '"' + name.replace('"', '""') + '"'  # noqa: E731  SQL identifier quoting
    db.execute(f"CREATE TABLE {q(table)} ({q(cols[0])} float8, {q(cols[1])} float8, {q(label)} float8)")
    # y = 2a - b + 1 exactly: ordinary least squares must find it.
    db.execute(f"INSERT INTO {q(table)} SELECT g, g % 7, 2 * g - g % 7 + 1 FROM generate_series(1, 60) AS g")
    preprocess = json.dumps({cols[0]: {"scale": "standard"}, cols[1]: {"impute": "mean"}})
    row = db.execute("SELECT model_id, (metrics->>'r2')::float8 FROM ml_stack.train(%s, 'regression', %s, %s,"
                     " preprocess => %s::jsonb)", (project, "public." + q(table), label, preprocess)).fetchone()
    assert row[1] == pytest.approx(1.0)
    assert db.execute("SELECT ml_stack.predict(%s, ARRAY[10, 3])", (project,)).fetchone()[0] == pytest.approx(18)
    assert db.execute("SELECT ml_stack.predict(%s::bigint, ARRAY[10, 3])", (row[0],)).fetchone()[0] \
        == pytest.approx(18)
    # the snapshot records the names as they are
    snap = db.execute("SELECT y_column_name, features FROM ml_stack.snapshots ORDER BY id DESC LIMIT 1").fetchone()
    assert snap[0] == label and [f["name"] for f in snap[1]] == cols
    # retrain by name only: the stored relation name is reused, as SQL text, safely
    assert db.execute("SELECT model_id FROM ml_stack.train(%s)", (project,)).fetchone()[0] > row[0]
    assert_canary_alive(db)
    # the deployed model of every other project is untouched by the new dispatch code
    assert db.execute(f"SELECT ml_stack.predict('diab', {features(DIABETES_FEATURES)})").fetchone()[0] == diab_before


# --- import_model ----------------------------------------------------------------------------------------------

_DIAB_DOC = "ml_stack.export_model((SELECT model_id FROM ml_stack.deployed_models WHERE project_name = 'diab'))"

IMPORT_CASES = [
    ("not a model document", """SELECT ml_stack.import_model('x', '{"foo": 1}')""",
     DATA, r"not an ml_stack model document"),
    ("unknown task", """SELECT ml_stack.import_model('x', '{"ml_stack_model": 1, "task": "clustering"}')""",
     DATA, r'unknown task "clustering"'),
    ("empty project name", f"SELECT ml_stack.import_model('', {_DIAB_DOC})",
     DATA, r"project_name is required"),
    ("project of the other task", f"SELECT ml_stack.import_model('flowers', {_DIAB_DOC})",
     DATA, r'"flowers" is a classification project'),
    ("artifact format of an engine not installed",
     f"""SELECT ml_stack.import_model('x', jsonb_set({_DIAB_DOC}, '{{artifact,format}}', '"xgboost"'))""",
     UNSUPPORTED, r'format "xgboost" is not supported'),
]


@pytest.mark.parametrize("query, sqlstate_class, message",
                         [c[1:] for c in IMPORT_CASES], ids=[c[0] for c in IMPORT_CASES])
def test_import_rejects(db, query, sqlstate_class, message):
    assert_rejected(db, query, sqlstate_class, message)


# --- import_model with a damaged document --------------------------------------------------------------------

def _drop_one_coefficient(doc):
    doc["artifact"]["coefficients"][0].pop()


def _set(path, value):
    def mutate(doc):
        target = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return mutate


DAMAGE = [
    ("wrong coefficient count", _drop_one_coefficient),
    ("num_features disagrees", _set(["num_features"], DIABETES_FEATURES + 1)),
    ("missing intercept", _set(["artifact", "intercepts"], [])),
    ("string in a coefficient", _set(["artifact", "coefficients", 0, 0], "abc")),
    # Exports only ever hold JSON numbers; a quoted number means the document was edited by hand.
    ("numeric string in a coefficient", _set(["artifact", "coefficients", 0, 0], "1.5")),
    ("object in a coefficient", _set(["artifact", "coefficients", 0, 0], {"a": 1})),
    ("injection in a coefficient", _set(["artifact", "coefficients", 0, 0], "1" + INJECTION)),
    ("injection in the intercept", _set(["artifact", "intercepts", 0], "0" + INJECTION)),
    ("injection in an impute value", _set(["artifact", "impute", 0], "0" + INJECTION)),
    ("injection in num_features", _set(["num_features"], "10" + INJECTION)),
    ("injection in the link", _set(["artifact", "link"], "identity" + INJECTION)),
    # float8 parses these strings, but they are no numbers the compiled SQL can hold.
    ("NaN coefficient", _set(["artifact", "coefficients", 0, 0], "NaN")),
    ("Infinity intercept", _set(["artifact", "intercepts", 0], "Infinity")),
    ("-Infinity impute value", _set(["artifact", "impute", 0], "-Infinity")),
    ("regression artifact for classification", _set(["task"], "classification")),
]


@pytest.mark.parametrize("mutate", [d[1] for d in DAMAGE], ids=[d[0] for d in DAMAGE])
@pytest.mark.parametrize("project", ["diab", "fresh"])
def test_import_rejects_damaged_document(db, mutate, project):
    """Into the exporting project itself (which it would redeploy) and into a new one (which it would create)."""
    doc = db.execute("SELECT ml_stack.export_model(model_id) FROM ml_stack.deployed_models"
                     " WHERE project_name = 'diab'").fetchone()[0]
    # the intact document is accepted (in a transaction rolled back): the damage is what is rejected
    with db.transaction(force_rollback=True):
        db.execute("SELECT ml_stack.import_model(%s, %s::jsonb)", (project, json.dumps(doc)))
    mutate(doc)
    query = sql.SQL("SELECT ml_stack.import_model({}, {}::jsonb)").format(
        sql.Literal(project), sql.Literal(json.dumps(doc)))
    assert_rejected(db, query, DATA, r"model document is damaged")
