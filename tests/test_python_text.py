"""The python engine on vectorized text (DESIGN §3b): a text column with a vectorize rule becomes the model's
features in the python engine too (hashing, a vocabulary fitted on the training rows, or MiniLM), and the model
serves from raw text. Oracles: the same library fitted outside the server on the vectors ml_stack.embed gives.
"""

import json
import math
import re

import numpy as np
import pytest
import xgboost
from sklearn.linear_model import LogisticRegression

from debian_text import load_packages
from helpers import model_row, train

SECTIONS = ["libs", "python", "utils", "admin", "devel", "net"]
MINILM = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture
def pconn(conn):
    conn.execute("CREATE EXTENSION ml_stack_python CASCADE")
    return conn


def _docs(conn, limit):
    load_packages(conn, sections=set(SECTIONS), limit=limit)
    conn.execute("CREATE TABLE docs AS SELECT description, array_position(%s::text[], section) - 1 AS label "
                 "FROM packages ORDER BY id", (SECTIONS,))
    return conn.execute("SELECT description, label FROM docs").fetchall()


def _vectors(conn, rows, transformer, options):
    out = []
    for text, _ in rows:
        v = conn.execute("SELECT ml_stack.embed(%s, %s::text, %s::jsonb)", (transformer, text, json.dumps(options))).fetchone()[0]
        out.append(v)
    return np.array(out, dtype=np.float32).astype(np.float64)


def _last_split(n, test_size=0.25):
    return n - math.ceil(n * test_size)


def test_xgboost_on_hashed_text_matches_the_library(pconn):
    rows = _docs(pconn, 600)
    opts = {"dims": 128}
    result = train(pconn, "xg", "classification", "docs", "label", algorithm="xgboost", test_sampling="last",
                   hyperparams={"n_estimators": 20, "max_depth": 3},
                   preprocess={"description": {"vectorize": "hashing", "options": opts}})
    art = model_row(pconn, result["model_id"])["artifact"]
    assert art["format"] == "trees", "compiled to SQL"
    x = _vectors(pconn, rows, "hashing", opts)
    y = np.array([r[1] for r in rows])
    ntrain = _last_split(len(rows))
    classes = sorted(set(y[:ntrain]))
    ref = xgboost.XGBClassifier(n_estimators=20, max_depth=3, tree_method="hist",
                                random_state=model_row(pconn, result["model_id"])["hyperparams"]["random_state"])
    ref.fit(x[:ntrain], np.searchsorted(classes, y[:ntrain]))
    served = np.array([r[0] for r in pconn.execute(
        "SELECT ml_stack.predict_proba_row('xg', to_jsonb(d)) FROM docs AS d")])
    np.testing.assert_allclose(served, ref.predict_proba(x), atol=1e-5)   # float32 trees, as XGBoost
    labels = [r[0] for r in pconn.execute("SELECT ml_stack.predict_row('xg', to_jsonb(d)) FROM docs AS d")]
    np.testing.assert_array_equal(labels, np.asarray(classes)[ref.predict(x)])


def test_logistic_regression_on_a_fitted_vocabulary(pconn):
    rows = _docs(pconn, 500)
    result = train(pconn, "lr", "classification", "docs", "label", algorithm="linear", engine="python",
                   test_sampling="last", preprocess={"description": {"vectorize": "tfidf", "options": {"min_df": 2}}})
    art = model_row(pconn, result["model_id"])["artifact"]
    assert art["format"] == "linear"
    x = _vectors(pconn, rows, "lr.description", {})   # the vocabulary fitted on the training rows
    y = np.array([r[1] for r in rows])
    ntrain = _last_split(len(rows))
    ref = LogisticRegression(max_iter=1000).fit(x[:ntrain], y[:ntrain])
    served = np.array([r[0] for r in pconn.execute(
        "SELECT ml_stack.predict_proba_row('lr', to_jsonb(d)) FROM docs AS d")])
    np.testing.assert_allclose(served, ref.predict_proba(x), atol=1e-4)


