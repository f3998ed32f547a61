"""ml_stack_pgml (issue 10, DESIGN §3d): PostgresML 2.x's API in schema pgml over ml_stack.

PostgresML's documented examples run as written (docs/postgresml.md lists the few lines that cannot), the seed's
SQL runs verbatim (its pgml.train call, and its retraining function once its body uses PERFORM), and what pgml
translates is checked against scikit-learn: the 'first' and 'last' splits, PostgresML's preprocess rules (target
encoding without smoothing, impute mode, robust scaling), and the array and row forms of predict.
"""

import uuid

import numpy as np
import psycopg
import pytest
from psycopg import errors
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.metrics import r2_score

from helpers import registry_rows
from test_dump_restore import _restore


@pytest.fixture
def pg(conn):
    """``conn`` with ml_stack_pgml installed (ml_stack only: no python engine)."""
    conn.execute("CREATE EXTENSION ml_stack_pgml")
    conn.execute("SET client_min_messages = warning")
    return conn


@pytest.fixture
def pgpy(pg):
    """``pg`` with ml_stack_python too (XGBoost, the datasets, MiniLM)."""
    pg.execute("CREATE EXTENSION ml_stack_python CASCADE")
    return pg


def rows(conn, query, params=None):
    return conn.execute(query, params).fetchall()


def run_script(conn, script):
    """Run SQL statements one by one, as psql would; the result rows of the last one."""
    result = None
    for statement in [s.strip() for s in script.split(";")]:
        if not "\n".join(line for line in statement.splitlines() if not line.strip().startswith("--")).strip():
            continue
        cur = conn.execute(statement)
        result = cur.fetchall() if cur.description else None
    return result


# --------------------------------------------------------------------------------------------------------------
# PostgresML's documented examples, verbatim


