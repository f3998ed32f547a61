-- ml_stack walkthrough, run by demo/run.sh with
--   psql -X -q -v ON_ERROR_STOP=1 -f demo/demo.sql
-- in a fresh database holding the tables diabetes (age, sex, bmi, bp, s1 .. s6, target) and breast_cancer
-- (30 features, target 0/1), loaded by demo/load_dataset.py. The split seed is drawn per project with
-- random(): setseed() below makes every run draw the same seeds, so the figures are the README's.

-- train() reports progress with NOTICEs (rows read, fit time, iterations): useful, but not here.
SET client_min_messages = warning;
\pset footer off
SELECT setseed(0.25) AS seeded \gset

\echo '== 1. Install'
\echo 'CREATE EXTENSION ml_stack;'
CREATE EXTENSION ml_stack;
SELECT extversion AS ml_stack_version FROM pg_extension WHERE extname = 'ml_stack';

\echo
\echo '== 2. Train a linear regression on diabetes (ordinary least squares, 25% of the rows held out)'
\echo 'SELECT * FROM ml_stack.train(''diabetes'', ''regression'', ''diabetes'', ''target'');'
SELECT project, task, algorithm, engine, model_id, deployed,
       round((metrics ->> 'r2')::numeric, 4) AS r2
FROM ml_stack.train('diabetes', 'regression', 'diabetes', 'target');

\echo
\echo '== 3. Train ridge regressions: same project, so same data, label and test split'
\echo 'SELECT * FROM ml_stack.train(''diabetes'', algorithm => ''ridge'', hyperparams => ''{"alpha": 0.01}'');'
SELECT project, algorithm, model_id, deployed, round((metrics ->> 'r2')::numeric, 4) AS r2
FROM ml_stack.train('diabetes', algorithm => 'ridge', hyperparams => '{"alpha": 0.01}');
\echo '-- and alpha 0.1, 0.5'
SELECT project, algorithm, model_id, deployed, round((metrics ->> 'r2')::numeric, 4) AS r2
FROM ml_stack.train('diabetes', algorithm => 'ridge', hyperparams => '{"alpha": 0.1}');
SELECT project, algorithm, model_id, deployed, round((metrics ->> 'r2')::numeric, 4) AS r2
FROM ml_stack.train('diabetes', algorithm => 'ridge', hyperparams => '{"alpha": 0.5}');
\echo '(a new model is deployed automatically only when it beats the deployed one on r2)'

\echo
\echo '== 4. Compare the models (metrics on the test split)'
SELECT m.id, m.algorithm, m.hyperparams,
       round((m.metrics ->> 'r2')::numeric, 4) AS r2,
       round((m.metrics ->> 'mean_absolute_error')::numeric, 2) AS mean_absolute_error
FROM ml_stack.models AS m JOIN ml_stack.projects AS p ON p.id = m.project_id
WHERE p.name = 'diabetes'
ORDER BY m.id;

\echo
\echo '== 5. What is deployed'
\echo 'SELECT * FROM ml_stack.deployed_models;   -- (some columns)'
SELECT project_name, model_id, algorithm, strategy, round((metrics ->> 'r2')::numeric, 4) AS r2
FROM ml_stack.deployed_models;

\echo
\echo '== 6. Predict: the deployed model of the project, and one model by id'
SELECT min(id) AS first_model FROM ml_stack.models \gset
\echo 'SELECT target, ml_stack.predict(''diabetes'', ARRAY[age, sex, bmi, bp, s1, s2, s3, s4, s5, s6]) FROM diabetes LIMIT 5;'
SELECT target AS truth,
       round(ml_stack.predict('diabetes', ARRAY[age, sex, bmi, bp, s1, s2, s3, s4, s5, s6])::numeric, 1)
           AS "deployed model",
       round(ml_stack.predict(:first_model, ARRAY[age, sex, bmi, bp, s1, s2, s3, s4, s5, s6])::numeric, 1)
           AS "model 1 (by id)"
FROM diabetes
LIMIT 5;

