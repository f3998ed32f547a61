"""The PostgREST 12 replay (tests/postgrest_replay.py) against a hand-written schema ``api``, driven over HTTP by
PyPI's ``postgrest`` client, and by ``httpx`` where the client hides what a test checks (statuses, headers).

Each test has an empty database of its own (``new_db``: no ml_stack) and its own roles: an authenticator
(LOGIN NOINHERIT), an anonymous role and a JWT role, both granted to the authenticator. The replay logs the
statements it ran per request (``server.exchanges``), so tests check both the HTTP answer and what reached the
database.
"""

import time
import uuid
from dataclasses import dataclass

import httpx
import psycopg
import pytest
from postgrest import APIError, SyncPostgrestClient
from psycopg import sql

from postgrest_replay import ApiRoles, api_roles, jwt_for, postgrest_server

SECRET = "a-jwt-secret-for-the-replay-tests-only"

SCHEMA_SQL = """
CREATE SCHEMA api;
COMMENT ON SCHEMA api IS 'Replay test API
Functions to exercise the PostgREST replay.';
GRANT USAGE ON SCHEMA api TO ANON_ROLE, USER_ROLE;
CREATE TABLE public.notes (note text);
GRANT SELECT, INSERT ON public.notes TO ANON_ROLE, USER_ROLE;

CREATE FUNCTION api.scale(x float8, label text) RETURNS text STABLE LANGUAGE sql
    AS $$ SELECT label || ':' || (x * 2)::text $$;
COMMENT ON FUNCTION api.scale(float8, text) IS 'Doubles x and labels it

Returns the label, a colon and twice x.';

-- an overload pair, told apart by the names of the arguments sent
CREATE FUNCTION api.pick(a int) RETURNS text STABLE LANGUAGE sql AS $$ SELECT 'a=' || a $$;
CREATE FUNCTION api.pick(b text, c text DEFAULT 'none') RETURNS text STABLE LANGUAGE sql
    AS $$ SELECT 'b=' || b || ',c=' || c $$;

CREATE FUNCTION api.add_note(note text) RETURNS bigint VOLATILE LANGUAGE sql
    AS $$ INSERT INTO public.notes VALUES (note); SELECT count(*) FROM public.notes $$;
CREATE FUNCTION api.volatile_read() RETURNS bigint VOLATILE LANGUAGE sql AS $$ SELECT count(*) FROM public.notes $$;
-- a STABLE function whose helper writes: the helper runs, and fails in the READ ONLY transaction
CREATE FUNCTION public.write_note() RETURNS void VOLATILE LANGUAGE sql AS $$ INSERT INTO public.notes VALUES ('x') $$;
CREATE FUNCTION api.stable_writer() RETURNS int STABLE LANGUAGE plpgsql
    AS $$ BEGIN PERFORM public.write_note(); RETURN 1; END $$;

CREATE FUNCTION api.missing_model() RETURNS int STABLE LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'no model named m7' USING ERRCODE = 'PT404', DETAIL = 'project m7', HINT = 'train it first';
END $$;
CREATE FUNCTION api.fail(msg text) RETURNS int STABLE LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION '%', msg; END $$;
CREATE FUNCTION api.sleepy(seconds float8) RETURNS text STABLE LANGUAGE sql
    AS $$ SELECT 'awake' FROM pg_sleep(seconds) $$;

CREATE FUNCTION api.whoami() RETURNS json STABLE LANGUAGE sql AS $$
    SELECT json_build_object(
        'user', current_user,
        'claims', current_setting('request.jwt.claims')::json,
        'method', current_setting('request.method'),
        'path', current_setting('request.path'),
        'headers', current_setting('request.headers')::json,
        'cookies', current_setting('request.cookies')::json,
        'search_path', current_setting('search_path'),
        'read_only', current_setting('transaction_read_only'),
        'statement_timeout', current_setting('statement_timeout'))
$$;
CREATE FUNCTION api.secret() RETURNS text STABLE LANGUAGE sql AS $$ SELECT 'the secret' $$;
REVOKE EXECUTE ON FUNCTION api.secret() FROM PUBLIC;

CREATE FUNCTION api.add(a int, b int) RETURNS int IMMUTABLE LANGUAGE sql AS $$ SELECT a + b $$;
CREATE FUNCTION api.sum_pairs(json) RETURNS int IMMUTABLE LANGUAGE sql
    AS $$ SELECT sum((e->>'a')::int + (e->>'b')::int)::int FROM json_array_elements($1) e $$;
CREATE FUNCTION api.series(n int) RETURNS SETOF int STABLE LANGUAGE sql AS $$ SELECT generate_series(1, n) $$;
CREATE FUNCTION api.squares(n int) RETURNS TABLE (i int, square int) STABLE LANGUAGE sql
    AS $$ SELECT i, i * i FROM generate_series(1, n) i $$;
CREATE FUNCTION api.nothing() RETURNS void STABLE LANGUAGE sql AS $$ SELECT $$;
CREATE FUNCTION api.teapot() RETURNS text STABLE LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('response.status', '418', true);
    PERFORM set_config('response.headers', '[{"X-Model": "m1"}]', true);
    RETURN 'short and stout';
END $$;
"""