def test_regression_examples_run_as_documented(pgpy):
    conn = pgpy
    # pgml-cms regression.md / examples/regression.sql
    run_script(conn, """
        -- load the dataset
        SELECT pgml.load_dataset('diabetes');
        SELECT * FROM pgml.diabetes LIMIT 10""")
    assert conn.execute("SELECT pgml.version()").fetchone()[0] == "0.5.1 (ml_stack 0.6.0)"
    assert rows(conn, "SELECT * FROM pgml.train('Diabetes Progression', 'regression', 'pgml.diabetes', 'target')") \
        == [("Diabetes Progression", "regression", "linear", True)]
    got = rows(conn, """SELECT target, pgml.predict('Diabetes Progression', ARRAY[age, sex, bmi, bp, s1, s2, s3, s4, s5, s6]) AS prediction
                        FROM pgml.diabetes
                        LIMIT 10""")
    assert len(got) == 10
    # the same numbers ml_stack serves, as real (PostgresML's return type)
    same = rows(conn, "SELECT pgml.predict('Diabetes Progression', ARRAY[age, sex, bmi, bp, s1, s2, s3, s4, s5, s6]) "
                      "= ml_stack.predict('Diabetes Progression', ARRAY[age, sex, bmi, bp, s1, s2, s3, s4, s5, s6])::real "
                      "FROM pgml.diabetes")
    assert all(s for (s,) in same) and len(same) == 442
    # runtimes
    for statement, algorithm, engine in [
            ("SELECT * FROM pgml.train('Diabetes Progression', algorithm => 'linear', runtime => 'python')", "linear", "python"),
            ("SELECT * FROM pgml.train('Diabetes Progression', algorithm => 'linear', runtime => 'rust')", "linear", "sql"),
            ("SELECT * FROM pgml.train('Diabetes Progression', algorithm => 'xgboost', runtime => 'rust', "
             "hyperparams => '{\"n_estimators\": 10}')", "xgboost", "python")]:
        project, task, alg, _ = conn.execute(statement).fetchone()
        assert (project, task, alg) == ("Diabetes Progression", "regression", algorithm)
        assert conn.execute("SELECT runtime::text FROM pgml.models ORDER BY id DESC LIMIT 1").fetchone()[0] == engine
    # every column of every model, python-engine ones without a search among them
    assert len(rows(conn, "SELECT * FROM pgml.models")) == 4
    top = rows(conn, """SELECT trained_models.* FROM pgml.trained_models
                        JOIN pgml.models on models.id = trained_models.id
                        ORDER BY models.metrics->>'mean_squared_error' DESC LIMIT 5""")
    assert len(top) == 4 and sum(r[-1] for r in top) == 1  # one of them deployed
    # search and deploy strategies (examples/regression.sql)
    conn.execute("""SELECT pgml.train(
        'Diabetes Progression',
        algorithm => 'xgboost',
        hyperparams => '{"eval_metric": "rmse"}'::JSONB,
        search => 'grid',
        search_params => '{
            "max_depth": [1, 2],
            "n_estimators": [20, 40]
        }'
    )""")
    search = rows(conn, "SELECT search, search_params FROM pgml.models ORDER BY id DESC LIMIT 1")[0]
    assert search == ("grid", {"max_depth": [1, 2], "n_estimators": [20, 40]})
    assert rows(conn, "SELECT search_args FROM pgml.models ORDER BY id DESC LIMIT 1")[0][0] == {"cv": 5}
    best = conn.execute("SELECT max((metrics->>'r2')::float8) FROM pgml.models").fetchone()[0]
    assert rows(conn, "SELECT * FROM pgml.deploy('Diabetes Progression', 'best_score')")[0][:2] == \
        ("Diabetes Progression", "best_score")
    assert conn.execute("SELECT (m.metrics->>'r2')::float8 FROM pgml.deployed_models AS d JOIN pgml.models AS m "
                        "ON m.id = d.id").fetchone()[0] == pytest.approx(best, rel=1e-12)
    newest = conn.execute("SELECT max(id) FROM pgml.models").fetchone()[0]
    conn.execute("SELECT * FROM pgml.deploy('Diabetes Progression', 'most_recent')")
    assert conn.execute("SELECT id FROM pgml.deployed_models").fetchone()[0] == newest
    history = [m for (m,) in rows(conn, "SELECT model_id FROM pgml.deployments ORDER BY id")]
    conn.execute("SELECT * FROM pgml.deploy('Diabetes Progression', 'rollback')")
    assert conn.execute("SELECT id FROM pgml.deployed_models").fetchone()[0] == \
        [m for m in history if m != newest][-1]   # the model deployed before the current one
    # predict by model id (examples/regression.sql)
    by_id = rows(conn, """SELECT model_id, target, pgml.predict(model_id, ARRAY[age, sex, bmi, bp, s1, s2, s3, s4, s5, s6]) AS prediction
                          FROM pgml.diabetes
                          CROSS JOIN LATERAL (
                              SELECT pgml.models.id AS model_id FROM pgml.models
                              INNER JOIN pgml.projects
                              ON pgml.models.project_id = pgml.projects.id
                              WHERE pgml.projects.name = 'Diabetes Progression'
                              LIMIT 1
                          ) models
                          LIMIT 10""")
    assert [r[0] for r in by_id] == [1] * 10 and [r[2] for r in by_id] == [r[1] for r in got]
    # the deployments history in PostgresML's words: the first train's automatic deploy is 'new_score'
    assert [r[0] for r in rows(conn, "SELECT strategy::text FROM pgml.deployments ORDER BY id")][0] == "new_score"


