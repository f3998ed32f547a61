"""HTTP endpoints in SQL (0.4.0): ml_stack.expose / unexpose / postgrest_config, the group roles, and least
privilege. What PostgREST does on top is replayed in tests/test_http.py; here every check is a plain SQL call
as the role PostgREST would switch to."""

import uuid

import psycopg
import pytest
from psycopg import sql

from helpers import registry_rows, train

TABLE = """
CREATE TABLE flowers (sepal float8, petal float8, wet boolean, kind integer);
INSERT INTO flowers SELECT (i % 13) * 0.3, (i % 7) * 0.5 + (i % 3), i % 4 = 0, (i % 7 + i % 3) % 3
FROM generate_series(1, 300) AS i;
CREATE TABLE prices (area float8, rooms integer, price float8);
INSERT INTO prices SELECT 20 + i % 90, 1 + i % 5, 1000 + 30 * (20 + i % 90) + 500 * (1 + i % 5) + (i % 11)
FROM generate_series(1, 300) AS i;
"""


def new_role(conn, prefix, options="NOLOGIN"):
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    conn.execute(sql.SQL("CREATE ROLE {} " + options).format(sql.Identifier(name)))
    return name


@pytest.fixture
def roles(conn):
    """Fresh roles for this test (roles are cluster-wide), dropped with what they hold afterwards."""
    made = []

    def make(prefix, options="NOLOGIN"):
        made.append(new_role(conn, prefix, options))
        return made[-1]
    yield make
    for name in reversed(made):
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


@pytest.fixture
def exposed(conn, roles):
    """flowers (classification) and prices (regression) trained and exposed in schema api to a fresh anonymous
    role; returns that role's name."""
    conn.execute(TABLE)
    train(conn, "flowers", "classification", "flowers", "kind")
    train(conn, "prices", "regression", "prices", "price")
    anon = roles("anon")
    conn.execute("SELECT ml_stack.expose('flowers', 'api', %s)", ([anon],))
    conn.execute("SELECT ml_stack.expose('prices', 'api', %s)", ([anon],))
    return anon


def endpoint_rows(conn, schema="api"):
    return conn.execute(
        "SELECT p.proname, pg_get_function_identity_arguments(p.oid), p.provolatile, p.prosecdef, p.proconfig, "
        "obj_description(p.oid, 'pg_proc') FROM pg_proc AS p "
        "WHERE p.pronamespace = (SELECT n.oid FROM pg_namespace AS n WHERE n.nspname = %s) "
        "ORDER BY p.proname", (schema,)).fetchall()


def as_role(conn, role, statement, params=None):
    conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
    try:
        return conn.execute(statement, params).fetchall()
    finally:
        conn.execute("RESET ROLE")


def test_expose_makes_the_endpoints(conn, exposed):
    rows = endpoint_rows(conn)
    assert [r[0] for r in rows] == ["classify_flowers", "predict_batch_flowers", "predict_batch_prices",
                                    "predict_flowers", "predict_prices", "predict_proba_flowers"]
    for name, args, volatility, definer, config, comment in rows:
        assert volatility == "s" and definer and config == ["search_path=pg_catalog, pg_temp"], name
        assert args == ("rows jsonb" if "batch" in name else
                        "area double precision, rooms double precision" if "prices" in name else
                        "sepal double precision, petal double precision, wet boolean")
        assert comment.split("\n")[0].startswith(("Prediction", "Class", "Predictions")), comment
    served = conn.execute("SELECT ml_stack.predict('flowers', ARRAY[1.2, 2.5, 1]), "
                          "ml_stack.predict_proba('flowers', ARRAY[1.2, 2.5, 1])").fetchone()
    got = as_role(conn, exposed, "SELECT api.predict_flowers(1.2, 2.5, true), api.predict_proba_flowers(1.2, 2.5, true), "
                                 "api.classify_flowers(sepal => 1.2, petal => 2.5, wet => true)")[0]
    assert got[0] == served[0] and got[1] == served[1]
    assert got[2] == {"label": served[0], "probabilities": {"0": served[1][0], "1": served[1][1], "2": served[1][2]}}
    batch = as_role(conn, exposed, "SELECT * FROM api.predict_batch_prices(%s::jsonb)",
                    ('[{"area": 50, "rooms": 2}, {"rooms": "3", "area": "75.5"}, {"area": null, "rooms": 1}]',))
    expected = conn.execute("SELECT ml_stack.predict('prices', ARRAY[50, 2]), ml_stack.predict('prices', ARRAY[75.5, 3])"
                            ).fetchone()
    assert batch == [(1, expected[0]), (2, expected[1]), (3, None)]
    labelled = as_role(conn, exposed, "SELECT * FROM api.predict_batch_flowers(%s::jsonb)",
                       ('[{"sepal": 1.2, "petal": 2.5, "wet": true}]',))
    assert labelled == [(1, served[0], got[2]["probabilities"])]


