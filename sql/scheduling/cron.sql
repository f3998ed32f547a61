-- Scheduled retraining with pg_cron (docs/design-notes/pg-cron.md). ml_stack installs and works without
-- pg_cron: nothing here refers to schema cron until a helper runs, and the helpers check first.

-- What keeps pg_cron from running jobs in this database, or NULL when nothing does. SECURITY DEFINER because
-- shared_preload_libraries and cron.database_name are readable only by superusers and pg_read_all_settings;
-- it returns a sentence, never the settings themselves. EXECUTE is revoked from PUBLIC: grant it to the roles
-- that schedule training.
CREATE OR REPLACE FUNCTION ml_stack._cron_problem()
RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    preload text;
    cron_db text;
BEGIN
    BEGIN
        preload := current_setting('shared_preload_libraries');
        cron_db := current_setting('cron.database_name', true);
    EXCEPTION WHEN insufficient_privilege THEN
        RETURN format('ml_stack cannot check shared_preload_libraries and cron.database_name: the owner of ml_stack '
                      '(role %s) needs superuser or pg_read_all_settings', current_user);
    END;
    IF preload IS NULL OR preload !~ '(^|[\s,"/])pg_cron(\.so)?($|[\s,"])' THEN
        RETURN 'pg_cron is not loaded: shared_preload_libraries does not include pg_cron';
    END IF;
    IF cron_db IS DISTINCT FROM current_database() THEN
        RETURN format('pg_cron runs its jobs in database "%s" (cron.database_name), not in this database "%s"',
                      coalesce(cron_db, 'postgres'), current_database());
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_extension AS e WHERE e.extname = 'pg_cron') THEN
        RETURN 'the pg_cron extension is not created in this database';
    END IF;
    RETURN NULL;
END
$$;
REVOKE EXECUTE ON FUNCTION ml_stack._cron_problem() FROM PUBLIC;

-- Raise, naming pg_cron, shared_preload_libraries and cron.database_name and what to do, unless the calling
-- role can schedule jobs with pg_cron in this database.
CREATE OR REPLACE FUNCTION ml_stack._require_cron()
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    problem text;
    recipe  text := format('Scheduled training needs pg_cron running jobs in this database: in postgresql.conf, '
                           'shared_preload_libraries = ''pg_cron'' and cron.database_name = %L (restart PostgreSQL '
                           'after changing them), then CREATE EXTENSION pg_cron in database %I. '
                           'Everything else in ml_stack works without pg_cron.', current_database(), current_database());
BEGIN
    IF NOT has_function_privilege('ml_stack._cron_problem()', 'EXECUTE') THEN
        RAISE EXCEPTION 'role % may not check whether pg_cron is usable here', current_user
            USING ERRCODE = 'insufficient_privilege',
                  HINT = format('GRANT EXECUTE ON FUNCTION ml_stack._cron_problem() TO %I (as the owner of ml_stack). ', current_user)
                         || recipe;
    END IF;
    problem := ml_stack._cron_problem();
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION 'pg_cron is not usable in database "%": %', current_database(), problem
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = CASE WHEN problem LIKE 'pg_cron runs its jobs in database %'
                              THEN 'pg_cron runs jobs in one database per server. Either install ml_stack in the database '
                                   'named by cron.database_name and schedule there, or: ' || recipe
                              ELSE recipe END;
    END IF;
    IF NOT has_schema_privilege('cron', 'USAGE')
       OR NOT has_function_privilege('cron.schedule(text, text, text)', 'EXECUTE')
       OR NOT has_function_privilege('cron.unschedule(bigint)', 'EXECUTE') THEN
        RAISE EXCEPTION 'role % may not use pg_cron (schema cron)', current_user
            USING ERRCODE = 'insufficient_privilege',
                  HINT = format('As a superuser: GRANT USAGE ON SCHEMA cron TO %I. (pg_cron itself is set up: '
                                'shared_preload_libraries has pg_cron and cron.database_name is this database.)', current_user);
    END IF;
END
$$;