def test_classification_examples_run_as_documented(pgpy):
    conn = pgpy
    # classification.md: an 8x8 smallint[][] image per row, flattened in row-major order
    run_script(conn, """
        SELECT pgml.load_dataset('digits');
        SELECT * FROM pgml.train('Handwritten Digits', 'classification', 'pgml.digits', 'target')""")
    got = rows(conn, """SELECT target, pgml.predict('Handwritten Digits', image) AS prediction
                        FROM pgml.digits
                        LIMIT 10""")
    assert sum(t == p for t, p in got) >= 9
    proba = rows(conn, """SELECT target, pgml.predict_proba('Handwritten Digits', image) AS prediction
                          FROM pgml.digits
                          LIMIT 10""")
    for (_, p), (_, label) in zip(proba, got):
        assert len(p) == 10 and abs(sum(p) - 1) < 1e-5 and int(np.argmax(p)) == label
    # the array, the row and the model-id forms agree, on every row, with ml_stack on the flattened image
    agree = conn.execute("""
        SELECT count(*) FILTER (WHERE pgml.predict('Handwritten Digits', d.image) = pgml.predict('Handwritten Digits', d)
                                  AND pgml.predict(1, d.image) = pgml.predict(1, d)
                                  AND pgml.predict(1, d.image) = ml_stack.predict(1, ARRAY(SELECT unnest(d.image)))::real),
               count(*)
        FROM pgml.digits AS d""").fetchone()
    assert agree == (1797, 1797)
    # deploy.md and predict/README.md
    conn.execute("SELECT * FROM pgml.train('Handwritten Digits', algorithm => 'xgboost', hyperparams => '{\"n_estimators\": 10}')")
    assert rows(conn, "SELECT * FROM pgml.deploy(2)") == [("Handwritten Digits", "specific", "xgboost")]
    assert rows(conn, "SELECT id, name, task::text, algorithm, runtime::text FROM pgml.deployed_models") == \
        [(2, "Handwritten Digits", "classification", "xgboost", "python")]
    assert rows(conn, "SELECT * FROM pgml.deploy('Handwritten Digits', strategy => 'rollback')")[0][1:] == \
        ("rollback", "linear")
    assert len(rows(conn, """SELECT
                                 target,
                                 pgml.predict(1, image) AS prediction
                             FROM pgml.digits
                             LIMIT 10""")) == 10
    # examples/multi_classification.sql: a view whose rows change on every read
    run_script(conn, """
        SELECT pgml.load_dataset('iris');
        DROP VIEW IF EXISTS pgml.iris_view;
        CREATE VIEW pgml.iris_view AS SELECT * FROM pgml.iris ORDER BY random() LIMIT 100;
        SELECT * FROM pgml.train('Iris Flower Types', 'classification', 'pgml.iris_view', 'target')""")
    assert len(rows(conn, """SELECT target, pgml.predict('Iris Flower Types', ARRAY[sepal_length, sepal_width, petal_length, petal_width]) AS prediction
                             FROM pgml.iris_view
                             LIMIT 10""")) == 10
    # examples/binary_classification.sql: the label is the boolean "malignant"
    conn.execute("SELECT pgml.load_dataset('breast_cancer')")
    assert rows(conn, "SELECT * FROM pgml.train('Breast Cancer Detection', 'classification', 'pgml.breast_cancer', 'malignant')") == \
        [("Breast Cancer Detection", "classification", "linear", True)]
    malignant = rows(conn, 'SELECT count(*) FILTER (WHERE malignant), count(*), count(DISTINCT "mean radius") FROM pgml.breast_cancer')[0]
    assert malignant[:2] == (212, 569) and malignant[2] > 400   # scikit-learn's 212 malignant of 569