def test_minilm_vectors_train_xgboost_and_serve_from_raw_text(pconn):
    rows = _docs(pconn, 160)
    result = train(pconn, "mini", "classification", "docs", "label", algorithm="xgboost", test_sampling="last",
                   hyperparams={"n_estimators": 10, "max_depth": 2},
                   preprocess={"description": {"vectorize": MINILM}})
    columns = pconn.execute("SELECT columns FROM ml_stack.snapshots").fetchone()[0]
    assert columns[0]["width"] == 384 and columns[0]["transformer"]["name"] == MINILM
    y = np.array([r[1] for r in rows])
    ntrain = _last_split(len(rows))

    def batch(texts):   # as the engine embeds a split: one call per 256 texts, in row order
        return np.array([r[0] for r in pconn.execute("SELECT e FROM ml_stack.embed(%s, %s::text[]) AS e",
                                                     (MINILM, texts))], dtype=np.float64)

    # MiniLM's vectors depend on the batch they are computed in by ~1e-7 (padding), so the oracle embeds the
    # training rows as the engine did, and the served rows one at a time, as predict_row does
    x_train = batch([r[0] for r in rows[:ntrain]])
    x_served = np.array([batch([r[0]])[0] for r in rows])
    classes = sorted(set(y[:ntrain]))
    ref = xgboost.XGBClassifier(n_estimators=10, max_depth=2, tree_method="hist",
                                random_state=model_row(pconn, result["model_id"])["hyperparams"]["random_state"])
    ref.fit(x_train, np.searchsorted(classes, y[:ntrain]))
    served = np.array([r[0] for r in pconn.execute(
        "SELECT ml_stack.predict_proba_row('mini', to_jsonb(d)) FROM docs AS d")])
    np.testing.assert_allclose(served, ref.predict_proba(x_served), atol=1e-5)
    # and the test split's metrics are the library's on the engine's own vectors
    x_test = batch([r[0] for r in rows[ntrain:]])
    accuracy = float(np.mean(np.asarray(classes)[ref.predict(x_test)] == y[ntrain:]))
    assert result["metrics"]["accuracy"] == pytest.approx(accuracy, abs=1e-12)


def test_naive_bayes_refuses_minilm_vectors(pconn):
    _docs(pconn, 50)
    with pytest.raises(Exception) as info:
        pconn.execute("SELECT * FROM ml_stack.train('nb', 'classification', 'docs', 'label', algorithm => 'naive_bayes', "
                      "preprocess => %s::jsonb)", (json.dumps({"description": {"vectorize": MINILM}}),))
    assert "negative values" in info.value.diag.message_primary and "xgboost" in info.value.diag.message_hint
    assert pconn.execute("SELECT count(*) FROM ml_stack.models").fetchone()[0] == 0


def test_too_many_dense_values_is_a_clear_error(pconn):
    _docs(pconn, 200)
    pconn.execute("SET ml_stack.max_tree_nodes = 250000")
    pconn.execute("CREATE TABLE many AS SELECT d.* FROM docs AS d, generate_series(1, 200)")  # 40k rows
    with pytest.raises(Exception) as info:
        pconn.execute("SELECT * FROM ml_stack.train('big', 'classification', 'many', 'label', algorithm => 'xgboost', "
                      "preprocess => '{\"description\": {\"vectorize\": \"hashing\", \"options\": {\"dims\": 4096}}}')")
    diag = info.value.diag
    assert "once its text is vectorized" in diag.message_primary and "dims" in diag.message_hint
    assert pconn.execute("SELECT count(*) FROM ml_stack.models").fetchone()[0] == 0


