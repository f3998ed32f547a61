-- A project is one prediction problem: a name, a task, and where its data lives.
CREATE TABLE ml_stack.projects (
    id            bigserial PRIMARY KEY,
    name          text NOT NULL UNIQUE CHECK (name <> ''),
    task          text NOT NULL CHECK (task IN ('regression', 'classification')),
    relation_name text,      -- as last given to train(); NULL for projects made by import_model()
    y_column_name text,
    split_seed    bigint NOT NULL,  -- one seed per project, so every model is scored on the same split
    created_at    timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE ml_stack.projects IS
    'ml_stack registry: one row per project (prediction problem). Extension configuration: kept by pg_dump.';

SELECT pg_catalog.pg_extension_config_dump('ml_stack.projects', '');
SELECT pg_catalog.pg_extension_config_dump('ml_stack.projects_id_seq', '');