def test_datasets_as_postgresml_lays_them_out(pgpy):
    conn = pgpy
    from sklearn import datasets
    for name, loader, label in [("iris", datasets.load_iris, "target"), ("wine", datasets.load_wine, "target"),
                                ("diabetes", datasets.load_diabetes, "target")]:
        assert rows(conn, "SELECT * FROM pgml.load_dataset(%s)", (name,)) == [(f"pgml.{name}", len(loader().target))]
        bunch = loader()
        cols = rows(conn, "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                          "WHERE attrelid = %s::regclass AND attnum > 0 ORDER BY attnum", (f"pgml.{name}",))
        assert cols[-1][0] == label and all(t == "real" for _, t in cols[:-1])
        first = conn.execute(f"SELECT * FROM pgml.{name} LIMIT 1").fetchone()
        by_name = dict(zip([c for c, _ in cols], first))
        # values by name, whatever the column order (PostgresML's wine puts hue before color_intensity)
        for j, feature in enumerate(bunch.feature_names):
            key = {"sepal length (cm)": "sepal_length", "sepal width (cm)": "sepal_width",
                   "petal length (cm)": "petal_length", "petal width (cm)": "petal_width"}.get(feature, feature)
            assert by_name[key] == pytest.approx(bunch.data[0, j], rel=1e-6), (name, key)
    assert [c for c, in rows(conn, "SELECT attname FROM pg_attribute WHERE attrelid = 'pgml.wine'::regclass "
                                   "AND attnum > 0 ORDER BY attnum")][9:12] == ["hue", "color_intensity", "od280/od315_of_diluted_wines"]
    # limit keeps the first rows; a table is replaced, and ml_stack's own copy does not stay behind
    assert rows(conn, "SELECT * FROM pgml.load_dataset('diabetes', \"limit\" => 100)") == [("pgml.diabetes", 100)]
    assert conn.execute("SELECT to_regclass('ml_stack.diabetes')").fetchone()[0] is None
    with pytest.raises(errors.FeatureNotSupported, match="not available here"):
        conn.execute("SELECT pgml.load_dataset('jdxcosta/diamonds')")
    with pytest.raises(errors.FeatureNotSupported, match="linnerud"):
        conn.execute("SELECT pgml.load_dataset('linnerud')")
    # a view of the user's over a dataset table is never dropped silently
    conn.execute("CREATE VIEW pgml.iris_view AS SELECT * FROM pgml.iris")
    with pytest.raises(errors.DependentObjectsStillExist, match="depend on it") as e:
        conn.execute("SELECT pgml.load_dataset('iris')")
    assert "DROP VIEW pgml.iris_view" in e.value.diag.message_hint
    assert conn.execute("SELECT count(*) FROM pgml.iris_view").fetchone()[0] == 150


# --------------------------------------------------------------------------------------------------------------
# the seed's SQL (Tembo's clickbait classifier), verbatim

HEADLINES = [
    ("You Won't Believe What This Cat Did Next", 1), ("17 Things Only 90s Kids Will Remember", 1),
    ("This One Weird Trick Will Change Your Life", 1), ("Doctors Hate Him For This Simple Secret", 1),
    ("What Happened Next Will Shock You", 1), ("21 Photos That Will Make You Laugh Out Loud", 1),
    ("Can You Guess Which Celebrity This Is", 1), ("These Dogs Are Having A Better Day Than You", 1),
    ("The Most Adorable Baby Animals You Will Ever See", 1), ("Which Pizza Topping Matches Your Personality", 1),
    ("Senate Passes Budget Bill After Long Debate", 0), ("Central Bank Raises Interest Rates By Quarter Point", 0),
    ("Earthquake Of Magnitude 6.1 Strikes Off Coast", 0), ("Court Rules On Disputed Election Results", 0),
    ("Oil Prices Fall As Supply Concerns Ease", 0), ("Government Announces New Infrastructure Plan", 0),
    ("Parliament Approves Trade Agreement With Neighbours", 0), ("Storm Forces Evacuation Of Coastal Towns", 0),
    ("Unemployment Rate Drops To Five Percent", 0), ("Scientists Publish Study On Ocean Temperatures", 0),
]


def test_the_seed_sql_runs_verbatim(pgpy):
    conn = pgpy
    conn.execute("CREATE EXTENSION ml_stack_vectorize")
    conn.execute("CREATE TABLE titles_training (title TEXT, is_clickbait INTEGER)")
    # every headline three times, with a number that keeps the rows distinct
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO titles_training VALUES (%s, %s)",
                        [(f"{t} ({k})", c) for k in range(3) for t, c in HEADLINES])
    conn.execute("ALTER TABLE titles_training ADD COLUMN embedding double precision[]")
    conn.execute("UPDATE titles_training SET embedding = "
                 "pgml.embed('sentence-transformers/all-MiniLM-L6-v2', title)::double precision[]")
    conn.execute("CREATE VIEW title_tng AS SELECT is_clickbait, embedding FROM titles_training")
    # Tembo's ML stack documentation, as written
    assert rows(conn, """SELECT * FROM pgml.train(
                             project_name => 'clickbait_classifier',
                             algorithm => 'xgboost',
                             task => 'classification',
                             relation_name => 'title_tng',
                             y_column_name => 'is_clickbait',
                             test_sampling => 'random'
                         )""") == [("clickbait_classifier", "classification", "xgboost", True)]
    # its prediction function names a model ml_stack does not have: an error that says which it has
    conn.execute("""CREATE OR REPLACE FUNCTION predict_clickbait(
                        input_string text
                    ) RETURNS TABLE(is_clickbait REAL) LANGUAGE sql AS $$
                        SELECT pgml.predict(
                            project_name => 'clickbait_classifier',
                            features => (select vectorize.transform_embeddings(
                                input => 'warmest weather on record',
                                model_name => 'all_MiniLM_L12_v2')
                            )
                        )
                    $$""")
    with pytest.raises(psycopg.Error, match="all-MiniLM-L12-v2") as e:
        conn.execute("SELECT * FROM predict_clickbait('x')")
    assert "all-MiniLM-L6-v2" in (e.value.diag.message_hint or "") + (e.value.diag.message_primary or "")
    # with the model ml_stack has, the same function predicts from raw text
    conn.execute("""CREATE OR REPLACE FUNCTION predict_clickbait(
                        input_string text
                    ) RETURNS TABLE(is_clickbait REAL) LANGUAGE sql AS $$
                        SELECT pgml.predict(
                            project_name => 'clickbait_classifier',
                            features => (select vectorize.transform_embeddings(
                                input => input_string,
                                model_name => 'sentence-transformers/all-MiniLM-L6-v2')
                            )
                        )
                    $$""")
    # raw text in: the answer of the model on the stored embedding of the same text, for every title
    agree = conn.execute("SELECT count(*) FILTER (WHERE (SELECT * FROM predict_clickbait(title)) = "
                         "pgml.predict('clickbait_classifier', embedding)), count(*) FROM titles_training").fetchone()
    assert agree == (60, 60)
    assert conn.execute("SELECT avg(((SELECT * FROM predict_clickbait(title)) = is_clickbait)::int) "
                        "FROM titles_training").fetchone()[0] > 0.9
    # the blog's retraining function, with PERFORM where it wrote SELECT (PL/pgSQL has no destination for it)
    conn.execute("""CREATE OR REPLACE FUNCTION model_train()
                    RETURNS void AS $$
                    BEGIN
                        PERFORM * FROM pgml.train(
                            project_name => 'clickbait_classifier',
                            algorithm => 'xgboost',
                            test_sampling => 'random'
                        );
                    END;
                    $$ LANGUAGE plpgsql""")
    conn.execute("INSERT INTO titles_training SELECT title || ' again', is_clickbait, embedding FROM titles_training LIMIT 6")
    conn.execute("SELECT model_train()")
    assert rows(conn, "select id, name, algorithm from pgml.trained_models ORDER BY id") == \
        [(1, "clickbait_classifier", "xgboost"), (2, "clickbait_classifier", "xgboost")]
    assert conn.execute("SELECT rows FROM ml_stack.snapshots ORDER BY id DESC LIMIT 1").fetchone()[0] == 66
    # and the blog's prediction through pgml.embed
    assert conn.execute("""SELECT pgml.predict(
                               project_name => 'clickbait_classifier',
                               features => (select pgml.embed('all-MiniLM-L6-v2',
                                   'Hottest weather in 100 years'
                               ))
                           )""").fetchone()[0] in (0.0, 1.0)


