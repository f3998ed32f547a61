"""Serving models of the python engine: the 'python' format (a pickled estimator, cached per backend, dropped
from the cache when the deployments change, checked against its sha256 before unpickling), NULL handling and
errors, and what happens to such models around DROP / CREATE EXTENSION ml_stack_python."""

import base64
import hashlib
import pickle

import numpy as np
import psycopg
import pytest
from sklearn import ensemble, svm

from datasets import fetch_xy, feature_columns, load_sklearn_dataset
from helpers import model_row, train
from test_python_engine import oracle, served, served_proba, sqlstate_of


@pytest.fixture
def pconn(conn):
    conn.execute("CREATE EXTENSION ml_stack_python CASCADE")
    return conn


def cache(conn):
    return {r[0]: r[1:] for r in conn.execute(
        "SELECT model_id, generation, estimator, loads, calls FROM ml_stack._python_cache()")}


def test_python_models_are_loaded_once_per_backend_and_evicted_after_a_deployment_change(pconn):
    load_sklearn_dataset(pconn, "iris")
    cols = feature_columns("iris")
    svm_id = train(pconn, "iris", "classification", "iris", "target", algorithm="svm")["model_id"]
    assert model_row(pconn, svm_id)["artifact"]["format"] == "python"
    assert cache(pconn) == {}
    est, V, y, *_ = oracle(pconn, svm_id, "iris", "iris")
    got = served(pconn, "iris", cols, "iris")                     # by project: 150 calls
    assert np.array_equal(got, est.predict(V).astype(float))
    (generation, name, loads, calls), = cache(pconn).values()
    assert name == "SVC" and loads == 1 and calls == 150 and generation > 0
    assert np.abs(served_proba(pconn, "iris", cols, svm_id) - est.predict_proba(V)).max() <= 1e-12
    assert cache(pconn)[svm_id][2:] == (1, 300)                   # still loaded once
    # another model deployed: the serving generation changes, the cache drops what it holds
    other = train(pconn, "iris", algorithm="knn", automatic_deploy=False)["model_id"]
    pconn.execute("SELECT * FROM ml_stack.deploy(%s::bigint)", (other,))
    served(pconn, "iris", cols, "iris")
    state = cache(pconn)
    assert set(state) == {other} and state[other][0] > generation and state[other][2] == 1
    served(pconn, "iris", cols, svm_id)
    assert cache(pconn)[svm_id][2] == 2                            # loaded again, once
    # the per-model predictors carry the latest generation: calling one evicts nothing
    pconn.execute("SELECT ml_stack._model_%s_predict(ARRAY[1, 2, 3, 4])" % svm_id)
    assert cache(pconn)[svm_id][2] == 2 and set(cache(pconn)) == {svm_id, other}


def test_python_model_inputs(pconn):
    load_sklearn_dataset(pconn, "diabetes")
    mid = train(pconn, "d", "regression", "diabetes", "target", algorithm="svm")["model_id"]
    q = "SELECT ml_stack.predict(%s::bigint, %s::float8[])"
    assert pconn.execute(q, (mid, None)).fetchone()[0] is None
    assert pconn.execute(q, (mid, [0.0] * 4 + [None] + [0.0] * 5)).fetchone()[0] is None
    assert pconn.execute(q, (mid, [0.0] * 4 + [float("nan")] + [0.0] * 5)).fetchone()[0] is None
    est, *_ = oracle(pconn, mid, "diabetes", "diabetes")
    assert pconn.execute(q, (mid, [0.0] * 10)).fetchone()[0] == float(est.predict(np.zeros((1, 10)))[0])
    with pytest.raises(psycopg.Error) as e:
        pconn.execute(q, (mid, [0.0] * 9))
    assert sqlstate_of(e) == "22023" and "takes 10 features, got 9" in str(e.value) and e.value.diag.message_hint
    with pytest.raises(psycopg.Error) as e:
        pconn.execute("SELECT ml_stack.predict_proba(%s::bigint, %s::float8[])", (mid, [0.0] * 10))
    assert sqlstate_of(e) == "0A000" and e.value.diag.message_hint
    with pytest.raises(psycopg.Error) as e:
        pconn.execute("SELECT ml_stack._python_predict(12345, 0, ARRAY[1.0])")
    assert sqlstate_of(e) == "42704" and e.value.diag.message_hint
    # a model of another format is not served by Python
    lin = train(pconn, "d", algorithm="linear", automatic_deploy=False)["model_id"]
    with pytest.raises(psycopg.Error) as e:
        pconn.execute("SELECT ml_stack._python_predict(%s, 0, ARRAY[1.0])", (lin,))
    assert sqlstate_of(e) == "0A000"


