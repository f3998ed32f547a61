"""Least privilege: ml_stack grants nothing by itself. An application role that was granted only USAGE on the
schema can serve predictions (through the inlined, compiled path) and can neither train nor change the
registry; the registry stays as it was after its attempts."""

import uuid

import psycopg
import pytest
from psycopg import sql

from datasets import feature_columns, load_sklearn_dataset
from helpers import registry_rows, train


@pytest.fixture
def app_role(pg_server, conn):
    """A login role with nothing but USAGE on schema ml_stack and SELECT on the data table."""
    name = f"ml_stack_app_{uuid.uuid4().hex[:8]}"
    role = sql.Identifier(name)
    conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(role))
    conn.execute(sql.SQL("GRANT USAGE ON SCHEMA ml_stack TO {}").format(role))
    dbname = conn.info.dbname
    yield name, dbname
    # roles are cluster-wide: drop what the role holds in this database, then the role itself
    conn.execute(sql.SQL("DROP OWNED BY {}").format(role))
    conn.execute(sql.SQL("DROP ROLE {}").format(role))


def _connect_as(pg_server, role, dbname):
    return psycopg.connect(host=pg_server.host, port=pg_server.port, user=role, dbname=dbname, autocommit=True)


def test_usage_on_the_schema_is_enough_to_serve(pg_server, conn, app_role):
    load_sklearn_dataset(conn, "diabetes")
    model_id = train(conn, "diabetes", "regression", "diabetes", "target")["model_id"]
    cols = ", ".join(feature_columns("diabetes"))
    expected = conn.execute(f"SELECT ml_stack.predict('diabetes', ARRAY[{cols}]) FROM diabetes").fetchall()
    role, dbname = app_role
    conn.execute(sql.SQL("GRANT SELECT ON diabetes TO {}").format(sql.Identifier(role)))
    with _connect_as(pg_server, role, dbname) as app:
        query = f"SELECT ml_stack.predict('diabetes', ARRAY[{cols}]) FROM diabetes"
        assert app.execute(query).fetchall() == expected
        assert app.execute(f"SELECT ml_stack.predict({model_id}, ARRAY[{cols}]) FROM diabetes").fetchall() == expected
        # still the compiled arithmetic for this role: inlining checks EXECUTE, which PUBLIC has on functions
        plan = "\n".join(r[0] for r in app.execute(f"EXPLAIN (VERBOSE, COSTS OFF) {query}"))
        assert "predict" not in plan and "*" in plan


def test_without_registry_privileges_nothing_can_be_trained_or_deployed(pg_server, conn, app_role):
    load_sklearn_dataset(conn, "diabetes")
    train(conn, "diabetes", "regression", "diabetes", "target")
    role, dbname = app_role
    conn.execute(sql.SQL("GRANT SELECT ON diabetes TO {}").format(sql.Identifier(role)))
    before = registry_rows(conn)
    with _connect_as(pg_server, role, dbname) as app:
        for statement in ("SELECT * FROM ml_stack.train('diabetes', algorithm => 'ridge')",
                          "SELECT * FROM ml_stack.train('other', 'regression', 'diabetes', 'target')",
                          "SELECT * FROM ml_stack.deploy('diabetes', 'most_recent')",
                          "INSERT INTO ml_stack.deployments (project_id, model_id, strategy) VALUES (1, 1, 'specific')",
                          "DELETE FROM ml_stack.models"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                app.execute(statement)
    assert registry_rows(conn) == before