# --------------------------------------------------------------------------------------------------------------
# what pgml translates, against scikit-learn


@pytest.fixture
def houses(pg):
    rng = np.random.default_rng(3)
    n = 200
    x1, x2 = rng.normal(size=n), rng.uniform(0, 5, size=n)
    y = 3 * x1 - 2 * x2 + rng.normal(scale=0.3, size=n)
    pg.execute("CREATE TABLE houses (id int PRIMARY KEY, x1 float8, x2 float8, y float8)")
    with pg.cursor() as cur:
        cur.executemany("INSERT INTO houses VALUES (%s, %s, %s, %s)",
                        [(i + 1, float(x1[i]), float(x2[i]), float(y[i])) for i in range(n)])
    return pg, np.column_stack([np.arange(1, n + 1), x1, x2]), y


@pytest.mark.parametrize("sampling", ["first", "last"])
def test_first_and_last_splits(houses, sampling):
    conn, X, y = houses
    conn.execute("SELECT * FROM pgml.train('h', 'regression', 'houses', 'y', test_size => 0.25, test_sampling => %s)",
                 (sampling,))
    test = slice(0, 50) if sampling == "first" else slice(150, 200)
    train = np.ones(200, bool)
    train[test] = False
    oracle = LinearRegression().fit(X[train], y[train])
    served = np.array([r[0] for r in rows(conn, "SELECT ml_stack.predict('h', ARRAY[id, x1, x2]) FROM houses ORDER BY id")])
    np.testing.assert_allclose(served, oracle.predict(X), rtol=1e-7, atol=1e-9)
    r2 = conn.execute("SELECT (metrics->>'r2')::float8 FROM pgml.models").fetchone()[0]
    assert r2 == pytest.approx(r2_score(y[test], oracle.predict(X[test])), rel=1e-9)
    assert rows(conn, "SELECT test_sampling::text, y_column_name FROM pgml.snapshots") == [(sampling, ["y"])]


def test_default_stratified_sampling_is_random_for_a_regression(houses):
    conn, _, _ = houses
    conn.execute("SELECT * FROM pgml.train('h', 'regression', 'houses', 'y')")
    assert conn.execute("SELECT test_sampling FROM ml_stack.snapshots").fetchone()[0] == "random"


