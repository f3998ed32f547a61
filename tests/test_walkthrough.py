"""The foundation issue's psql walkthrough, line by line, as a user runs it (psql, a fresh database, scikit-learn's
diabetes table), with each result checked against what the registry and the model's own weights say."""

import subprocess

import numpy as np

from datasets import feature_columns, load_sklearn_dataset

WALKTHROUGH = """
SELECT * FROM ml_stack.train('diabetes', 'regression', 'diabetes', 'target');
SELECT * FROM ml_stack.train('diabetes', algorithm => 'ridge', hyperparams => '{"alpha": 0.5}');
SELECT * FROM ml_stack.deployed_models;
SELECT target, ml_stack.predict('diabetes', ARRAY[age, sex, bmi, bp, s1, s2, s3, s4, s5, s6]) FROM diabetes LIMIT 5;
SELECT * FROM ml_stack.deploy('diabetes', 'most_recent');
SELECT * FROM ml_stack.deploy('diabetes', 'rollback');
ALTER EXTENSION ml_stack UPDATE;
"""


def test_walkthrough_in_psql(pg_server, new_db):
    dbname = new_db()
    with pg_server.connect(dbname) as conn:
        load_sklearn_dataset(conn, "diabetes")
    # psql, as the user types it: CREATE EXTENSION first, stop at the first error
    res = subprocess.run(
        [pg_server.bin("psql"), "-X", "-v", "ON_ERROR_STOP=1", "-d", dbname],
        input="CREATE EXTENSION ml_stack;\n" + WALKTHROUGH, env=pg_server.env(), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert 'version "0.6.0" of extension "ml_stack" is already installed' in res.stderr

    with pg_server.connect(dbname) as conn:
        models = conn.execute("SELECT id, algorithm, hyperparams, metrics FROM ml_stack.models ORDER BY id").fetchall()
        assert [(m[1], m[2]) for m in models] == [("linear", {}), ("ridge", {"alpha": 0.5})]
        for _, _, _, metrics in models:
            assert {"r2", "mean_squared_error", "mean_absolute_error", "fit_time", "score_time"} <= metrics.keys()
        history = [s for (s,) in conn.execute("SELECT strategy FROM ml_stack.deployments ORDER BY id")]
        assert history[-2:] == ["most_recent", "rollback"]
        # most_recent deployed the ridge model; rollback went back to the one that served before it: the linear
        # model, whichever of the two the automatic deploys had chosen
        assert conn.execute("SELECT model_id FROM ml_stack.deployed_models").fetchone()[0] == models[0][0]

        # the predictions psql printed are the arithmetic of the model that served then: the better of the two,
        # as the automatic deploys left it
        serving_then = conn.execute("SELECT model_id FROM ml_stack.deployments WHERE strategy = 'automatic' "
                                    "ORDER BY id DESC LIMIT 1").fetchone()[0]
        cols = feature_columns("diabetes")
        art = conn.execute("SELECT artifact FROM ml_stack.models WHERE id = %s", (serving_then,)).fetchone()[0]
        x = np.array(conn.execute(f"SELECT {', '.join(cols)} FROM diabetes LIMIT 5").fetchall(), dtype=float)
        expected = art["intercepts"][0] + x @ np.array(art["coefficients"][0])
        printed = [v for (v,) in conn.execute(
            f"SELECT ml_stack.predict({serving_then}, ARRAY[{', '.join(cols)}]) FROM diabetes LIMIT 5")]
        np.testing.assert_allclose(printed, expected, rtol=1e-12)
        for value in printed:  # psql prints float8 as Python does: the shortest text that reads back exactly
            assert repr(value) in res.stdout
