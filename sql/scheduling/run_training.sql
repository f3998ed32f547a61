-- Retraining a project with its snapshot settings, and the history of training runs (ml_stack.training_runs).

-- What a retrain of `project_name` trains, from the project's reference model: its deployed model when it was
-- trained here, else its most recent trained model (restricted to `algorithm` when given). Every argument
-- left NULL comes from that model: algorithm, hyperparams and engine (when the algorithm is the same),
-- preprocess, and the split (test_size, test_sampling) of its snapshot. The relation is the project's, resolved
-- in the schema where it was found at the last train (r_search_path), so that a pg_cron job, whose session has
-- the default search_path, trains on the same relation as the user did. Raises when there is nothing to retrain.
CREATE OR REPLACE FUNCTION ml_stack._retrain_settings(
    project_name text, algorithm text, hyperparams jsonb, test_size real, test_sampling text, preprocess jsonb,
    engine text,
    OUT r_project_id bigint, OUT r_task text, OUT r_algorithm text, OUT r_hyperparams jsonb, OUT r_test_size real,
    OUT r_test_sampling text, OUT r_preprocess jsonb, OUT r_engine text, OUT r_search_path text,
    OUT r_reference_model_id bigint)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    proj     ml_stack.projects;
    ref      record;
    same     boolean;
    relname  text;
    parts    text[];
BEGIN
    IF project_name IS NULL OR btrim(project_name) = '' THEN
        RAISE EXCEPTION 'project_name is required' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Name the project to retrain; SELECT name FROM ml_stack.projects lists the projects.';
    END IF;
    SELECT p.* INTO proj FROM ml_stack.projects AS p WHERE p.name = project_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'project "%" does not exist', project_name
            USING ERRCODE = 'undefined_object',
                  HINT = 'Train the project once with ml_stack.train(project_name, task, relation_name, y_column_name); SELECT name FROM ml_stack.projects lists the projects.';
    END IF;
    IF proj.relation_name IS NULL OR proj.y_column_name IS NULL THEN
        RAISE EXCEPTION 'project "%" has no training relation (it was imported)', project_name
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Train it once on a relation: ml_stack.train(project_name, relation_name => ..., y_column_name => ...).';
    END IF;
    -- the reference model: trained here (not imported), the deployed one first, then the newest
    SELECT m.id, m.algorithm, m.engine, m.hyperparams, m.preprocess, s.test_size, s.test_sampling INTO ref
    FROM ml_stack.models AS m
    LEFT JOIN ml_stack.snapshots AS s ON s.id = m.snapshot_id
    LEFT JOIN ml_stack.deployed_models AS d ON d.project_id = m.project_id AND d.model_id = m.id
    WHERE m.project_id = proj.id AND m.status = 'successful' AND (algorithm IS NULL OR m.algorithm = algorithm)
    ORDER BY d.model_id IS NOT NULL DESC, m.id DESC
    LIMIT 1;
    same := FOUND;
    IF NOT same THEN  -- a new algorithm for this project: the split and preprocessing of its latest model
        SELECT m.id, m.algorithm, m.engine, m.hyperparams, m.preprocess, s.test_size, s.test_sampling INTO ref
        FROM ml_stack.models AS m
        LEFT JOIN ml_stack.snapshots AS s ON s.id = m.snapshot_id
        LEFT JOIN ml_stack.deployed_models AS d ON d.project_id = m.project_id AND d.model_id = m.id
        WHERE m.project_id = proj.id AND m.status = 'successful'
        ORDER BY d.model_id IS NOT NULL DESC, m.id DESC
        LIMIT 1;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'project "%" has no model trained in this database to retrain', project_name
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'Train it once with ml_stack.train(); imported models carry no training settings.';
        END IF;
    END IF;

    r_project_id := proj.id;
    r_task := proj.task;
    r_reference_model_id := ref.id;
    r_algorithm := coalesce(algorithm, ref.algorithm);
    r_hyperparams := coalesce(hyperparams, CASE WHEN same THEN ref.hyperparams ELSE '{}' END);
    r_engine := coalesce(engine, CASE WHEN same THEN ref.engine END);
    r_preprocess := coalesce(preprocess, ref.preprocess, '{}');
    r_test_size := coalesce(test_size, ref.test_size, 0.25);
    r_test_sampling := coalesce(test_sampling, ref.test_sampling, 'random');

    -- checked now, so that a schedule with a typo fails when it is made, not every night
    PERFORM ml_stack._choose_engine(r_task, r_algorithm, r_engine);
    IF jsonb_typeof(r_hyperparams) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'hyperparams must be a JSON object' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'e.g. hyperparams => ''{"alpha": 0.5}'', or NULL for the reference model''s.';
    END IF;
    IF jsonb_typeof(r_preprocess) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'preprocess must be a JSON object' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'e.g. preprocess => ''{"bmi": {"impute": "median"}}'', or NULL for the reference model''s.';
    END IF;
    PERFORM ml_stack._check_test_sampling(r_test_sampling);
    IF NOT r_test_size > 0 THEN
        RAISE EXCEPTION 'test_size must be a fraction in (0, 1) or a row count >= 1, got %', r_test_size
            USING ERRCODE = 'invalid_parameter_value', HINT = 'e.g. test_size => 0.25, or NULL for the reference model''s.';
    END IF;

    -- the schema of the relation of the project's last train (regclass text, qualified: see _train)
    SELECT s.relation_name INTO relname
    FROM ml_stack.snapshots AS s JOIN ml_stack.models AS m ON m.snapshot_id = s.id
    WHERE s.project_id = proj.id AND m.status = 'successful'
    ORDER BY s.id DESC
    LIMIT 1;
    BEGIN
        parts := parse_ident(relname);
    EXCEPTION WHEN OTHERS THEN
        parts := NULL;
    END;
    r_search_path := CASE WHEN cardinality(parts) = 2 THEN quote_ident(parts[1]) ELSE current_setting('search_path') END;