def test_postgresml_preprocess_rules(pg):
    """target encoding without smoothing (PostgresML's plain mean), impute "mode", scale "robust" (scikit-learn's
    RobustScaler: median and interquartile range), impute "error" (the default), "native" on text (codes)."""
    conn = pg
    n = 120
    rng = np.random.default_rng(5)
    a = [None if i % 6 == 0 else float(rng.integers(0, 9)) for i in range(n)]
    b = rng.normal(size=n)
    c = [["x", "y", "z"][int(v)] for v in rng.integers(0, 3, size=n)]
    d = [["lo", "mid", "hi"][i % 3] for i in range(n)]
    y = np.array([(0 if a[i] is None else a[i]) * 0.5 + 2 * b[i] + {"x": 1, "y": 3, "z": -2}[c[i]] + rng.normal(scale=.1)
                  for i in range(n)])
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, a float8, b float8, c text, d text, y float8)")
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO t VALUES (%s, %s, %s, %s, %s, %s)",
                        [(i + 1, a[i], float(b[i]), c[i], d[i], float(y[i])) for i in range(n)])
    conn.execute("""SELECT * FROM pgml.train('pp', 'regression', 't', 'y', algorithm => 'ridge', test_sampling => 'last',
                    preprocess => '{"a": {"impute": "mode", "scale": "robust"}, "b": {"impute": "error"},
                                    "c": {"encode": "target"}, "d": {"encode": "native"}}')""")
    train = slice(0, 90)
    a_train = np.array([v for v in a[train] if v is not None])
    values, counts = np.unique(a_train, return_counts=True)
    mode = values[np.argmax(counts)]                              # the smallest of the most frequent
    a_filled = np.array([mode if v is None else v for v in a])
    q1, median, q3 = np.percentile(a_filled[train], [25, 50, 75])  # after imputation, as a scaler after an imputer
    means = {k: y[train][np.array(c[train]) == k].mean() for k in "xyz"}  # no smoothing
    codes = {"hi": 1, "lo": 2, "mid": 3}                              # sorted categories, from 1
    X = np.column_stack([np.arange(1, n + 1), (a_filled - median) / (q3 - q1), b, [means[v] for v in c],
                         [codes[v] for v in d]])
    oracle = Ridge(alpha=1.0).fit(X[train], y[train])
    served = np.array([r[0] for r in rows(conn, "SELECT ml_stack.predict_row('pp', to_jsonb(t)) FROM t ORDER BY id")])
    np.testing.assert_allclose(served, oracle.predict(X), rtol=1e-6, atol=1e-8)
    # pgml.predict's row form is the same prediction
    same = rows(conn, "SELECT pgml.predict('pp', t) = ml_stack.predict_row('pp', to_jsonb(t))::real FROM t")
    assert all(s for (s,) in same)
    encoding = conn.execute("SELECT columns -> 3 -> 'encoding' FROM ml_stack.snapshots").fetchone()[0]
    assert encoding["categories"] == ["x", "y", "z"]
    np.testing.assert_allclose([v[0] for v in encoding["values"]], [means[k] for k in "xyz"], rtol=1e-12)


def test_materialize_snapshot_keeps_the_rows_of_its_first_read(houses):
    conn, _, _ = houses
    conn.execute("SELECT * FROM pgml.train('m', 'regression', 'houses', 'y', materialize_snapshot => true)")
    conn.execute("SELECT * FROM pgml.train('live', 'regression', 'houses', 'y')")
    assert rows(conn, "SELECT relation_name, materialized FROM pgml.snapshots ORDER BY id") == \
        [("pgml.snapshot_1", True), ("public.houses", False)]
    conn.execute("INSERT INTO houses SELECT id + 1000, x1, x2, y FROM houses WHERE id <= 20")
    conn.execute("SELECT * FROM pgml.train('m', algorithm => 'ridge')")
    conn.execute("SELECT * FROM pgml.train('live', algorithm => 'ridge')")
    assert rows(conn, "SELECT p.name, s.rows FROM ml_stack.snapshots AS s JOIN ml_stack.projects AS p ON p.id = s.project_id "
                      "ORDER BY s.id") == [("m", 200), ("live", 200), ("m", 200), ("live", 220)]


# --------------------------------------------------------------------------------------------------------------
# serving, the schema's hygiene, bad input


