"""Automatic deploy decides on the same rows (0.5.0): a retrained model is compared with the deployed model scored
on the retrained model's own test rows, so that after a drift the decayed model does not keep serving because of
its score on old rows. The deployed model's score on the split is checked against scikit-learn's r2_score / f1_score
on the same rows with the deployed model's own predictions."""

import re

import numpy as np
import pytest
from sklearn.metrics import f1_score, r2_score

from helpers import train

DRIFT = """
CREATE TABLE d (x float8, z float8, flag boolean, y float8);
INSERT INTO d SELECT i, (i * 7) % 11, i % 4 = 0, 2 * i + ((i * 7) % 11) + (i % 3) FROM generate_series(1, 200) AS i;
"""


def decision(conn, model_id):
    return conn.execute("SELECT deploy_decision FROM ml_stack.models WHERE id = %s", (model_id,)).fetchone()[0]


def test_after_a_drift_the_better_model_is_deployed(conn):
    conn.execute(DRIFT)
    first = train(conn, "drift", "regression", "d", "y")
    conn.execute("UPDATE d SET y = -3 * x + 2 * z + 600 + (x::int % 5)")   # the world changed
    second = train(conn, "drift")
    # on its own old rows the first model scores ~1.0, as the new one does on today's: the old rule kept it
    assert first["metrics"]["r2"] > second["metrics"]["r2"] > 0.999
    assert second["deployed"] is True
    text = decision(conn, second["model_id"])
    old_r2 = float(re.fullmatch(rf"deployed: r2 [\d.]+ on this split > (-?[\d.]+) of the deployed model "
                                rf"{first['model_id']} on this split", text).group(1))
    # the oracle: the first model's predictions of the second model's test rows, scored by scikit-learn
    rows = conn.execute("""
        WITH s AS (SELECT seed, test_rows FROM ml_stack.snapshots
                   WHERE id = (SELECT snapshot_id FROM ml_stack.models WHERE id = %(second)s)),
             t AS (SELECT d.*, md5((SELECT seed FROM s) || ':' || row_number() OVER ()) COLLATE "C" AS k FROM d)
        SELECT y, ml_stack.predict(%(first)s::bigint, ARRAY[x, z, flag::int]) FROM t
        ORDER BY k LIMIT (SELECT test_rows FROM s)""",   # the split's test rows (training/dataset.sql)
        {"first": first["model_id"], "second": second["model_id"]}).fetchall()
    assert len(rows) == 50
    y, yhat = np.array(rows).T
    assert old_r2 == pytest.approx(r2_score(y, yhat), abs=1e-6)
    assert conn.execute("SELECT model_id FROM ml_stack.deployed_models").fetchone()[0] == second["model_id"]


def test_a_worse_retrain_is_not_deployed_and_says_why_on_this_split(conn):
    conn.execute(DRIFT)
    first = train(conn, "drift", "regression", "d", "y")
    worse = train(conn, "drift", algorithm="ridge", hyperparams={"alpha": 100000.0})
    assert worse["deployed"] is False
    assert re.fullmatch(rf"not deployed: r2 [\d.]+ on this split <= [\d.]+ of the deployed model {first['model_id']} "
                        r"on this split", decision(conn, worse["model_id"]))


def test_classifiers_compare_f1_on_the_same_rows(conn):
    conn.execute("""
        CREATE TABLE c (a float8, b float8, label integer);
        INSERT INTO c SELECT (i % 17) * 0.5, (i % 5) * 1.5, CASE WHEN (i % 17) * 0.5 + (i % 5) * 1.5 > 6 THEN 1 ELSE 0 END
        FROM generate_series(1, 300) AS i;
    """)
    first = train(conn, "cls", "classification", "c", "label")
    conn.execute("UPDATE c SET label = 1 - label")   # the labels flipped
    second = train(conn, "cls")
    assert second["deployed"] is True
    old_f1 = float(re.fullmatch(r"deployed: f1 [\d.]+ on this split > ([\d.]+) of the deployed model \d+ on this split",
                                decision(conn, second["model_id"])).group(1))
    assert old_f1 < 0.5 < second["metrics"]["f1"]
    # the first model on every row now: its f1 is the flipped one's complement on this data
    y, yhat = np.array(conn.execute("SELECT label, ml_stack.predict(%s::bigint, ARRAY[a, b]) FROM c",
                                    (first["model_id"],)).fetchall()).T
    assert f1_score(y, yhat, average="macro") < 0.5