def test_expose_tells_postgrest_to_reload(conn, pg_server, roles):
    conn.execute(TABLE)
    train(conn, "prices", "regression", "prices", "price")
    anon = roles("anon")
    with pg_server.connect(conn.info.dbname) as listener:
        listener.execute("LISTEN pgrst")
        conn.execute("SELECT ml_stack.expose('prices', 'api', %s)", ([anon],))
        note = next(listener.notifies(timeout=5, stop_after=1))
        assert (note.channel, note.payload) == ("pgrst", "reload schema")
        conn.execute("SELECT ml_stack.unexpose('prices')")
        note = next(listener.notifies(timeout=5, stop_after=1))
        assert (note.channel, note.payload) == ("pgrst", "reload schema")
    assert endpoint_rows(conn) == []


def test_the_api_role_can_call_its_endpoints_and_nothing_else(conn, exposed, roles):
    other = roles("other_anon")
    conn.execute("CREATE TABLE secret AS SELECT * FROM prices")
    train(conn, "private", "regression", "secret", "price")
    conn.execute("SELECT ml_stack.expose('private', 'api2', %s)", ([other],))
    before = registry_rows(conn)
    refused = [
        "SELECT * FROM ml_stack.models", "SELECT * FROM ml_stack.projects", "SELECT * FROM ml_stack.deployed_models",
        "SELECT * FROM ml_stack.snapshots", "SELECT * FROM prices",
        "SELECT ml_stack.predict('prices', ARRAY[1, 2])", "SELECT ml_stack.predict(1::bigint, ARRAY[1, 2])",
        "SELECT ml_stack.predict_row('prices', '{}')",
        "SELECT * FROM ml_stack.train('prices', 'regression', 'prices', 'price')",
        "SELECT * FROM ml_stack.deploy('prices', 'most_recent')",
        "SELECT ml_stack.import_model('x', '{}')", "SELECT ml_stack.export_model(1)",
        "SELECT ml_stack.schedule_training('j', '0 * * * *', 'prices')",
        "SELECT ml_stack.expose('prices')", "SELECT ml_stack.unexpose('prices')",
        "SELECT api2.predict_private(1, 2)",                        # another project, another role's
        "SELECT * FROM api2.predict_batch_private('[]')",
        "SELECT ml_stack._project_1_predict(1, 2)",
    ]
    for statement in refused:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            as_role(conn, exposed, statement)
    assert registry_rows(conn) == before
    assert as_role(conn, exposed, "SELECT api.predict_prices(50, 2)")[0][0] is not None