def test_predict_overloads_resolve_and_inline(houses):
    conn, X, _ = houses
    conn.execute("SELECT * FROM pgml.train('h', 'regression', 'houses', 'y')")
    expected = conn.execute("SELECT ml_stack.predict('h', ARRAY[1, 2.5, 3])::real").fetchone()[0]
    for literal in ("ARRAY[1, 2.5, 3]", "ARRAY[1, 2.5, 3]::real[]", "ARRAY[1, 2.5, 3]::float8[]"):
        assert conn.execute(f"SELECT pgml.predict('h', {literal})").fetchone()[0] == expected, literal
    assert conn.execute("SELECT pgml.predict('h', ARRAY[1, 2, 3])").fetchone()[0] == \
        conn.execute("SELECT ml_stack.predict('h', ARRAY[1, 2, 3])::real").fetchone()[0]
    assert conn.execute("SELECT pgml.predict(1, ARRAY[1, 2, 3]::smallint[])").fetchone()[0] == \
        conn.execute("SELECT ml_stack.predict(1, ARRAY[1, 2, 3])::real").fetchone()[0]
    # predict_batch: rows one after the other
    batch = [r[0] for r in rows(conn, "SELECT * FROM pgml.predict_batch('h', ARRAY[1, 2.5, 3, 4, 5, 6]::real[])")]
    assert batch == [expected, conn.execute("SELECT pgml.predict('h', ARRAY[4, 5, 6])").fetchone()[0]]
    assert conn.execute("SELECT pgml.predict_batch(1, ARRAY[1, 2.5, 3, 4, 5, 6]::real[])").fetchone()[0] == batch
    # the planner inlines pgml.predict and, for a one-dimensional array, ml_stack's compiled serving below it:
    # the plan holds the model's arithmetic (its wrong-count guard), not a call of pgml.predict
    plan = "\n".join(r[0] for r in rows(conn, "EXPLAIN VERBOSE SELECT pgml.predict('h', ARRAY[id, x1, x2]) FROM houses"))
    assert "pgml.predict" not in plan and "ml_stack._wrong_feature_count" in plan, plan
    # an array of several dimensions or another lower bound is read in row-major order, from 1
    assert conn.execute("SELECT pgml.predict('h', '[0:2]={1,2.5,3}'::real[]), pgml.predict('h', '{{1,2.5,3}}'::real[])"
                        ).fetchone() == (expected, expected)


def test_functions_pin_search_path_except_the_inlined_serving_path(pg):
    functions = rows(pg, """SELECT p.proname, l.lanname, p.proconfig, p.proisstrict, p.prosecdef
                            FROM pg_proc AS p JOIN pg_language AS l ON l.oid = p.prolang
                            WHERE p.pronamespace = 'pgml'::regnamespace""")
    serving = {"predict", "predict_proba"}
    # train resolves relation_name with the caller's search_path, as ml_stack.train does
    unpinned = [f[0] for f in functions if f[0] not in serving | {"train"}
                and "search_path=pg_catalog, pg_temp" not in (f[2] or [])]
    assert unpinned == []
    bad = [f for f in functions if f[0] in serving and (f[1] != "sql" or f[2] or f[3] or f[4])]
    assert bad == []
    comments = rows(pg, "SELECT p.oid::regprocedure::text FROM pg_proc AS p WHERE p.pronamespace = 'pgml'::regnamespace "
                        "AND p.proname NOT LIKE '\\_%%' AND obj_description(p.oid, 'pg_proc') IS NULL")
    assert comments == []


def test_roles_and_views_follow_ml_stack(houses, pg_server):
    """Schema pgml has ml_stack's boundary: a predictor predicts and reads the views (security_invoker: what it may
    read in ml_stack), and may not train; a role outside the group roles reaches nothing."""
    conn, _, _ = houses
    conn.execute("SELECT * FROM pgml.train('h', 'regression', 'houses', 'y')")
    suffix = uuid.uuid4().hex[:8]
    app, outsider = f"pgml_app_{suffix}", f"pgml_outsider_{suffix}"
    for role in (app, outsider):
        conn.execute(f"CREATE ROLE {role} LOGIN")
    conn.execute(f"GRANT ml_stack_predictor TO {app}")
    conn.execute(f"GRANT SELECT ON houses TO {app}, {outsider}")

    def connect(role):
        return psycopg.connect(host=pg_server.host, port=pg_server.port, user=role, dbname=conn.info.dbname,
                               autocommit=True)
    try:
        with connect(app) as c:
            assert c.execute("SELECT pgml.predict('h', ARRAY[1, 2, 3])").fetchone()[0] is not None
            assert c.execute("SELECT count(*) FROM pgml.models").fetchone()[0] == 1
            with pytest.raises(errors.InsufficientPrivilege):
                c.execute("SELECT * FROM pgml.train('h', algorithm => 'ridge')")
        with connect(outsider) as c:
            for query in ("SELECT pgml.predict('h', ARRAY[1, 2, 3])", "SELECT * FROM pgml.models"):
                with pytest.raises(errors.InsufficientPrivilege):
                    c.execute(query)
    finally:
        conn.execute(f"DROP OWNED BY {app}, {outsider}")
        conn.execute(f"DROP ROLE {app}")
        conn.execute(f"DROP ROLE {outsider}")


