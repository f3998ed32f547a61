"""Model management (0.5.0): drop_model, drop_project, aliases (predict('<project>@<alias>', ...)) and tags.
A dropped model takes its compiled functions with it and leaves the deployment history honest: a project whose
deployed model is dropped serves nothing (no silent fall-back to an older model), and a rollback never brings a
dropped model back."""

import psycopg
import pytest

from helpers import registry_rows, train
from test_expose import roles  # noqa: F401  (a fixture)

TABLE = """
CREATE TABLE houses (area float8, rooms integer, price float8);
INSERT INTO houses SELECT 20 + i % 90, 1 + i % 5, 1000 + 30 * (20 + i % 90) + 500 * (1 + i % 5) + (i % 11)
FROM generate_series(1, 300) AS i;
"""


@pytest.fixture
def houses(conn):
    conn.execute(TABLE)
    first = train(conn, "houses", "regression", "houses", "price")["model_id"]
    second = train(conn, "houses", algorithm="ridge", hyperparams={"alpha": 50.0}, automatic_deploy=False)["model_id"]
    return first, second


def predict(conn, name, features=(50, 2)):
    return conn.execute("SELECT ml_stack.predict(%s, %s::float8[])", (name, list(features))).fetchone()[0]


def functions(conn, pattern=r"^_(model|project)_\d+_"):
    return sorted(r[0] for r in conn.execute(
        "SELECT proname FROM pg_proc WHERE pronamespace = 'ml_stack'::regnamespace AND proname ~ %s", (pattern,)))


def sqlstate(conn, query, params=None):
    with pytest.raises(psycopg.Error) as info:
        conn.execute(query, params)
    return info.value.sqlstate, info.value.diag.message_primary, info.value.diag.message_hint


def test_drop_a_model_that_is_not_deployed(conn, houses):
    first, second = houses
    served = predict(conn, "houses")
    assert conn.execute("SELECT ml_stack.drop_model(%s)", (second,)).fetchone()[0] is True
    assert f"_model_{second}_predict" not in functions(conn)
    assert predict(conn, "houses") == served
    state, message, hint = sqlstate(conn, "SELECT ml_stack.predict(%s::bigint, ARRAY[50, 2])", (second,))
    assert state == "PT404"
    state, message, hint = sqlstate(conn, "SELECT ml_stack.drop_model(%s)", (second,))
    assert (state, message) == ("PT404", f"model {second} does not exist") and hint


def test_the_deployed_model_is_dropped_only_with_force_and_then_nothing_is_served(conn, houses):
    first, second = houses
    before = registry_rows(conn)
    state, message, hint = sqlstate(conn, "SELECT ml_stack.drop_model(%s)", (first,))
    assert state == "55006" and "deployed model" in message and "force" in hint
    assert registry_rows(conn) == before
    conn.execute("SELECT ml_stack.drop_model(%s, force => true)", (first,))
    # no fall-back to another model: the project serves nothing, and says so
    assert sqlstate(conn, "SELECT ml_stack.predict('houses', ARRAY[50, 2])")[0] == "PT503"
    assert conn.execute("SELECT count(*) FROM ml_stack.deployed_models").fetchone()[0] == 0
    # the history keeps the deployment, its model gone
    assert conn.execute("SELECT model_id, strategy FROM ml_stack.deployments").fetchall() == [(None, "automatic")]
    assert functions(conn, r"^_model_\d+_") == [f"_model_{second}_predict", f"_model_{second}_proba"]
    conn.execute("SELECT * FROM ml_stack.deploy(%s::bigint)", (second,))
    assert predict(conn, "houses") == predict(conn, second)


def test_a_plain_delete_of_the_deployed_model_falls_back_to_nothing(conn, houses):
    first, second = houses
    conn.execute("SELECT * FROM ml_stack.deploy(%s::bigint)", (second,))
    conn.execute("SELECT * FROM ml_stack.deploy(%s::bigint)", (first,))
    conn.execute("DELETE FROM ml_stack.models WHERE id = %s", (first,))
    assert sqlstate(conn, "SELECT ml_stack.predict('houses', ARRAY[50, 2])")[0] == "PT503"
    assert f"_model_{first}_predict" not in functions(conn)