def test_expose_refuses_roles_that_could_do_more(conn, exposed, roles):
    conn.execute("CREATE SCHEMA holds_a_table")
    conn.execute("CREATE TABLE holds_a_table.t (x integer)")
    before = (registry_rows(conn), conn.execute("SELECT * FROM ml_stack.endpoints ORDER BY 1, 2").fetchall())
    trainer_member = roles("tm")
    conn.execute(sql.SQL("GRANT ml_stack_trainer TO {}").format(sql.Identifier(trainer_member)))
    cases = [
        ([roles("su", "NOLOGIN SUPERUSER")], "is a superuser", psycopg.errors.InsufficientPrivilege),
        ([roles("bypass", "NOLOGIN BYPASSRLS")], "has BYPASSRLS", psycopg.errors.InsufficientPrivilege),
        ([trainer_member], "is a member of an ml_stack group role", psycopg.errors.InsufficientPrivilege),
        ([conn.info.user], "is a superuser", psycopg.errors.InsufficientPrivilege),
        (["no_such_role_at_all"], "does not exist", psycopg.errors.UndefinedObject),
        ([], "grant_to names no role", psycopg.errors.InvalidParameterValue),
    ]
    for grant_to, message, error in cases:
        with pytest.raises(error, match=message):
            conn.execute("SELECT ml_stack.expose('prices', 'api3', %s::text[])", (grant_to,))
    for schema in ("public", "ml_stack", "pg_catalog", "holds_a_table"):
        with pytest.raises(psycopg.errors.InvalidSchemaName):
            conn.execute("SELECT ml_stack.expose('prices', %s, %s)", (schema, [exposed]))
    with pytest.raises(psycopg.errors.UndefinedObject, match='project "nope" does not exist'):
        conn.execute("SELECT ml_stack.expose('nope', 'api', %s)", ([exposed],))
    assert (registry_rows(conn), conn.execute("SELECT * FROM ml_stack.endpoints ORDER BY 1, 2").fetchall()) == before
    assert conn.execute("SELECT to_regnamespace('api3')").fetchone()[0] is None
    assert endpoint_rows(conn, "holds_a_table") == []


def test_endpoints_follow_the_deployment(conn, exposed):
    oid = conn.execute("SELECT 'api.predict_prices(float8, float8)'::regprocedure::oid").fetchone()[0]
    ridge = train(conn, "prices", algorithm="ridge", hyperparams={"alpha": 100}, automatic_deploy=False)["model_id"]
    conn.execute("SELECT * FROM ml_stack.deploy(%s::bigint)", (ridge,))
    assert conn.execute("SELECT 'api.predict_prices(float8, float8)'::regprocedure::oid").fetchone()[0] == oid
    got = as_role(conn, exposed, "SELECT api.predict_prices(50, 2)")[0][0]
    assert got == conn.execute(f"SELECT ml_stack.predict({ridge}::bigint, ARRAY[50, 2])").fetchone()[0]
    comment = conn.execute("SELECT obj_description(%s, 'pg_proc')", (oid,)).fetchone()[0]
    assert f"model {ridge}, ridge" in comment
    # a model of other columns, deployed by hand: the endpoints take them
    conn.execute("CREATE VIEW by_area AS SELECT area, price FROM prices")
    other = train(conn, "prices", "regression", "by_area", "price")["model_id"]
    conn.execute("SELECT * FROM ml_stack.deploy(%s::bigint)", (other,))
    assert [r[1] for r in endpoint_rows(conn) if r[0] == "predict_prices"] == ["area double precision"]
    assert as_role(conn, exposed, "SELECT api.predict_prices(area => 50)")[0][0] == conn.execute(
        f"SELECT ml_stack.predict({other}::bigint, ARRAY[50])").fetchone()[0]


def test_unexpose(conn, exposed):
    assert conn.execute("SELECT ml_stack.unexpose('flowers')").fetchone()[0] is True
    assert conn.execute("SELECT ml_stack.unexpose('flowers')").fetchone()[0] is False
    assert [r[0] for r in endpoint_rows(conn)] == ["predict_batch_prices", "predict_prices"]


def test_a_deleted_project_takes_its_endpoints(conn, exposed):
    conn.execute("SELECT ml_stack.expose('prices', 'api2', %s)", ([exposed],))
    conn.execute("LISTEN pgrst")
    conn.execute("DELETE FROM ml_stack.projects WHERE name = 'prices'")
    assert [r[0] for r in endpoint_rows(conn)] == ["classify_flowers", "predict_batch_flowers", "predict_flowers",
                                                   "predict_proba_flowers"]
    assert endpoint_rows(conn, "api2") == []
    assert conn.execute("SELECT count(*) FROM ml_stack.endpoints").fetchone()[0] == 1
    assert {n.payload for n in conn.notifies(timeout=0.5, stop_after=1)} == {"reload schema"}