@pytest.mark.parametrize("call, error, words", [
    ("SELECT * FROM pgml.train('h', 'clustering', 'houses', 'y')", errors.FeatureNotSupported, "clustering"),
    ("SELECT * FROM pgml.train('h', 'regression', 'houses', 'y', runtime => 'openai')", errors.FeatureNotSupported, "openai"),
    ("SELECT * FROM pgml.train('h', 'regression', 'houses', 'y', algorithm => 'xgbost')", errors.InvalidTextRepresentation, "xgbost"),
    ("SELECT * FROM pgml.train('h', 'regression', 'houses; DROP TABLE houses', 'y')", errors.UndefinedTable, "does not exist"),
    ("SELECT * FROM pgml.train('h', 'regression', 'houses', 'y', preprocess => '{\"x1\": {\"scale\": \"quantile\"}}')",
     errors.InvalidParameterValue, "robust"),
    ("SELECT * FROM pgml.train('h', 'regression', 'houses', 'y', materialize_snapshot => true, test_size => 2.5)",
     errors.InvalidParameterValue, "test_size"),
    ("SELECT * FROM pgml.deploy('h', 'new_score')", errors.InvalidParameterValue, "deploy one model"),
    ("SELECT * FROM pgml.predict_batch('nope', ARRAY[1, 2, 3]::real[])", psycopg.Error, "project \"nope\" does not exist"),
    ("SELECT pgml.predict_batch(99, ARRAY[1, 2, 3]::real[])", errors.NoDataFound, "model 99"),
])
def test_bad_input_leaves_everything_as_it_was(houses, call, error, words):
    conn, _, _ = houses
    conn.execute("SELECT * FROM pgml.train('h', 'regression', 'houses', 'y')")
    before = registry_rows(conn)
    tables = rows(conn, "SELECT c.oid::regclass::text FROM pg_class AS c WHERE c.relnamespace IN "
                        "('pgml'::regnamespace, 'public'::regnamespace) ORDER BY 1")
    with pytest.raises(error, match=words):
        conn.execute(call)
    assert registry_rows(conn) == before
    assert rows(conn, "SELECT c.oid::regclass::text FROM pg_class AS c WHERE c.relnamespace IN "
                      "('pgml'::regnamespace, 'public'::regnamespace) ORDER BY 1") == tables


def test_dump_and_restore_keep_the_pgml_schema(pg_server, new_db, tmp_path, houses):
    conn, _, _ = houses
    conn.execute("SELECT * FROM pgml.train('h', 'regression', 'houses', 'y', materialize_snapshot => true)")
    before = rows(conn, "SELECT id, pgml.predict('h', h) FROM houses AS h ORDER BY id")
    target = _restore(pg_server, new_db, tmp_path, conn, "exit_on_error")
    with pg_server.connect(target) as restored:
        assert rows(restored, "SELECT id, pgml.predict('h', h) FROM houses AS h ORDER BY id") == before
        assert rows(restored, "SELECT name, runtime::text FROM pgml.deployed_models") == [("h", "sql")]
        assert restored.execute("SELECT count(*) FROM pgml.snapshot_1").fetchone()[0] == 200
        restored.execute("SET client_min_messages = warning")
        restored.execute("SELECT * FROM pgml.train('h', 'regression', 'houses', 'y', materialize_snapshot => true)")
        assert restored.execute("SELECT max(relation_name) FROM pgml.snapshots").fetchone()[0] == "pgml.snapshot_2"


def test_the_drop_in_extensions_install_and_drop_quietly(conn):
    """psql as the user sees it: CREATE EXTENSION and DROP EXTENSION of both drop-ins print no NOTICE."""
    notices = []
    conn.add_notice_handler(lambda d: notices.append(d.message_primary))
    for _ in range(2):
        conn.execute("CREATE EXTENSION ml_stack_pgml")
        conn.execute("CREATE EXTENSION ml_stack_vectorize")
        conn.execute("DROP EXTENSION ml_stack_vectorize")
        conn.execute("DROP EXTENSION ml_stack_pgml")
    assert notices == []
    # the schemas stay, as ml_stack's does (PostgreSQL does not make a schema it creates for an extension a
    # member of it), and nothing of the extensions is left in them
    assert conn.execute("SELECT (SELECT count(*) FROM pg_class WHERE relnamespace IN ('pgml'::regnamespace, 'vectorize'::regnamespace)) "
                        "+ (SELECT count(*) FROM pg_proc WHERE pronamespace IN ('pgml'::regnamespace, 'vectorize'::regnamespace)) "
                        "+ (SELECT count(*) FROM pg_type WHERE typnamespace IN ('pgml'::regnamespace, 'vectorize'::regnamespace))"
                        ).fetchone()[0] == 0