\echo
\echo '== 7. Deploy the most recent model (whatever its score), then roll back to the one before'
\echo 'SELECT * FROM ml_stack.deploy(''diabetes'', ''most_recent'');'
SELECT * FROM ml_stack.deploy('diabetes', 'most_recent');
\echo 'SELECT * FROM ml_stack.deploy(''diabetes'', ''rollback'');'
SELECT * FROM ml_stack.deploy('diabetes', 'rollback');
\echo '-- the deployment history (ml_stack.deployments)'
SELECT d.id, d.model_id, d.strategy
FROM ml_stack.deployments AS d JOIN ml_stack.projects AS p ON p.id = d.project_id
WHERE p.name = 'diabetes'
ORDER BY d.id;

\echo
\echo '== 8. Export the deployed model as JSON, import it under another project'
SELECT model_id AS deployed_model FROM ml_stack.deployed_models WHERE project_name = 'diabetes' \gset
SELECT e ->> 'project' AS project, e ->> 'algorithm' AS algorithm, e ->> 'task' AS task,
       (SELECT string_agg(f ->> 'name', ',') FROM jsonb_array_elements(e -> 'features') AS f) AS features,
       pg_column_size(e) AS bytes
FROM ml_stack.export_model(:deployed_model) AS e;
\echo 'SELECT ml_stack.import_model(''diabetes_copy'', ml_stack.export_model(:deployed_model));'
SELECT ml_stack.import_model('diabetes_copy', ml_stack.export_model(:deployed_model)) AS imported_model_id;
SELECT count(*) AS rows,
       max(abs(ml_stack.predict('diabetes_copy', ARRAY[age, sex, bmi, bp, s1, s2, s3, s4, s5, s6])
               - ml_stack.predict('diabetes', ARRAY[age, sex, bmi, bp, s1, s2, s3, s4, s5, s6])))
           AS max_difference
FROM diabetes;

\echo
\echo '== 9. Classification: breast cancer (logistic regression, stratified split)'
\echo 'SELECT * FROM ml_stack.train(''breast_cancer'', ''classification'', ''breast_cancer'', ''target'', test_sampling => ''stratified'');'
SELECT project, algorithm, model_id, deployed,
       round((metrics ->> 'accuracy')::numeric, 4) AS accuracy,
       round((metrics ->> 'f1')::numeric, 4) AS f1,
       round((metrics ->> 'roc_auc')::numeric, 4) AS roc_auc,
       round((metrics ->> 'log_loss')::numeric, 4) AS log_loss
FROM ml_stack.train('breast_cancer', 'classification', 'breast_cancer', 'target', test_sampling => 'stratified');
-- the 30 feature columns in table order, as psql variable :features
SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) AS features
FROM pg_attribute
WHERE attrelid = 'breast_cancer'::regclass AND attnum > 0 AND NOT attisdropped AND attname <> 'target' \gset
\echo 'SELECT target, ml_stack.predict(''breast_cancer'', ARRAY[mean_radius, ...]), ml_stack.predict_proba(''breast_cancer'', ARRAY[...]) FROM breast_cancer LIMIT 6 OFFSET 17;'
SELECT target AS truth,
       ml_stack.predict('breast_cancer', ARRAY[:features]) AS predicted_class,
       (SELECT array_agg(round(p::numeric, 4))
        FROM unnest(ml_stack.predict_proba('breast_cancer', ARRAY[:features])) AS p) AS "probabilities (class 0, 1)"
FROM breast_cancer
LIMIT 6 OFFSET 17;
\echo 'SELECT * FROM ml_stack.confusion_matrix(<model>, ''breast_cancer'');   -- on every row, as a table'
SELECT * FROM ml_stack.confusion_matrix((SELECT model_id FROM ml_stack.deployed_models WHERE project_name = 'breast_cancer'),
                                        'breast_cancer');