def test_hostile_identifiers(conn, roles):
    conn.execute(TABLE)
    project = "it's; DROP TABLE prices; --"
    schema = 'a"pi; DROP TABLE prices'
    train(conn, project, "regression", "prices", "price")
    anon = roles("anon")
    made = [r[0] for r in conn.execute("SELECT ml_stack.expose(%s, %s, %s)", (project, schema, [anon]))]
    assert len(made) == 2
    fn = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(f"predict_{project}"))
    got = as_role(conn, anon, sql.SQL("SELECT {}(50, 2)").format(fn))[0][0]
    assert got == conn.execute("SELECT ml_stack.predict(%s, ARRAY[50, 2])", (project,)).fetchone()[0]
    assert conn.execute("SELECT count(*) FROM prices").fetchone()[0] == 300
    # the configuration names the schema as PostgREST reads it (its db-schemas is a comma-separated list)
    config = conn.execute("SELECT ml_stack.postgrest_config(%s, %s)", (schema, anon)).fetchone()[0]
    assert f'db-anon-role = "{anon}"' in config and "DROP TABLE prices" in config
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="control characters"):
        conn.execute("SELECT ml_stack.postgrest_config(%s, %s)", ('api"\ndb-anon-role = "postgres', anon))
    # a retrain refreshes the endpoints, a delete of the project's row (as the trigger does) and unexpose
    # remove them: nothing else is touched
    train(conn, project, algorithm="ridge", automatic_deploy=False)
    conn.execute("SELECT * FROM ml_stack.deploy(%s, 'most_recent')", (project,))
    assert as_role(conn, anon, sql.SQL("SELECT {}(50, 2)").format(fn))[0][0] == conn.execute(
        "SELECT ml_stack.predict(%s, ARRAY[50, 2])", (project,)).fetchone()[0]
    assert conn.execute("SELECT ml_stack.unexpose(%s, %s)", (project, schema)).fetchone()[0] is True
    assert endpoint_rows(conn, schema) == []
    assert conn.execute("SELECT count(*) FROM prices").fetchone()[0] == 300
    assert conn.execute("SELECT count(*) FROM ml_stack.projects WHERE name = %s", (project,)).fetchone()[0] == 1
    train(conn, "p" * 50, "regression", "prices", "price")
    with pytest.raises(psycopg.errors.NameTooLong):   # predict_batch_ + 50 bytes
        conn.execute("SELECT ml_stack.expose(%s, 'api', %s)", ("p" * 50, [anon]))


def test_a_search_path_hijack_changes_no_answer(conn, exposed):
    expected = as_role(conn, exposed, "SELECT api.predict_prices(50, 2), api.classify_flowers(1.2, 2.5, true)")
    conn.execute("""
        CREATE FUNCTION public.zero(float8, float8) RETURNS float8 LANGUAGE sql AS 'SELECT 0::float8';
        CREATE OPERATOR public.+ (LEFTARG = float8, RIGHTARG = float8, FUNCTION = public.zero);
        CREATE OPERATOR public.* (LEFTARG = float8, RIGHTARG = float8, FUNCTION = public.zero);
        CREATE OPERATOR api.+ (LEFTARG = float8, RIGHTARG = float8, FUNCTION = public.zero);
        CREATE FUNCTION public._argmax(float8[]) RETURNS integer LANGUAGE sql AS 'SELECT 1';
        CREATE FUNCTION public._labelled(float8[], float8[]) RETURNS jsonb LANGUAGE sql AS 'SELECT ''{}''::jsonb';
        CREATE FUNCTION public.coalesce(float8, float8) RETURNS float8 LANGUAGE sql AS 'SELECT 0::float8';
    """)
    conn.execute("GRANT USAGE ON SCHEMA public TO PUBLIC")
    for path in ('"api", "public"', "public, pg_catalog", "api, public, pg_catalog"):
        conn.execute(f"SET search_path = {path}")
        assert as_role(conn, exposed, "SELECT api.predict_prices(50, 2), api.classify_flowers(1.2, 2.5, true)") == \
            expected, path
    conn.execute("RESET search_path")


