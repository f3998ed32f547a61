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
