-- 0.3.0: change tracking of vector jobs' tables for the numpy search cache (python_engine/vector_search.sql).
CREATE SEQUENCE ml_stack.vector_job_change_stamp;
COMMENT ON SEQUENCE ml_stack.vector_job_change_stamp IS
    'ml_stack_python internal: a fresh value per statement that writes a vector job''s table (ml_stack.vector_job_changes.stamp_sum).';

-- Not extension configuration: not dumped (a restored database starts with no rows; the caches of its backends
-- start empty too).
CREATE TABLE ml_stack.vector_job_changes (
    job_id     bigint NOT NULL REFERENCES ml_stack.vector_job_definitions (id) ON DELETE CASCADE,
    xid        xid8,              -- the writing (top-level) transaction; NULL: totals folded from older rows
    n          bigint NOT NULL,   -- transactions counted by this row (1 for a transaction's own row)
    xid_sum    numeric NOT NULL,  -- sum of their xids
    stamp_sum  numeric NOT NULL   -- sum of their last stamps (a transaction's row: the stamp of its last statement)
);
CREATE UNIQUE INDEX vector_job_changes_job_xid ON ml_stack.vector_job_changes (job_id, xid);
COMMENT ON TABLE ml_stack.vector_job_changes IS
    'ml_stack_python internal: the transactions that wrote each vector job''s table (one row each; older ones folded into totals). sum(n), sum(xid_sum), sum(stamp_sum) in a snapshot tell a backend''s cached matrix of the job (vector_search.py) whether it is still exact.';
-- the search runs as its caller, who reads this to know whether its cache is current
GRANT SELECT ON ml_stack.vector_job_changes TO PUBLIC;

