"""Confidential projects (0.4.1): a project's models served without their parameters in the catalog, its model
rows visible only inside the project, and predictions that do not change; plus the tree predictors' resistance to
a search_path hijack. The oracle for every confidential prediction is the same model served compiled, before
``set_confidential``: the stored-parameter path must give the same numbers, bit for bit."""

import numpy as np
import psycopg
import pytest
from psycopg import sql

from test_dump_restore import _restore
from test_expose import TABLE, as_role, login, roles  # noqa: F401  (roles is a fixture)
from test_trees_compiler import CASES, RNG_SEED, case_artifact, document, import_doc, probes, random_tree, serve
from helpers import train


def catalog_sources(conn):
    """Every function body ml_stack made at run time or holds, as one text (what any role reads in pg_proc)."""
    return "\n".join(r[0] for r in conn.execute(
        "SELECT p.prosrc FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace "
        "WHERE n.nspname IN ('ml_stack', 'api')").fetchall())


def coefficient_texts(conn, model_id):
    """The texts the compiler writes for a linear model's parameters (extra_float_digits = 3, as it compiles)."""
    conn.execute("SET extra_float_digits = 3")
    art = conn.execute("SELECT artifact FROM ml_stack.models WHERE id = %s", (model_id,)).fetchone()[0]
    values = [w for row in art["coefficients"] for w in row] + art["intercepts"]
    return [conn.execute("SELECT %s::float8::text", (v,)).fetchone()[0] for v in values if v not in (0, 1, -1)]


def predictions(conn, rows):
    """What the flowers classifier and the prices regression serve by every route, for these rows."""
    got = []
    for sepal, petal, wet, area, rooms in rows:
        got.append(conn.execute(
            "SELECT ml_stack.predict('flowers', ARRAY[%s, %s, %s::int]::float8[]), "
            "ml_stack.predict_proba('flowers', ARRAY[%s, %s, %s::int]::float8[]), "
            "ml_stack.predict('prices', ARRAY[%s, %s]::float8[]), "
            "ml_stack.predict_row('prices', jsonb_build_object('area', %s::float8, 'rooms', %s::float8)), "
            "(SELECT serving_function FROM ml_stack.deployed_models WHERE project_name = 'prices') IS NOT NULL",
            (sepal, petal, wet, sepal, petal, wet, area, rooms, area, rooms)).fetchone())
        fn = conn.execute("SELECT serving_proba_function::oid::regproc FROM ml_stack.deployed_models "
                          "WHERE project_name = 'flowers'").fetchone()[0]
        got.append(conn.execute(sql.SQL("SELECT {}(%s, %s, %s)").format(sql.Identifier(*str(fn).split("."))),
                                (sepal, petal, wet)).fetchone())
    return got


ROWS = [(1.2, 2.5, True, 50, 2), (0.0, 0.0, False, 20, 1), (3.6, 4.0, True, 109, 5), (None, 1.0, False, None, 3)]


@pytest.fixture
def projects(conn):
    conn.execute(TABLE)
    ids = {"flowers": train(conn, "flowers", "classification", "flowers", "kind")["model_id"],
           "prices": train(conn, "prices", "regression", "prices", "price")["model_id"]}
    return ids


def test_confidential_linear_models_leave_the_catalog_and_serve_the_same(conn, projects):
    before = predictions(conn, ROWS)
    secrets = coefficient_texts(conn, projects["flowers"]) + coefficient_texts(conn, projects["prices"])
    assert len(secrets) > 10
    assert any(s in catalog_sources(conn) for s in secrets)   # the test can fail: compiled, they are there

    assert conn.execute("SELECT ml_stack.set_confidential('flowers')").fetchone()[0] is True
    assert conn.execute("SELECT ml_stack.set_confidential('prices', true)").fetchone()[0] is True
    assert predictions(conn, ROWS) == before
    text = catalog_sources(conn)
    assert [s for s in secrets if s in text] == []
    assert conn.execute("SELECT count(*) FROM ml_stack._model_parameters").fetchone()[0] == 2

    # a retrain of a confidential project is confidential from its first compile
    model = train(conn, "prices", algorithm="ridge", hyperparams={"alpha": 3.0})["model_id"]
    assert [s for s in coefficient_texts(conn, model) if s in catalog_sources(conn)] == []

    # public again: compiled back to arithmetic, parameters forgotten
    assert conn.execute("SELECT ml_stack.set_confidential('flowers', false)").fetchone()[0] is False
    assert any(s in catalog_sources(conn) for s in coefficient_texts(conn, projects["flowers"]))
    assert conn.execute("SELECT array_agg(model_id ORDER BY model_id) FROM ml_stack._model_parameters").fetchone()[0] == \
        sorted([projects["prices"], model])