-- The prefix of every job command that ml_stack made: the jobs it lists, reschedules and unschedules.
CREATE OR REPLACE FUNCTION ml_stack._training_command_prefix()
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT 'CALL ml_stack.run_training(job_name => ' $$;

-- The project name in a job command written by schedule_training (NULL for any other text). The command
-- starts "CALL ml_stack.run_training(job_name => <literal>, project_name => <literal>"; literals are what
-- format('%L') writes: '...' with '' for a quote, or E'...' with \\ for a backslash when there is one.
CREATE OR REPLACE FUNCTION ml_stack._training_job_project(command text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    m text[];
BEGIN
    m := regexp_match(command, '^CALL ml_stack\.run_training\(job_name => E?''(?:[^'']|'''')*'', '
                               'project_name => (E?)''((?:[^'']|'''')*)''');
    IF m IS NULL THEN
        RETURN NULL;
    END IF;
    RETURN CASE WHEN m[1] = 'E' THEN replace(replace(m[2], '''''', ''''), '\\', '\')
                ELSE replace(m[2], '''''', '''') END;
END
$$;

CREATE OR REPLACE FUNCTION ml_stack.schedule_training(
    job_name         text,
    schedule         text,
    project_name     text,
    algorithm        text    DEFAULT NULL,
    hyperparams      jsonb   DEFAULT NULL,
    test_size        real    DEFAULT NULL,
    test_sampling    text    DEFAULT NULL,
    preprocess       jsonb   DEFAULT NULL,
    engine           text    DEFAULT NULL,
    automatic_deploy boolean DEFAULT true)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    existing record;
    command  text;
    jobid    bigint;
BEGIN
    IF job_name IS NULL OR btrim(job_name) = '' THEN
        RAISE EXCEPTION 'job_name is required' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Name the job, e.g. ml_stack.schedule_training(''diabetes_nightly'', ''0 3 * * *'', ''diabetes'').';
    END IF;
    IF octet_length(job_name) > 63 THEN
        RAISE EXCEPTION 'job_name "%" is longer than 63 bytes', job_name USING ERRCODE = 'invalid_parameter_value',
            HINT = 'pg_cron stores job names as type name (at most 63 bytes): choose a shorter name.';
    END IF;
    IF schedule IS NULL OR btrim(schedule) = '' THEN
        RAISE EXCEPTION 'schedule is required' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'A cron schedule such as ''0 3 * * *'' (03:00 every day, in the server''s time zone) or ''@daily''.';
    END IF;
    PERFORM ml_stack._require_cron();
    -- the project and what its retrain will train: fails now rather than at every run
    PERFORM ml_stack._retrain_settings(project_name, algorithm, hyperparams, test_size, test_sampling, preprocess, engine);

    EXECUTE 'SELECT j.jobid, j.command FROM cron.job AS j WHERE j.jobname = $1 AND j.username = current_user'
        INTO existing USING job_name;
    IF existing.jobid IS NOT NULL AND NOT starts_with(existing.command, ml_stack._training_command_prefix()) THEN
        RAISE EXCEPTION 'pg_cron job "%" exists and is not an ml_stack training job', job_name
            USING ERRCODE = 'duplicate_object',
                  DETAIL = format('Its command: %s', existing.command),
                  HINT = 'Choose another job name; ml_stack does not replace jobs it did not make.';
    END IF;

    command := ml_stack._training_command_prefix() || format('%L, project_name => %L', job_name, project_name)
        || CASE WHEN algorithm IS NULL THEN '' ELSE format(', algorithm => %L', algorithm) END
        || CASE WHEN hyperparams IS NULL THEN '' ELSE format(', hyperparams => %L', hyperparams) END
        || CASE WHEN test_size IS NULL THEN '' ELSE format(', test_size => %L', test_size) END
        || CASE WHEN test_sampling IS NULL THEN '' ELSE format(', test_sampling => %L', test_sampling) END
        || CASE WHEN preprocess IS NULL THEN '' ELSE format(', preprocess => %L', preprocess) END
        || CASE WHEN engine IS NULL THEN '' ELSE format(', engine => %L', engine) END
        || CASE WHEN automatic_deploy IS DISTINCT FROM false THEN '' ELSE ', automatic_deploy => false' END
        || ')';
    BEGIN
        -- the same name again updates the job in place and keeps its jobid (pg_cron 1.4)
        EXECUTE 'SELECT cron.schedule($1, $2, $3)' INTO jobid USING job_name, schedule, command;
    EXCEPTION WHEN invalid_parameter_value THEN
        RAISE EXCEPTION '%', SQLERRM USING ERRCODE = 'invalid_parameter_value',
            HINT = 'pg_cron takes a cron schedule of five fields (minute hour day-of-month month day-of-week), '
                   'e.g. ''0 3 * * *'' for 03:00 every day or ''*/15 * * * *'', or @hourly, @daily, @weekly, '
                   '@monthly, @yearly; the finest is one minute.';
    END;
    RETURN jobid;
END
$$;
COMMENT ON FUNCTION ml_stack.schedule_training(text, text, text, text, jsonb, real, text, jsonb, text, boolean) IS
    'ml_stack: schedule a pg_cron job that retrains the project on its relation''s current rows (CALL ml_stack.run_training(...)): arguments left NULL come from the deployed model (or the most recent one) at each run; the new model is deployed only if it beats the deployed one; every run is recorded in ml_stack.training_runs. The same job name again reschedules. Returns the pg_cron jobid. Needs pg_cron in this database.';

CREATE OR REPLACE FUNCTION ml_stack.unschedule_training(job_name text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    existing record;
    removed  boolean;
BEGIN
    PERFORM ml_stack._require_cron();
    EXECUTE 'SELECT j.jobid, j.command FROM cron.job AS j WHERE j.jobname = $1 AND j.username = current_user'
        INTO existing USING job_name;
    IF existing.jobid IS NULL THEN
        RAISE EXCEPTION 'no training job named "%"', job_name
            USING ERRCODE = 'undefined_object',
                  HINT = 'SELECT job_name, project FROM ml_stack.training_jobs lists your training jobs.';
    END IF;
    IF NOT starts_with(existing.command, ml_stack._training_command_prefix()) THEN
        RAISE EXCEPTION 'pg_cron job "%" is not an ml_stack training job', job_name
            USING ERRCODE = 'wrong_object_type',
                  DETAIL = format('Its command: %s', existing.command),
                  HINT = 'Remove it with cron.unschedule() if you mean to.';
    END IF;
    EXECUTE 'SELECT cron.unschedule($1::bigint)' INTO removed USING existing.jobid;
    RETURN removed;
END
$$;
COMMENT ON FUNCTION ml_stack.unschedule_training(text) IS
    'ml_stack: remove a training job made by ml_stack.schedule_training (a run in progress is cancelled). Its history stays in ml_stack.training_runs.';

-- The rows of view ml_stack.training_jobs. A function, so that ml_stack installs without pg_cron (a view over
-- cron.job could not be created); it returns no rows when pg_cron is not in this database or the caller has no
-- USAGE on schema cron. pg_cron's row-level security shows each role its own jobs (a superuser all).
-- The last run is pg_cron's latest run of the job, with the ml_stack run it executed (same server process),
-- unless ml_stack's history has a newer run of the job (its command CALLed by hand, or pg_cron's log purged).
CREATE OR REPLACE FUNCTION ml_stack._training_jobs()
RETURNS TABLE (job_name text, jobid bigint, schedule text, project text, active boolean, username text,
               last_run_start timestamptz, last_run_end timestamptz, last_run_status text, last_run_message text,
               run_id bigint, model_id bigint, deployed boolean, command text, deploy_decision text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    -- a role that may not read the history still sees its jobs, without the run's model
    runs text := CASE WHEN has_table_privilege('ml_stack.training_runs', 'SELECT') THEN 'ml_stack.training_runs'
                      ELSE '(SELECT NULL::bigint AS id, NULL::timestamptz AS started_at, NULL::timestamptz AS finished_at,'
                           ' NULL::text AS status, NULL::text AS error, NULL::bigint AS model_id,'
                           ' NULL::boolean AS deployed, NULL::integer AS pid, NULL::text AS job_name,'
                           ' NULL::text AS username LIMIT 0)' END;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_extension AS e WHERE e.extname = 'pg_cron') THEN
        RETURN;
    END IF;
    IF NOT has_schema_privilege('cron', 'USAGE') THEN
        RETURN;
    END IF;
    IF NOT has_table_privilege('cron.job', 'SELECT') OR NOT has_table_privilege('cron.job_run_details', 'SELECT') THEN
        RETURN;
    END IF;
    RETURN QUERY EXECUTE format($q$
        SELECT j.jobname::text, j.jobid, j.schedule, ml_stack._training_job_project(j.command), j.active,
               j.username::text,
               CASE WHEN x.src = 'ml_stack' THEN r.started_at ELSE c.start_time END,
               CASE WHEN x.src = 'ml_stack' THEN r.finished_at ELSE c.end_time END,
               CASE WHEN x.src = 'ml_stack' THEN r.status ELSE c.status END,
               CASE WHEN x.src = 'ml_stack' THEN r.error ELSE c.return_message END,
               CASE WHEN x.src <> 'cron' THEN r.id END,
               CASE WHEN x.src <> 'cron' THEN r.model_id END,
               CASE WHEN x.src <> 'cron' THEN r.deployed END,
               j.command,
               CASE WHEN x.src <> 'cron' THEN ml_stack._deploy_decision(r.model_id) END
        FROM cron.job AS j
        LEFT JOIN LATERAL (
            SELECT d.start_time, d.end_time, d.status, d.return_message, d.job_pid
            FROM cron.job_run_details AS d WHERE d.jobid = j.jobid
            ORDER BY d.runid DESC LIMIT 1) AS c ON true
        LEFT JOIN LATERAL (
            SELECT t.id, t.started_at, t.finished_at, t.status, t.error, t.model_id, t.deployed, t.pid
            FROM %s AS t WHERE t.job_name = j.jobname::text AND t.username = j.username::text
            ORDER BY t.id DESC LIMIT 1) AS r ON true
        -- r ran in pg_cron's last run when it ran in its process, during it. pg_cron's launcher stamps
        -- start_time once it has sent the command, which the job's process may have begun running:
        -- its started_at can come first, by milliseconds
        CROSS JOIN LATERAL (SELECT CASE
            WHEN c.start_time IS NOT NULL AND r.pid = c.job_pid
                 AND r.started_at BETWEEN c.start_time - interval '5 seconds' AND coalesce(c.end_time, 'infinity') THEN 'both'
            WHEN c.start_time IS NOT NULL AND (r.id IS NULL OR c.start_time > r.started_at) THEN 'cron'
            WHEN r.id IS NOT NULL THEN 'ml_stack'
            END AS src) AS x
        WHERE starts_with(j.command, ml_stack._training_command_prefix()) AND j.database = current_database()
        ORDER BY j.jobid
    $q$, runs);
END
$$;

-- The recorded deploy decision of a model (row security may hide a confidential project's: NULL).
CREATE OR REPLACE FUNCTION ml_stack._deploy_decision(model_id bigint)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT m.deploy_decision FROM ml_stack.models AS m WHERE m.id = _deploy_decision.model_id $$;

CREATE OR REPLACE VIEW ml_stack.training_jobs AS
SELECT * FROM ml_stack._training_jobs();
COMMENT ON VIEW ml_stack.training_jobs IS
    'ml_stack: the training jobs scheduled with ml_stack.schedule_training (pg_cron jobs visible to the current role): schedule, project, whether active, and the last run: start, end, status and message (from cron.job_run_details, or from ml_stack.training_runs when that has a newer run), the ml_stack run, the model it produced, whether it was deployed and why (deploy_decision). Empty without pg_cron.';
