-- History of training runs, ml_stack's own: every run of a scheduled retraining job, failed or not, and every
-- successful manual train() (a manual train that fails rolls back, leaving only its error). Unlike
-- cron.job_run_details it is extension configuration (pg_dump keeps it) and outlives pg_cron's log purges.
CREATE TABLE ml_stack.training_runs (
    id           bigserial PRIMARY KEY,
    project_id   bigint REFERENCES ml_stack.projects (id) ON DELETE CASCADE,  -- NULL: no such project at the run
    project_name text NOT NULL,
    job_name     text,              -- the pg_cron job (ml_stack.schedule_training); NULL for a train() call
    trigger      text NOT NULL CHECK (trigger IN ('cron', 'manual')),  -- 'cron': started by pg_cron
    status       text NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    started_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at  timestamptz,       -- NULL while running, and for a run whose server process died
    algorithm    text,              -- what was trained (NULL when the run failed before deciding it)
    hyperparams  jsonb,
    model_id     bigint REFERENCES ml_stack.models (id) ON DELETE SET NULL,
    deployed     boolean,           -- whether the new model was deployed (only when it beat the deployed one)
    error        text,              -- a failed run's error message
    sqlstate     text,              -- and its SQLSTATE
    username     text NOT NULL DEFAULT current_user,
    pid          integer NOT NULL DEFAULT pg_backend_pid(),  -- the server process (cron.job_run_details.job_pid)
    CHECK ((status = 'failed') = (error IS NOT NULL))
);
CREATE INDEX ON ml_stack.training_runs (job_name, id);
CREATE INDEX ON ml_stack.training_runs (project_id);
CREATE INDEX ON ml_stack.training_runs (model_id);
COMMENT ON TABLE ml_stack.training_runs IS
    'ml_stack: history of training runs: every run of a scheduled job (trigger cron, or manual when its command was called by hand), failed or not, and every successful train() (trigger manual). Extension configuration: kept by pg_dump; outlives pg_cron''s log.';

SELECT pg_catalog.pg_extension_config_dump('ml_stack.training_runs', '');
SELECT pg_catalog.pg_extension_config_dump('ml_stack.training_runs_id_seq', '');
