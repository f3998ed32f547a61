-- 0.5.0: ml_stack.training_jobs shows the last run's deploy decision, a new column of the view
-- and of the function behind it, which therefore are made again (scheduling/cron.sql). Checked
-- rather than DROP ... IF EXISTS, which would print a NOTICE in a fresh install.
DO $$
BEGIN
    IF to_regclass('ml_stack.training_jobs') IS NOT NULL THEN
        DROP VIEW ml_stack.training_jobs;
    END IF;
    IF to_regprocedure('ml_stack._training_jobs()') IS NOT NULL THEN
        DROP FUNCTION ml_stack._training_jobs();
    END IF;
END
$$;