def test_postgrest_config(conn, exposed, roles):
    text = conn.execute("SELECT ml_stack.postgrest_config('api', %s, jwt_secret => 'x' || repeat('s', 40))",
                        (exposed,)).fetchone()[0]
    settings = dict(line.split(" = ", 1) for line in text.splitlines() if " = " in line and not line.startswith("#"))
    assert settings["db-schemas"] == '"api"' and settings["db-anon-role"] == f'"{exposed}"'
    assert settings["jwt-secret"] == '"x' + "s" * 40 + '"'
    assert settings["db-uri"].startswith('"postgres://authenticator@localhost:')
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="is a superuser"):
        conn.execute("SELECT ml_stack.postgrest_config('api', %s)", (conn.info.user,))


def login(pg_server, dbname, role):
    return psycopg.connect(host=pg_server.host, port=pg_server.port, user=role, dbname=dbname, autocommit=True)


def test_group_roles(conn, pg_server, roles):
    """A trainer trains, deploys and retrains without being a superuser or ml_stack's owner; a predictor
    predicts and cannot train; an admin exposes, which a trainer cannot."""
    conn.execute(TABLE)
    trainer, predictor, admin = roles("trainer", "LOGIN"), roles("predictor", "LOGIN"), roles("admin", "LOGIN")
    anon = roles("anon")
    for role, group in ((trainer, "ml_stack_trainer"), (predictor, "ml_stack_predictor"), (admin, "ml_stack_admin")):
        conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), sql.Identifier(role)))
    conn.execute(sql.SQL("GRANT SELECT ON prices TO {}").format(sql.Identifier(trainer)))
    db = conn.info.dbname
    with login(pg_server, db, trainer) as t:
        first = train(t, "prices", "regression", "prices", "price")
        second = train(t, "prices", algorithm="ridge", automatic_deploy=False)
        t.execute("SELECT * FROM ml_stack.deploy(%s::bigint)", (second["model_id"],))
        t.execute("SELECT * FROM ml_stack.deploy('prices', 'rollback')")
        assert t.execute("SELECT model_id FROM ml_stack.deployed_models").fetchone()[0] == first["model_id"]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            t.execute("SELECT ml_stack.expose('prices', 'api', %s)", ([anon],))
    with login(pg_server, db, predictor) as p:
        assert p.execute("SELECT ml_stack.predict('prices', ARRAY[50, 2])").fetchone()[0] == conn.execute(
            "SELECT ml_stack.predict('prices', ARRAY[50, 2])").fetchone()[0]
        assert p.execute("SELECT ml_stack.predict_row('prices', '{\"area\": 50, \"rooms\": 2}')").fetchone()[0] \
            is not None
        before = registry_rows(conn)
        for statement in ("SELECT * FROM ml_stack.train('prices', algorithm => 'ridge')",
                          "SELECT * FROM ml_stack.deploy('prices', 'most_recent')",
                          "DELETE FROM ml_stack.models"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                p.execute(statement)
        assert registry_rows(conn) == before
    with login(pg_server, db, admin) as a:
        made = a.execute("SELECT ml_stack.expose('prices', 'api', %s)", ([anon],)).fetchall()
        assert len(made) == 2
        assert a.execute("SELECT ml_stack.unexpose('prices')").fetchone()[0] is True


def test_exposing_again_to_other_roles_revokes_the_old_ones(conn, exposed, roles):
    newer = roles("newer_anon")
    conn.execute("SELECT ml_stack.expose('prices', 'api', %s)", ([newer],))
    for fn in ("api.predict_prices(float8, float8)", "api.predict_batch_prices(jsonb)"):
        assert conn.execute("SELECT has_function_privilege(%s, %s, 'EXECUTE'), has_function_privilege(%s, %s, 'EXECUTE')",
                            (exposed, fn, newer, fn)).fetchone() == (False, True)
    # the other project's endpoints keep their role
    assert conn.execute("SELECT has_function_privilege(%s, 'api.predict_flowers(float8, float8, boolean)', 'EXECUTE')",
                        (exposed,)).fetchone()[0]


def test_only_expose_writes_the_endpoints_table(conn, pg_server, exposed, roles):
    """A row of ml_stack.endpoints becomes SECURITY DEFINER functions granted to the roles it names, made in
    the schema it names when serving refreshes: neither a trainer nor an admin may write one by hand, which
    would skip expose()'s checks (a trainer could then have dropped another user's function of an endpoint's
    name and granted the new one to PUBLIC)."""
    conn.execute("CREATE SCHEMA victim")
    conn.execute("CREATE FUNCTION victim.predict_prices(x integer) RETURNS integer LANGUAGE sql AS 'SELECT x'")
    project = conn.execute("SELECT id FROM ml_stack.projects WHERE name = 'prices'").fetchone()[0]
    before = conn.execute("SELECT * FROM ml_stack.endpoints ORDER BY 1, 2").fetchall()
    for group in ("ml_stack_trainer", "ml_stack_admin"):
        role = roles("writer", "LOGIN")
        conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), sql.Identifier(role)))
        with login(pg_server, conn.info.dbname, role) as t:
            assert len(t.execute("SELECT * FROM ml_stack.endpoints").fetchall()) == len(before)
            for statement in ("INSERT INTO ml_stack.endpoints (project_id, schema_name, grant_to) "
                              "VALUES (%s, 'victim', '{public}')" % project,
                              "UPDATE ml_stack.endpoints SET schema_name = 'victim', grant_to = '{public}'",
                              "DELETE FROM ml_stack.endpoints"):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    t.execute(statement)
            t.execute("SELECT * FROM ml_stack.deploy('prices', 'most_recent')")   # a refresh of serving
    assert conn.execute("SELECT * FROM ml_stack.endpoints ORDER BY 1, 2").fetchall() == before
    assert [r[0] for r in endpoint_rows(conn, "victim")] == ["predict_prices"]
    assert conn.execute("SELECT victim.predict_prices(7)").fetchone()[0] == 7