def test_a_deployed_model_without_an_impute_rule_for_todays_nulls_is_replaced(conn):
    conn.execute(DRIFT)
    first = train(conn, "drift", "regression", "d", "y")
    conn.execute("UPDATE d SET z = NULL WHERE x::int % 3 = 0")
    second = train(conn, "drift", preprocess={"z": {"impute": "mean"}})
    assert second["deployed"] is True
    assert re.fullmatch(rf"deployed: the deployed model {first['model_id']} gives no prediction for \d+ of the 50 rows "
                        r"of this split \(NULL features it has no impute rule for\)", decision(conn, second["model_id"]))


def test_text_models_are_scored_with_their_own_vectorizer(conn):
    conn.execute("""
        CREATE TABLE t (title text, label integer);
        INSERT INTO t SELECT CASE WHEN i % 2 = 0 THEN 'you will not believe number ' || i ELSE 'council approves budget ' || i END,
                             i % 2 FROM generate_series(1, 200) AS i;
    """)
    first = train(conn, "text", "classification", "t", "label", algorithm="naive_bayes",
                  preprocess={"title": {"vectorize": "counts"}})
    second = train(conn, "text", algorithm="naive_bayes", preprocess={"title": {"vectorize": "counts"}},
                   hyperparams={"alpha": 0.5})
    assert re.fullmatch(rf"not deployed: f1 1\.000000 on this split <= 1\.000000 of the deployed model "
                        rf"{first['model_id']} on this split", decision(conn, second["model_id"]))


def test_a_text_classifier_is_scored_sparsely_with_its_own_vocabulary(conn):
    """A deployed naive Bayes model over a fitted vocabulary, with a numeric column beside the text (NULLs
    imputed), is scored on the retrained model's split sparsely (as training scores its own test rows: row by
    row, a wide vocabulary's dense vectors cost seconds). Its f1 there is scikit-learn's on predict_row()'s
    answers for the same rows (the last quarter, test_sampling 'last')."""
    conn.execute("""
        CREATE TABLE news (title text, clicks float8, label integer);
        INSERT INTO news
        SELECT (ARRAY['you will not believe', 'council approves', 'this one trick', 'budget vote on',
                      'shocking photos of', 'mayor says'])[1 + i % 6]
               || ' ' || (ARRAY['cats', 'taxes', 'roads', 'stars', 'bridges'])[1 + i % 5]
               || CASE WHEN i % 7 = 0 THEN ' tonight' ELSE '' END,
               CASE WHEN i % 5 = 0 THEN NULL ELSE i % 9 END,
               CASE WHEN i % 11 = 3 THEN 1 - (i % 2) ELSE (i % 2) END
        FROM generate_series(1, 400) AS i;
    """)
    rules = {"clicks": {"impute": "mean"}}
    first = train(conn, "news", "classification", "news", "label", algorithm="naive_bayes", test_sampling="last",
                  preprocess={**rules, "title": {"vectorize": "counts"}})
    second = train(conn, "news", algorithm="naive_bayes", test_sampling="last",
                   preprocess={**rules, "title": {"vectorize": "tfidf"}})
    old_f1 = float(re.fullmatch(r"(?:not )?deployed: f1 [\d.]+ on this split (?:<=|>) ([\d.]+) of the deployed model "
                                rf"{first['model_id']} on this split", decision(conn, second["model_id"])).group(1))
    y, yhat = np.array(conn.execute(
        "SELECT label, ml_stack.predict_row(%s::bigint, to_jsonb(n)) FROM (SELECT *, row_number() OVER () AS rn FROM news) AS n "
        "WHERE rn > 300 ORDER BY rn", (first["model_id"],)).fetchall(), dtype=float).T
    assert len(y) == 100
    assert 0.5 < old_f1 < 1
    assert old_f1 == pytest.approx(f1_score(y, yhat, average="macro"), abs=1e-6)