def test_rollback_never_brings_back_a_dropped_model(conn, houses):
    first, second = houses
    third = train(conn, "houses", algorithm="ridge", hyperparams={"alpha": 5.0}, automatic_deploy=False)["model_id"]
    for model in (second, third):
        conn.execute("SELECT * FROM ml_stack.deploy(%s::bigint)", (model,))
    conn.execute("SELECT ml_stack.drop_model(%s)", (second,))               # history: first, (dropped), third
    assert conn.execute("SELECT model_id FROM ml_stack.deploy('houses', 'rollback')").fetchone()[0] == first
    conn.execute("SELECT * FROM ml_stack.deploy(%s::bigint)", (third,))
    conn.execute("SELECT ml_stack.drop_model(%s, force => true)", (third,))  # the current one gone: serves nothing
    assert conn.execute("SELECT model_id FROM ml_stack.deploy('houses', 'rollback')").fetchone()[0] == first
    conn.execute("SELECT ml_stack.drop_model(%s, true)", (first,))
    state, message, hint = sqlstate(conn, "SELECT * FROM ml_stack.deploy('houses', 'rollback')")
    assert state == "55000" and "dropped" in hint


def test_drop_project_takes_everything(conn, houses, roles):
    anon = roles("anon")
    conn.execute("SELECT ml_stack.set_alias('houses', 'champion', %s)", (houses[1],))
    conn.execute("SELECT ml_stack.set_tag(%s, 'owner', 'ada')", (houses[0],))
    conn.execute("SELECT ml_stack.expose('houses', 'api', %s)", ([anon],))
    assert conn.execute("SELECT ml_stack.drop_project('houses')").fetchone()[0] is True
    assert functions(conn) == []
    assert conn.execute("SELECT count(*) FROM pg_proc WHERE pronamespace = 'api'::regnamespace").fetchone()[0] == 0
    for table in ("projects", "models", "snapshots", "deployments", "model_aliases", "model_tags", "endpoints",
                  "training_runs"):
        assert conn.execute(f"SELECT count(*) FROM ml_stack.{table}").fetchone()[0] == 0, table
    assert sqlstate(conn, "SELECT ml_stack.drop_project('houses')")[0] == "PT404"


def test_aliases(conn, houses):
    first, second = houses
    assert conn.execute("SELECT ml_stack.set_alias('houses', 'challenger', %s)", (second,)).fetchone()[0] == second
    assert predict(conn, "houses@challenger") == predict(conn, second) != predict(conn, "houses")
    conn.execute("SELECT ml_stack.set_alias('houses', 'challenger', %s)", (first,))      # moved
    assert predict(conn, "houses@challenger") == predict(conn, first)
    state, message, _ = sqlstate(conn, "SELECT ml_stack.predict('houses@nope', ARRAY[50, 2])")
    assert (state, message) == ("PT404", 'project "houses" has no alias "nope"')
    assert conn.execute("SELECT ml_stack.delete_alias('houses', 'challenger')").fetchone()[0] is True
    assert conn.execute("SELECT ml_stack.delete_alias('houses', 'challenger')").fetchone()[0] is False
    assert sqlstate(conn, "SELECT ml_stack.predict('houses@challenger', ARRAY[50, 2])")[0] == "PT404"
    # an alias follows its model: dropping the model drops the alias
    conn.execute("SELECT ml_stack.set_alias('houses', 'old', %s)", (second,))
    conn.execute("SELECT ml_stack.drop_model(%s)", (second,))
    assert conn.execute("SELECT count(*) FROM ml_stack.model_aliases").fetchone()[0] == 0


@pytest.mark.parametrize("args, state", [
    (("nope", "champion", 1), "PT404"),
    (("houses", "not an alias", 1), "22023"),
    (("houses", "x'; DROP TABLE houses; --", 1), "22023"),
    (("houses", None, 1), "22023"),
    (("houses", "champion", 12345), "PT404"),
])
def test_set_alias_bad_input(conn, houses, args, state):
    before = registry_rows(conn)
    assert sqlstate(conn, "SELECT ml_stack.set_alias(%s, %s, %s)", args)[0] == state
    assert registry_rows(conn) == before
    assert conn.execute("SELECT count(*) FROM houses").fetchone()[0] == 300


def test_tags(conn, houses):
    first, _ = houses
    assert conn.execute("SELECT ml_stack.set_tag(%s, 'owner', 'ada')", (first,)).fetchone()[0] == {"owner": "ada"}
    assert conn.execute("SELECT ml_stack.set_tag(%s, 'stage', 'prod')", (first,)).fetchone()[0] == \
        {"owner": "ada", "stage": "prod"}
    assert conn.execute("SELECT ml_stack.set_tag(%s, 'owner', NULL)", (first,)).fetchone()[0] == {"stage": "prod"}
    assert sqlstate(conn, "SELECT ml_stack.set_tag(12345, 'owner', 'ada')")[0] == "PT404"
    assert sqlstate(conn, "SELECT ml_stack.set_tag(%s, '', 'x')", (first,))[0] == "22023"