# PostgREST's body for a PostgreSQL error: every key present, null when the error lacks it
def pg_error(code, message, details=None, hint=None):
    return {"code": code, "message": message, "details": details, "hint": hint}


@dataclass
class Api:
    conn: psycopg.Connection  # superuser, autocommit, in the API's database
    dbname: str
    roles: ApiRoles

    def count_notes(self):
        return self.conn.execute("SELECT count(*) FROM public.notes").fetchone()[0]


@pytest.fixture
def api(pg_server, new_db):
    dbname = new_db("pgrst_replay")
    with pg_server.connect(dbname) as conn, api_roles(conn) as roles:
        schema_sql = SCHEMA_SQL.replace("ANON_ROLE", sql.Identifier(roles.anon).as_string(conn))
        conn.execute(schema_sql.replace("USER_ROLE", sql.Identifier(roles.user).as_string(conn)))
        yield Api(conn, dbname, roles)


def serve(pg_server, api, **options):
    """The replay for ``api``: schema api, anonymous role, JWT secret, unless ``options`` say otherwise."""
    settings = {"schemas": ["api"], "anon_role": api.roles.anon, "jwt_secret": SECRET, **options}
    return postgrest_server(pg_server, api.dbname, api.roles.authenticator, **settings)


@pytest.fixture
def server(pg_server, api):
    with serve(pg_server, api) as srv:
        yield srv


@pytest.fixture
def client(server):
    with SyncPostgrestClient(server.url, schema="api") as c:
        yield c


def user_token(api, **claims):
    return jwt_for({"role": api.roles.user, **claims}, SECRET)


def call(server, function, body=None, token=None, method="POST", headers=(), **kwargs):
    """One raw HTTP call of /rpc/<function> (the client does not show statuses or headers of errors)."""
    headers = {**dict(headers), **({"Authorization": f"Bearer {token}"} if token else {})}
    return httpx.request(method, f"{server.url}/rpc/{function}", json=body, headers=headers, **kwargs)


def statements(server):
    """The SQL of the last request, statement by statement."""
    return [s.sql for s in server.exchanges[-1].statements]


# --------------------------------------------------------------------------------------------------------------
# calls and what reaches the database


def test_post_to_a_stable_function_runs_read_only_with_the_arguments_by_name(server, client, api):
    assert client.rpc("scale", {"x": 1.5, "label": "n"}).execute().data == "n:3"
    begin, set_locals, call_sql, commit = statements(server)
    assert begin == "BEGIN ISOLATION LEVEL READ COMMITTED READ ONLY"
    assert set_locals.startswith("SELECT set_config('search_path', %s, true), set_config('role', %s, true), "
                                 "set_config('request.jwt.claims', %s, true), set_config('request.method', %s, true),"
                                 " set_config('request.path', %s, true), set_config('request.headers', %s, true), "
                                 "set_config('request.cookies', %s, true)")
    anon = api.roles.anon
    assert server.exchanges[-1].statements[1].params[:5] == (
        '"api", "public"', anon, f'{{"role":"{anon}"}}', "POST", "/rpc/scale")
    assert call_sql.startswith(
        'WITH pgrst_source AS (SELECT pgrst_call.pgrst_scalar FROM (SELECT %s AS json_data) pgrst_payload, '
        'LATERAL (SELECT "x", "label" FROM json_to_record(pgrst_payload.json_data) AS _("x" double precision, '
        '"label" text) LIMIT 1) pgrst_body, LATERAL (SELECT "api"."scale"("x" := pgrst_body."x", '
        '"label" := pgrst_body."label") pgrst_scalar) pgrst_call) SELECT ')
    assert commit == "COMMIT"


