-- What a model was trained on: the relation, its columns and statistics, and the split.
CREATE TABLE ml_stack.snapshots (
    id            bigserial PRIMARY KEY,
    project_id    bigint NOT NULL REFERENCES ml_stack.projects (id) ON DELETE CASCADE,
    relation_name text,
    y_column_name text NOT NULL,
    features      jsonb NOT NULL,   -- [{name, type, count, nulls, mean, std, min, max}, ...] in table order
    label         jsonb NOT NULL,   -- {name, type, mean, std, min, max, classes}
    rows          bigint NOT NULL,  -- rows used (label not NULL)
    skipped_rows  bigint NOT NULL DEFAULT 0,  -- rows read whose label was NULL
    train_rows    bigint NOT NULL,
    test_rows     bigint NOT NULL,
    test_size     real NOT NULL,
    test_sampling text NOT NULL CHECK (test_sampling IN ('random', 'last', 'stratified')),
    seed          bigint NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON ml_stack.snapshots (project_id);
COMMENT ON TABLE ml_stack.snapshots IS
    'ml_stack registry: the data each model was trained on (columns, statistics, split and its seed).';

SELECT pg_catalog.pg_extension_config_dump('ml_stack.snapshots', '');
SELECT pg_catalog.pg_extension_config_dump('ml_stack.snapshots_id_seq', '');