\echo
\echo '== 10. The python engine: XGBoost against the linear baseline'
\echo 'CREATE EXTENSION ml_stack_python CASCADE;   -- PL/Python, XGBoost, scikit-learn'
CREATE EXTENSION ml_stack_python CASCADE;
\echo '-- house prices with thresholds and interactions (synthetic, 5,000 rows): hard for a straight line'
SELECT setseed(0.5) AS seeded \gset
CREATE TABLE houses AS
SELECT area, rooms, age, distance,
       round((2500 * area * CASE WHEN distance < 5 THEN 1.8 WHEN distance < 15 THEN 1.2 ELSE 0.8 END
              + 20000 * rooms - CASE WHEN age > 40 THEN 1500 * (age - 40) ELSE 0 END
              + 30000 * random())::numeric, 0)::float8 AS price
FROM (SELECT round((40 + random() * 160)::numeric, 1)::float8 AS area, 1 + floor(random() * 6)::integer AS rooms,
             floor(random() * 80)::integer AS age, round((random() * 30)::numeric, 2)::float8 AS distance
      FROM generate_series(1, 5000)) AS h;
\echo 'SELECT * FROM ml_stack.train(''house_prices'', ''regression'', ''houses'', ''price'');   -- linear baseline'
SELECT project, algorithm, engine, model_id, deployed, round((metrics ->> 'r2')::numeric, 4) AS r2
FROM ml_stack.train('house_prices', 'regression', 'houses', 'price');
\echo 'SELECT * FROM ml_stack.train(''house_prices'', algorithm => ''xgboost'', hyperparams => ''{"n_estimators": 200, "max_depth": 4}'');'
SELECT project, algorithm, engine, model_id, deployed, round((metrics ->> 'r2')::numeric, 4) AS r2
FROM ml_stack.train('house_prices', algorithm => 'xgboost', hyperparams => '{"n_estimators": 200, "max_depth": 4}');
\echo '-- a grid search (3-fold cross-validation on the training rows); every candidate is kept on the model'
\echo 'SELECT * FROM ml_stack.train(''house_prices'', algorithm => ''xgboost'', search => ''grid'', search_params => ''{"max_depth": [2, 6], "learning_rate": [0.1, 0.3]}'', search_args => ''{"cv": 3}'');'
SELECT project, algorithm, model_id, deployed, round((metrics ->> 'r2')::numeric, 4) AS r2
FROM ml_stack.train('house_prices', algorithm => 'xgboost', search => 'grid',
                    search_params => '{"max_depth": [2, 6], "learning_rate": [0.1, 0.3]}',
                    search_args => '{"cv": 3}');
SELECT id AS model_id, hyperparams AS "hyperparameters (the search's choice)"
FROM ml_stack.models WHERE id = (SELECT max(id) FROM ml_stack.models);
SELECT c ->> 'rank' AS rank, c -> 'params' AS candidate, round((c ->> 'mean_score')::numeric, 4) AS mean_cv_r2
FROM ml_stack.models AS m, jsonb_array_elements(m.search -> 'candidates') AS c
WHERE m.id = (SELECT max(id) FROM ml_stack.models)
ORDER BY (c ->> 'rank')::integer;
\echo '-- deployed: the best r2 of the project'
SELECT project_name, model_id, algorithm, engine, round((metrics ->> 'r2')::numeric, 4) AS r2
FROM ml_stack.deployed_models WHERE project_name = 'house_prices';
\echo '-- served by SQL compiled from the trees (nested CASE in PL/pgSQL, float4 sums as XGBoost): no Python per row'
SELECT price AS truth, round(ml_stack.predict('house_prices', ARRAY[area, rooms, age, distance])) AS predicted
FROM houses LIMIT 5;
SELECT p.oid::regprocedure AS compiled_function, l.lanname AS language, length(p.prosrc) AS source_chars
FROM pg_proc AS p JOIN pg_language AS l ON l.oid = p.prolang
WHERE p.proname = format('_model_%s_margins', (SELECT model_id FROM ml_stack.deployed_models WHERE project_name = 'house_prices'));
\echo '-- scikit-learn''s toy datasets, as tables'
\echo 'SELECT * FROM ml_stack.load_dataset(''wine'');'
SELECT * FROM ml_stack.load_dataset('wine');
SELECT project, algorithm, model_id, round((metrics ->> 'f1')::numeric, 4) AS f1
FROM ml_stack.train('wine', 'classification', 'ml_stack.wine', 'target', algorithm => 'random_forest',
                    hyperparams => '{"n_estimators": 50}');

