-- 0.3.0: vector jobs (docs/vectors-jobs-search.md). A job keeps the embeddings of
-- a table's text columns in sync in a table of its own, ml_stack._vectors_<id>,
-- made at run time (not an extension member, so pg_dump dumps it with its rows).
-- These two tables hold the jobs and their work queue: extension configuration,
-- so pg_dump dumps their rows too, and a restored database keeps its jobs.
CREATE TABLE ml_stack.vector_job_definitions (
    id                  bigserial PRIMARY KEY,
    job_name            text NOT NULL UNIQUE CHECK (job_name <> ''),
    -- regclass: follows renames; pg_dump writes it schema-qualified, a restore resolves it again
    -- (pg_upgrade keeps relation OIDs, so regclass columns are allowed there)
    relation            regclass NOT NULL,
    primary_key         name NOT NULL,
    columns             name[] NOT NULL CHECK (cardinality(columns) > 0),
    transformer         text NOT NULL,
    spec                jsonb NOT NULL,       -- _resolve_transformer's answer at creation (a vectorizer's version is kept)
    schedule            text NOT NULL,        -- 'realtime' or a cron schedule
    options             jsonb NOT NULL DEFAULT '{}',   -- as given, job keys and transformer options together
    text_config         text NOT NULL,        -- text search configuration of the lexemes (keyword search)
    batch_size          integer NOT NULL CHECK (batch_size > 0),
    vectors_table       name NOT NULL UNIQUE, -- in schema ml_stack
    created_by          name NOT NULL DEFAULT current_user,
    created_at          timestamptz NOT NULL DEFAULT now(),
    last_processed_at   timestamptz           -- the last process_vector_jobs run over this job
);
COMMENT ON TABLE ml_stack.vector_job_definitions IS
    'ml_stack: vector jobs (ml_stack.create_vector_job): source relation, primary key, text columns, transformer, schedule, and the table ml_stack.<vectors_table> that holds the embeddings. See the view ml_stack.vector_jobs.';

-- Rows waiting to be embedded (model transformers, cron schedules) or whose
-- embedding failed (retried by the next process_vector_jobs run). key: the primary
-- key's value as text (its type's output), cast back to the key type when read.
CREATE TABLE ml_stack.vector_job_queue (
    job_id       bigint NOT NULL REFERENCES ml_stack.vector_job_definitions (id) ON DELETE CASCADE,
    key          text NOT NULL,
    enqueued_at  timestamptz NOT NULL DEFAULT now(),
    attempts     integer NOT NULL DEFAULT 0,   -- failed attempts so far
    last_error   text,
    failed_at    timestamptz,
    PRIMARY KEY (job_id, key)
);
COMMENT ON TABLE ml_stack.vector_job_queue IS
    'ml_stack: the rows of vector jobs waiting to be embedded (key = primary key as text), with the failed attempts, the last error and when it happened; ml_stack.process_vector_jobs() drains it.';

SELECT pg_catalog.pg_extension_config_dump('ml_stack.vector_job_definitions', '');
SELECT pg_catalog.pg_extension_config_dump('ml_stack.vector_job_definitions_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('ml_stack.vector_job_queue', '');
