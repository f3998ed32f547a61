"""The 'trees' artifact compiler of ml_stack (sql/serving/trees.sql), on its own: no PL/Python needed.

Random ensembles in the documented format (docs/python-engine.md) are imported with ``import_model`` and served
by ``predict``/``predict_proba``; the oracle is the format's numpy evaluator (``ml_stack_python.trees.margins``,
imported from python/: float32 accumulation in tree order where the artifact says so). Probes hit every
threshold exactly and its float64 neighbours, NULL and NaN, and extremes. The agreement with the libraries themselves is in test_python_engine.
"""

import json
import math

import numpy as np
import pytest
from psycopg import errors

from helpers import registry_rows
from ml_stack_python import trees
from test_dump_restore import _restore

RNG_SEED = 20261126


def random_tree(rng, n_features, depth, output, leaf32):
    feature, threshold, inclusive, default_left, left, right, value = [], [], [], [], [], [], []

    def node(d):
        i = len(left)
        for arr in (feature, threshold, inclusive, default_left, left, right, value):
            arr.append(None)
        if d == depth or (d > 1 and rng.random() < 0.2):
            feature[i], threshold[i], inclusive[i], default_left[i] = 0, 0.0, False, False
            left[i] = right[i] = -1
            v = rng.normal()
            value[i] = float(np.float32(v)) if leaf32 else float(v)
        else:
            feature[i] = int(rng.integers(n_features))
            threshold[i] = float(np.round(rng.normal(), int(rng.integers(1, 8))))
            inclusive[i] = bool(rng.random() < 0.5)
            default_left[i] = bool(rng.random() < 0.5)
            value[i] = 0.0
            left[i] = node(d + 1)
            right[i] = node(d + 1)
        return i

    node(0)
    return {"output": output, "feature": feature, "threshold": threshold, "inclusive": inclusive,
            "default_left": default_left, "left": left, "right": right, "value": value}


def evaluate(art, row):
    """The margins a document defines for one row of raw features (None = NULL), or None when the row has a
    missing value a 'null' model has no rule for: the format's reference evaluator, which python/tests checks
    against XGBoost and scikit-learn themselves."""
    margins = trees.margins(art, np.array([[np.nan if x is None else x for x in row]], dtype=np.float64))[0]
    return None if np.isnan(margins).any() else [float(m) for m in margins]


def document(art, n_features, task, classes=None):
    return {"ml_stack_model": 1, "task": task, "algorithm": "handmade", "engine": "python", "num_features": n_features,
            "classes": classes, "artifact": art}


def probes(rng, art, n_features, count=120):
    """Rows whose values sit exactly on, just below and just above the thresholds, plus NULL, NaN and extremes."""
    thresholds = sorted({t for tree in art["trees"] for t, leaf in zip(tree["threshold"], tree["left"]) if leaf != -1})
    special = [None, float("nan"), 0.0, -0.0, 1e300, -1e300, 5e-324]
    pool = special + thresholds + [np.nextafter(t, np.inf) for t in thresholds] + [np.nextafter(t, -np.inf) for t in thresholds]
    rows = []
    for _ in range(count):
        rows.append([None if (x := pool[int(rng.integers(len(pool)))]) is None else float(x) for _ in range(n_features)])
    return rows


def serve(conn, project, rows, proba=False):
    fn = "ml_stack.predict_proba" if proba else "ml_stack.predict"
    return [conn.execute(f"SELECT {fn}(%s, %s::float8[])", (project, r)).fetchone()[0] for r in rows]


def import_doc(conn, project, doc):
    return conn.execute("SELECT ml_stack.import_model(%s, %s::jsonb)", (project, json.dumps(doc))).fetchone()[0]


def softmax(m):
    e = np.exp(np.array(m) - max(m))
    return list(e / e.sum())


CASES = {
    # name: (task, classes, outputs, link, sum, extra)
    "xgboost_regression": ("regression", None, 1, "identity", "float4", {}),
    "xgboost_binary": ("classification", [0.0, 1.0], 1, "logistic", "float4", {}),
    "xgboost_multiclass": ("classification", [1.0, 2.0, 5.0], 3, "softmax", "float4", {}),
    "poisson": ("regression", None, 1, "exp", "float4", {}),
    "forest_regression": ("regression", None, 1, "identity", "float8", {"divisor": 7.0, "missing": "null"}),
    "forest_classes": ("classification", [0.0, 1.0, 2.0], 3, "probability", "float8", {"divisor": 7.0, "missing": "null"}),
    "boosting_transformed": ("regression", None, 1, "identity", "float8", {"transform": True}),
}


