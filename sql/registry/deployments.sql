-- Append-only deployment history; the newest row of a project is what predict() serves.
CREATE TABLE ml_stack.deployments (
    id         bigserial PRIMARY KEY,
    project_id bigint NOT NULL REFERENCES ml_stack.projects (id) ON DELETE CASCADE,
    model_id   bigint NOT NULL REFERENCES ml_stack.models (id) ON DELETE CASCADE,
    strategy   text NOT NULL
               CHECK (strategy IN ('best_score', 'most_recent', 'rollback', 'specific', 'automatic', 'import')),
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX ON ml_stack.deployments (project_id, id);
COMMENT ON TABLE ml_stack.deployments IS
    'ml_stack registry: append-only deployment history; the newest row per project is the deployed model.';

SELECT pg_catalog.pg_extension_config_dump('ml_stack.deployments', '');
SELECT pg_catalog.pg_extension_config_dump('ml_stack.deployments_id_seq', '');
