CREATE OR REPLACE VIEW ml_stack.deployed_models AS
SELECT p.name        AS project_name,
       d.model_id,
       m.algorithm,
       m.engine,
       m.metrics,
       d.created_at  AS deployed_at,
       d.strategy,
       p.task,
       m.hyperparams,
       p.id          AS project_id,
       -- the typed serving functions (serving/typed.sql; one of each name); NULL until compiled
       (SELECT f.oid::regprocedure FROM pg_catalog.pg_proc AS f
        WHERE f.pronamespace = 'ml_stack'::regnamespace AND f.proname = format('_project_%s_predict', p.id)) AS serving_function,
       (SELECT f.oid::regprocedure FROM pg_catalog.pg_proc AS f
        WHERE f.pronamespace = 'ml_stack'::regnamespace AND f.proname = format('_project_%s_proba', p.id)) AS serving_proba_function
FROM ml_stack.projects AS p
CROSS JOIN LATERAL (
    SELECT dep.model_id, dep.strategy, dep.created_at
    FROM ml_stack.deployments AS dep
    WHERE dep.project_id = p.id
    ORDER BY dep.id DESC
    LIMIT 1
) AS d
JOIN ml_stack.models AS m ON m.id = d.model_id;
COMMENT ON VIEW ml_stack.deployed_models IS
    'ml_stack: the model each project serves now (its newest deployment), with its metrics.';
