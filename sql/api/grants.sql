-- What each group role of ml_stack may do (api/roles_0.4.0.sql), granted again by every
-- install and upgrade script (GRANT is idempotent) to the roles that exist. The boundary is
-- schema ml_stack itself: the extension grants PUBLIC no USAGE on it, so a role outside the
-- group roles (an API role of PostgREST above all) reaches nothing in it; the endpoints of
-- api/expose.sql run as ml_stack's owner. Inside, the registry tables' privileges decide
-- who writes: internal functions run with the caller's rights, and the only ones that run
-- as the owner are the triggers that compile serving (serving/compile.sql), the error
-- functions that read project names (common/serving_errors.sql) and the admin functions
-- below, whose EXECUTE is revoked from PUBLIC.
REVOKE EXECUTE ON FUNCTION ml_stack.expose(text, text, text[]) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION ml_stack.unexpose(text, text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION ml_stack._model_layout(bigint) FROM PUBLIC;   -- SECURITY DEFINER (serving/typed.sql)
REVOKE EXECUTE ON FUNCTION ml_stack._served_class_labels(text) FROM PUBLIC;   -- SECURITY DEFINER (serving/labels.sql)

DO $$
DECLARE
    registry CONSTANT text := 'ml_stack.projects, ml_stack.snapshots, ml_stack.models, ml_stack.deployments, '
                              'ml_stack.training_runs, ml_stack.vectorizers, ml_stack.vectorizer_terms, ml_stack.endpoints, '
                              'ml_stack.model_aliases, ml_stack.model_tags';
    r text;
    sequences CONSTANT text := 'ml_stack.projects_id_seq, ml_stack.snapshots_id_seq, ml_stack.models_id_seq, '
                               'ml_stack.deployments_id_seq, ml_stack.training_runs_id_seq, ml_stack.vectorizers_id_seq';
BEGIN
    IF to_regrole('ml_stack_predictor') IS NOT NULL THEN
        -- predict by project or model, predict_row (reads the layout), fitted vocabularies, the
        -- python engine's pickles (loaded with the caller's rights)
        EXECUTE 'GRANT USAGE ON SCHEMA ml_stack TO ml_stack_predictor';
        EXECUTE format('GRANT SELECT ON %s, ml_stack.deployed_models, ml_stack.transformers, ml_stack.training_jobs, '
                       'ml_stack.vector_job_definitions, ml_stack.vector_jobs TO ml_stack_predictor', registry);
        -- what confidential projects' predictors and predict_row call as the owner (serving/confidential.sql)
        EXECUTE 'GRANT EXECUTE ON FUNCTION ml_stack._confidential_scores(bigint, float8[]), '
                'ml_stack._confidential_margins(bigint, float8[]), '
                'ml_stack._confidential_python_predict(bigint, bigint, float8[]), '
                'ml_stack._confidential_python_proba(bigint, bigint, float8[]), ml_stack._model_layout(bigint), '
                'ml_stack._served_class_labels(text) TO ml_stack_predictor';
    END IF;
    IF to_regrole('ml_stack_trainer') IS NOT NULL THEN
        -- train (it reads the training relation with the trainer's own rights), deploy, schedule
        -- (pg_cron also wants GRANT USAGE ON SCHEMA cron, by a superuser)
        EXECUTE 'GRANT USAGE ON SCHEMA ml_stack TO ml_stack_trainer';
        EXECUTE format('GRANT SELECT, INSERT, UPDATE ON %s TO ml_stack_trainer', registry);

        EXECUTE format('GRANT USAGE ON SEQUENCE %s TO ml_stack_trainer', sequences);
        -- aliases and tags are a trainer's to move and remove (set_alias, delete_alias, set_tag)
        EXECUTE 'GRANT DELETE ON ml_stack.model_aliases, ml_stack.model_tags TO ml_stack_trainer';
        EXECUTE 'GRANT EXECUTE ON FUNCTION ml_stack._cron_problem(), ml_stack._count_project_models(bigint) TO ml_stack_trainer';
    END IF;
    IF to_regrole('ml_stack_admin') IS NOT NULL THEN
        EXECUTE 'GRANT USAGE ON SCHEMA ml_stack TO ml_stack_admin';
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %s TO ml_stack_admin', registry);
        EXECUTE 'GRANT EXECUTE ON FUNCTION ml_stack.expose(text, text, text[]), ml_stack.unexpose(text, text) TO ml_stack_admin';
    END IF;
    -- ml_stack.endpoints is written by expose() and unexpose() only, whose checks a row written
    -- by hand would skip: each row becomes SECURITY DEFINER functions granted to the roles it
    -- names (0.6.0 takes back the writes 0.4.0 granted)
    FOR r IN SELECT g FROM unnest(ARRAY['ml_stack_trainer', 'ml_stack_admin']) AS g WHERE to_regrole(g) IS NOT NULL LOOP
        EXECUTE format('REVOKE INSERT, UPDATE, DELETE ON ml_stack.endpoints FROM %I', r);
    END LOOP;
END
$$;
