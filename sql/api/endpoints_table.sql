-- 0.4.0: the projects exposed over HTTP (api/expose.sql): one row per project and API
-- schema, with the roles its endpoints are granted to. Extension configuration (kept by
-- pg_dump); the endpoint functions themselves are made from it at run time.
CREATE TABLE ml_stack.endpoints (
    project_id  bigint NOT NULL REFERENCES ml_stack.projects (id) ON DELETE CASCADE,
    schema_name text NOT NULL,
    grant_to    text[] NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, schema_name)
);
COMMENT ON TABLE ml_stack.endpoints IS
    'ml_stack registry: the projects exposed over HTTP by ml_stack.expose(): API schema and the roles granted its endpoints.';

SELECT pg_catalog.pg_extension_config_dump('ml_stack.endpoints', '');