def test_set_confidential_bad_input(conn, projects):
    registry = conn.execute("SELECT name, confidential FROM ml_stack.projects ORDER BY 1").fetchall()
    with pytest.raises(psycopg.Error, match='project "nope" does not exist') as e:
        conn.execute("SELECT ml_stack.set_confidential('nope')")
    assert e.value.sqlstate == "PT404" and e.value.diag.message_hint
    with pytest.raises(psycopg.errors.NullValueNotAllowed):
        conn.execute("SELECT ml_stack.set_confidential('prices', NULL)")
    assert conn.execute("SELECT name, confidential FROM ml_stack.projects ORDER BY 1").fetchall() == registry


def test_roles_outside_a_confidential_project(conn, pg_server, projects, roles):
    """Outside (no SELECT on the training table): predictions yes, parameters no: not in ml_stack.models, not in
    ml_stack._model_parameters, not by export; and no switching confidentiality off. Inside: the rows are there."""
    conn.execute("SELECT ml_stack.set_confidential('prices')")
    outsider, insider, admin = roles("outsider", "LOGIN"), roles("insider", "LOGIN"), roles("admin", "LOGIN")
    for role, group in ((outsider, "ml_stack_trainer"), (insider, "ml_stack_trainer"), (admin, "ml_stack_admin")):
        conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), sql.Identifier(role)))
    conn.execute(sql.SQL("GRANT SELECT ON prices TO {}").format(sql.Identifier(insider)))
    expected = conn.execute("SELECT ml_stack.predict('prices', ARRAY[50, 2])").fetchone()[0]
    db = conn.info.dbname
    with login(pg_server, db, outsider) as o:
        assert o.execute("SELECT ml_stack.predict('prices', ARRAY[50, 2])").fetchone()[0] == expected
        assert o.execute("SELECT ml_stack.predict_row('prices', '{\"area\": 50, \"rooms\": 2}')").fetchone()[0] == expected
        assert o.execute("SELECT ml_stack.predict(%s::bigint, ARRAY[50, 2])", (projects["prices"],)).fetchone()[0] == expected
        assert o.execute("SELECT project_id FROM ml_stack.models").fetchall() == [(1,)]   # flowers' only
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            o.execute("SELECT * FROM ml_stack._model_parameters")
        with pytest.raises(psycopg.errors.UndefinedObject):
            o.execute("SELECT ml_stack.export_model(%s)", (projects["prices"],))
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="may not make project"):
            o.execute("SELECT ml_stack.set_confidential('prices', false)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            o.execute("UPDATE ml_stack.projects SET confidential = false WHERE name = 'prices'")
    with login(pg_server, db, insider) as i:
        assert i.execute("SELECT count(*) FROM ml_stack.models").fetchone()[0] == 2
        assert i.execute("SELECT ml_stack.export_model(%s)", (projects["prices"],)).fetchone()[0]["artifact"]
    with login(pg_server, db, admin) as a:
        assert a.execute("SELECT count(*) FROM ml_stack.models").fetchone()[0] == 2
        assert a.execute("SELECT ml_stack.set_confidential('prices', false)").fetchone()[0] is False
    assert conn.execute("SELECT confidential FROM ml_stack.projects WHERE name = 'prices'").fetchone()[0] is False


def test_exposed_confidential_project_over_its_endpoints(conn, projects, roles):
    anon = roles("anon")
    conn.execute("SELECT ml_stack.expose('flowers', 'api', %s)", ([anon],))
    before = as_role(conn, anon, "SELECT api.classify_flowers(1.2, 2.5, true), api.predict_flowers(0, 1, false)")
    conn.execute("SELECT ml_stack.set_confidential('flowers')")
    assert as_role(conn, anon, "SELECT api.classify_flowers(1.2, 2.5, true), api.predict_flowers(0, 1, false)") == before


def test_tree_ensembles_served_confidential_match_the_compiled_ones(conn):
    """Every kind of tree document of test_trees_compiler, probed on its thresholds, NULL, NaN and extremes: the
    walk over stored nodes gives the compiled CASE's numbers exactly."""
    rng = np.random.default_rng(RNG_SEED)
    n_features = 4
    cases = []
    for case in sorted(CASES):
        task, classes = CASES[case][:2]
        art = case_artifact(rng, case, n_features)
        import_doc(conn, case, document(art, n_features, task, classes))
        rows = probes(rng, art, n_features)
        cases.append((case, classes, rows, serve(conn, case, rows), classes and serve(conn, case, rows, proba=True)))
    conn.execute("SELECT ml_stack.set_confidential(name) FROM ml_stack.projects")
    assert "_confidential_margins" in conn.execute("SELECT prosrc FROM pg_proc WHERE proname = '_model_1_margins'").fetchone()[0]
    for case, classes, rows, compiled, compiled_proba in cases:
        assert serve(conn, case, rows) == compiled, case
        if classes:
            assert serve(conn, case, rows, proba=True) == compiled_proba, case
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="takes 4 features"):
            conn.execute("SELECT ml_stack.predict(%s, ARRAY[1, 2])", (case,))