def case_artifact(rng, case, n_features=4):
    """A random trees document of one of CASES (4 features), 7 trees per output."""
    task, classes, outputs, link, sum_type, extra = CASES[case]
    art = {"format": "trees", "outputs": outputs, "base": [float(np.float32(rng.normal())) for _ in range(outputs)],
           "sum": sum_type, "link": link, "missing": extra.get("missing", "default"),
           "trees": [random_tree(rng, n_features, 4, t % outputs, sum_type == "float4") for t in range(7 * outputs)]}
    if "divisor" in extra:
        art["divisor"] = extra["divisor"]
    if extra.get("transform"):
        art["transform"] = [{"impute": 0.25, "shift": 1.5, "scale": 2.0}, {"impute": None, "shift": 0.0, "scale": 1.0},
                            {"impute": -1.0, "shift": -0.5, "scale": 0.5}, {"impute": None, "shift": 3.0, "scale": 4.0}]
    return art


@pytest.mark.parametrize("case", sorted(CASES))
def test_compiled_ensemble_matches_the_document(conn, case):
    task, classes, outputs, link, sum_type, extra = CASES[case]
    rng = np.random.default_rng(RNG_SEED + len(case))
    n_features = 4
    art = case_artifact(rng, case, n_features)
    import_doc(conn, case, document(art, n_features, task, classes))
    rows = probes(rng, art, n_features)
    got = serve(conn, case, rows)
    got_proba = serve(conn, case, rows, proba=True) if classes else None
    for i, row in enumerate(rows):
        margins = evaluate(art, row)
        if margins is None:
            assert got[i] is None, f"row {row}: a NULL feature must give NULL"
            continue
        if link == "identity":
            assert got[i] == margins[0], row          # same arithmetic, same order: exact
        elif link == "exp":
            assert got[i] == pytest.approx(math.exp(margins[0]), rel=1e-15)
        elif link == "logistic":
            assert got[i] == classes[int(margins[0] > 0)]
            p = 1 / (1 + math.exp(-margins[0]))
            assert got_proba[i] == pytest.approx([1 - p, p], abs=1e-15)
        elif link == "softmax":
            assert got[i] == classes[int(np.argmax(margins))]
            assert got_proba[i] == pytest.approx(softmax(margins), abs=1e-15)
        else:
            assert got[i] == classes[int(np.argmax(margins))]
            assert got_proba[i] == margins


def test_more_than_100_features(conn):
    """PostgreSQL functions take at most 100 arguments: the margins function takes the array and unpacks it."""
    rng = np.random.default_rng(RNG_SEED)
    n_features = 130
    art = {"format": "trees", "outputs": 1, "base": [0.5], "sum": "float4", "link": "identity", "missing": "default",
           "trees": [random_tree(rng, n_features, 5, 0, True) for _ in range(20)]}
    import_doc(conn, "wide", document(art, n_features, "regression"))
    rows = probes(rng, art, n_features, count=40)
    assert serve(conn, "wide", rows) == [evaluate(art, r)[0] for r in rows]


def test_features_are_mentioned_once_in_the_inlined_wrappers(conn):
    """An inlined ARRAY[x1, ..] argument is rebuilt for every mention of the parameter (1.5x slower with 41)."""
    art = {"format": "trees", "outputs": 3, "base": [0.0] * 3, "sum": "float8", "link": "probability", "divisor": 2.0,
           "missing": "null", "transform": [{"impute": 1.0, "shift": 0.5, "scale": 2.0}, {"impute": None, "shift": 0, "scale": 1}],
           "trees": [random_tree(np.random.default_rng(k), 2, 3, k % 3, False) for k in range(6)]}
    model_id = import_doc(conn, "once", document(art, 2, "classification", [0.0, 1.0, 2.0]))
    for kind in ("predict", "proba"):
        body = conn.execute("SELECT prosrc FROM pg_proc WHERE oid = %s::regproc", (f"ml_stack._model_{model_id}_{kind}",)).fetchone()[0]
        assert body.count("features") == 1, body


