-- PostgresML's registry relations as views of ml_stack's registry, with PostgresML's columns. They run
-- with the caller's rights (security_invoker): what a role reads here is what it may read in ml_stack
-- (confidential projects' models stay hidden outside the project). Runtime: ml_stack's engine
-- ('python' or 'sql'; NULL for another engine's imported model). Timestamps are ml_stack's (timestamptz; PostgresML's are without time zone).
CREATE OR REPLACE VIEW pgml.projects WITH (security_invoker = true) AS
SELECT p.id, p.name, p.task::pgml.task AS task, p.created_at, p.created_at AS updated_at
FROM ml_stack.projects AS p;

CREATE OR REPLACE VIEW pgml.snapshots WITH (security_invoker = true) AS
SELECT s.id, s.relation_name, ARRAY[s.y_column_name] AS y_column_name, s.test_size,
       s.test_sampling::pgml.sampling AS test_sampling, 'successful'::text AS status, s.columns,
       jsonb_build_object('samples', s.rows, 'train_rows', s.train_rows, 'test_rows', s.test_rows) AS analysis,
       s.created_at, s.created_at AS updated_at,
       s.relation_name LIKE 'pgml.snapshot\_%' AS materialized
FROM ml_stack.snapshots AS s;

CREATE OR REPLACE VIEW pgml.models WITH (security_invoker = true) AS
SELECT m.id, m.project_id, m.snapshot_id, m.num_features, m.algorithm, (CASE WHEN m.engine IN ('python', 'sql') THEN m.engine END)::pgml.runtime AS runtime,
       m.hyperparams, m.status, m.metrics, m.search ->> 'method' AS search,
       coalesce(m.search -> 'params', '{}') AS search_params,
       -- what the call gave (ml_stack.models.search also keeps the scoring and every candidate's scores)
       CASE WHEN jsonb_typeof(m.search) = 'object'
            THEN jsonb_strip_nulls(jsonb_build_object('cv', m.search -> 'cv', 'n_iter', m.search -> 'n_iter'))
            ELSE '{}' END AS search_args,
       m.created_at, m.created_at AS updated_at
FROM ml_stack.models AS m;

CREATE OR REPLACE VIEW pgml.deployments WITH (security_invoker = true) AS
SELECT d.id, d.project_id, d.model_id,
       -- an automatic deploy is PostgresML's 'new_score'; an imported model's is 'specific'
       (CASE d.strategy WHEN 'automatic' THEN 'new_score' WHEN 'import' THEN 'specific' ELSE d.strategy END)::pgml.strategy AS strategy,
       d.created_at
FROM ml_stack.deployments AS d;

CREATE OR REPLACE VIEW pgml.deployed_models WITH (security_invoker = true) AS
SELECT d.model_id AS id, d.project_name AS name, d.task::pgml.task AS task, d.algorithm,
       (CASE WHEN d.engine IN ('python', 'sql') THEN d.engine END)::pgml.runtime AS runtime, d.deployed_at
FROM ml_stack.deployed_models AS d
ORDER BY d.project_name;

CREATE OR REPLACE VIEW pgml.trained_models WITH (security_invoker = true) AS
SELECT m.id, p.name, p.task::pgml.task AS task, m.algorithm, (CASE WHEN m.engine IN ('python', 'sql') THEN m.engine END)::pgml.runtime AS runtime, m.created_at,
       s.test_sampling::pgml.sampling AS test_sampling, s.test_size, d.model_id IS NOT NULL AS deployed
FROM ml_stack.models AS m
JOIN ml_stack.projects AS p ON p.id = m.project_id
LEFT JOIN ml_stack.snapshots AS s ON s.id = m.snapshot_id
LEFT JOIN ml_stack.deployed_models AS d ON d.model_id = m.id
ORDER BY m.created_at DESC;

CREATE OR REPLACE VIEW pgml.overview WITH (security_invoker = true) AS
SELECT p.name, d.deployed_at, p.task::pgml.task AS task, d.algorithm, (CASE WHEN d.engine IN ('python', 'sql') THEN d.engine END)::pgml.runtime AS runtime,
       s.relation_name, ARRAY[s.y_column_name] AS y_column_name, s.test_sampling::pgml.sampling AS test_sampling,
       s.test_size
FROM ml_stack.deployed_models AS d
JOIN ml_stack.projects AS p ON p.id = d.project_id
JOIN ml_stack.models AS m ON m.id = d.model_id
LEFT JOIN ml_stack.snapshots AS s ON s.id = m.snapshot_id
ORDER BY d.deployed_at DESC;

COMMENT ON VIEW pgml.projects IS 'ml_stack_pgml: PostgresML''s projects (ml_stack.projects).';
COMMENT ON VIEW pgml.snapshots IS 'ml_stack_pgml: PostgresML''s snapshots: what each model was trained on (ml_stack.snapshots); materialized: trained on a pgml.snapshot_<n> copy.';
COMMENT ON VIEW pgml.models IS 'ml_stack_pgml: PostgresML''s models (ml_stack.models); runtime is ml_stack''s engine, python or sql.';
COMMENT ON VIEW pgml.deployments IS 'ml_stack_pgml: PostgresML''s deployments, the history (ml_stack.deployments).';
COMMENT ON VIEW pgml.deployed_models IS 'ml_stack_pgml: each project''s deployed model (ml_stack.deployed_models).';
COMMENT ON VIEW pgml.trained_models IS 'ml_stack_pgml: every model with its project, split and whether it is deployed, newest first.';
COMMENT ON VIEW pgml.overview IS 'ml_stack_pgml: each project''s deployed model with what it was trained on, newest deployment first.';