def test_get_passes_query_parameters_as_json_strings(server, client):
    assert client.rpc("scale", {"x": 2, "label": "g"}, get=True).execute().data == "g:4"
    begin, _, _, _ = statements(server)
    assert begin == "BEGIN ISOLATION LEVEL READ COMMITTED READ ONLY"
    payload = server.exchanges[-1].statements[2].params[0]
    assert payload.obj == '{"x": "2", "label": "g"}'
    response = httpx.get(f"{server.url}/rpc/scale", params={"x": "0.25", "label": "h"})
    assert (response.status_code, response.json()) == (200, "h:0.5")
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    assert response.headers["content-range"] == "0-0/*"
    head = httpx.head(f"{server.url}/rpc/scale", params={"x": "1", "label": "h"})
    assert (head.status_code, head.content) == (200, b"")


def test_overloads_are_resolved_by_the_names_sent_and_only_those_are_passed(server, client):
    assert client.rpc("pick", {"a": 1}).execute().data == "a=1"
    assert client.rpc("pick", {"b": "x"}).execute().data == "b=x,c=none"  # c keeps its DEFAULT
    assert '"api"."pick"("b" := pgrst_body."b")' in statements(server)[2]
    assert client.rpc("pick", {"b": "x", "c": "y"}).execute().data == "b=x,c=y"
    response = call(server, "pick", {"d": "y", "b": "x"})
    assert response.status_code == 404
    assert response.json() == {
        "code": "PGRST202",
        "message": "Could not find the function api.pick(b, d) in the schema cache",
        "details": "Searched for the function api.pick with parameters b, d or with a single unnamed json/jsonb "
                   "parameter, but no matches were found in the schema cache.",
        "hint": "Perhaps you meant to call the function api.pick(b, c)"}  # the hint's fuzzy match is approximate
    assert server.exchanges[-1].statements == []  # refused from the schema cache, before any transaction
    with pytest.raises(APIError) as info:
        client.rpc("no_such_function", {}).execute()
    assert (info.value.code, info.value.message) == (
        "PGRST202", "Could not find the function api.no_such_function without parameters in the schema cache")


def test_post_to_a_volatile_function_runs_read_write(server, client, api):
    assert client.rpc("add_note", {"note": "hello"}).execute().data == 1
    assert statements(server)[0] == "BEGIN ISOLATION LEVEL READ COMMITTED READ WRITE"
    assert api.count_notes() == 1


def test_get_of_a_volatile_function_runs_read_only_so_its_writes_fail_with_405(server, client, api):
    """PostgREST 12 does not refuse GET on a VOLATILE function up front (Plan.hs: every InvRead is SQL.Read):
    the call runs READ ONLY, and a write in it fails with 25006, which PostgREST answers with 405."""
    response = call(server, "add_note", method="GET", params={"note": "via get"})
    assert response.status_code == 405
    assert response.json() == pg_error("25006", "cannot execute INSERT in a read-only transaction")
    assert statements(server)[-1] == "ROLLBACK"
    assert api.count_notes() == 0
    assert client.rpc("volatile_read", {}, get=True).execute().data == 0  # reading is fine


def test_a_stable_function_that_writes_gets_405(server, api):
    response = call(server, "stable_writer", {})
    assert response.status_code == 405
    assert response.json()["code"] == "25006"
    assert api.count_notes() == 0


# --------------------------------------------------------------------------------------------------------------
# errors raised by functions


def test_ptnnn_sets_the_http_status_and_the_reason_phrase(server, client):
    response = call(server, "missing_model", {})
    assert (response.status_code, response.reason_phrase) == (404, "no model named m7")
    assert response.json() == pg_error("PT404", "no model named m7", "project m7", "train it first")
    with pytest.raises(APIError) as info:
        client.rpc("missing_model", {}).execute()
    assert info.value.json() == pg_error("PT404", "no model named m7", "project m7", "train it first")


def test_a_plain_raise_is_400(server):
    response = call(server, "fail", {"msg": "bad input: x"})
    assert response.status_code == 400
    assert response.json() == pg_error("P0001", "bad input: x")