def test_xgboost_float32_rule_through_midpoints(conn):
    """XGBoost sends x left when float32(x) < t. The document carries the float64 midpoint below t (inclusive when
    t's mantissa is odd); values that round to t or to its float32 neighbour must land on the library's side."""
    thresholds = np.array([0.5, 0.1, -0.3, 1e-30, 3.4e38, 1.17549435e-38], dtype=np.float32)
    trees = []
    for j, t in enumerate(thresholds):
        prev = np.nextafter(t, np.float32(-np.inf))
        odd = bool(np.frombuffer(t.tobytes(), dtype=np.uint32)[0] & 1)
        trees.append({"output": 0, "feature": [j, 0, 0], "threshold": [(float(prev) + float(t)) / 2, 0.0, 0.0],
                      "inclusive": [odd, False, False], "default_left": [True, False, False],
                      "left": [1, -1, -1], "right": [2, -1, -1], "value": [0.0, 0.0, float(2 ** j)]})
    art = {"format": "trees", "outputs": 1, "base": [0.0], "sum": "float4", "link": "identity", "missing": "default",
           "trees": trees}
    import_doc(conn, "rule", document(art, len(thresholds), "regression"))
    rows, expected = [], []
    for j, t in enumerate(thresholds):
        prev = np.nextafter(t, np.float32(-np.inf))
        mid = (float(prev) + float(t)) / 2
        for x in (float(t), float(prev), mid, np.nextafter(mid, np.inf), np.nextafter(mid, -np.inf), None):
            row = [-1e300 if i != j else x for i in range(len(thresholds))]  # other features: always left
            rows.append(row)
            right = x is not None and not (np.float32(x) < t)
            expected.append(float(2 ** j) if right else 0.0)
    assert serve(conn, "rule", rows) == expected


@pytest.mark.parametrize("damage, message", [
    (lambda a: a["trees"][0].update(left=[0, -1, -1]), "children must be later nodes"),
    (lambda a: a["trees"][0].update(feature=[9, 0, 0]), "feature must be an index"),
    (lambda a: a["trees"][0].update(threshold=["0.5); DROP TABLE ml_stack.models; --", 0, 0]), "threshold must be a number"),
    (lambda a: a["trees"][0].update(value=[0, "1", 2]), "a leaf needs a numeric value"),
    (lambda a: a["trees"][0].update(right=[2, -1]), "must be an array of 3 entries"),
    (lambda a: a.update(link="softmax"), "does not fit"),
    (lambda a: a.update(sum="float16"), '"sum" must be'),
    (lambda a: a.update(base=["1"]), '"base" must hold'),
    (lambda a: a.update(trees=[]), "no trees"),
    (lambda a: a.update(transform=[{"impute": None, "shift": 0, "scale": 0}]), '"transform"'),
])
def test_damaged_trees_document_is_refused(conn, damage, message):
    art = {"format": "trees", "outputs": 1, "base": [0.0], "sum": "float4", "link": "identity", "missing": "default",
           "trees": [{"output": 0, "feature": [0, 0, 0], "threshold": [0.5, 0, 0], "inclusive": [False, False, False],
                      "default_left": [True, False, False], "left": [1, -1, -1], "right": [2, -1, -1],
                      "value": [0, 1, 2]}]}
    import_doc(conn, "ok", document(art, 1, "regression"))
    before = registry_rows(conn)
    damage(art)
    with pytest.raises(errors.InvalidParameterValue) as exc:
        import_doc(conn, "damaged", document(art, 1, "regression"))
    assert message in exc.value.diag.message_primary
    assert exc.value.diag.message_hint
    assert registry_rows(conn) == before


def test_pickles_are_not_imported(conn):
    doc = document({"format": "python", "pickle": "gASVAAAAAAAAAAA=", "sha256": "0" * 64}, 1, "regression")
    with pytest.raises(errors.FeatureNotSupported) as exc:
        import_doc(conn, "pickle", doc)
    assert "runs code" in exc.value.diag.message_hint


