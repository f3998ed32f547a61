-- 0.4.1: confidential projects. A confidential project's models are served without
-- their parameters in the catalog (pg_proc.prosrc is readable by every role): the
-- serving functions read them from ml_stack._model_parameters, which only ml_stack's
-- owner reads, and the registry's model rows are visible only inside the project
-- (serving/confidential.sql).
ALTER TABLE ml_stack.projects ADD COLUMN confidential boolean NOT NULL DEFAULT false;
COMMENT ON COLUMN ml_stack.projects.confidential IS
    'ml_stack: the models'' parameters are hidden from roles outside the project (those that cannot read its training relation and are not ml_stack_admin): not in the serving functions'' source, not in ml_stack.models. Set with ml_stack.set_confidential().';

-- The parameters of the confidential projects' models, in the arrays their serving
-- functions read. Derived from ml_stack.models by compiling (serving/confidential.sql),
-- so not dumped: restoring the registry compiles them again.
CREATE TABLE ml_stack._model_parameters (
    model_id   bigint PRIMARY KEY REFERENCES ml_stack.models (id) ON DELETE CASCADE,
    format     text NOT NULL CHECK (format IN ('linear', 'trees')),
    -- linear: weights class-major, one intercept per score, impute per feature (NULL: none)
    weights    float8[],
    intercepts float8[],
    impute     float8[],
    -- trees: every tree's nodes one after another (child indexes global, -1 for a leaf)
    node_feature   integer[],
    node_threshold float8[],
    node_test      smallint[],   -- 0 '<', 1 '<=', 2 '>=' (missing left), 3 '>' (missing left): serving/trees.sql's tests
    node_left      integer[],
    node_right     integer[],
    node_value     float8[],     -- leaves, in the artifact's sum type (float4 values stored exactly)
    tree_root      integer[],
    tree_output    integer[],
    base           float8[],
    shift          float8[],     -- per feature: (x - shift) / scale after impute
    scale          float8[],
    sum_float4     boolean,
    divisor        float8,
    missing_null   boolean       -- 'null' models: a missing feature without impute gives NULL
);
REVOKE ALL ON ml_stack._model_parameters FROM PUBLIC;
COMMENT ON TABLE ml_stack._model_parameters IS
    'ml_stack internal: parameters of confidential projects'' models, read by their serving functions as ml_stack''s owner; no role but the owner reads it.';