def test_the_target_roles_statement_timeout_applies_and_cancels_as_500(pg_server, api):
    api.conn.execute(sql.SQL("ALTER ROLE {} SET statement_timeout = '100ms'").format(sql.Identifier(api.roles.anon)))
    with serve(pg_server, api) as server:
        response = call(server, "sleepy", {"seconds": 1})
        assert response.status_code == 500
        assert response.json() == pg_error("57014", "canceling statement due to statement timeout")
        # the role's settings come before the role itself in the one set_config statement
        assert statements(server)[1].startswith(
            "SELECT set_config('search_path', %s, true), set_config('statement_timeout', %s, true), "
            "set_config('role', %s, true)")
        assert call(server, "whoami", {}).json()["statement_timeout"] == "100ms"
        # another role is not bound by it
        response = call(server, "sleepy", {"seconds": 0.3}, token=user_token(api))
        assert (response.status_code, response.json()) == (200, "awake")


def test_a_functions_own_timeout_and_isolation_are_hoisted_to_the_transaction(server, api):
    """PostgREST 12 applies a function's SET statement_timeout / default_transaction_isolation to the whole
    transaction (db-hoisted-tx-settings), after the request settings; inside the function alone the timeout
    would come too late to cancel the statement that calls it."""
    api.conn.execute("""
        CREATE FUNCTION api.hasty() RETURNS text STABLE LANGUAGE sql
            SET statement_timeout = '100ms' SET default_transaction_isolation = 'serializable'
            AS $$ SELECT 'done' FROM pg_sleep(0.5) $$;
        NOTIFY pgrst, 'reload schema'""")
    server.wait_for_reload(0)
    response = call(server, "hasty", {})
    assert (response.status_code, response.json()["code"]) == (500, "57014")
    begin, set_locals = statements(server)[:2]
    assert begin == "BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY"
    assert set_locals.endswith("set_config('request.cookies', %s, true), set_config('statement_timeout', %s, true), "
                               "set_config('default_transaction_isolation', %s, true)")


def test_role_settings_are_cached_until_a_reload(server, api):
    assert call(server, "whoami", {}).json()["statement_timeout"] == "0"
    api.conn.execute(sql.SQL("ALTER ROLE {} SET statement_timeout = '250ms'").format(sql.Identifier(api.roles.anon)))
    assert call(server, "whoami", {}).json()["statement_timeout"] == "0"
    before = server.reload_count
    api.conn.execute("NOTIFY pgrst, 'reload schema'")
    server.wait_for_reload(before)
    assert call(server, "whoami", {}).json()["statement_timeout"] == "250ms"


# --------------------------------------------------------------------------------------------------------------
# roles and JWTs


def test_anonymous_and_jwt_calls_run_as_their_roles_and_see_their_claims(server, client, api):
    anonymous = client.rpc("whoami", {}).execute().data
    assert anonymous["user"] == api.roles.anon
    assert anonymous["claims"] == {"role": api.roles.anon}
    assert anonymous["search_path"] == '"api", "public"'
    assert anonymous["read_only"] == "on"
    assert (anonymous["method"], anonymous["path"]) == ("POST", "/rpc/whoami")
    token = user_token(api, sub="alice", exp=int(time.time()) + 600)
    authenticated = client.auth(token).rpc("whoami", {}).execute().data
    assert authenticated["user"] == api.roles.user
    assert authenticated["claims"] == {"role": api.roles.user, "sub": "alice", "exp": authenticated["claims"]["exp"]}


def test_request_headers_and_cookies_are_visible_to_the_function(server, api):
    response = httpx.post(f"{server.url}/rpc/whoami", json={},
                          headers={"X-Request-Id": "r-1", "Cookie": "session=abc; theme=dark"})
    seen = response.json()
    assert seen["headers"]["x-request-id"] == "r-1"
    assert "cookie" not in seen["headers"]
    assert seen["cookies"] == {"session": "abc", "theme": "dark"}


def test_execute_revoked_from_the_caller_is_401_anonymous_and_403_with_a_jwt(server, api):
    response = call(server, "secret", {})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json() == pg_error("42501", "permission denied for function secret")
    response = call(server, "secret", {}, token=user_token(api))
    assert response.status_code == 403
    assert response.json() == pg_error("42501", "permission denied for function secret")
    api.conn.execute(sql.SQL("GRANT EXECUTE ON FUNCTION api.secret() TO {}").format(sql.Identifier(api.roles.user)))
    response = call(server, "secret", {}, token=user_token(api))
    assert (response.status_code, response.json()) == (200, "the secret")  # EXECUTE is checked at call time


