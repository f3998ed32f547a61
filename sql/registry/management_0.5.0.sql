-- 0.5.0: a dropped model leaves its place in the deployment history (model_id NULL: "a model
-- since dropped") instead of taking its rows with it. Before, deleting the deployed model
-- deleted its deployments, and the project silently served the model deployed before it.
ALTER TABLE ml_stack.deployments ALTER COLUMN model_id DROP NOT NULL;
ALTER TABLE ml_stack.deployments DROP CONSTRAINT deployments_model_id_fkey;
ALTER TABLE ml_stack.deployments ADD CONSTRAINT deployments_model_id_fkey
    FOREIGN KEY (model_id) REFERENCES ml_stack.models (id) ON DELETE SET NULL;
COMMENT ON COLUMN ml_stack.deployments.model_id IS
    'ml_stack: the model deployed; NULL once that model was dropped (a project whose newest deployment is NULL serves nothing).';

-- MLflow-style aliases: a name per project for one of its models (predict(''project@alias'', ...)).
CREATE TABLE ml_stack.model_aliases (
    project_id bigint NOT NULL REFERENCES ml_stack.projects (id) ON DELETE CASCADE,
    alias      text NOT NULL CHECK (alias ~ '^[A-Za-z_][A-Za-z0-9_-]*$'),
    model_id   bigint NOT NULL REFERENCES ml_stack.models (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, alias)
);
COMMENT ON TABLE ml_stack.model_aliases IS
    'ml_stack registry: aliases of models (set_alias), served as predict(''<project>@<alias>'', ...).';
SELECT pg_catalog.pg_extension_config_dump('ml_stack.model_aliases', '');

-- Free-form tags on models (set_tag), as MLflow's; a table of their own, since an UPDATE of
-- ml_stack.models recompiles the models it touches.
CREATE TABLE ml_stack.model_tags (
    model_id bigint NOT NULL REFERENCES ml_stack.models (id) ON DELETE CASCADE,
    key      text NOT NULL CHECK (key <> ''),
    value    text NOT NULL,
    PRIMARY KEY (model_id, key)
);
COMMENT ON TABLE ml_stack.model_tags IS 'ml_stack registry: tags of models (ml_stack.set_tag).';
SELECT pg_catalog.pg_extension_config_dump('ml_stack.model_tags', '');