def test_expose_refuses_roles_that_can_become_more(conn, exposed, roles):
    """Membership counts whether or not the role inherits: a NOINHERIT member can still SET ROLE."""
    admin_member = roles("am", "NOLOGIN NOINHERIT")
    conn.execute(sql.SQL("GRANT ml_stack_admin TO {}").format(sql.Identifier(admin_member)))
    super_member = roles("sm", "NOLOGIN NOINHERIT")
    su = roles("su", "NOLOGIN SUPERUSER")
    conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(su), sql.Identifier(super_member)))
    cases = [(admin_member, "is a member of an ml_stack group role"),
             (super_member, f'is a member of role "{su}", which is a superuser'),
             (roles("cr", "NOLOGIN CREATEROLE"), "has CREATEROLE")]
    for role, message in cases:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match=message):
            conn.execute("SELECT ml_stack.expose('prices', 'api', %s)", ([role],))
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match=message):
            conn.execute("SELECT ml_stack.postgrest_config('api', %s)", (role,))
    # a role granted more after expose: its endpoints are no longer refreshed, with a warning
    conn.execute(sql.SQL("GRANT ml_stack_trainer TO {}").format(sql.Identifier(exposed)))
    notices = []
    conn.add_notice_handler(lambda d: notices.append(d.message_primary))
    train(conn, "prices", algorithm="ridge")
    conn.execute("SELECT * FROM ml_stack.deploy('prices', 'most_recent')")
    assert any("are not refreshed" in n and "is a member of an ml_stack group role" in n for n in notices), notices


def test_two_projects_never_share_an_endpoint(conn, exposed):
    """Project "proba_flowers"'s predict endpoint would be "flowers"'s predict_proba endpoint."""
    conn.execute("CREATE TABLE proba_flowers AS SELECT sepal, petal, kind::float8 AS size FROM flowers")
    train(conn, "proba_flowers", "regression", "proba_flowers", "size")
    theirs = endpoint_rows(conn)
    with pytest.raises(psycopg.errors.DuplicateFunction,
                       match='endpoint api.predict_proba_flowers would be both project "proba_flowers"\'s and project "flowers"\'s'):
        conn.execute("SELECT ml_stack.expose('proba_flowers', 'api', %s)", ([exposed],))
    assert endpoint_rows(conn) == theirs
    made = conn.execute("SELECT ml_stack.expose('proba_flowers', 'api_sizes', %s)::text", ([exposed],)).fetchall()
    assert [r[0] for r in made] == ["api_sizes.predict_batch_proba_flowers(jsonb)",
                                    "api_sizes.predict_proba_flowers(double precision,double precision)"]


