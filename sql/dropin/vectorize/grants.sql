-- Schema vectorize follows ml_stack's boundary (ml_stack's api/grants.sql): no USAGE for PUBLIC, USAGE for
-- ml_stack's group roles; every function runs with the caller's rights and reaches ml_stack's. A trainer
-- may CREATE in vectorize: vectorize.table makes its views there, as pg_vectorize makes its tables.
DO $$
BEGIN
    IF to_regrole('ml_stack_predictor') IS NOT NULL THEN
        EXECUTE 'GRANT USAGE ON SCHEMA vectorize TO ml_stack_predictor';
        EXECUTE 'GRANT SELECT ON vectorize.job, vectorize._job_settings, vectorize.example_products TO ml_stack_predictor';
    END IF;
    IF to_regrole('ml_stack_trainer') IS NOT NULL THEN
        EXECUTE 'GRANT USAGE, CREATE ON SCHEMA vectorize TO ml_stack_trainer';
        EXECUTE 'GRANT SELECT, INSERT ON vectorize._job_settings TO ml_stack_trainer';
        EXECUTE 'GRANT SELECT ON vectorize.job, vectorize.example_products TO ml_stack_trainer';
    END IF;
    IF to_regrole('ml_stack_admin') IS NOT NULL THEN
        EXECUTE 'GRANT USAGE ON SCHEMA vectorize TO ml_stack_admin';
        EXECUTE 'GRANT SELECT, INSERT, DELETE ON vectorize._job_settings TO ml_stack_admin';
        EXECUTE 'GRANT SELECT ON vectorize.job, vectorize.example_products TO ml_stack_admin';
    END IF;
END
$$;