def test_a_search_path_hijack_changes_no_tree_answer(conn):
    """Operators and types planted in public, first on the search_path, change nothing the tree predictors
    compute: the margins function is pinned, its inlined wrappers are schema-qualified."""
    rng = np.random.default_rng(7)
    art = {"format": "trees", "outputs": 1, "base": [0.25], "sum": "float4", "link": "logistic", "missing": "default",
           "trees": [random_tree(rng, 3, 4, 0, True) for _ in range(5)]}
    import_doc(conn, "hijacked", document(art, 3, "classification", [0.0, 1.0]))
    rows = probes(rng, art, 3, count=30)
    expected = serve(conn, "hijacked", rows), serve(conn, "hijacked", rows, proba=True)
    conn.execute("""
        CREATE FUNCTION public.no(float8, float8) RETURNS boolean LANGUAGE sql AS 'SELECT false';
        CREATE FUNCTION public.zero4(float4, float4) RETURNS float4 LANGUAGE sql AS 'SELECT 0::float4';
        CREATE FUNCTION public.one(integer, integer) RETURNS integer LANGUAGE sql AS 'SELECT 1';
        CREATE OPERATOR public.> (LEFTARG = float8, RIGHTARG = float8, FUNCTION = public.no);
        CREATE OPERATOR public.<= (LEFTARG = float8, RIGHTARG = float8, FUNCTION = public.no);
        CREATE OPERATOR public.< (LEFTARG = float8, RIGHTARG = float8, FUNCTION = public.no);
        CREATE OPERATOR public.>= (LEFTARG = float8, RIGHTARG = float8, FUNCTION = public.no);
        CREATE OPERATOR public.+ (LEFTARG = float4, RIGHTARG = float4, FUNCTION = public.zero4);
        CREATE OPERATOR public.+ (LEFTARG = integer, RIGHTARG = integer, FUNCTION = public.one);
        CREATE FUNCTION public.exp(float8) RETURNS float8 LANGUAGE sql AS 'SELECT 0::float8';
        CREATE FUNCTION public.cardinality(anyarray) RETURNS integer LANGUAGE sql AS 'SELECT 0';
    """)
    for path in ("public, pg_catalog", "public"):
        conn.execute(f"SET search_path = {path}")
        assert (serve(conn, "hijacked", rows), serve(conn, "hijacked", rows, proba=True)) == expected, path
        conn.execute("SELECT ml_stack.set_confidential('hijacked', NOT confidential) FROM ml_stack.projects")
        assert (serve(conn, "hijacked", rows), serve(conn, "hijacked", rows, proba=True)) == expected, path
    conn.execute("RESET search_path")


@pytest.mark.parametrize("method", ["exit_on_error", "plain"])
def test_confidential_projects_survive_a_restore(pg_server, new_db, tmp_path, conn, projects, method):
    conn.execute("SELECT ml_stack.set_confidential('prices')")
    before = predictions(conn, ROWS)
    secrets = coefficient_texts(conn, projects["prices"])
    with pg_server.connect(_restore(pg_server, new_db, tmp_path, conn, method)) as restored:
        assert restored.execute("SELECT name, confidential FROM ml_stack.projects ORDER BY 1").fetchall() == \
            [("flowers", False), ("prices", True)]
        assert predictions(restored, ROWS) == before
        assert [s for s in secrets if s in catalog_sources(restored)] == []
        assert restored.execute("SELECT count(*) FROM ml_stack._model_parameters").fetchone()[0] == 1