def test_classifier_without_probabilities(pconn):
    load_sklearn_dataset(pconn, "iris")
    mid = train(pconn, "iris", "classification", "iris", "target", algorithm="ridge", engine="python")["model_id"]
    art = model_row(pconn, mid)["artifact"]
    assert art["format"] == "python" and art["estimator"] == "RidgeClassifier" and art["has_proba"] is False
    assert pconn.execute("SELECT ml_stack.predict(%s::bigint, ARRAY[5.1, 3.5, 1.4, 0.2])", (mid,)).fetchone()[0] == 0
    with pytest.raises(psycopg.Error) as e:
        pconn.execute("SELECT ml_stack.predict_proba(%s::bigint, ARRAY[5.1, 3.5, 1.4, 0.2])", (mid,))
    assert sqlstate_of(e) == "0A000" and "no class probabilities" in str(e.value) and e.value.diag.message_hint


def test_a_pickle_that_does_not_match_its_sha256_is_not_loaded(pg_server, pconn):
    load_sklearn_dataset(pconn, "iris")
    mid = train(pconn, "iris", "classification", "iris", "target", algorithm="knn")["model_id"]
    art = model_row(pconn, mid)["artifact"]
    tampered = pickle.loads(base64.b64decode(art["pickle"]))
    tampered.n_neighbors = 1
    pconn.execute("UPDATE ml_stack.models SET artifact = jsonb_set(artifact, '{pickle}', to_jsonb(%s::text))"
                  " WHERE id = %s", (base64.b64encode(pickle.dumps(tampered)).decode(), mid))
    with pg_server.connect(pconn.info.dbname) as other:   # a backend with nothing cached
        with pytest.raises(psycopg.Error) as e:
            other.execute("SELECT ml_stack.predict('iris', ARRAY[5.1, 3.5, 1.4, 0.2])")
        assert sqlstate_of(e) == "XX001" and "sha256" in str(e.value) and e.value.diag.message_hint


def test_only_pickles_signed_by_this_server_are_loaded(pg_server, pconn):
    """Whoever can write ml_stack.models can give a pickle a matching sha256, not the HMAC made with the key in
    the data directory: such a pickle is refused until a superuser vouches for it with trust_python_model."""
    load_sklearn_dataset(pconn, "iris")
    mid = train(pconn, "iris", "classification", "iris", "target", algorithm="knn")["model_id"]
    art = model_row(pconn, mid)["artifact"]
    assert len(art["signature"]) == 64
    key = pconn.execute("SELECT size FROM pg_stat_file('ml_stack_python.key')").fetchone()[0]
    assert key == 32                                   # in the data directory, where SQL roles cannot read
    forged = pickle.loads(base64.b64decode(art["pickle"]))
    forged.n_neighbors = 1
    blob = pickle.dumps(forged)
    pconn.execute("UPDATE ml_stack.models SET artifact = artifact || jsonb_build_object('pickle', %s::text,"
                  " 'sha256', %s::text) WHERE id = %s",
                  (base64.b64encode(blob).decode(), hashlib.sha256(blob).hexdigest(), mid))
    row = [5.9, 3.0, 5.1, 1.8]
    with pg_server.connect(pconn.info.dbname) as other:   # a backend with nothing cached
        with pytest.raises(psycopg.Error) as e:
            other.execute("SELECT ml_stack.predict('iris', %s::float8[])", (row,))
        assert sqlstate_of(e) == "42501" and "not signed by this server" in str(e.value)
        assert f"ml_stack.trust_python_model({mid})" in e.value.diag.message_hint
    assert pconn.execute("SELECT has_function_privilege('public', 'ml_stack.trust_python_model(bigint)', 'EXECUTE')"
                         ).fetchone()[0] is False
    pconn.execute("SELECT ml_stack.trust_python_model(%s)", (mid,))
    with pg_server.connect(pconn.info.dbname) as other:
        got = other.execute("SELECT ml_stack.predict('iris', %s::float8[])", (row,)).fetchone()[0]
    assert got == float(forged.predict(np.array([row]))[0])   # labels 0, 1, 2 are their own indexes


