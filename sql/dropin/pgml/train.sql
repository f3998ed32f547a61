-- pgml.train: PostgresML 2.x's signature and defaults, trained by ml_stack.
--
-- What is translated (docs/postgresml.md lists what cannot be equal):
--   runtime        'python' -> engine 'python'; 'sql' -> engine 'sql'; 'rust' and NULL -> ml_stack picks
--                  (the SQL engine when it has the algorithm, else the python engine); 'openai' is refused;
--   test_sampling  'stratified' (PostgresML's default) splits by class for a classification and at random for
--                  a regression (PostgresML's own "stratified" partitions by every column: about random);
--   materialize_snapshot  the relation is copied into pgml.snapshot_<n> and the model trains on the copy,
--                  which a retrain by name then reuses (the same rows, as PostgresML's materialized snapshots);
--   preprocess     PostgresML's rules in ml_stack's words (pgml._preprocess_rule).

-- One column's PostgresML rule as ml_stack's: encode "native" (PostgresML's default: integer codes) is an
-- ordinal code on a text column and nothing on a number; "target" has no smoothing in PostgresML
-- (smooth 0); impute "error" is ml_stack's default; a one-hot or target encoded column takes no impute
-- (NULL is a category of its own in ml_stack).
CREATE OR REPLACE FUNCTION pgml._preprocess_rule(rule jsonb, is_category boolean)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF jsonb_typeof(rule) IS DISTINCT FROM 'object' THEN
        RETURN rule;   -- ml_stack says what is wrong with it
    END IF;
    IF rule ->> 'encode' IN ('native', 'none') OR (is_category AND NOT rule ? 'encode') THEN
        rule := rule - 'encode' || CASE WHEN is_category THEN '{"encode": "ordinal"}'::jsonb ELSE '{}' END;
    END IF;
    IF rule ->> 'encode' = 'target' AND NOT rule ? 'smooth' THEN
        rule := rule || '{"smooth": 0}';
    END IF;
    IF rule ->> 'impute' = 'error' OR rule ->> 'encode' IN ('one_hot', 'target') THEN
        rule := rule - 'impute';
    END IF;
    IF rule ->> 'encode' = 'one_hot' THEN
        rule := rule - 'scale';
    END IF;
    RETURN rule;
END
$$;

-- PostgresML's preprocess object for relation rel (NULL: the project's, for a retrain by name).
CREATE OR REPLACE FUNCTION pgml._preprocess(rel regclass, preprocess jsonb)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN jsonb_typeof(preprocess) = 'object' THEN
        coalesce((SELECT jsonb_object_agg(c.key, pgml._preprocess_rule(c.value, coalesce(
                      (SELECT t.typcategory = 'S' OR t.typtype = 'e'
                       FROM pg_catalog.pg_attribute AS a JOIN pg_catalog.pg_type AS t ON t.oid = a.atttypid
                       WHERE a.attrelid = rel AND a.attname = c.key AND a.attnum > 0 AND NOT a.attisdropped), false)))
                  FROM jsonb_each(preprocess) AS c), '{}')
        ELSE preprocess END
$$;

CREATE OR REPLACE FUNCTION pgml._train(
    project_name text, task text, relation_name text, y_column_name text, algorithm text, hyperparams jsonb,
    search text, search_params jsonb, search_args jsonb, test_size real, test_sampling text, runtime text,
    automatic_deploy boolean, materialize_snapshot boolean, preprocess jsonb, caller_search_path text,
    OUT project_task text, OUT model_algorithm text, OUT was_deployed boolean)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    rel regclass;
    engine text;
    trained record;
BEGIN
    IF task IS NOT NULL AND task NOT IN ('regression', 'classification') THEN
        RAISE EXCEPTION 'task "%" is not available in ml_stack''s pgml schema', task
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'ml_stack trains regression and classification models; for embeddings use pgml.embed(transformer, text).';
    END IF;
    IF runtime = 'openai' THEN
        RAISE EXCEPTION 'runtime openai is not available in ml_stack''s pgml schema' USING ERRCODE = 'feature_not_supported',
            HINT = 'Use runtime => ''python'' (XGBoost, scikit-learn: CREATE EXTENSION ml_stack_python) or ''sql'', or leave it NULL.';
    END IF;
    engine := CASE runtime WHEN 'python' THEN 'python' WHEN 'sql' THEN 'sql' END;
    IF test_sampling = 'stratified'
       AND coalesce(task, (SELECT p.task FROM ml_stack.projects AS p WHERE p.name = project_name)) IS DISTINCT FROM 'classification' THEN
        test_sampling := 'random';
    END IF;
    IF relation_name IS NULL THEN
        -- a retrain by name: the rules meet the columns of the project's last relation
        rel := (SELECT to_regclass(s.relation_name) FROM ml_stack.snapshots AS s JOIN ml_stack.projects AS p ON p.id = s.project_id
                WHERE p.name = project_name ORDER BY s.id DESC LIMIT 1);
    ELSE
        rel := ml_stack._resolve_relation(relation_name, caller_search_path);
        IF materialize_snapshot THEN
            relation_name := format('pgml.%I', 'snapshot_' || nextval('pgml.snapshot_seq'));
            EXECUTE format('CREATE TABLE %s AS SELECT * FROM %s', relation_name, rel);
            EXECUTE format('COMMENT ON TABLE %s IS %L', relation_name,
                           format('ml_stack_pgml: the rows of %s that project "%s" was trained on (materialize_snapshot); '
                                  'its retrains by name read them again.', rel, project_name));
            rel := relation_name::regclass;
        END IF;
    END IF;
    preprocess := pgml._preprocess(rel, preprocess);
    trained := ml_stack._train(project_name, task, relation_name, y_column_name, algorithm, hyperparams, search, search_params,
                               search_args, test_size, test_sampling, preprocess, automatic_deploy, engine, NULL,
                               caller_search_path);
    project_task := trained.project_task;
    model_algorithm := trained.model_algorithm;
    was_deployed := trained.was_deployed;
END
$$;

-- LANGUAGE sql without SET: relation_name resolves with the caller's search_path, as in ml_stack.train.
CREATE OR REPLACE FUNCTION pgml.train(
    project_name         text,
    task                 text           DEFAULT NULL,
    relation_name        text           DEFAULT NULL,
    y_column_name        text           DEFAULT NULL,
    algorithm            pgml.algorithm DEFAULT 'linear',
    hyperparams          jsonb          DEFAULT '{}',
    search               pgml.search    DEFAULT NULL,
    search_params        jsonb          DEFAULT '{}',
    search_args          jsonb          DEFAULT '{}',
    test_size            real           DEFAULT 0.25,
    test_sampling        pgml.sampling  DEFAULT 'stratified',
    runtime              pgml.runtime   DEFAULT NULL,
    automatic_deploy     boolean        DEFAULT true,
    materialize_snapshot boolean        DEFAULT false,
    preprocess           jsonb          DEFAULT '{}')
RETURNS TABLE (project text, task text, algorithm text, deployed boolean)
LANGUAGE sql VOLATILE
AS $$
    SELECT train.project_name, r.project_task, r.model_algorithm, r.was_deployed
    FROM pgml._train(train.project_name, train.task, train.relation_name, train.y_column_name, train.algorithm::text,
                     train.hyperparams, train.search::text, train.search_params, train.search_args, train.test_size,
                     train.test_sampling::text, train.runtime::text, train.automatic_deploy, train.materialize_snapshot,
                     train.preprocess, pg_catalog.current_setting('search_path')) AS r
$$;
COMMENT ON FUNCTION pgml.train(text, text, text, text, pgml.algorithm, jsonb, pgml.search, jsonb, jsonb, real, pgml.sampling,
                               pgml.runtime, boolean, boolean, jsonb) IS
    'ml_stack_pgml: PostgresML''s train, by ml_stack.train: a model of the project trained on relation_name (or, by name only, on the project''s relation again), registered and deployed when it beats the deployed one. runtime python/sql picks the engine; materialize_snapshot copies the rows into pgml.snapshot_<n>.';
