-- ml_stack_pgml 0.5.1 install script. Generated from sql/ by 'make'; do not edit.
\echo Use "CREATE EXTENSION ml_stack_pgml" to load this file. \quit

-- source: sql/dropin/pgml/checks.sql
-- ml_stack_pgml is PostgresML 2.x's API (schema pgml) over ml_stack: it needs ml_stack 0.5.1 or later
-- (test_sampling 'first', predict_row by model id, impute "mode", scale "robust"). Checked first, so that
-- CREATE EXTENSION says what to update.
DO LANGUAGE plpgsql $$
DECLARE
    v text := (SELECT e.extversion FROM pg_catalog.pg_extension AS e WHERE e.extname = 'ml_stack');
BEGIN
    IF v IS NULL OR pg_catalog.string_to_array(pg_catalog.regexp_replace(v, '[^0-9.].*$', ''), '.')::integer[]
                    < ARRAY[0, 5, 1] THEN
        RAISE EXCEPTION 'ml_stack_pgml needs ml_stack 0.5.1 or later; ml_stack % is installed', v
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'ALTER EXTENSION ml_stack UPDATE; then CREATE EXTENSION ml_stack_pgml.';
    END IF;
END
$$;

-- source: sql/dropin/pgml/types_0.5.1.sql
-- PostgresML's enum types, with its labels in its order (pgrx enums of PostgresML 2.9), so that calls
-- written for PostgresML ('xgboost'::pgml.algorithm, strategy => 'best_score') resolve alike. Labels that
-- ml_stack adds come last: algorithm 'naive_bayes', sampling 'first' (PostgresML 1.x's), runtime 'sql'
-- (ml_stack's SQL engine).
CREATE TYPE pgml.task AS ENUM ('regression', 'classification', 'decomposition', 'clustering', 'question_answering',
    'summarization', 'translation', 'text_classification', 'text_generation', 'text2text', 'embedding',
    'text_pair_classification', 'conversation');
CREATE TYPE pgml.algorithm AS ENUM ('linear', 'xgboost', 'xgboost_random_forest', 'svm', 'lasso', 'elastic_net', 'ridge',
    'kmeans', 'dbscan', 'knn', 'random_forest', 'least_angle', 'lasso_least_angle', 'orthogonal_matching_pursuit',
    'bayesian_ridge', 'automatic_relevance_determination', 'stochastic_gradient_descent', 'perceptron',
    'passive_aggressive', 'ransac', 'theil_sen', 'huber', 'quantile', 'kernel_ridge', 'gaussian_process', 'nu_svm',
    'ada_boost', 'bagging', 'extra_trees', 'gradient_boosting_trees', 'hist_gradient_boosting', 'linear_svm',
    'lightgbm', 'transformers', 'affinity_propagation', 'birch', 'feature_agglomeration', 'mini_batch_kmeans',
    'mean_shift', 'optics', 'spectral', 'spectral_bi', 'spectral_co', 'catboost', 'pca', 'naive_bayes');
CREATE TYPE pgml.sampling AS ENUM ('random', 'last', 'stratified', 'first');
CREATE TYPE pgml.runtime AS ENUM ('python', 'rust', 'openai', 'sql');
CREATE TYPE pgml.search AS ENUM ('grid', 'random');
CREATE TYPE pgml.strategy AS ENUM ('new_score', 'best_score', 'most_recent', 'rollback', 'specific');
COMMENT ON TYPE pgml.algorithm IS 'ml_stack_pgml: PostgresML''s algorithm names (which of them ml_stack trains: ml_stack.train''s documentation), plus naive_bayes.';
COMMENT ON TYPE pgml.sampling IS 'ml_stack_pgml: how train() picks its test rows: random, last (the relation''s last rows), stratified (by class), first.';
COMMENT ON TYPE pgml.runtime IS 'ml_stack_pgml: python (ml_stack_python''s engine), sql (ml_stack''s SQL engine), rust (ml_stack picks, as for NULL), openai (not available).';

-- Tables that pgml.train(materialize_snapshot => true) makes are named from this sequence: pgml.snapshot_<n>.
CREATE SEQUENCE pgml.snapshot_seq;
SELECT pg_catalog.pg_extension_config_dump('pgml.snapshot_seq', '');

-- source: sql/dropin/pgml/train.sql
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

-- source: sql/dropin/pgml/predict.sql
-- pgml.predict and friends: PostgresML's overloads over ml_stack's serving. They return real as
-- PostgresML's do. Unlike PostgresML's (IMMUTABLE STRICT), they are STABLE and not STRICT, as
-- ml_stack.predict is: so the planner inlines them into ml_stack's compiled serving (DESIGN §4).
-- The array forms take the features in training column order; the row forms take a row of the
-- relation (or any row with its columns by name) and apply the model's preprocessing, as PostgresML's do.
-- PostgresML flattens an array of several dimensions (pgml.digits' 8x8 image) into its features in
-- row-major order; ml_stack's predict takes one dimension, from 1. The overloads test the dimensions around the
-- call, not inside its argument: an argument that looks costly stops the planner from inlining ml_stack's
-- serving body (it reads the argument once per feature).
CREATE OR REPLACE FUNCTION pgml._flattened(features float8[])
RETURNS float8[] LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT ARRAY(SELECT unnest(features)) $$;

CREATE OR REPLACE FUNCTION pgml.predict(project_name text, features real[])
RETURNS real LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT (CASE WHEN pg_catalog.array_ndims(features) OPERATOR(pg_catalog.>) 1
                   OR pg_catalog.array_lower(features, 1) OPERATOR(pg_catalog.<>) 1 THEN ml_stack.predict(project_name, pgml._flattened(features::pg_catalog.float8[])) ELSE ml_stack.predict(project_name, features::pg_catalog.float8[]) END)::pg_catalog.float4 $$;
CREATE OR REPLACE FUNCTION pgml.predict(project_name text, features float8[])
RETURNS real LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT (CASE WHEN pg_catalog.array_ndims(features) OPERATOR(pg_catalog.>) 1
                   OR pg_catalog.array_lower(features, 1) OPERATOR(pg_catalog.<>) 1 THEN ml_stack.predict(project_name, pgml._flattened(features)) ELSE ml_stack.predict(project_name, features) END)::pg_catalog.float4 $$;
CREATE OR REPLACE FUNCTION pgml.predict(project_name text, features smallint[])
RETURNS real LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT (CASE WHEN pg_catalog.array_ndims(features) OPERATOR(pg_catalog.>) 1
                   OR pg_catalog.array_lower(features, 1) OPERATOR(pg_catalog.<>) 1 THEN ml_stack.predict(project_name, pgml._flattened(features::pg_catalog.float8[])) ELSE ml_stack.predict(project_name, features::pg_catalog.float8[]) END)::pg_catalog.float4 $$;
CREATE OR REPLACE FUNCTION pgml.predict(project_name text, features integer[])
RETURNS real LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT (CASE WHEN pg_catalog.array_ndims(features) OPERATOR(pg_catalog.>) 1
                   OR pg_catalog.array_lower(features, 1) OPERATOR(pg_catalog.<>) 1 THEN ml_stack.predict(project_name, pgml._flattened(features::pg_catalog.float8[])) ELSE ml_stack.predict(project_name, features::pg_catalog.float8[]) END)::pg_catalog.float4 $$;
CREATE OR REPLACE FUNCTION pgml.predict(project_name text, features bigint[])
RETURNS real LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT (CASE WHEN pg_catalog.array_ndims(features) OPERATOR(pg_catalog.>) 1
                   OR pg_catalog.array_lower(features, 1) OPERATOR(pg_catalog.<>) 1 THEN ml_stack.predict(project_name, pgml._flattened(features::pg_catalog.float8[])) ELSE ml_stack.predict(project_name, features::pg_catalog.float8[]) END)::pg_catalog.float4 $$;
-- not in PostgresML: ARRAY[3, 4.5] (numeric[]) would otherwise match no overload better than another
CREATE OR REPLACE FUNCTION pgml.predict(project_name text, features numeric[])
RETURNS real LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT (CASE WHEN pg_catalog.array_ndims(features) OPERATOR(pg_catalog.>) 1
                   OR pg_catalog.array_lower(features, 1) OPERATOR(pg_catalog.<>) 1 THEN ml_stack.predict(project_name, pgml._flattened(features::pg_catalog.float8[])) ELSE ml_stack.predict(project_name, features::pg_catalog.float8[]) END)::pg_catalog.float4 $$;
CREATE OR REPLACE FUNCTION pgml.predict(project_name text, features boolean[])
RETURNS real LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT (CASE WHEN pg_catalog.array_ndims(features) OPERATOR(pg_catalog.>) 1
                   OR pg_catalog.array_lower(features, 1) OPERATOR(pg_catalog.<>) 1 THEN ml_stack.predict(project_name, pgml._flattened(features::pg_catalog.int4[]::pg_catalog.float8[])) ELSE ml_stack.predict(project_name, features::pg_catalog.int4[]::pg_catalog.float8[]) END)::pg_catalog.float4 $$;
CREATE OR REPLACE FUNCTION pgml.predict(project_name text, "row" anyelement)
RETURNS real LANGUAGE sql STABLE
AS $$ SELECT ml_stack.predict_row(project_name, pg_catalog.to_jsonb("row"))::pg_catalog.float4 $$;
CREATE OR REPLACE FUNCTION pgml.predict(model_id bigint, features real[])
RETURNS real LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT (CASE WHEN pg_catalog.array_ndims(features) OPERATOR(pg_catalog.>) 1
                   OR pg_catalog.array_lower(features, 1) OPERATOR(pg_catalog.<>) 1 THEN ml_stack.predict(model_id, pgml._flattened(features::pg_catalog.float8[])) ELSE ml_stack.predict(model_id, features::pg_catalog.float8[]) END)::pg_catalog.float4 $$;
-- by model id, for every array type too (not in PostgresML: pgml.predict(1, image) would match no overload best)
CREATE OR REPLACE FUNCTION pgml.predict(model_id bigint, features float8[])
RETURNS real LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT (CASE WHEN pg_catalog.array_ndims(features) OPERATOR(pg_catalog.>) 1
                   OR pg_catalog.array_lower(features, 1) OPERATOR(pg_catalog.<>) 1 THEN ml_stack.predict(model_id, pgml._flattened(features)) ELSE ml_stack.predict(model_id, features) END)::pg_catalog.float4 $$;
CREATE OR REPLACE FUNCTION pgml.predict(model_id bigint, features numeric[])
RETURNS real LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT (CASE WHEN pg_catalog.array_ndims(features) OPERATOR(pg_catalog.>) 1
                   OR pg_catalog.array_lower(features, 1) OPERATOR(pg_catalog.<>) 1 THEN ml_stack.predict(model_id, pgml._flattened(features::pg_catalog.float8[])) ELSE ml_stack.predict(model_id, features::pg_catalog.float8[]) END)::pg_catalog.float4 $$;
CREATE OR REPLACE FUNCTION pgml.predict(model_id bigint, features smallint[])
RETURNS real LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT (CASE WHEN pg_catalog.array_ndims(features) OPERATOR(pg_catalog.>) 1
                   OR pg_catalog.array_lower(features, 1) OPERATOR(pg_catalog.<>) 1 THEN ml_stack.predict(model_id, pgml._flattened(features::pg_catalog.float8[])) ELSE ml_stack.predict(model_id, features::pg_catalog.float8[]) END)::pg_catalog.float4 $$;
CREATE OR REPLACE FUNCTION pgml.predict(model_id bigint, features integer[])
RETURNS real LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT (CASE WHEN pg_catalog.array_ndims(features) OPERATOR(pg_catalog.>) 1
                   OR pg_catalog.array_lower(features, 1) OPERATOR(pg_catalog.<>) 1 THEN ml_stack.predict(model_id, pgml._flattened(features::pg_catalog.float8[])) ELSE ml_stack.predict(model_id, features::pg_catalog.float8[]) END)::pg_catalog.float4 $$;
CREATE OR REPLACE FUNCTION pgml.predict(model_id bigint, features bigint[])
RETURNS real LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT (CASE WHEN pg_catalog.array_ndims(features) OPERATOR(pg_catalog.>) 1
                   OR pg_catalog.array_lower(features, 1) OPERATOR(pg_catalog.<>) 1 THEN ml_stack.predict(model_id, pgml._flattened(features::pg_catalog.float8[])) ELSE ml_stack.predict(model_id, features::pg_catalog.float8[]) END)::pg_catalog.float4 $$;
CREATE OR REPLACE FUNCTION pgml.predict(model_id bigint, features boolean[])
RETURNS real LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT (CASE WHEN pg_catalog.array_ndims(features) OPERATOR(pg_catalog.>) 1
                   OR pg_catalog.array_lower(features, 1) OPERATOR(pg_catalog.<>) 1 THEN ml_stack.predict(model_id, pgml._flattened(features::pg_catalog.int4[]::pg_catalog.float8[])) ELSE ml_stack.predict(model_id, features::pg_catalog.int4[]::pg_catalog.float8[]) END)::pg_catalog.float4 $$;
CREATE OR REPLACE FUNCTION pgml.predict(model_id bigint, "row" anyelement)
RETURNS real LANGUAGE sql STABLE
AS $$ SELECT ml_stack.predict_row(model_id, pg_catalog.to_jsonb("row"))::pg_catalog.float4 $$;
COMMENT ON FUNCTION pgml.predict(text, real[]) IS
    'ml_stack_pgml: PostgresML''s predict: the deployed model''s prediction (a value, or the class) for features in training column order (ml_stack.predict). Also for float8[], numeric[], smallint[], integer[], bigint[] and boolean[].';
COMMENT ON FUNCTION pgml.predict(text, float8[]) IS 'ml_stack_pgml: pgml.predict(text, real[]) for double precision features.';
COMMENT ON FUNCTION pgml.predict(text, smallint[]) IS 'ml_stack_pgml: pgml.predict(text, real[]) for smallint features.';
COMMENT ON FUNCTION pgml.predict(text, integer[]) IS 'ml_stack_pgml: pgml.predict(text, real[]) for integer features.';
COMMENT ON FUNCTION pgml.predict(text, bigint[]) IS 'ml_stack_pgml: pgml.predict(text, real[]) for bigint features.';
COMMENT ON FUNCTION pgml.predict(text, numeric[]) IS 'ml_stack_pgml: pgml.predict(text, real[]) for numeric features (ARRAY[3, 4.5]).';
COMMENT ON FUNCTION pgml.predict(text, boolean[]) IS 'ml_stack_pgml: pgml.predict(text, real[]) for boolean features (1 and 0).';
COMMENT ON FUNCTION pgml.predict(text, anyelement) IS
    'ml_stack_pgml: PostgresML''s predict of a row: its columns by name, preprocessed as at training (ml_stack.predict_row).';
COMMENT ON FUNCTION pgml.predict(bigint, real[]) IS 'ml_stack_pgml: the prediction of one model by id, deployed or not.';
COMMENT ON FUNCTION pgml.predict(bigint, float8[]) IS 'ml_stack_pgml: pgml.predict(bigint, real[]) for float8[] features.';
COMMENT ON FUNCTION pgml.predict(bigint, numeric[]) IS 'ml_stack_pgml: pgml.predict(bigint, real[]) for numeric[] features.';
COMMENT ON FUNCTION pgml.predict(bigint, smallint[]) IS 'ml_stack_pgml: pgml.predict(bigint, real[]) for smallint[] features.';
COMMENT ON FUNCTION pgml.predict(bigint, integer[]) IS 'ml_stack_pgml: pgml.predict(bigint, real[]) for integer[] features.';
COMMENT ON FUNCTION pgml.predict(bigint, bigint[]) IS 'ml_stack_pgml: pgml.predict(bigint, real[]) for bigint[] features.';
COMMENT ON FUNCTION pgml.predict(bigint, boolean[]) IS 'ml_stack_pgml: pgml.predict(bigint, real[]) for boolean[] features.';
COMMENT ON FUNCTION pgml.predict(bigint, anyelement) IS 'ml_stack_pgml: the prediction of one model by id for a row, its columns by name.';

CREATE OR REPLACE FUNCTION pgml.predict_proba(project_name text, features real[])
RETURNS real[] LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT (CASE WHEN pg_catalog.array_ndims(features) OPERATOR(pg_catalog.>) 1
                   OR pg_catalog.array_lower(features, 1) OPERATOR(pg_catalog.<>) 1 THEN ml_stack.predict_proba(project_name, pgml._flattened(features::pg_catalog.float8[])) ELSE ml_stack.predict_proba(project_name, features::pg_catalog.float8[]) END)::pg_catalog.float4[] $$;
CREATE OR REPLACE FUNCTION pgml.predict_proba(model_id bigint, features real[])
RETURNS real[] LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT (CASE WHEN pg_catalog.array_ndims(features) OPERATOR(pg_catalog.>) 1
                   OR pg_catalog.array_lower(features, 1) OPERATOR(pg_catalog.<>) 1 THEN ml_stack.predict_proba(model_id, pgml._flattened(features::pg_catalog.float8[])) ELSE ml_stack.predict_proba(model_id, features::pg_catalog.float8[]) END)::pg_catalog.float4[] $$;
COMMENT ON FUNCTION pgml.predict_proba(text, real[]) IS
    'ml_stack_pgml: PostgresML''s predict_proba: the deployed classifier''s probability of each class, classes ascending.';
COMMENT ON FUNCTION pgml.predict_proba(bigint, real[]) IS 'ml_stack_pgml: class probabilities of one model by id.';

-- predict_batch: the features of several rows, one after the other in one array.
CREATE OR REPLACE FUNCTION pgml._batch_rows(features real[], num_features integer, what text)
RETURNS SETOF float8[]
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF coalesce(cardinality(features), 0) % num_features <> 0 THEN
        RAISE EXCEPTION 'predict_batch: % features is not a whole number of rows of % features (%)',
                        coalesce(cardinality(features), 0), num_features, what
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass the rows'' features one row after the other, in training column order.';
    END IF;
    RETURN QUERY SELECT features[i * num_features + 1 : (i + 1) * num_features]::pg_catalog.float8[]
                 FROM generate_series(0, coalesce(cardinality(features), 0) / num_features - 1) AS i;
END
$$;

CREATE OR REPLACE FUNCTION pgml.predict_batch(model_id bigint, features real[])
RETURNS real[] LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    width integer := (SELECT m.num_features FROM ml_stack.models AS m WHERE m.id = predict_batch.model_id);
BEGIN
    IF width IS NULL THEN
        RAISE EXCEPTION 'model % does not exist', model_id
            USING ERRCODE = 'no_data_found', HINT = 'SELECT id, project_id, algorithm FROM pgml.models lists the models.';
    END IF;
    RETURN ARRAY(SELECT ml_stack.predict(model_id, r.b)::real
                 FROM pgml._batch_rows(ARRAY(SELECT unnest(features)), width, format('model %s', model_id))   -- from 1, flat
                      WITH ORDINALITY AS r(b, i) ORDER BY r.i);
END
$$;
CREATE OR REPLACE FUNCTION pgml.predict_batch(project_name text, features real[])
RETURNS SETOF real LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    deployed_id bigint := (SELECT d.model_id FROM ml_stack.deployed_models AS d WHERE d.project_name = predict_batch.project_name);
BEGIN
    IF deployed_id IS NULL THEN
        PERFORM ml_stack._no_deployed_model(project_name, NULL::pg_catalog.float8[]);   -- the error ml_stack.predict gives
    END IF;
    RETURN QUERY SELECT p FROM unnest(pgml.predict_batch(deployed_id, features)) AS p;
END
$$;
COMMENT ON FUNCTION pgml.predict_batch(text, real[]) IS
    'ml_stack_pgml: PostgresML''s predict_batch: the deployed model''s prediction for each row of a flat array of rows'' features.';
COMMENT ON FUNCTION pgml.predict_batch(bigint, real[]) IS
    'ml_stack_pgml: one model''s predictions, as an array, for a flat array of rows'' features.';

-- source: sql/dropin/pgml/deploy.sql
-- pgml.deploy: PostgresML's two forms over ml_stack.deploy. Strategy 'new_score' is what PostgresML's
-- train records for an automatic deploy; it is not a policy one can ask for (PostgresML refuses it too).
CREATE OR REPLACE FUNCTION pgml._deploy_strategy(strategy text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF strategy IS NULL OR strategy NOT IN ('best_score', 'most_recent', 'rollback') THEN
        RAISE EXCEPTION 'deploy strategy % is not a policy for a project', coalesce(quote_literal(strategy), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use ''best_score'', ''most_recent'' or ''rollback''; deploy one model with pgml.deploy(model_id).';
    END IF;
    RETURN strategy;
END
$$;

CREATE OR REPLACE FUNCTION pgml.deploy(project_name text, strategy pgml.strategy, algorithm pgml.algorithm DEFAULT NULL)
RETURNS TABLE (project text, strategy text, algorithm text)
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT d.project, d.strategy, d.algorithm
    FROM ml_stack.deploy(deploy.project_name, pgml._deploy_strategy(deploy.strategy::text), deploy.algorithm::text) AS d
$$;
CREATE OR REPLACE FUNCTION pgml.deploy(model_id bigint)
RETURNS TABLE (project text, strategy text, algorithm text)
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT d.project, d.strategy, d.algorithm FROM ml_stack.deploy(deploy.model_id) AS d $$;
COMMENT ON FUNCTION pgml.deploy(text, pgml.strategy, pgml.algorithm) IS
    'ml_stack_pgml: PostgresML''s deploy: the project''s best_score, most_recent or rollback model (of one algorithm when given) becomes the one predict serves (ml_stack.deploy).';
COMMENT ON FUNCTION pgml.deploy(bigint) IS 'ml_stack_pgml: deploy one model by id (strategy ''specific'').';

-- source: sql/dropin/pgml/embed.sql
-- pgml.embed: PostgresML's embeddings over ml_stack.embed. A model name without its organisation
-- ('all-MiniLM-L6-v2') is the sentence-transformers one, as ml_stack resolves it; a model ml_stack does not
-- have is an error that lists the ones it has. kwargs are the transformer's options (ml_stack.transformers).
CREATE OR REPLACE FUNCTION pgml.embed(transformer text, "text" text, kwargs jsonb DEFAULT '{}')
RETURNS real[]
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT ml_stack.embed(embed.transformer, embed."text", embed.kwargs) $$;
CREATE OR REPLACE FUNCTION pgml.embed(transformer text, inputs text[], kwargs jsonb DEFAULT '{}')
RETURNS SETOF real[]
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT e FROM ml_stack.embed(embed.transformer, embed.inputs, embed.kwargs) AS e $$;
COMMENT ON FUNCTION pgml.embed(text, text, jsonb) IS
    'ml_stack_pgml: PostgresML''s embed: the text''s embedding by a transformer ml_stack has (ml_stack.transformers: hashing, fitted vectorizers, sentence-transformers/all-MiniLM-L6-v2 with ml_stack_python).';
COMMENT ON FUNCTION pgml.embed(text, text[], jsonb) IS
    'ml_stack_pgml: the embeddings of several texts, in input order (batched: faster than one call per text).';

-- source: sql/dropin/pgml/datasets.sql
-- pgml.load_dataset: scikit-learn's toy datasets as PostgresML lays them out (pgml.iris with float4
-- features and an integer target, pgml.breast_cancer with its feature names and the boolean label
-- "malignant", pgml.digits with an 8x8 smallint[][] image, ...), read through ml_stack.load_dataset
-- (ml_stack_python). Hugging Face datasets need the network: refused with what is there.
CREATE OR REPLACE FUNCTION pgml.load_dataset(source text, subset text DEFAULT NULL, "limit" bigint DEFAULT NULL,
                                             kwargs jsonb DEFAULT '{}')
RETURNS TABLE (table_name text, "rows" bigint)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    builtin CONSTANT text[] := ARRAY['breast_cancer', 'diabetes', 'digits', 'iris', 'wine'];
    had_table boolean;
    features text[];
    columns text;
    n bigint;
BEGIN
    IF source IS NULL OR NOT source = ANY (builtin) THEN
        RAISE EXCEPTION 'dataset "%" is not available here', source
            USING ERRCODE = 'feature_not_supported',
                  HINT = format('ml_stack_pgml loads scikit-learn''s toy datasets: %s (linnerud needs joint training, which '
                                'ml_stack does not have). Hugging Face datasets need the network: load them into a table yourself.',
                                array_to_string(builtin, ', '));
    END IF;
    IF "limit" < 0 THEN
        RAISE EXCEPTION 'limit must be >= 0, got %', "limit" USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF to_regprocedure('ml_stack.load_dataset(text)') IS NULL THEN
        RAISE EXCEPTION 'pgml.load_dataset needs ml_stack_python, which is not installed'
            USING ERRCODE = 'feature_not_supported', HINT = 'CREATE EXTENSION ml_stack_python CASCADE (it reads scikit-learn''s datasets).';
    END IF;
    had_table := to_regclass(format('ml_stack.%I', source)) IS NOT NULL;
    PERFORM ml_stack.load_dataset(source);
    features := ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute AS a
                      WHERE a.attrelid = format('ml_stack.%I', source)::regclass AND a.attnum > 0 AND NOT a.attisdropped
                        AND a.attname <> 'target'
                      ORDER BY CASE WHEN source = 'wine' AND a.attname = 'hue' THEN 9.5 ELSE a.attnum END);
    IF source = 'digits' THEN
        -- pixel_<row>_<column> -> image[row + 1][column + 1]
        columns := format('ARRAY[%s]::smallint[][] AS image, target::smallint AS target',
                          (SELECT string_agg(format('ARRAY[%s]', r.cells), ', ' ORDER BY r.i)
                           FROM (SELECT i, string_agg(format('%I', format('pixel_%s_%s', i, j)), ', ' ORDER BY j) AS cells
                                 FROM generate_series(0, 7) AS i, generate_series(0, 7) AS j GROUP BY i) AS r));
    ELSE
        columns := (SELECT string_agg(format('%I::real AS %I', f, CASE source
                                        WHEN 'iris' THEN (ARRAY['sepal_length', 'sepal_width', 'petal_length', 'petal_width'])[i]
                                        WHEN 'breast_cancer' THEN replace(f, '_', ' ')
                                        WHEN 'wine' THEN CASE f WHEN 'od280_od315_of_diluted_wines' THEN 'od280/od315_of_diluted_wines' ELSE f END
                                        ELSE f END), ', ' ORDER BY i)
                    FROM unnest(features) WITH ORDINALITY AS c(f, i))
                   || CASE source WHEN 'breast_cancer' THEN ', target = 0 AS malignant'
                                  WHEN 'diabetes' THEN ', target::real AS target'
                                  ELSE ', target::integer AS target' END;
    END IF;
    IF to_regclass(format('pgml.%I', source)) IS NOT NULL THEN
        BEGIN
            EXECUTE format('DROP TABLE pgml.%I', source);   -- replaced, as PostgresML does
        EXCEPTION WHEN dependent_objects_still_exist THEN
            RAISE EXCEPTION 'pgml.% is replaced by load_dataset, but other objects depend on it', source
                USING ERRCODE = 'dependent_objects_still_exist', DETAIL = SQLERRM,
                      HINT = format('Drop them first (e.g. DROP VIEW pgml.%s_view), or DROP TABLE pgml.%s CASCADE.', source, source);
        END;
    END IF;
    EXECUTE format('CREATE TABLE pgml.%I AS SELECT %s FROM ml_stack.%I%s', source, columns, source,
                   CASE WHEN "limit" IS NOT NULL THEN format(' LIMIT %s', "limit") ELSE '' END);
    GET DIAGNOSTICS n = ROW_COUNT;
    EXECUTE format('COMMENT ON TABLE pgml.%I IS %L', source,
                   format('ml_stack_pgml: scikit-learn''s %s dataset, as PostgresML lays it out (pgml.load_dataset).', source));
    IF NOT had_table THEN
        EXECUTE format('DROP TABLE ml_stack.%I', source);
    END IF;
    table_name := format('pgml.%I', source);
    "rows" := n;
    RETURN NEXT;
END
$$;
COMMENT ON FUNCTION pgml.load_dataset(text, text, bigint, jsonb) IS
    'ml_stack_pgml: PostgresML''s load_dataset for scikit-learn''s toy datasets (breast_cancer, diabetes, digits, iris, wine) into pgml.<name>, replaced if it exists; limit keeps the first rows. Needs ml_stack_python.';

-- source: sql/dropin/pgml/version.sql
-- pgml.version(): what is installed, as PostgresML answers "VERSION (COMMIT)": here the drop-in's version
-- and ml_stack's.
CREATE OR REPLACE FUNCTION pgml.version()
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format('%s (ml_stack %s)', (SELECT e.extversion FROM pg_extension AS e WHERE e.extname = 'ml_stack_pgml'),
                  (SELECT e.extversion FROM pg_extension AS e WHERE e.extname = 'ml_stack'))
$$;
COMMENT ON FUNCTION pgml.version() IS 'ml_stack_pgml: its version and ml_stack''s, e.g. "0.5.1 (ml_stack 0.5.1)".';

-- source: sql/dropin/pgml/views.sql
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

-- source: sql/dropin/pgml/grants.sql
-- Schema pgml follows ml_stack's boundary (ml_stack's api/grants.sql): no USAGE for PUBLIC, USAGE for
-- ml_stack's group roles. Every function here runs with the caller's rights and reaches ml_stack's, which
-- decide (a predictor predicts, a trainer trains). A trainer may also CREATE in pgml: load_dataset and
-- materialize_snapshot make their tables there, as PostgresML does.
DO $$
BEGIN
    IF to_regrole('ml_stack_predictor') IS NOT NULL THEN
        EXECUTE 'GRANT USAGE ON SCHEMA pgml TO ml_stack_predictor';
        EXECUTE 'GRANT SELECT ON ALL TABLES IN SCHEMA pgml TO ml_stack_predictor';
    END IF;
    IF to_regrole('ml_stack_trainer') IS NOT NULL THEN
        EXECUTE 'GRANT USAGE, CREATE ON SCHEMA pgml TO ml_stack_trainer';
        EXECUTE 'GRANT SELECT ON ALL TABLES IN SCHEMA pgml TO ml_stack_trainer';
        EXECUTE 'GRANT USAGE ON SEQUENCE pgml.snapshot_seq TO ml_stack_trainer';
    END IF;
    IF to_regrole('ml_stack_admin') IS NOT NULL THEN
        EXECUTE 'GRANT USAGE ON SCHEMA pgml TO ml_stack_admin';
        EXECUTE 'GRANT SELECT ON ALL TABLES IN SCHEMA pgml TO ml_stack_admin';
    END IF;
END
$$;
