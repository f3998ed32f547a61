"""Predictions over HTTP (0.4.0), the product's acceptance workflow: a table of headlines -> a classifier trained
with one call on the raw text -> ml_stack.expose -> ``POST /rpc/predict_clickbait {"title": ...}`` with least
privilege. PostgREST's server cannot be installed here: tests/postgrest_replay.py replays what PostgREST 12 does in
the database per request, and PyPI's ``postgrest`` client (what an application would use) drives it over HTTP;
``httpx`` where a test checks statuses and headers, which the client hides."""

import json

import httpx
import pytest
from postgrest import APIError, SyncPostgrestClient
from psycopg import sql

from helpers import train
from postgrest_replay import api_roles, jwt_for, postgrest_server

SECRET = "a-jwt-secret-for-the-http-tests-only-0123456789"

HEADLINES = """
CREATE TABLE titles (id integer PRIMARY KEY, title text, is_clickbait integer);
INSERT INTO titles
SELECT i, CASE WHEN i % 2 = 0
               THEN (ARRAY['You will not believe what', 'This one trick', '17 reasons why', 'What happens next will shock you:'])[1 + i % 4]
                    || ' ' || (ARRAY['cats', 'your doctor', 'celebrities', 'this kitchen'])[1 + (i / 2) % 4]
               ELSE (ARRAY['Parliament passes budget for', 'Central bank holds rates in', 'Court rules on appeal in', 'Storms close roads across'])[1 + i % 4]
                    || ' ' || (ARRAY['March', 'the north', 'Geneva', 'the capital'])[1 + (i / 2) % 4] END,
       (i % 2 = 0)::integer
FROM generate_series(1, 400) AS i;
"""


@pytest.fixture
def site(pg_server, new_db):
    """A database with ml_stack, the headlines, a trained and exposed clickbait classifier, the roles PostgREST
    needs (authenticator, anonymous, a JWT role) and the replay serving schema api."""
    dbname = new_db("ml_stack_http")
    with pg_server.connect(dbname) as conn, api_roles(conn, "http") as roles:
        conn.execute("CREATE EXTENSION ml_stack")
        conn.execute(HEADLINES)
        train(conn, "clickbait", "classification", "titles", "is_clickbait",
              preprocess={"title": {"vectorize": "hashing", "options": {"dims": 256}}, "id": {"impute": "zero"}})
        with postgrest_server(pg_server, dbname, roles.authenticator, ["api"], anon_role=roles.anon,
                              jwt_secret=SECRET) as server:
            before = server.reload_count
            conn.execute("SELECT ml_stack.expose('clickbait', 'api', %s)", ([roles.anon, roles.user],))
            server.wait_for_reload(before)
            yield conn, server, roles


def client_for(server, token=None):
    c = SyncPostgrestClient(server.url, schema="api")
    return c.auth(token) if token else c


def post(server, function, body, token=None, method="POST", **kwargs):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.request(method, f"{server.url}/rpc/{function}", json=body, headers=headers, **kwargs)


def test_predict_clickbait_from_raw_text(site):
    conn, server, _ = site
    titles = ["You will not believe what cats", "Parliament passes budget for Geneva", "an unseen headline"]
    expected = [conn.execute("SELECT ml_stack.predict_row('clickbait', r), ml_stack.predict_proba_row('clickbait', r) "
                             "FROM (SELECT %s::jsonb AS r) AS s", (json.dumps({"title": t, "id": 0}),)).fetchone()
                for t in titles]
    assert [e[0] for e in expected[:2]] == [1, 0]
    with client_for(server) as client:
        for title, (label, proba) in zip(titles, expected):
            assert client.rpc("predict_clickbait", {"id": 0, "title": title}).execute().data == label
            assert client.rpc("predict_proba_clickbait", {"id": 0, "title": title}).execute().data == proba
            assert client.rpc("classify_clickbait", {"id": 0, "title": title}).execute().data == \
                {"label": label, "probabilities": {"0": proba[0], "1": proba[1]}}
            # GET: the query parameters arrive as JSON strings
            assert client.rpc("predict_clickbait", {"id": "0", "title": title}, get=True).execute().data == label
        batch = client.rpc("predict_batch_clickbait", {"rows": [{"id": 0, "title": t} for t in titles]}).execute()
        assert [(r["row"], r["label"]) for r in batch.data] == [(i + 1, e[0]) for i, e in enumerate(expected)]
    # what the database saw: a READ ONLY transaction as the anonymous role, the endpoint called by argument names
    statements = [s.sql for s in server.exchanges[-1].statements]
    assert statements[0] == "BEGIN ISOLATION LEVEL READ COMMITTED READ ONLY"
    assert '"api"."predict_batch_clickbait"("rows" := pgrst_body."rows")' in statements[2]