END
$$;

-- Called by _train (sql/training/train.sql) once a manual train has written its model: one 'manual' row in
-- the history. Skipped inside ml_stack.run_training, which records its own row (transaction-local setting
-- ml_stack.training_run). A train that fails never gets here: its transaction leaves no trace.
CREATE OR REPLACE FUNCTION ml_stack._record_manual_run(project_id bigint, model_id bigint, deployed boolean)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    previous_end timestamptz := nullif(current_setting('ml_stack.last_manual_run_end', true), '')::timestamptz;
    finished     timestamptz := clock_timestamp();
BEGIN
    IF coalesce(current_setting('ml_stack.training_run', true), '') <> '' THEN
        RETURN;
    END IF;
    -- the run started with its statement, or after the previous train of the same statement (a loop)
    INSERT INTO ml_stack.training_runs (project_id, project_name, job_name, trigger, status, started_at, finished_at,
                                        algorithm, hyperparams, model_id, deployed)
    SELECT p.id, p.name, NULL, 'manual', 'succeeded',
           greatest(statement_timestamp(), coalesce(previous_end, '-infinity')), finished,
           m.algorithm, m.hyperparams, m.id, deployed
    FROM ml_stack.projects AS p JOIN ml_stack.models AS m ON m.project_id = p.id
    WHERE p.id = project_id AND m.id = model_id;
    PERFORM set_config('ml_stack.last_manual_run_end', finished::text, true);
END
$$;

-- The command of every scheduled training job: one retrain of the project, recorded in ml_stack.training_runs
-- whatever happens. The 'running' row is committed first; a failure is recorded and committed in the handler
-- and then raised again, so that pg_cron records it too (cron.job_run_details) with the original error.
-- A procedure with COMMIT cannot carry a SET clause: the search_path is pinned by set_config for each
-- transaction instead, and every name is schema-qualified. It must be CALLed at top level (as pg_cron does),
-- not inside a transaction block.
CREATE OR REPLACE PROCEDURE ml_stack.run_training(
    job_name         text,
    project_name     text,
    algorithm        text    DEFAULT NULL,
    hyperparams      jsonb   DEFAULT NULL,
    test_size        real    DEFAULT NULL,
    test_sampling    text    DEFAULT NULL,
    preprocess       jsonb   DEFAULT NULL,
    engine           text    DEFAULT NULL,
    automatic_deploy boolean DEFAULT true)
