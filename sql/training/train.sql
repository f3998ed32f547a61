-- Algorithm names known to ml_stack (PostgresML's), to tell a typo from an
-- algorithm whose engine is not installed.
CREATE OR REPLACE FUNCTION ml_stack._known_algorithms()
RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT ARRAY['linear', 'ridge', 'naive_bayes', 'lasso', 'elastic_net', 'xgboost', 'random_forest', 'extra_trees',
                 'gradient_boosting_trees', 'hist_gradient_boosting', 'ada_boost', 'svm', 'knn']
$$;

-- The engine that fits `algorithm` for `task`: the requested one, or 'sql' when it
-- has the algorithm, else 'python'. Errors name what to install or use instead.
CREATE OR REPLACE FUNCTION ml_stack._choose_engine(task text, algorithm text, engine text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    python_installed boolean := to_regprocedure('ml_stack._python_fit(text, text, jsonb, jsonb)') IS NOT NULL;
BEGIN
    IF algorithm IS NULL OR NOT algorithm = ANY (ml_stack._known_algorithms()) THEN
        RAISE EXCEPTION 'unknown algorithm "%"', algorithm
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Known algorithms: %s.', array_to_string(ml_stack._known_algorithms(), ', '));
    END IF;
    IF engine IS NOT NULL AND engine NOT IN ('sql', 'python') THEN
        RAISE EXCEPTION 'unknown engine "%"', engine
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Use ''sql'', ''python'', or NULL to choose by algorithm.';
    END IF;
    IF coalesce(engine, 'sql') = 'sql' AND ml_stack._sql_engine_hyperparams(task, algorithm) IS NOT NULL THEN
        RETURN 'sql';
    END IF;
    IF engine = 'sql' THEN
        RAISE EXCEPTION 'the sql engine has no % algorithm for %', algorithm, task
            USING ERRCODE = 'feature_not_supported',
                  HINT = CASE WHEN task = 'classification' AND algorithm = 'ridge'
                              THEN 'For classification the sql engine has ''linear'' (logistic regression) and ''naive_bayes''.'
                              ELSE 'The sql engine has ''linear'' (regression, classification), ''ridge'' (regression) and ''naive_bayes'' (classification).' END;
    END IF;
    IF NOT python_installed THEN
        RAISE EXCEPTION 'algorithm % for % needs the python engine, which is not installed', algorithm, task
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'CREATE EXTENSION ml_stack_python CASCADE (needs PL/Python, scikit-learn and xgboost), or use algorithm ''linear''.';
    END IF;
    RETURN 'python';
END
$$;

CREATE OR REPLACE FUNCTION ml_stack._train_unguarded(
    project_name text, task text, relation_name text, y_column_name text, algorithm text,
    hyperparams jsonb, search text, search_params jsonb, search_args jsonb, test_size real,
    test_sampling text, preprocess jsonb, automatic_deploy boolean, engine text, exclude text[], caller_search_path text,
    OUT trained_model_id bigint, OUT was_deployed boolean, OUT project_task text, OUT model_algorithm text, OUT model_engine text,
    OUT model_metrics jsonb)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    proj      ml_stack.projects;
    rel       regclass;
    chosen_engine text;
    seed      bigint;
    dataset   jsonb;
    artifact  jsonb;
    fitted    jsonb;
    search_result jsonb;
    classes   float8[];
    metrics   jsonb;
    t0        timestamptz;
    fit_time  float8;
    snap_id   bigint;
    key       text;
    current_score float8;
    current_model bigint;
    decision  text;
    new_columns text;
    old_columns text;
    new_score float8;
    comparison jsonb;
    same_rows boolean;
    new_rows text;
    old_rows text;
    previous  record;
BEGIN
    IF project_name IS NULL OR btrim(project_name) = '' THEN
        RAISE EXCEPTION 'project_name is required' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Name the project, e.g. ml_stack.train(''house_prices'', ''regression'', ''houses'', ''price'').';
    END IF;
    -- concurrent trains of one project queue here (a new project's name included)
    PERFORM pg_advisory_xact_lock(hashtext('ml_stack.project:' || project_name));
    SELECT p.* INTO proj FROM ml_stack.projects AS p WHERE p.name = project_name;
    IF FOUND THEN
        IF task IS NOT NULL AND task <> proj.task THEN
            RAISE EXCEPTION 'project "%" is a % project; it cannot be trained for %', project_name, proj.task, task
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Leave task out to keep the project''s task, or train under a new project name.';
        END IF;
        task := proj.task;
        -- a retrain by name (no relation given) without preprocess rules keeps those of the model it
        -- may replace (the deployed one, else the last one), as a scheduled retrain does, and
        -- (exclude NULL) the columns it left out
        SELECT m.preprocess, s.exclude INTO previous
        FROM ml_stack.models AS m JOIN ml_stack.snapshots AS s ON s.id = m.snapshot_id
        WHERE m.project_id = proj.id
        ORDER BY m.id = (SELECT d.model_id FROM ml_stack.deployed_models AS d WHERE d.project_id = proj.id) DESC NULLS LAST, m.id DESC
        LIMIT 1;
        IF FOUND THEN
            IF relation_name IS NULL AND coalesce(preprocess, '{}') = '{}' THEN
                preprocess := previous.preprocess;
            END IF;
            IF relation_name IS NULL THEN
                exclude := coalesce(exclude, previous.exclude);
            END IF;
        END IF;
        relation_name := coalesce(relation_name, proj.relation_name);
        y_column_name := coalesce(y_column_name, proj.y_column_name);
        IF relation_name IS NULL OR y_column_name IS NULL THEN
            RAISE EXCEPTION 'project "%" has no training relation (it was imported)', project_name
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Pass relation_name and y_column_name.';
        END IF;
        seed := proj.split_seed;
    ELSE
        IF task IS NULL OR relation_name IS NULL OR y_column_name IS NULL THEN
            RAISE EXCEPTION 'project "%" does not exist yet: task, relation_name and y_column_name are required', project_name
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = format('e.g. ml_stack.train(%L, ''regression'', ''my_table'', ''my_label'')', project_name);
        END IF;
        seed := (random() * 2147483647)::bigint;
    END IF;
    IF task NOT IN ('regression', 'classification') THEN
        RAISE EXCEPTION 'unknown task "%"', task
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Use ''regression'' or ''classification''.';
    END IF;
    algorithm := coalesce(algorithm, 'linear');
    IF search IS NOT NULL AND engine IS NULL
       AND to_regprocedure('ml_stack._python_fit(text, text, jsonb, jsonb)') IS NOT NULL THEN
        engine := 'python';  -- only the python engine searches
    END IF;
    chosen_engine := ml_stack._choose_engine(task, algorithm, engine);
    IF hyperparams IS NULL OR jsonb_typeof(hyperparams) <> 'object' THEN
        RAISE EXCEPTION 'hyperparams must be a JSON object' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'e.g. hyperparams => ''{"alpha": 0.5}''';
    END IF;
    IF search IS NULL AND (coalesce(search_params, '{}') <> '{}' OR coalesce(search_args, '{}') <> '{}') THEN
        RAISE EXCEPTION 'search_params or search_args given without a search'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Add search => ''grid'' or search => ''random'', or pass the values in hyperparams.';
    END IF;
    IF search IS NOT NULL AND chosen_engine = 'sql' THEN
        RAISE EXCEPTION 'hyperparameter search needs the python engine'
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'CREATE EXTENSION ml_stack_python CASCADE, then train with engine => ''python''.';
    END IF;
    PERFORM ml_stack._check_test_sampling(test_sampling);

    rel := ml_stack._resolve_relation(relation_name, caller_search_path);
    -- categories without an encode rule: one-hot for models of weighted sums, the label's mean
    -- per category for trees (as PostgresML's default for text); unpenalized least squares
    -- leaves out each column's first category (its coefficients would not be unique)
    dataset := ml_stack._prepare_dataset(rel, y_column_name, task, test_size, test_sampling, seed,
                                         coalesce(preprocess, '{}'), project_name, exclude,
                                         jsonb_build_object(
                                             'encode', CASE WHEN algorithm IN ('linear', 'ridge', 'lasso', 'elastic_net', 'svm', 'knn', 'naive_bayes')
                                                            THEN 'one_hot' ELSE 'target' END,
                                             'drop', CASE WHEN algorithm = 'linear' AND task = 'regression' THEN 'first' ELSE 'none' END));
    -- the python engine reads vectorized text itself (as dense features); of the sql engine's, naive_bayes does
    IF jsonb_array_length(dataset -> 'blocks') > 0 AND chosen_engine = 'sql' AND algorithm <> 'naive_bayes'
       AND NOT (algorithm = 'linear' AND task = 'classification') THEN  -- logistic: the sparse solver
        RAISE EXCEPTION 'the sql engine''s % cannot train on vectorized text', algorithm
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Use algorithm => ''naive_bayes'', or the python engine (e.g. algorithm => ''xgboost''), or store the vectors '
                         'in a real[] column (ml_stack.embed(''hashing'', title, ''{"dims": 256}'')) and train on it.';
    END IF;
    IF jsonb_typeof(dataset -> 'classes') = 'array' THEN
        classes := ARRAY(SELECT jsonb_array_elements_text(dataset -> 'classes')::float8);
    END IF;

    IF chosen_engine = 'sql' AND engine IS NULL AND ml_stack._sql_engine_too_large(task, algorithm, dataset) IS NOT NULL
       AND to_regprocedure('ml_stack._python_fit(text, text, jsonb, jsonb)') IS NOT NULL THEN
        RAISE NOTICE 'ml_stack: % is too large for the sql engine: the python engine trains it',
            ml_stack._sql_engine_too_large(task, algorithm, dataset);
        chosen_engine := 'python';
    END IF;
    t0 := clock_timestamp();
    IF chosen_engine = 'sql' THEN
        artifact := ml_stack._sql_fit(task, algorithm, hyperparams, dataset);
        IF algorithm = 'naive_bayes' OR (algorithm = 'linear' AND task = 'classification'
                                         AND ml_stack._sparse_logistic_wanted(dataset)) THEN
            dataset := dataset || '{"engine_predictions": true}';  -- it scores the test rows sparsely itself
        END IF;
    ELSE
        -- ml_stack_python (docs/python-engine.md): it also predicts the test rows with the
        -- library into pg_temp._ml_stack_predictions, and returns the hyperparameters it
        -- fitted with (the search's choice included) and the search's candidates
        EXECUTE 'SELECT ml_stack._python_fit($1, $2, $3, $4)' INTO fitted
            USING task, algorithm, hyperparams, dataset || jsonb_build_object(
                'search', search, 'search_params', coalesce(search_params, '{}'), 'search_args', coalesce(search_args, '{}'));
        artifact := fitted -> 'artifact';
        hyperparams := coalesce(fitted -> 'hyperparams', hyperparams);
        search_result := fitted -> 'search';
        dataset := dataset || '{"engine_predictions": true}';
    END IF;
    fit_time := extract(epoch FROM clock_timestamp() - t0);
    t0 := clock_timestamp();
    metrics := ml_stack._test_metrics(task, artifact, classes, dataset);
    metrics := metrics || jsonb_build_object('fit_time', fit_time, 'score_time', extract(epoch FROM clock_timestamp() - t0));
    -- the deployed model, scored on the same test rows (training/compare.sql), when the new one
    -- could replace it automatically
    key := ml_stack._key_metric(task);
    SELECT (d.metrics ->> key)::float8, d.model_id INTO current_score, current_model
    FROM ml_stack.deployed_models AS d WHERE d.project_id = proj.id;
    new_columns := ml_stack._serving_arguments(dataset -> 'columns');
    old_columns := ml_stack._serving_arguments(ml_stack._model_layout(current_model));
    IF current_model IS NOT NULL AND coalesce(automatic_deploy, true) AND new_columns IS NOT DISTINCT FROM old_columns THEN
        comparison := ml_stack._score_on_split(current_model, task, dataset);
    END IF;
    -- done with the data: free it now, not at the end of the transaction
    DROP TABLE pg_temp._ml_stack_rows;
    IF to_regclass('pg_temp._ml_stack_deployed_predictions') IS NOT NULL THEN
        DROP TABLE pg_temp._ml_stack_deployed_predictions;
    END IF;
    IF to_regclass('pg_temp._ml_stack_predictions') IS NOT NULL THEN  -- (IF EXISTS would print a NOTICE)
        DROP TABLE pg_temp._ml_stack_predictions;
    END IF;

    -- everything checked and fitted: now write the registry
    IF proj.id IS NULL THEN
        INSERT INTO ml_stack.projects (name, task, relation_name, y_column_name, split_seed)
        VALUES (project_name, task, relation_name, y_column_name, seed)
        RETURNING * INTO proj;
    ELSIF proj.relation_name IS DISTINCT FROM relation_name OR proj.y_column_name IS DISTINCT FROM y_column_name THEN
        UPDATE ml_stack.projects AS p SET relation_name = relation_name, y_column_name = y_column_name
        WHERE p.id = proj.id;
    END IF;
    INSERT INTO ml_stack.snapshots (project_id, relation_name, y_column_name, features, label, rows, skipped_rows,
                                    train_rows, test_rows, test_size, test_sampling, seed, columns, exclude)
    VALUES (proj.id, rel::text, y_column_name, dataset -> 'features', dataset -> 'label' || jsonb_build_object('classes', to_jsonb(classes)),
            (dataset ->> 'n')::bigint, (dataset ->> 'skipped')::bigint, (dataset ->> 'train_rows')::bigint,
            (dataset ->> 'test_rows')::bigint, test_size, test_sampling, seed, dataset -> 'columns', exclude)
    RETURNING id INTO snap_id;
    -- automatic deploy: only a model that beats the deployed one on the key metric, on the same
    -- test rows when the deployed model can be scored on them, and over the same feature columns
    -- (others would change the serving function's signature, which views, prepared statements and
    -- HTTP endpoints use: that takes a deploy() by hand)
    new_score := (metrics ->> key)::float8;
    same_rows := comparison ? 'metrics';
    IF same_rows THEN
        current_score := (comparison -> 'metrics' ->> key)::float8;
    END IF;
    -- where each score was measured, for the decision's text
    new_rows := CASE WHEN same_rows THEN ' on this split' ELSE '' END;
    old_rows := CASE WHEN same_rows THEN ' on this split' ELSE ml_stack._own_rows_note(comparison) END;
    decision := CASE
        WHEN NOT coalesce(automatic_deploy, true) THEN 'not deployed: automatic_deploy => false'
        WHEN current_model IS NULL THEN 'deployed: the project''s first deployment'
        WHEN old_columns IS NOT NULL AND new_columns IS DISTINCT FROM old_columns THEN
            format('not deployed: its feature columns (%s) differ from those of the deployed model %s (%s); '
                   'ml_stack.deploy(<its id>) deploys it and changes the serving function', left(new_columns, 500), current_model,
                   left(old_columns, 500))
        WHEN comparison ? 'no_prediction' THEN
            format('deployed: the deployed model %s gives no prediction for %s of the %s rows of this split '
                   '(NULL features it has no impute rule for)', current_model, comparison ->> 'no_prediction', comparison ->> 'rows')
        WHEN new_score > current_score OR (current_score IS NULL AND new_score IS NOT NULL) THEN
            format('deployed: %s %s%s > %s of the deployed model %s%s', key, round(new_score::numeric, 6), new_rows,
                   coalesce(round(current_score::numeric, 6)::text, 'none'), current_model, old_rows)
        ELSE format('not deployed: %s %s%s <= %s of the deployed model %s%s', key,
                    coalesce(round(new_score::numeric, 6)::text, 'none'), new_rows,
                    round(current_score::numeric, 6), current_model, old_rows) END;
    was_deployed := decision LIKE 'deployed:%';
    INSERT INTO ml_stack.models (project_id, snapshot_id, algorithm, engine, task, hyperparams, preprocess,
                                 num_features, classes, artifact, metrics, search, deploy_decision)
    VALUES (proj.id, snap_id, algorithm, chosen_engine, task, hyperparams, coalesce(preprocess, '{}'),
            (dataset ->> 'num_features')::integer, classes, artifact, metrics, search_result, decision)
    RETURNING id INTO trained_model_id;

    IF was_deployed THEN
        INSERT INTO ml_stack.deployments (project_id, model_id, strategy) VALUES (proj.id, trained_model_id, 'automatic');
    END IF;
    PERFORM ml_stack._record_manual_run(proj.id, trained_model_id, was_deployed);  -- history (sql/scheduling)
    project_task := task; model_algorithm := algorithm; model_engine := chosen_engine; model_metrics := metrics;
    RAISE NOTICE 'ml_stack: model % (% %, % engine): % = %, %', trained_model_id, algorithm, task, chosen_engine, key,
        round(new_score::numeric, 6), CASE WHEN decision LIKE 'not deployed: its feature columns%'
                                           THEN 'not deployed: its feature columns differ from the deployed model''s'
                                           ELSE CASE WHEN was_deployed THEN 'deployed' ELSE 'not deployed' END END;
END
$$;

-- _train_unguarded, with its errors re-raised as they are (SQLSTATE, message, detail, hint) but without the
-- CONTEXT of where they happened: an error inside a generated statement carries the statement in its CONTEXT
-- (a 6.7k-character CREATE TABLE of the training read, once megabytes of compiled predictor). A cancel
-- (query_canceled, which OTHERS leaves out) is re-raised the same way.
CREATE OR REPLACE FUNCTION ml_stack._train(
    project_name text, task text, relation_name text, y_column_name text, algorithm text,
    hyperparams jsonb, search text, search_params jsonb, search_args jsonb, test_size real,
    test_sampling text, preprocess jsonb, automatic_deploy boolean, engine text, exclude text[], caller_search_path text,
    OUT trained_model_id bigint, OUT was_deployed boolean, OUT project_task text, OUT model_algorithm text, OUT model_engine text,
    OUT model_metrics jsonb)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    state text; message text; detail text; hint text;
BEGIN
    PERFORM ml_stack._refuse_on_standby('ml_stack.train');
    SELECT * INTO trained_model_id, was_deployed, project_task, model_algorithm, model_engine, model_metrics
    FROM ml_stack._train_unguarded(project_name, task, relation_name, y_column_name, algorithm, hyperparams, search,
                                   search_params, search_args, test_size, test_sampling, preprocess, automatic_deploy,
                                   engine, exclude, caller_search_path);
EXCEPTION WHEN OTHERS OR query_canceled THEN
    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, message = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL,
                            hint = PG_EXCEPTION_HINT;
    detail := nullif(detail, ''); hint := nullif(hint, '');
    IF detail IS NULL AND hint IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = state, MESSAGE = message;
    ELSIF detail IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = state, MESSAGE = message, HINT = hint;
    ELSIF hint IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = state, MESSAGE = message, DETAIL = detail;
    ELSE
        RAISE EXCEPTION USING ERRCODE = state, MESSAGE = message, DETAIL = detail, HINT = hint;
    END IF;
END
$$;

-- Public entry point. LANGUAGE sql because PL/pgSQL refuses parameters named like
-- result columns (DESIGN §6). No SET clause here on purpose: it captures the
-- caller's search_path so that relation_name resolves as the caller typed it;
-- everything it calls is schema-qualified and pinned.
-- What train() shows in psql: the metrics rounded to 4 decimals, so that its row stays narrow; the full
-- values stay in ml_stack.models.metrics (deploy decisions and the views read those).
CREATE OR REPLACE FUNCTION ml_stack._rounded_metrics(metrics jsonb)
RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(jsonb_object_agg(m.key, CASE WHEN jsonb_typeof(m.value) = 'number'
                                                 THEN to_jsonb(round((m.value #>> '{}')::numeric, 4)) ELSE m.value END), '{}')
    FROM jsonb_each(metrics) AS m
$$;

CREATE OR REPLACE FUNCTION ml_stack.train(
    project_name     text,
    task             text    DEFAULT NULL,
    relation_name    text    DEFAULT NULL,
    y_column_name    text    DEFAULT NULL,
    algorithm        text    DEFAULT 'linear',
    hyperparams      jsonb   DEFAULT '{}',
    search           text    DEFAULT NULL,
    search_params    jsonb   DEFAULT '{}',
    search_args      jsonb   DEFAULT '{}',
    test_size        real    DEFAULT 0.25,
    test_sampling    text    DEFAULT 'random',
    preprocess       jsonb   DEFAULT '{}',
    automatic_deploy boolean DEFAULT true,
    engine           text    DEFAULT NULL,
    exclude          text[]  DEFAULT NULL)      -- columns that are not features; NULL: a retrain by name leaves out those left out before
RETURNS TABLE (project text, task text, algorithm text, engine text, model_id bigint, deployed boolean, metrics jsonb)
LANGUAGE sql VOLATILE
AS $$
    -- the new rows are not visible to this statement's snapshot: _train returns what it wrote
    SELECT train.project_name, r.project_task, r.model_algorithm, r.model_engine,
           r.trained_model_id, r.was_deployed, ml_stack._rounded_metrics(r.model_metrics)
    FROM ml_stack._train(train.project_name, train.task, train.relation_name, train.y_column_name, train.algorithm,
                         train.hyperparams, train.search, train.search_params, train.search_args, train.test_size,
                         train.test_sampling, train.preprocess, train.automatic_deploy, train.engine, train.exclude,
                         pg_catalog.current_setting('search_path')) AS r
$$;
COMMENT ON FUNCTION ml_stack.train(text, text, text, text, text, jsonb, text, jsonb, jsonb, real, text, jsonb, boolean, text, text[]) IS
    'ml_stack: train a model on a table or view (features: every column but the label and those in exclude, in table order; text and enums as categories), score it on a test split, register it, and deploy it if it beats the deployed model. Retrain with only the project name to reuse its relation, label, task and excluded columns.';