def test_trees_model_survives_dump_and_restore(pg_server, new_db, tmp_path, conn):
    rng = np.random.default_rng(RNG_SEED + 1)
    art = {"format": "trees", "outputs": 3, "base": [0.1, 0.2, 0.3], "sum": "float4", "link": "softmax",
           "missing": "default", "trees": [random_tree(rng, 3, 4, t % 3, True) for t in range(12)]}
    model_id = import_doc(conn, "kept", document(art, 3, "classification", [0.0, 1.0, 2.0]))
    rows = probes(rng, art, 3, count=30)
    before = serve(conn, "kept", rows), serve(conn, "kept", rows, proba=True)
    target = _restore(pg_server, new_db, tmp_path, conn, "exit_on_error")
    with pg_server.connect(target) as restored:
        assert (serve(restored, "kept", rows), serve(restored, "kept", rows, proba=True)) == before
        member = restored.execute(
            "SELECT count(*) FROM pg_depend WHERE classid = 'pg_proc'::regclass AND deptype = 'e'"
            " AND objid = %s::regproc", (f"ml_stack._model_{model_id}_margins",)).fetchone()[0]
        assert member == 0


def test_constant_features_with_the_project_or_model_from_the_row(conn):
    """With a constant feature array and the project or model id taken from each row, the planner simplifies
    every dispatch arm: an arm whose model takes another feature count (or has no probabilities) must not raise
    for rows that never reach it (DESIGN §6; the error functions and predictors are STABLE for that)."""
    conn.execute("CREATE TABLE two AS SELECT x1, x2, 3 * x1 - x2 AS y FROM (VALUES (1.0, 2.0), (2.0, 1.0), (3.0, 5.0),"
                 " (4.0, 3.0)) AS v(x1, x2)")
    linear_id = conn.execute("SELECT model_id FROM ml_stack.train('two', 'regression', 'two', 'y', test_size => 1)"
                             ).fetchone()[0]
    rng = np.random.default_rng(RNG_SEED + 2)
    art = {"format": "trees", "outputs": 1, "base": [0.0], "sum": "float4", "link": "logistic",
           "missing": "default", "trees": [random_tree(rng, 3, 3, 0, True) for _ in range(4)]}
    trees_id = import_doc(conn, "three", document(art, 3, "classification", [0.0, 1.0]))
    expected = serve(conn, "three", [[1.0, 2.0, 3.0]])[0]
    expected_proba = serve(conn, "three", [[1.0, 2.0, 3.0]], proba=True)[0]
    # a table, so that the keys are not constants the planner could fold into the dispatch
    conn.execute("CREATE TABLE keys (p text, m bigint)")
    conn.execute("INSERT INTO keys VALUES ('three', %s), ('two', %s)", (trees_id, linear_id))
    assert conn.execute("SELECT ml_stack.predict(p, ARRAY[1, 2, 3]) FROM keys WHERE p = 'three'").fetchone()[0] == expected
    assert conn.execute("SELECT ml_stack.predict(m, ARRAY[1, 2, 3]) FROM keys WHERE p = 'three'").fetchone()[0] == expected
    assert conn.execute("SELECT ml_stack.predict_proba(m, ARRAY[1, 2, 3]) FROM keys WHERE p = 'three'"
                        ).fetchone()[0] == expected_proba
    assert conn.execute("SELECT ml_stack.predict(p, ARRAY[1, 1]) FROM keys WHERE p = 'two'"
                        ).fetchone()[0] == pytest.approx(2.0, abs=1e-9)
    with pytest.raises(errors.InvalidParameterValue, match=f"model {linear_id} takes 2 features, got 3"):
        conn.execute("SELECT ml_stack.predict(p, ARRAY[1, 2, 3]) FROM keys")


def test_a_null_feature_array_gives_null(conn):
    art = {"format": "trees", "outputs": 1, "base": [0.5], "sum": "float8", "link": "identity", "missing": "null",
           "transform": [{"impute": 1.0, "shift": 0.0, "scale": 1.0}] * 2,
           "trees": [random_tree(np.random.default_rng(3), 2, 3, 0, False)]}
    import_doc(conn, "imputed", document(art, 2, "regression"))
    assert conn.execute("SELECT ml_stack.predict('imputed', NULL::float8[])").fetchone()[0] is None
    assert conn.execute("SELECT ml_stack.predict('imputed', ARRAY[NULL, NULL]::float8[])").fetchone()[0] == \
        evaluate(art, [None, None])[0]
