-- Every trained or imported model, versioned by id, with what it needs to be served.
CREATE TABLE ml_stack.models (
    id           bigserial PRIMARY KEY,
    project_id   bigint NOT NULL REFERENCES ml_stack.projects (id) ON DELETE CASCADE,
    snapshot_id  bigint REFERENCES ml_stack.snapshots (id) ON DELETE SET NULL,
    algorithm    text NOT NULL,
    engine       text NOT NULL,
    task         text NOT NULL CHECK (task IN ('regression', 'classification')),
    hyperparams  jsonb NOT NULL DEFAULT '{}',
    preprocess   jsonb NOT NULL DEFAULT '{}',
    num_features integer NOT NULL CHECK (num_features > 0),
    classes      float8[],          -- classification: class labels, ascending
    artifact     jsonb NOT NULL,    -- the fitted model, in raw feature space (see serving/expressions.sql)
    metrics      jsonb NOT NULL DEFAULT '{}',
    status       text NOT NULL DEFAULT 'successful' CHECK (status IN ('successful', 'imported')),
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON ml_stack.models (project_id);
COMMENT ON TABLE ml_stack.models IS
    'ml_stack registry: every model (algorithm, engine, hyperparameters, metrics on the test split, artifact).';

SELECT pg_catalog.pg_extension_config_dump('ml_stack.models', '');
SELECT pg_catalog.pg_extension_config_dump('ml_stack.models_id_seq', '');