\echo
\echo '== 11. Every project now'
SELECT project_name, task, model_id, algorithm, strategy,
       round(coalesce(metrics ->> 'r2', metrics ->> 'f1')::numeric, 4) AS key_metric
FROM ml_stack.deployed_models
ORDER BY project_name;

-- ==============================================================================================================
-- Scheduled retraining with pg_cron (issue 4). The demo server preloads pg_cron for this database
-- (scripts/pgserver.py --cron-database). This part waits for one real pg_cron tick: up to a minute.
-- ==============================================================================================================

\echo
\echo '== 12. Scheduled retraining with pg_cron'
\echo '-- a project trained on the first 300 rows of diabetes; more rows arrive later'
CREATE TABLE diabetes_live AS SELECT * FROM diabetes ORDER BY ctid LIMIT 300;
SELECT project, algorithm, model_id, deployed, round((metrics ->> 'r2')::numeric, 4) AS r2
FROM ml_stack.train('diabetes_live', 'regression', 'diabetes_live', 'target', test_sampling => 'last');
\echo 'CREATE EXTENSION pg_cron;'
CREATE EXTENSION pg_cron;
\echo 'SELECT ml_stack.schedule_training(''diabetes_live_retrain'', ''* * * * *'', ''diabetes_live'');   -- every minute, for the demo'
SELECT ml_stack.schedule_training('diabetes_live_retrain', '* * * * *', 'diabetes_live') AS jobid;
\echo '-- the pg_cron job: one CALL of the retraining procedure'
SELECT jobid, jobname, schedule, command FROM cron.job;
\echo '-- 142 new rows arrive'
INSERT INTO diabetes_live SELECT * FROM diabetes ORDER BY ctid OFFSET 300;
\echo '-- waiting for pg_cron''s next minute ...'
DO $$
DECLARE
    deadline timestamptz := clock_timestamp() + interval '75 seconds';
BEGIN
    -- each statement of this loop reads a fresh snapshot: it sees the job's run when pg_cron records it
    WHILE NOT EXISTS (SELECT FROM ml_stack.training_jobs AS j
                      WHERE j.job_name = 'diabetes_live_retrain' AND j.last_run_end IS NOT NULL) LOOP
        IF clock_timestamp() > deadline THEN
            RAISE EXCEPTION 'pg_cron did not run the job within 75 seconds';
        END IF;
        PERFORM pg_sleep(0.5);
    END LOOP;
END
$$;
\echo 'SELECT * FROM ml_stack.training_jobs;   -- (some columns)'
SELECT job_name, schedule, project, active, to_char(last_run_start, 'HH24:MI:SS.MS') AS last_run_start,
       round(extract(epoch FROM last_run_end - last_run_start)::numeric, 2) AS seconds,
       last_run_status, last_run_message, model_id, deployed
FROM ml_stack.training_jobs;
\echo '-- the history (ml_stack.training_runs): the manual train, then the pg_cron run, on the new rows'
SELECT r.id, r.trigger, r.job_name, r.status, r.model_id, r.deployed, s.rows AS rows_trained_on,
       round((m.metrics ->> 'r2')::numeric, 4) AS r2, m.deploy_decision
FROM ml_stack.training_runs AS r
JOIN ml_stack.models AS m ON m.id = r.model_id
JOIN ml_stack.snapshots AS s ON s.id = m.snapshot_id
WHERE r.project_name = 'diabetes_live'
ORDER BY r.id;
\echo '(the new model is deployed only if it beats the deployed one on r2)'
SELECT project_name, model_id, strategy FROM ml_stack.deployed_models WHERE project_name = 'diabetes_live';
\echo 'SELECT ml_stack.unschedule_training(''diabetes_live_retrain'');'
SELECT ml_stack.unschedule_training('diabetes_live_retrain') AS unscheduled;