LANGUAGE plpgsql
AS $$
#variable_conflict use_variable
DECLARE
    run_id     bigint;
    proj_id    bigint;
    settings   record;
    trained    record;
    run_algorithm   text;
    run_hyperparams jsonb;
    err_message text;
    err_state   text;
BEGIN
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    IF project_name IS NULL OR btrim(project_name) = '' THEN
        RAISE EXCEPTION 'project_name is required' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'CALL ml_stack.run_training(job_name, project_name); SELECT name FROM ml_stack.projects lists the projects.';
    END IF;
    -- runs whose server process is gone (terminated, crashed) will never finish: say so
    UPDATE ml_stack.training_runs AS t
    SET status = 'failed', error = 'the run did not finish: its server process ended first'
    WHERE t.status = 'running'
      AND NOT EXISTS (SELECT FROM pg_catalog.pg_stat_activity AS a
                      WHERE a.pid = t.pid AND (a.backend_start IS NULL OR a.backend_start <= t.started_at));
    SELECT p.id INTO proj_id FROM ml_stack.projects AS p WHERE p.name = project_name;
    INSERT INTO ml_stack.training_runs (project_id, project_name, job_name, trigger, status)
    VALUES (proj_id, project_name, job_name,
            CASE WHEN job_name IS NOT NULL AND pg_catalog.current_setting('application_name') = 'pg_cron'
                 THEN 'cron' ELSE 'manual' END,
            'running')
    RETURNING id INTO run_id;
    COMMIT;  -- the run is on record from now on, whatever follows

    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    PERFORM pg_catalog.set_config('ml_stack.training_run', run_id::text, true);  -- _record_manual_run: not a manual train
    BEGIN
        settings := ml_stack._retrain_settings(project_name, algorithm, hyperparams, test_size, test_sampling,
                                               preprocess, engine);
        run_algorithm := settings.r_algorithm;
        run_hyperparams := settings.r_hyperparams;
        -- train() resolves the project's relation with the caller's search_path: the schema it was found in
        PERFORM pg_catalog.set_config('search_path', settings.r_search_path, true);
        SELECT t.model_id, t.deployed INTO trained
        FROM ml_stack.train(project_name => project_name, algorithm => settings.r_algorithm,
                            hyperparams => settings.r_hyperparams, test_size => settings.r_test_size,
                            test_sampling => settings.r_test_sampling, preprocess => settings.r_preprocess,
                            automatic_deploy => coalesce(automatic_deploy, true), engine => settings.r_engine) AS t;
        PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
        UPDATE ml_stack.training_runs AS t
        SET status = 'succeeded', finished_at = pg_catalog.clock_timestamp(), project_id = settings.r_project_id,
            algorithm = run_algorithm, hyperparams = run_hyperparams,
            model_id = trained.model_id, deployed = trained.deployed
        WHERE t.id = run_id;
    EXCEPTION WHEN OTHERS OR query_canceled THEN
        GET STACKED DIAGNOSTICS err_message = MESSAGE_TEXT, err_state = RETURNED_SQLSTATE;
        PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
        UPDATE ml_stack.training_runs AS t
        SET status = 'failed', finished_at = pg_catalog.clock_timestamp(), error = err_message, sqlstate = err_state,
            algorithm = run_algorithm, hyperparams = run_hyperparams
        WHERE t.id = run_id;
        COMMIT;  -- keep the failure on record, then fail: pg_cron records the original error too
        RAISE;
    END;
END
$$;
COMMENT ON PROCEDURE ml_stack.run_training(text, text, text, jsonb, real, text, jsonb, text, boolean) IS
    'ml_stack: the command of a scheduled training job (ml_stack.schedule_training): retrain the project on its relation''s current rows with the settings of its deployed model (or of its most recent one) for every argument left NULL, deploy the new model only if it beats the deployed one, and record the run in ml_stack.training_runs, failed or not (a failure is raised again after it is recorded). CALL it at top level, not in a transaction block.';