def test_sparse_input_when_dense_would_be_too_large(pconn):
    """Past ml_stack.max_dense_values the estimators that take sparse input get scipy CSR (zeros as zeros):
    the same model as on the dense matrix; XGBoost (absent = missing) is refused instead."""
    rows = _docs(pconn, 400)
    pconn.execute("SET ml_stack.max_dense_values = 1000")
    result = train(pconn, "sp", "classification", "docs", "label", algorithm="linear", engine="python",
                   test_sampling="last", preprocess={"description": {"vectorize": "tfidf"}})
    x = _vectors(pconn, rows, "sp.description", {})
    y = np.array([r[1] for r in rows])
    ntrain = _last_split(len(rows))
    ref = LogisticRegression(max_iter=1000).fit(x[:ntrain], y[:ntrain])
    served = np.array([r[0] for r in pconn.execute(
        "SELECT ml_stack.predict_proba_row('sp', to_jsonb(d)) FROM docs AS d")])
    np.testing.assert_allclose(served, ref.predict_proba(x), atol=1e-4)
    assert model_row(pconn, result["model_id"])["artifact"]["format"] == "linear"
    with pytest.raises(Exception) as info:
        pconn.execute("SELECT * FROM ml_stack.train('sp2', 'classification', 'docs', 'label', algorithm => 'xgboost', "
                      "preprocess => '{\"description\": {\"vectorize\": \"tfidf\"}}')")
    assert "ml_stack.max_dense_values" in info.value.diag.message_primary


def test_a_dense_problem_too_large_for_the_sql_engine_goes_to_the_python_engine(pconn):
    """Least squares on 384 features (a MiniLM-sized vector) is refused by the sql engine, which solves up to 200 in
    seconds; with ml_stack_python installed and no engine named, train says so and the python engine fits it, as
    scikit-learn's LinearRegression does on the same training rows."""
    from sklearn.linear_model import LinearRegression
    pconn.execute("SELECT setseed(0.3)")
    pconn.execute("CREATE TABLE wide AS SELECT r, array_agg(random() ORDER BY j) AS v FROM generate_series(1, 600) AS r, "
                  "generate_series(1, 384) AS j GROUP BY r")
    pconn.execute("CREATE VIEW wide_y AS SELECT v, v[1] * 3 - v[2] + v[384] + (r % 7) * 0.01 AS y FROM wide ORDER BY r")
    notices = []
    pconn.add_notice_handler(lambda d: notices.append(d.message_primary))
    row = train(pconn, "wide", "regression", "wide_y", "y", test_sampling="last")
    assert any("least squares on 384 features (the sql engine solves up to 200 in seconds) is too large for the sql "
               "engine: the python engine trains it" in n for n in notices), notices
    assert (row["engine"], row["algorithm"]) == ("python", "linear")
    X, y = (np.array(c) for c in zip(*pconn.execute("SELECT v, y FROM wide_y").fetchall()))
    X = np.array([list(v) for v in X], dtype=np.float64)
    n_train = _last_split(len(y))
    ref = LinearRegression().fit(X[:n_train], y[:n_train])
    got = np.array([r[0] for r in pconn.execute("SELECT ml_stack.predict('wide', v) FROM wide_y").fetchall()])
    assert np.abs(got - ref.predict(X)).max() < 1e-8


def test_a_python_engine_text_classifier_is_scored_on_the_retrained_split(pconn):
    """A python-engine logistic regression over a fitted vocabulary is a 'linear' artifact: a retrain scores it on
    the new split sparsely (training/compare.sql), with the f1 scikit-learn gives to its predict_row answers."""
    from sklearn.metrics import f1_score
    _docs(pconn, 400)
    first = train(pconn, "lr2", "classification", "docs", "label", algorithm="linear", engine="python",
                  test_sampling="last", preprocess={"description": {"vectorize": "counts"}})
    second = train(pconn, "lr2", algorithm="naive_bayes", test_sampling="last",
                   preprocess={"description": {"vectorize": "tfidf"}})
    decision = model_row(pconn, second["model_id"])["deploy_decision"]
    old_f1 = float(re.fullmatch(r"(?:not )?deployed: f1 [\d.]+ on this split (?:<=|>) ([\d.]+) of the deployed model "
                                rf"{first['model_id']} on this split", decision).group(1))
    y, yhat = np.array(pconn.execute(
        "SELECT label, ml_stack.predict_row(%s::bigint, to_jsonb(d)) FROM (SELECT *, row_number() OVER () AS rn FROM docs) AS d "
        "WHERE rn > 300 ORDER BY rn", (first["model_id"],)).fetchall(), dtype=float).T
    assert len(y) == 100
    assert old_f1 == pytest.approx(f1_score(y, yhat, average="macro"), abs=1e-6)