def test_a_search_path_hijack_changes_no_answer_of_a_tree_model(conn, roles):
    """An XGBoost model (compiled trees) exposed: operators planted in public and functions named like
    ml_stack's internals planted in public and in the API schema change nothing its endpoints or its typed
    serving function answer, under PostgREST's search_path and under paths that put public before pg_catalog."""
    conn.execute("CREATE EXTENSION ml_stack_python CASCADE")
    conn.execute(TABLE)
    train(conn, "flowers", "classification", "flowers", "kind", algorithm="xgboost",
          hyperparams={"n_estimators": 8, "max_depth": 3})
    anon = roles("anon")
    conn.execute("SELECT ml_stack.expose('flowers', 'api', %s)", ([anon],))
    serving = conn.execute("SELECT serving_function::oid::regproc::text, serving_proba_function::oid::regproc::text "
                           "FROM ml_stack.deployed_models WHERE project_name = 'flowers'").fetchone()
    calls = ("SELECT api.predict_flowers(1.2, 2.5, true), api.predict_proba_flowers(3.3, 0.5, false), "
             "api.classify_flowers(0.6, 1.5, true), "
             "(SELECT array_agg(label ORDER BY row) FROM api.predict_batch_flowers("
             "'[{\"sepal\": 1.2, \"petal\": 2.5, \"wet\": true}, {\"sepal\": 3.6, \"petal\": 4, \"wet\": false}]'))")
    typed = (f"SELECT sum({serving[0]}(sepal, petal, wet)), "
             f"sum(({serving[1]}(sepal, petal, wet))[2]) FROM flowers")
    expected = as_role(conn, anon, calls), conn.execute(typed).fetchall()
    assert len({r[0] for r in conn.execute(f"SELECT {serving[0]}(sepal, petal, wet) FROM flowers")}) == 3
    conn.execute("""
        CREATE FUNCTION public.no(float8, float8) RETURNS boolean LANGUAGE sql AS 'SELECT false';
        CREATE FUNCTION public.zero4(float4, float4) RETURNS float4 LANGUAGE sql AS 'SELECT 0::float4';
        CREATE FUNCTION public.zero(float8, float8) RETURNS float8 LANGUAGE sql AS 'SELECT 0::float8';
        CREATE OPERATOR public.< (LEFTARG = float8, RIGHTARG = float8, FUNCTION = public.no);
        CREATE OPERATOR public.>= (LEFTARG = float8, RIGHTARG = float8, FUNCTION = public.no);
        CREATE OPERATOR public.+ (LEFTARG = float4, RIGHTARG = float4, FUNCTION = public.zero4);
        CREATE OPERATOR public.+ (LEFTARG = float8, RIGHTARG = float8, FUNCTION = public.zero);
        CREATE OPERATOR api.< (LEFTARG = float8, RIGHTARG = float8, FUNCTION = public.no);
        CREATE FUNCTION public.exp(float8) RETURNS float8 LANGUAGE sql AS 'SELECT 0::float8';
    """)
    for schema in ("public", "api"):
        conn.execute(f"""
            CREATE FUNCTION {schema}._softmax(float8[]) RETURNS float8[] LANGUAGE sql AS 'SELECT ARRAY[1, 0, 0]::float8[]';
            CREATE FUNCTION {schema}._argmax(float8[]) RETURNS integer LANGUAGE sql AS 'SELECT 1';
            CREATE FUNCTION {schema}._labelled(float8[], float8[]) RETURNS jsonb LANGUAGE sql AS 'SELECT ''{{}}''::jsonb';
            CREATE FUNCTION {schema}._check_batch_rows(jsonb) RETURNS void LANGUAGE sql AS 'SELECT NULL::void';
        """)
    conn.execute("GRANT USAGE ON SCHEMA public TO PUBLIC")
    for path in ('"api", "public"', "public, pg_catalog", "api, public, pg_catalog"):
        conn.execute(f"SET search_path = {path}")
        assert as_role(conn, anon, calls) == expected[0], path
        assert conn.execute(typed).fetchall() == expected[1], path
    conn.execute("RESET search_path")