def test_a_role_the_authenticator_was_not_granted_is_refused(server, api):
    outsider = f"pgrst_outsider_{uuid.uuid4().hex[:8]}"
    api.conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(outsider)))
    try:
        response = call(server, "whoami", {}, token=jwt_for({"role": outsider}, SECRET))
        assert response.status_code == 403  # 42501, and the role is not the anonymous one
        assert response.json() == pg_error("42501", f'permission denied to set role "{outsider}"')
    finally:
        api.conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(outsider)))
    # PostgREST 12 answers a role that does not exist with 400 (22023; 13.0.1 made it 401)
    response = call(server, "whoami", {}, token=jwt_for({"role": outsider}, SECRET))
    assert response.status_code == 400
    assert response.json() == pg_error("22023", f'role "{outsider}" does not exist')


def test_bad_jwts_are_401_before_any_transaction(server, api):
    response = call(server, "whoami", {}, token=jwt_for({"role": api.roles.user}, "another-secret"))
    assert response.status_code == 401
    assert response.json() == {"code": "PGRST301", "message": "JWSError JWSInvalidSignature", "details": None,
                               "hint": None}
    assert response.headers["www-authenticate"] == \
        'Bearer error="invalid_token", error_description="JWSError JWSInvalidSignature"'
    response = call(server, "whoami", {}, token=user_token(api, exp=int(time.time()) - 60))
    assert (response.status_code, response.json()["code"], response.json()["message"]) == \
        (401, "PGRST301", "JWT expired")
    response = call(server, "whoami", {}, token="not-a-jwt")
    assert response.json()["message"] == \
        "JWSError (CompactDecodeError Invalid number of parts: Expected 3 parts; got 1)"
    assert server.exchanges[-1].statements == []


def test_a_jwt_sent_to_a_server_without_a_secret_is_500_pgrst300(pg_server, api):
    with serve(pg_server, api, jwt_secret=None) as server:
        response = call(server, "whoami", {}, token=user_token(api))
        assert response.status_code == 500
        assert response.json() == {"code": "PGRST300", "message": "Server lacks JWT secret", "details": None,
                                   "hint": None}
        assert call(server, "whoami", {}).status_code == 200  # anonymous calls still work


def test_without_an_anonymous_role_a_jwt_is_required(pg_server, api):
    with serve(pg_server, api, anon_role=None) as server:
        response = call(server, "whoami", {})
        assert response.status_code == 401
        assert response.json()["code"] == "PGRST302"
        assert call(server, "whoami", {}, token=user_token(api)).status_code == 200


# --------------------------------------------------------------------------------------------------------------
# payloads and results


def test_an_array_body_is_read_with_json_to_recordset_and_only_its_first_element_is_called(server):
    """PostgREST 12 builds every RPC body with ``LIMIT 1`` (QueryBuilder.callPlanToQuery passes includeLimitOne):
    an array of argument objects calls the function once, with the first object. Batches go through a function
    with a single unnamed json parameter, which receives the whole array."""
    response = call(server, "add", [{"a": 1, "b": 2}, {"a": 10, "b": 20}])
    assert (response.status_code, response.json()) == (200, 3)
    assert "json_to_recordset(pgrst_payload.json_data)" in statements(server)[2]
    response = call(server, "sum_pairs", [{"a": 1, "b": 2}, {"a": 10, "b": 20}])
    assert (response.status_code, response.json()) == (200, 33)
    assert 'FROM (SELECT "api"."sum_pairs"(%s::json) pgrst_scalar) pgrst_call' in statements(server)[2]
    response = call(server, "add", [{"a": 1, "b": 2}, {"a": 10}])
    assert response.status_code == 400
    assert response.json() == {"code": "PGRST102", "message": "All object keys must match", "details": None,
                               "hint": None}
    response = httpx.post(f"{server.url}/rpc/add", content=b"{not json",
                          headers={"Content-Type": "application/json"})
    assert (response.status_code, response.json()["message"]) == (400, "Empty or invalid json")


def test_set_returning_functions_answer_arrays(server, client):
    assert client.rpc("series", {"n": 3}).execute().data == [1, 2, 3]
    assert client.rpc("squares", {"n": 3}).execute().data == [{"i": 1, "square": 1}, {"i": 2, "square": 4},
                                                               {"i": 3, "square": 9}]
    response = call(server, "squares", {"n": 0})
    assert (response.json(), response.headers["content-range"]) == ([], "*/*")
    assert call(server, "series", {"n": 2}).headers["content-range"] == "0-1/*"


def test_a_void_function_answers_204(server):
    response = call(server, "nothing", {})
    assert (response.status_code, response.content) == (204, b"")


