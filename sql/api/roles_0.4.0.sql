-- 0.4.0: the group roles of ml_stack (DESIGN §3c), NOLOGIN, created when missing (roles
-- belong to the cluster: another database's ml_stack may have made them). Each holds
-- what its work needs (api/grants.sql); grant them to login roles:
--   ml_stack_predictor  predicts with every project's deployed model, reads the registry
--   ml_stack_trainer    also trains, deploys and schedules retraining (and predicts)
--   ml_stack_admin      also exposes projects over HTTP and deletes from the registry
-- An installer without CREATEROLE gets a NOTICE instead, and api/grants.sql grants to the
-- roles that exist.
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['ml_stack_predictor', 'ml_stack_trainer', 'ml_stack_admin'] LOOP
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles AS ro WHERE ro.rolname = r) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', r);
            EXCEPTION WHEN insufficient_privilege THEN
                RAISE NOTICE 'ml_stack: role % not created (this role may not create roles); a superuser can: CREATE ROLE % NOLOGIN, then ALTER EXTENSION ml_stack UPDATE grants it its rights', r, r;
            END;
        END IF;
    END LOOP;
    -- each role does what the one before it does
    IF to_regrole('ml_stack_trainer') IS NOT NULL AND to_regrole('ml_stack_predictor') IS NOT NULL
       AND NOT pg_catalog.pg_has_role('ml_stack_trainer', 'ml_stack_predictor', 'MEMBER') THEN
        GRANT ml_stack_predictor TO ml_stack_trainer;
    END IF;
    IF to_regrole('ml_stack_admin') IS NOT NULL AND to_regrole('ml_stack_trainer') IS NOT NULL
       AND NOT pg_catalog.pg_has_role('ml_stack_admin', 'ml_stack_trainer', 'MEMBER') THEN
        GRANT ml_stack_trainer TO ml_stack_admin;
    END IF;
END
$$;