def test_tree_models_above_the_node_cap_are_served_by_python(pconn):
    load_sklearn_dataset(pconn, "breast_cancer")
    notices = []
    pconn.add_notice_handler(lambda d: notices.append(d.message_primary))
    pconn.execute("SET ml_stack.max_tree_nodes = 100")
    mid = train(pconn, "bc", "classification", "breast_cancer", "target", algorithm="random_forest",
                hyperparams={"n_estimators": 10})["model_id"]
    pconn.execute("RESET ml_stack.max_tree_nodes")
    art = model_row(pconn, mid)["artifact"]
    assert art["format"] == "python" and art["estimator"] == "RandomForestClassifier"
    assert any("served by Python" in n and "cap of 100" in n for n in notices)
    est, V, y, *_ = oracle(pconn, mid, "breast_cancer", "breast_cancer")
    cols = feature_columns("breast_cancer")
    assert np.array_equal(served(pconn, "breast_cancer", cols, mid), est.predict(V).astype(float))
    assert np.array_equal(served_proba(pconn, "breast_cancer", cols, mid), est.predict_proba(V))


def test_python_models_serve_again_after_the_extension_is_recreated(pconn):
    load_sklearn_dataset(pconn, "iris")
    mid = train(pconn, "iris", "classification", "iris", "target", algorithm="svm")["model_id"]
    q = "SELECT ml_stack.predict('iris', ARRAY[5.1, 3.5, 1.4, 0.2])"
    before = pconn.execute(q).fetchone()[0]
    pconn.execute("DROP EXTENSION ml_stack_python")
    with pytest.raises(psycopg.Error):
        pconn.execute(q)
    pconn.execute("CREATE EXTENSION ml_stack_python")
    assert pconn.execute(q).fetchone()[0] == before
    assert pconn.execute("SELECT ml_stack.predict(%s::bigint, ARRAY[5.1, 3.5, 1.4, 0.2])", (mid,)).fetchone()[0] == before


def test_queries_serving_python_models_never_plan_parallel(pconn):
    """PL/Python cannot run a query in parallel mode (plpy.execute opens a subtransaction, which PostgreSQL
    refuses there, and the error escaped PL/Python's handling: the backend crashed with signal 11). Loading a
    model runs one, so the serving entry points are PARALLEL UNSAFE, and nothing between ml_stack.predict and
    them may hide it. Checked with EXPLAIN only: executing such a plan could take the server down."""
    load_sklearn_dataset(pconn, "diabetes")
    mid = train(pconn, "d", "regression", "diabetes", "target", algorithm="svm")["model_id"]
    pconn.execute("CREATE TABLE big AS SELECT d.* FROM diabetes AS d, generate_series(1, 50)")
    pconn.execute("ANALYZE big")
    for setting in ("parallel_setup_cost = 0", "parallel_tuple_cost = 0", "min_parallel_table_scan_size = 0",
                    "max_parallel_workers_per_gather = 2"):
        pconn.execute(f"SET {setting}")
    arr = "ARRAY[" + ", ".join(feature_columns("diabetes")) + "]"
    assert "Gather" in "\n".join(r[0] for r in pconn.execute("EXPLAIN SELECT sum(age) FROM big"))
    for call in (f"ml_stack._python_predict({mid}, 0, {arr})", f"ml_stack.predict('d', {arr})",
                 f"ml_stack.predict({mid}::bigint, {arr})", f"ml_stack._model_{mid}_predict({arr})"):
        plan = "\n".join(r[0] for r in pconn.execute(f"EXPLAIN SELECT sum({call}) FROM big"))
        assert "Gather" not in plan, (call, plan)