def test_a_jwt_role_and_roles_not_granted(site):
    conn, server, roles = site
    token = jwt_for({"role": roles.user}, SECRET)
    with client_for(server, token) as client:
        assert client.rpc("predict_clickbait", {"id": 2, "title": "You will not believe what cats"}).execute().data == 1
    assert server.exchanges[-1].statements[1].params[1] == roles.user   # set_config('role', ...)
    # a role of the JWT that the authenticator may not become: 403
    outsider = f"{roles.user}_x"
    conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(outsider)))
    try:
        r = post(server, "predict_clickbait", {"id": 1, "title": "x"}, token=jwt_for({"role": outsider}, SECRET))
        assert r.status_code == 403 and r.json()["code"] == "42501"
    finally:
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(outsider)))
    # a role the authenticator may become but that was not granted the endpoints: 403 (401 for the anonymous)
    conn.execute(sql.SQL("REVOKE EXECUTE ON FUNCTION api.predict_clickbait(double precision, text) FROM {}")
                 .format(sql.Identifier(roles.user)))
    r = post(server, "predict_clickbait", {"id": 1, "title": "x"}, token=token)
    assert r.status_code == 403 and r.json()["code"] == "42501"
    conn.execute(sql.SQL("REVOKE EXECUTE ON FUNCTION api.predict_clickbait(double precision, text) FROM {}")
                 .format(sql.Identifier(roles.anon)))
    r = post(server, "predict_clickbait", {"id": 1, "title": "x"})
    assert r.status_code == 401


def test_errors_map_to_http_statuses_with_message_and_hint(site):
    conn, server, roles = site
    r = post(server, "predict_clickbait", {"id": "not a number", "title": "x"})
    assert r.status_code == 400 and r.json()["code"] == "22P02"
    r = post(server, "predict_batch_clickbait", {"rows": {"id": 1}})
    assert r.status_code == 400 and r.json()["code"] == "22023" and r.json()["hint"].startswith("e.g.")
    r = post(server, "predict_nope", {"title": "x"})   # no such endpoint: PostgREST's 404
    assert r.status_code == 404
    r = post(server, "train", {"project_name": "x"})   # nothing of schema ml_stack is published
    assert r.status_code == 404
    conn.execute("DELETE FROM ml_stack.deployments")   # nothing deployed: 503, the reason in the body
    r = post(server, "predict_clickbait", {"id": 1, "title": "x"})
    assert r.status_code == 503
    body = r.json()
    assert body["code"] == "PT503" and body["message"] == 'project "clickbait" has no deployed model'
    assert body["hint"].startswith("Deploy one with ml_stack.deploy")
    with client_for(server) as client, pytest.raises(APIError) as info:   # what the application sees
        client.rpc("predict_clickbait", {"id": 1, "title": "x"}).execute()
    assert info.value.code == "PT503"


def test_a_per_role_statement_timeout_cancels_a_long_batch(site):
    conn, server, roles = site
    conn.execute(sql.SQL("ALTER ROLE {} SET statement_timeout = '50ms'").format(sql.Identifier(roles.anon)))
    try:
        before = server.reload_count
        conn.execute("NOTIFY pgrst, 'reload schema'")   # PostgREST reads role settings with its schema cache
        server.wait_for_reload(before)
        rows = [{"id": i, "title": f"Storms close roads across the capital number {i}"} for i in range(20000)]
        r = post(server, "predict_batch_clickbait", {"rows": rows}, timeout=60)
        assert r.status_code == 500 and r.json()["code"] == "57014"
        assert post(server, "predict_clickbait", {"id": 1, "title": "x"}).status_code == 200
    finally:
        conn.execute(sql.SQL("ALTER ROLE {} RESET statement_timeout").format(sql.Identifier(roles.anon)))


def test_openapi_describes_the_endpoints(site):
    conn, server, roles = site
    doc = httpx.get(server.url + "/").json()
    paths = doc["paths"]
    assert {"/rpc/predict_clickbait", "/rpc/predict_proba_clickbait", "/rpc/classify_clickbait",
            "/rpc/predict_batch_clickbait"} <= set(paths)
    post_op = paths["/rpc/predict_clickbait"]["post"]
    assert post_op["summary"] == "Prediction of clickbait: the class."
    assert not any(p.startswith("/rpc/train") or p.startswith("/rpc/_") for p in paths)


def test_a_redeploy_is_served_at_once(site):
    conn, server, roles = site
    with client_for(server) as client:
        first = client.rpc("predict_proba_clickbait", {"id": 0, "title": "17 reasons why cats"}).execute().data
        model = train(conn, "clickbait", algorithm="naive_bayes", automatic_deploy=False,
                      preprocess={"title": {"vectorize": "hashing", "options": {"dims": 256, "signed": False}},
                                  "id": {"impute": "zero"}})["model_id"]
        conn.execute("SELECT * FROM ml_stack.deploy(%s::bigint)", (model,))
        second = client.rpc("predict_proba_clickbait", {"id": 0, "title": "17 reasons why cats"}).execute().data
    assert second != first
    assert second == conn.execute("SELECT ml_stack.predict_proba(%s::bigint, ARRAY[0]::float8[] || "
                                  "ml_stack.embed('hashing', '17 reasons why cats', '{\"dims\": 256, \"signed\": false}')"
                                  "::float8[])", (model,)).fetchone()[0]