def test_response_status_and_headers_set_by_the_function_are_applied(server):
    response = call(server, "teapot", {})
    assert (response.status_code, response.json(), response.headers["x-model"]) == (418, "short and stout", "m1")


# --------------------------------------------------------------------------------------------------------------
# schema cache, schemas, OpenAPI, pre-request


def test_a_new_function_is_found_only_after_notify_reload(server, api):
    api.conn.execute("CREATE FUNCTION api.late() RETURNS text STABLE LANGUAGE sql AS $$ SELECT 'here' $$")
    assert call(server, "late", {}).status_code == 404
    before = server.reload_count
    api.conn.execute("NOTIFY pgrst, 'reload schema'")
    assert server.wait_for_reload(before) == before + 1
    response = call(server, "late", {})
    assert (response.status_code, response.json()) == (200, "here")


def test_profile_headers_choose_among_the_exposed_schemas(pg_server, api):
    api.conn.execute("CREATE SCHEMA api_v2; CREATE FUNCTION api_v2.version() RETURNS int STABLE LANGUAGE sql "
                     "AS $$ SELECT 2 $$")
    api.conn.execute(sql.SQL("GRANT USAGE ON SCHEMA api_v2 TO {}").format(sql.Identifier(api.roles.anon)))
    with serve(pg_server, api, schemas=["api", "api_v2"]) as server:
        with SyncPostgrestClient(server.url, schema="api_v2") as client:
            assert client.rpc("version", {}).execute().data == 2
            assert client.rpc("version", {}, get=True).execute().data == 2
        assert '"api_v2", "public"' in server.exchanges[-1].statements[1].params
        assert call(server, "version", {}).status_code == 404  # the default schema is the first one
        response = call(server, "version", {}, headers={"Content-Profile": "elsewhere"})
        assert response.status_code == 406
        assert response.json() == {"code": "PGRST106", "message": "The schema must be one of the following: api, "
                                   "api_v2", "details": None, "hint": None}


def test_openapi_lists_what_the_role_may_execute_with_comments_as_summaries(server, api):
    document = httpx.get(f"{server.url}/").json()
    assert document["swagger"] == "2.0"
    assert document["info"]["title"] == "Replay test API"
    post = document["paths"]["/rpc/scale"]["post"]
    assert post["summary"] == "Doubles x and labels it"
    assert post["description"] == "Returns the label, a colon and twice x."
    assert post["parameters"][0]["schema"] == {
        "type": "object", "required": ["x", "label"],
        "properties": {"x": {"type": "number", "format": "double precision"},
                       "label": {"type": "string", "format": "text"}}}
    assert {p["name"] for p in document["paths"]["/rpc/scale"]["get"]["parameters"]} == {"x", "label"}
    assert "/rpc/secret" not in document["paths"]
    headers = {"Authorization": f"Bearer {user_token(api)}"}
    api.conn.execute(sql.SQL("GRANT EXECUTE ON FUNCTION api.secret() TO {}").format(sql.Identifier(api.roles.user)))
    assert "/rpc/secret" in httpx.get(f"{server.url}/", headers=headers).json()["paths"]


def test_the_pre_request_function_runs_after_the_settings_as_the_target_role(pg_server, api):
    api.conn.execute("""
        CREATE FUNCTION api.check_request() RETURNS void STABLE LANGUAGE plpgsql AS $$
        BEGIN
            IF current_setting('request.headers')::json->>'x-blocked' IS NOT NULL THEN
                RAISE EXCEPTION 'blocked by % for %', current_user, current_setting('request.path')
                    USING ERRCODE = 'PT403';
            END IF;
        END $$""")
    with serve(pg_server, api, pre_request="api.check_request") as server:
        assert call(server, "add", {"a": 1, "b": 1}).json() == 2
        assert statements(server)[2] == 'SELECT "api"."check_request"()'
        response = call(server, "add", {"a": 1, "b": 1}, headers={"X-Blocked": "1"})
        assert response.status_code == 403
        assert response.json()["message"] == f"blocked by {api.roles.anon} for /rpc/add"


def test_what_is_not_replayed_is_refused_with_501(server):
    response = httpx.get(f"{server.url}/rpc/series", params={"n": "3", "select": "x"})
    assert (response.status_code, response.json()["code"]) == (501, "REPLAY501")
    assert httpx.get(f"{server.url}/notes").status_code == 501  # tables are not replayed
    response = httpx.delete(f"{server.url}/rpc/add")
    assert (response.status_code, response.json()["message"]) == (405, "Cannot use the DELETE method on RPC")