def test_predict_is_parallel_unsafe_only_while_python_models_exist(pconn):
    """The planner reads predict()'s PARALLEL label before inlining, so the serving refresh sets it: UNSAFE while a
    'python'-format model is in the registry, SAFE again (parallel plans for linear and tree models) after."""
    def labels():
        return {r[0] for r in pconn.execute(
            "SELECT proparallel FROM pg_proc WHERE oid = ANY (ARRAY['ml_stack.predict(text, float8[])',"
            " 'ml_stack.predict(bigint, float8[])', 'ml_stack.predict_proba(text, float8[])',"
            " 'ml_stack.predict_proba(bigint, float8[])']::regprocedure[])")}

    load_sklearn_dataset(pconn, "diabetes")
    assert labels() == {"s"}
    train(pconn, "trees", "regression", "diabetes", "target", algorithm="xgboost", hyperparams={"n_estimators": 5})
    assert labels() == {"s"}
    svm_id = train(pconn, "svm", "regression", "diabetes", "target", algorithm="svm")["model_id"]
    assert labels() == {"u"}
    pconn.execute("DELETE FROM ml_stack.projects WHERE name = 'svm'")
    assert labels() == {"s"}
    assert pconn.execute("SELECT count(*) FROM ml_stack.models WHERE id = %s", (svm_id,)).fetchone()[0] == 0


def test_confidential_python_models_load_as_the_owner(pg_server, pconn):
    """A pickled model of a confidential project: its row is hidden from a predictor outside the project, which
    still gets the same predictions, because the pickle is loaded by the owner's SECURITY DEFINER wrapper."""
    load_sklearn_dataset(pconn, "iris")
    cols = feature_columns("iris")
    svm_id = train(pconn, "iris", "classification", "iris", "target", algorithm="svm")["model_id"]
    before = served(pconn, "iris", cols, "iris"), served_proba(pconn, "iris", cols, "iris")
    pconn.execute("SELECT ml_stack.set_confidential('iris')")
    body = pconn.execute("SELECT prosrc FROM pg_proc WHERE proname = %s", (f"_model_{svm_id}_proba",)).fetchone()[0]
    assert "_confidential_python_proba" in body
    role = f"outside_{svm_id}_{pconn.info.backend_pid}"
    pconn.execute(f'CREATE ROLE "{role}" LOGIN IN ROLE ml_stack_predictor')
    try:
        with psycopg.connect(host=pg_server.host, port=pg_server.port, user=role, dbname=pconn.info.dbname,
                             autocommit=True) as outsider:
            assert outsider.execute("SELECT count(*) FROM ml_stack.models").fetchone()[0] == 0
            rows = pconn.execute(f"SELECT ARRAY[{', '.join(cols)}]::float8[] FROM iris").fetchall()
            got = [outsider.execute("SELECT ml_stack.predict('iris', %s)", r).fetchone()[0] for r in rows]
            proba = [outsider.execute("SELECT ml_stack.predict_proba('iris', %s)", r).fetchone()[0] for r in rows]
        assert np.array_equal(np.array(got), before[0]) and np.array_equal(np.array(proba), before[1])
    finally:
        pconn.execute(f'DROP OWNED BY "{role}"')
        pconn.execute(f'DROP ROLE "{role}"')
