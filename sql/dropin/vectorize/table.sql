-- vectorize.table: pg_vectorize's job over ml_stack.create_vector_job. The embeddings live in ml_stack
-- (ml_stack.vector_jobs); vectorize._embeddings_<job> (primary key, embeddings, updated_at) and
-- vectorize.<job>_view (the source rows with their embeddings) are views of them, as pg_vectorize's
-- 'join' method lays them out. Both parameter names of the relation work: "relation" (pg_vectorize 0.22)
-- and "table" (before); so every parameter has a default and the required ones are checked here.
-- Rows already in the table are embedded before it returns (pg_vectorize's worker does it a moment
-- later), so a search right after finds them.
CREATE OR REPLACE FUNCTION vectorize._table(relation text, columns text[], job_name text, primary_key text, schema text,
                                            update_col text, index_dist_type vectorize.indexdist, transformer text,
                                            table_method vectorize.tablemethod, schedule text, caller_search_path text)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    job ml_stack.vector_job_definitions;
    new_id bigint;
    missing text;
    quiet text;
BEGIN
    missing := concat_ws(', ', CASE WHEN job_name IS NULL THEN 'job_name' END, CASE WHEN relation IS NULL THEN 'relation' END,
                         CASE WHEN primary_key IS NULL THEN 'primary_key' END, CASE WHEN columns IS NULL THEN 'columns' END);
    IF missing <> '' THEN
        RAISE EXCEPTION 'vectorize.table needs %', missing USING ERRCODE = 'invalid_parameter_value',
            HINT = 'e.g. vectorize.table(job_name => ''product_search'', relation => ''products'', primary_key => ''product_id'', columns => ARRAY[''product_name'', ''description''])';
    END IF;
    IF job_name !~ '^[A-Za-z0-9_]{1,50}$' THEN
        RAISE EXCEPTION 'job_name "%" must be letters, digits and underscores, at most 50', left(job_name, 100)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'e.g. ''product_search'' (its views are named after it).';
    END IF;
    IF schema IS NULL OR table_method IS NULL OR index_dist_type IS NULL OR schedule IS NULL THEN
        RAISE EXCEPTION 'vectorize.table: schema, table_method, index_dist_type and schedule cannot be NULL'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'Leave them out for their defaults.';
    END IF;
    IF table_method <> 'join' THEN
        RAISE EXCEPTION 'table_method ''append'' is not available: ml_stack does not write into the source table'
            USING ERRCODE = 'feature_not_supported',
                  HINT = format('Use table_method => ''join'' (the default): vectorize.%I joins the rows with their embeddings.', job_name || '_view');
    END IF;
    IF index_dist_type NOT IN ('pgv_hnsw_cosine', 'vsc_diskann_cosine') THEN
        RAISE EXCEPTION 'index_dist_type % is not implemented: the search ranks by cosine similarity', index_dist_type
            USING ERRCODE = 'feature_not_supported', HINT = 'Use index_dist_type => ''pgv_hnsw_cosine'' (the default).';
    END IF;
    -- the relation is in "schema" (pg_vectorize's parameter) unless its name says which; ml_stack's NOTICE
    -- about queued rows would mislead here (they are embedded below): ours comes after
    quiet := current_setting('client_min_messages');
    PERFORM set_config('client_min_messages', 'warning', true);
    new_id := ml_stack._create_vector_job(job_name, CASE WHEN relation LIKE '%.%' THEN relation ELSE format('%I.%I', schema, relation) END,
                                          primary_key, columns, vectorize._transformer(transformer), schedule, '{}',
                                          caller_search_path);
    PERFORM set_config('client_min_messages', quiet, true);
    SELECT d.* INTO job FROM ml_stack.vector_job_definitions AS d WHERE d.id = new_id;
    INSERT INTO vectorize._job_settings (job_id, index_dist_type, table_method, update_col, params)
    VALUES (new_id, index_dist_type, table_method, CASE WHEN schedule <> 'realtime' THEN update_col END,
            jsonb_build_object('schema', (SELECT n.nspname FROM pg_catalog.pg_class AS c JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace WHERE c.oid = job.relation),
                               'relation', (SELECT c.relname FROM pg_catalog.pg_class AS c WHERE c.oid = job.relation),
                               'columns', to_jsonb(columns), 'update_time_col', CASE WHEN schedule <> 'realtime' THEN update_col END,
                               'table_method', table_method, 'primary_key', primary_key,
                               'pkey_type', ml_stack._vector_job_key_type(job), 'schedule', schedule));
    EXECUTE format('CREATE VIEW vectorize.%I WITH (security_invoker = true) AS SELECT v.id AS %I, v.embedding AS embeddings, v.updated_at FROM ml_stack.%I AS v',
                   '_embeddings_' || job_name, primary_key, job.vectors_table);
    EXECUTE format('CREATE VIEW vectorize.%I WITH (security_invoker = true) AS SELECT t0.*, t1.embeddings, t1.updated_at AS embeddings_updated_at '
                   'FROM %s AS t0 JOIN vectorize.%I AS t1 ON t0.%I = t1.%I',
                   job_name || '_view', job.relation, '_embeddings_' || job_name, primary_key, primary_key);
    EXECUTE format('COMMENT ON VIEW vectorize.%I IS %L', '_embeddings_' || job_name,
                   format('ml_stack_vectorize: the embeddings of job %s (ml_stack.%s).', job_name, job.vectors_table));
    EXECUTE format('COMMENT ON VIEW vectorize.%I IS %L', job_name || '_view',
                   format('ml_stack_vectorize: the rows of %s with their embeddings (job %s).', job.relation, job_name));
    PERFORM ml_stack.process_vector_jobs(job_name);
    IF job.spec ->> 'kind' = 'python' AND schedule = 'realtime' AND NOT ml_stack._cron_usable() THEN
        RAISE NOTICE 'vectorize: job "%" embedded the rows there are; without pg_cron in this database, rows inserted or changed later wait for SELECT vectorize.job_execute(%)',
                     job_name, quote_literal(job_name);
    END IF;
    RETURN format('Successfully created job: %s', job_name);
END
$$;

-- No SET clause: a relation named with its schema resolves as the caller wrote it (a quoted or
-- mixed-case name too), through the caller's search_path.
CREATE OR REPLACE FUNCTION vectorize."table"(
    relation        text                  DEFAULT NULL,
    columns         text[]                DEFAULT NULL,
    job_name        text                  DEFAULT NULL,
    primary_key     text                  DEFAULT NULL,
    schema          text                  DEFAULT 'public',
    update_col      text                  DEFAULT 'last_updated_at',
    index_dist_type vectorize.indexdist   DEFAULT 'pgv_hnsw_cosine',
    transformer     text                  DEFAULT 'sentence-transformers/all-MiniLM-L6-v2',
    table_method    vectorize.tablemethod DEFAULT 'join',
    schedule        text                  DEFAULT '* * * * *',
    "table"         text                  DEFAULT NULL)   -- pg_vectorize before 0.22 named the relation "table"
RETURNS text
LANGUAGE sql VOLATILE
AS $$
    SELECT vectorize._table(coalesce("table".relation, "table"."table"), "table".columns, "table".job_name,
                            "table".primary_key, "table".schema, "table".update_col, "table".index_dist_type,
                            "table".transformer, "table".table_method, "table".schedule,
                            pg_catalog.current_setting('search_path'))
$$;
COMMENT ON FUNCTION vectorize."table"(text, text[], text, text, text, text, vectorize.indexdist, text, vectorize.tablemethod, text, text) IS
    'ml_stack_vectorize: pg_vectorize''s table: keep embeddings of the relation''s columns in sync (an ml_stack vector job), searchable with vectorize.search; schedule ''realtime'' (triggers) or a pg_cron schedule (default every minute). The existing rows are embedded before it returns.';

CREATE OR REPLACE FUNCTION vectorize.job_execute(job_name text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM ml_stack.process_vector_jobs(job_name);
END
$$;
COMMENT ON FUNCTION vectorize.job_execute(text) IS
    'ml_stack_vectorize: pg_vectorize''s job_execute: embed the job''s changed rows now (ml_stack.process_vector_jobs).';

-- pg_vectorize's job table, over ml_stack's vector jobs.
CREATE OR REPLACE VIEW vectorize.job WITH (security_invoker = true) AS
SELECT d.id AS job_id, d.job_name AS name, s.index_dist_type::text AS index_dist_type, d.transformer, s.params,
       d.last_processed_at AS last_completion
FROM ml_stack.vector_job_definitions AS d
JOIN vectorize._job_settings AS s ON s.job_id = d.id;
COMMENT ON VIEW vectorize.job IS 'ml_stack_vectorize: pg_vectorize''s jobs (their state: ml_stack.vector_jobs).';
