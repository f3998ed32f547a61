-- Vector jobs (DESIGN §3b; docs/vectors-jobs-search.md): the embeddings of a
-- table's text columns, kept in sync by triggers.
--
--   create_vector_job ─► vector_job_definitions row, ml_stack._vectors_<id> (not a member: pg_dump dumps it),
--                        four triggers on the source table, the pg_cron job (cron schedules, model transformers)
--   INSERT / COPY       ─► statement trigger (transition table new_rows)   ┐ SQL transformer + realtime: embedded
--   UPDATE OF pk, cols  ─► row trigger, WHEN any of them IS DISTINCT FROM  ┘ in the trigger; else queued
--   DELETE              ─► statement trigger (old_rows): embeddings and queue rows deleted
--   TRUNCATE            ─► statement trigger: the job's table truncated, its queue emptied
--   process_vector_jobs ─► the queue in batches (_embed_batch: one call per batch), failures recorded per row
--
-- The triggers reference ml_stack._vector_job_sync(<job id>) by qualified name, so
-- the CREATE TRIGGER that pg_dump writes works after CREATE EXTENSION in the
-- restored database; the job ids come back with vector_job_definitions' rows.

-- Job-level option keys; every other key of create_vector_job's options goes to the transformer.
CREATE OR REPLACE FUNCTION ml_stack._vector_job_option_keys()
RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT ARRAY['batch_size', 'keyword_config'] $$;

CREATE OR REPLACE FUNCTION ml_stack._vector_job_trigger_name(job_id bigint, event text)
RETURNS name
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT format('ml_stack_vector_job_%s_%s', job_id, event)::name $$;

CREATE OR REPLACE FUNCTION ml_stack._vector_job_cron_name(job_id bigint)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT format('ml_stack_vector_job_%s', job_id) $$;

-- The job of a name, or an error listing the jobs there are.
CREATE OR REPLACE FUNCTION ml_stack._vector_job_by_name(job_name text)
RETURNS ml_stack.vector_job_definitions
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    job ml_stack.vector_job_definitions;
BEGIN
    SELECT d.* INTO job FROM ml_stack.vector_job_definitions AS d WHERE d.job_name = _vector_job_by_name.job_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no vector job named "%"', job_name
            USING ERRCODE = 'undefined_object',
                  HINT = coalesce('Vector jobs: ' || (SELECT string_agg(d.job_name, ', ' ORDER BY d.job_name)
                                                     FROM ml_stack.vector_job_definitions AS d) || '.',
                                  'There are no vector jobs: make one with ml_stack.create_vector_job(...).');
    END IF;
    RETURN job;
END
$$;

-- SQL of the key type (the primary key column's type, as the job's table declares it).
CREATE OR REPLACE FUNCTION ml_stack._vector_job_key_type(job ml_stack.vector_job_definitions)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format_type(a.atttypid, a.atttypmod) FROM pg_catalog.pg_attribute AS a
    WHERE a.attrelid = format('ml_stack.%I', job.vectors_table)::regclass AND a.attname = 'id'
$$;

-- The text a job embeds for a source row (alias): its columns joined by ' ', NULLs skipped ('' when all are NULL).
CREATE OR REPLACE FUNCTION ml_stack._vector_job_document_sql(job ml_stack.vector_job_definitions, alias text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format('concat_ws('' '', %s)', string_agg(format('%I.%I::text', alias, c), ', ' ORDER BY i))
    FROM unnest(job.columns) WITH ORDINALITY AS u(c, i)
$$;

-- Queue keys (error NULL: to embed; else a failed attempt, recorded with its error).
CREATE OR REPLACE FUNCTION ml_stack._vector_job_enqueue(job_id bigint, keys text[], error text)
RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO ml_stack.vector_job_queue AS q (job_id, key, enqueued_at, attempts, last_error, failed_at)
    SELECT DISTINCT job_id, k, now(), CASE WHEN error IS NULL THEN 0 ELSE 1 END, error,
           CASE WHEN error IS NOT NULL THEN now() END
    FROM unnest(keys) AS k WHERE k IS NOT NULL
    ON CONFLICT ON CONSTRAINT vector_job_queue_pkey DO UPDATE
        SET enqueued_at = excluded.enqueued_at,
            attempts = q.attempts + excluded.attempts,
            last_error = coalesce(excluded.last_error, q.last_error),
            failed_at = coalesce(excluded.failed_at, q.failed_at)
$$;

-- Embed the rows of these keys (NULL: every row of the source) in one batch and
-- store them; keys whose row no longer exists lose their embedding; their queue
-- rows are done. Raises on any failure (the caller decides what to record).
-- Returns the number of rows embedded.
CREATE OR REPLACE FUNCTION ml_stack._vector_job_embed(job ml_stack.vector_job_definitions, keys text[])
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    key_type text := ml_stack._vector_job_key_type(job);
    found_rows bigint;
    embedded bigint;
BEGIN
    IF keys IS NOT NULL AND cardinality(keys) = 0 THEN
        RETURN 0;
    END IF;
    EXECUTE format($q$
        WITH src AS MATERIALIZED (
            SELECT s.%1$I AS id, %2$s AS doc FROM %3$s AS s
            WHERE $1::text[] IS NULL OR s.%1$I = ANY ($1::text[]::%4$s[])
        ), batch AS (
            SELECT array_agg(src.id ORDER BY src.id) AS ids, array_agg(src.doc ORDER BY src.id) AS docs
            FROM src HAVING count(*) > 0
        ), emb AS (
            SELECT b.ids[e.i] AS id, b.docs[e.i] AS doc, e.embedding
            FROM batch AS b, ml_stack._embed_batch($2, b.docs) WITH ORDINALITY AS e(embedding, i)
        ), ins AS (
            INSERT INTO ml_stack.%5$I AS v (id, embedding, norm, lexemes, doc_length, updated_at)
            SELECT e.id, e.embedding, n.norm, t.tsv, l.len, now()
            FROM emb AS e,
                 LATERAL (SELECT sqrt(coalesce(sum(x::float8 * x::float8), 0)) AS norm FROM unnest(e.embedding) AS x) AS n,
                 LATERAL (SELECT to_tsvector($3::regconfig, left(e.doc, ml_stack._max_text_length())) AS tsv) AS t,
                 LATERAL (SELECT coalesce(sum(cardinality(u.positions)), 0)::integer AS len FROM unnest(t.tsv) AS u) AS l
            WHERE e.embedding IS NOT NULL
            ON CONFLICT (id) DO UPDATE
                SET embedding = excluded.embedding, norm = excluded.norm, lexemes = excluded.lexemes,
                    doc_length = excluded.doc_length, updated_at = excluded.updated_at
            RETURNING 1
        ), gone AS (
            DELETE FROM ml_stack.%5$I AS v
            WHERE $1::text[] IS NOT NULL AND v.id = ANY ($1::text[]::%4$s[])
              AND NOT EXISTS (SELECT FROM src WHERE src.id = v.id)
        )
        SELECT (SELECT count(*) FROM src), (SELECT count(*) FROM ins)
        $q$, job.primary_key, ml_stack._vector_job_document_sql(job, 's'), job.relation, key_type, job.vectors_table)
        INTO found_rows, embedded USING keys, job.spec, job.text_config;
    IF embedded <> found_rows THEN
        -- a model that returns fewer vectors than texts (or NULLs): nothing of this batch is taken as done
        RAISE EXCEPTION 'transformer "%" returned % vectors for % texts', job.transformer, embedded, found_rows
            USING ERRCODE = 'data_exception';
    END IF;
    IF keys IS NOT NULL AND EXISTS (SELECT FROM ml_stack.vector_job_queue AS q WHERE q.job_id = job.id) THEN
        DELETE FROM ml_stack.vector_job_queue AS q WHERE q.job_id = job.id AND q.key = ANY (keys);
    END IF;
    RETURN embedded;
END
$$;

-- Does this job embed inside its triggers? (SQL transformers on a realtime schedule)
CREATE OR REPLACE FUNCTION ml_stack._vector_job_inline(job ml_stack.vector_job_definitions)
RETURNS boolean
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT job.schedule = 'realtime' AND job.spec ->> 'kind' <> 'python' $$;

-- The trigger function of every job (argument: the job id). It never makes the
-- user's statement fail for an embedding: an error is caught, and the rows go to
-- the queue with it, for process_vector_jobs to retry.
CREATE OR REPLACE FUNCTION ml_stack._vector_job_sync()
RETURNS trigger
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    job ml_stack.vector_job_definitions;
    keys text[];
    new_key text;
    old_key text;
BEGIN
    SELECT d.* INTO job FROM ml_stack.vector_job_definitions AS d WHERE d.id = TG_ARGV[0]::bigint;
    IF NOT FOUND OR job.relation::oid <> TG_RELID THEN
        RETURN NULL;  -- left from a dropped job, or set on another table: nothing to keep in sync
    END IF;
    IF TG_OP = 'TRUNCATE' THEN
        EXECUTE format('TRUNCATE ml_stack.%I', job.vectors_table);
        DELETE FROM ml_stack.vector_job_queue AS q WHERE q.job_id = job.id;
        RETURN NULL;
    ELSIF TG_OP = 'DELETE' THEN
        EXECUTE format('DELETE FROM ml_stack.%I AS v USING old_rows AS o WHERE v.id = o.%I',
                       job.vectors_table, job.primary_key);
        IF EXISTS (SELECT FROM ml_stack.vector_job_queue AS q WHERE q.job_id = job.id) THEN
            EXECUTE format('DELETE FROM ml_stack.vector_job_queue AS q USING old_rows AS o '
                           'WHERE q.job_id = $1 AND q.key = o.%I::text', job.primary_key) USING job.id;
        END IF;
        RETURN NULL;
    ELSIF TG_OP = 'INSERT' THEN
        EXECUTE format('SELECT array_agg(n.%I::text) FROM new_rows AS n', job.primary_key) INTO keys;
    ELSE
        -- UPDATE OF the key or an embedded column (row level, WHEN one of them changed)
        EXECUTE format('SELECT $1.%1$I::text, $2.%1$I::text', job.primary_key) INTO new_key, old_key USING NEW, OLD;
        keys := ARRAY[new_key];
        IF old_key IS DISTINCT FROM new_key THEN
            -- AFTER ROW triggers run at the end of the statement: another row may hold the old key by now
            EXECUTE format('DELETE FROM ml_stack.%1$I AS v WHERE v.id = $1::%2$s '
                           'AND NOT EXISTS (SELECT FROM %3$s AS s WHERE s.%4$I = $1::%2$s)',
                           job.vectors_table, ml_stack._vector_job_key_type(job), job.relation, job.primary_key)
                USING old_key;
            DELETE FROM ml_stack.vector_job_queue AS q WHERE q.job_id = job.id AND q.key = old_key;
        END IF;
    END IF;
    IF keys IS NULL THEN
        RETURN NULL;
    END IF;
    IF ml_stack._vector_job_inline(job) THEN
        BEGIN
            PERFORM ml_stack._vector_job_embed(job, keys);
        EXCEPTION WHEN OTHERS THEN
            PERFORM ml_stack._vector_job_enqueue(job.id, keys, SQLERRM);
        END;
    ELSE
        PERFORM ml_stack._vector_job_enqueue(job.id, keys, NULL);
    END IF;
    RETURN NULL;
END
$$;

-- Can this role use pg_cron here? (quietly: for the optional drain job of a realtime model transformer)
CREATE OR REPLACE FUNCTION ml_stack._cron_usable()
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_extension AS e WHERE e.extname = 'pg_cron') THEN
        RETURN false;
    END IF;
    IF NOT has_function_privilege('ml_stack._cron_problem()', 'EXECUTE') THEN
        RETURN false;
    END IF;
    IF ml_stack._cron_problem() IS NOT NULL THEN
        RETURN false;
    END IF;
    RETURN has_schema_privilege('cron', 'USAGE')
       AND has_function_privilege('cron.schedule(text, text, text)', 'EXECUTE')
       AND has_function_privilege('cron.unschedule(bigint)', 'EXECUTE');
END
$$;

-- Remove the pg_cron job of a vector job, when there is one this role can see.
CREATE OR REPLACE FUNCTION ml_stack._vector_job_unschedule(job_id bigint)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cron_id bigint;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_extension AS e WHERE e.extname = 'pg_cron')
       OR NOT has_schema_privilege('cron', 'USAGE') THEN
        RETURN;
    END IF;
    FOR cron_id IN EXECUTE 'SELECT j.jobid FROM cron.job AS j WHERE j.jobname = $1 AND j.username = current_user'
                   USING ml_stack._vector_job_cron_name(job_id) LOOP
        EXECUTE 'SELECT cron.unschedule($1)' USING cron_id;
    END LOOP;
END
$$;

-- Everything a job made: triggers (when its table still exists), its table, its cron job, its rows.
CREATE OR REPLACE FUNCTION ml_stack._vector_job_remove(job ml_stack.vector_job_definitions)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    event text;
    view_name text;
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_class AS c WHERE c.oid = job.relation) THEN
        FOREACH event IN ARRAY ARRAY['insert', 'update', 'delete', 'truncate'] LOOP
            EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', ml_stack._vector_job_trigger_name(job.id, event), job.relation);
        END LOOP;
    END IF;
    -- the views ml_stack_vectorize made of the job's embeddings go with it; a view of the user's own over them
    -- makes the DROP fail (nothing of the user's is dropped silently)
    FOREACH view_name IN ARRAY ARRAY[job.job_name || '_view', '_embeddings_' || job.job_name] LOOP
        IF to_regnamespace('vectorize') IS NOT NULL AND to_regclass(format('vectorize.%I', view_name)) IS NOT NULL THEN
            EXECUTE format('DROP VIEW vectorize.%I', view_name);
        END IF;
    END LOOP;
    EXECUTE format('DROP TABLE IF EXISTS ml_stack.%I', job.vectors_table);
    PERFORM ml_stack._vector_job_unschedule(job.id);
    DELETE FROM ml_stack.vector_job_definitions AS d WHERE d.id = job.id;  -- its queue rows cascade
END
$$;

-- Jobs whose relation was dropped (without the event trigger, or when it could not
-- clean up): removed. Called by create_vector_job, process_vector_jobs, search and
-- the vector_jobs view; does nothing in a read-only transaction.
CREATE OR REPLACE FUNCTION ml_stack._vector_jobs_cleanup()
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    job ml_stack.vector_job_definitions;
    removed integer := 0;
BEGIN
    IF current_setting('transaction_read_only')::boolean THEN
        RETURN 0;
    END IF;
    FOR job IN SELECT d.* FROM ml_stack.vector_job_definitions AS d
               WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_class AS c WHERE c.oid = d.relation)
               ORDER BY d.id LOOP
        BEGIN
            PERFORM ml_stack._vector_job_remove(job);
            removed := removed + 1;
            RAISE NOTICE 'ml_stack: removed vector job "%": its table was dropped', job.job_name;
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'ml_stack: could not remove vector job "%" of a dropped table: %', job.job_name, SQLERRM
                USING HINT = format('The owner of ml_stack.%I can remove it with ml_stack.drop_vector_job(%L).',
                                    job.vectors_table, job.job_name);
        END;
    END LOOP;
    RETURN removed;
END
$$;

-- sql_drop event trigger (made only when a superuser installs ml_stack): a dropped
-- source table takes its jobs along. It never makes the DROP fail.
CREATE OR REPLACE FUNCTION ml_stack._vector_jobs_on_drop()
RETURNS event_trigger
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    job ml_stack.vector_job_definitions;
BEGIN
    FOR job IN SELECT d.* FROM ml_stack.vector_job_definitions AS d
               WHERE d.relation::oid IN (SELECT o.objid FROM pg_catalog.pg_event_trigger_dropped_objects() AS o
                                         WHERE o.classid = 'pg_catalog.pg_class'::regclass AND o.objsubid = 0)
               ORDER BY d.id LOOP
        BEGIN
            PERFORM ml_stack._vector_job_remove(job);
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'ml_stack: could not remove vector job "%" of the dropped table: %', job.job_name, SQLERRM
                USING HINT = 'It is removed the next time ml_stack.vector_jobs, process_vector_jobs, create_vector_job or search runs.';
        END;
    END LOOP;
END
$$;

DO $$
BEGIN
    IF (SELECT r.rolsuper FROM pg_catalog.pg_roles AS r WHERE r.rolname = current_user)
       AND NOT EXISTS (SELECT FROM pg_catalog.pg_event_trigger AS t WHERE t.evtname = 'ml_stack_vector_jobs_drop') THEN
        -- DROP EXTENSION is not in the list: the definitions table goes with it
        CREATE EVENT TRIGGER ml_stack_vector_jobs_drop ON sql_drop
            WHEN TAG IN ('DROP TABLE', 'DROP SCHEMA', 'DROP OWNED')
            EXECUTE FUNCTION ml_stack._vector_jobs_on_drop();
        COMMENT ON EVENT TRIGGER ml_stack_vector_jobs_drop IS
            'ml_stack: dropping the source table of a vector job removes the job (its embeddings table, queue rows and cron job).';
    END IF;
END
$$;

-- A schedule: 'realtime', or what pg_cron takes (five fields, or @hourly ...).
CREATE OR REPLACE FUNCTION ml_stack._check_vector_schedule(schedule text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF schedule = 'realtime'
       OR schedule ~ '^\s*@(yearly|annually|monthly|weekly|daily|hourly|midnight)\s*$'
       OR schedule ~ '^\s*([0-9A-Za-z*,/-]+\s+){4}[0-9A-Za-z*,/-]+\s*$' THEN
        RETURN btrim(schedule);
    END IF;
    RAISE EXCEPTION 'unknown schedule "%"', schedule
        USING ERRCODE = 'invalid_parameter_value',
              HINT = 'Use ''realtime'' (embedded as rows are written), or a pg_cron schedule such as ''*/5 * * * *'' '
                     'or ''@hourly'' (the rows are queued and embedded by that job; needs pg_cron).';
END
$$;

CREATE OR REPLACE FUNCTION ml_stack._create_vector_job(job_name text, relation_name text, primary_key text, columns text[],
                                                       transformer text, schedule text, options jsonb,
                                                       caller_search_path text)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    rel regclass;
    pk_columns text[];
    col text;
    transformer_options jsonb;
    spec jsonb;
    job_options jsonb;
    batch_size integer;
    text_config text;
    job ml_stack.vector_job_definitions;
    key_type text;
    ext name;
    when_changed text;
    update_columns text;
    hint text;
    new_id bigint;
BEGIN
    PERFORM ml_stack._vector_jobs_cleanup();
    IF job_name IS NULL OR btrim(job_name) = '' THEN
        RAISE EXCEPTION 'job_name is required' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'e.g. ml_stack.create_vector_job(''docs'', ''documents'', ''id'', ARRAY[''title'', ''body''])';
    END IF;
    IF EXISTS (SELECT FROM ml_stack.vector_job_definitions AS d WHERE d.job_name = job_name) THEN
        RAISE EXCEPTION 'vector job "%" exists', job_name USING ERRCODE = 'duplicate_object',
            HINT = format('Choose another name, or drop it first: SELECT ml_stack.drop_vector_job(%L).', job_name);
    END IF;
    rel := ml_stack._resolve_relation(relation_name, caller_search_path);
    IF (SELECT c.relkind FROM pg_catalog.pg_class AS c WHERE c.oid = rel) = 'p' THEN
        -- statement triggers with transition tables on the parent miss writes made to a partition directly
        RAISE EXCEPTION 'vector jobs over partitioned tables are not supported yet (%)', rel
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Create one job per partition, or keep the text in a plain table.';
    END IF;
    IF (SELECT c.relkind FROM pg_catalog.pg_class AS c WHERE c.oid = rel) <> 'r' THEN
        RAISE EXCEPTION '"%" is not a table', relation_name USING ERRCODE = 'wrong_object_type',
            HINT = 'A vector job follows a table (its triggers keep the embeddings in sync); views cannot carry them.';
    END IF;

    SELECT array_agg(a.attname::text ORDER BY k.i) INTO pk_columns
    FROM pg_catalog.pg_constraint AS c, unnest(c.conkey) WITH ORDINALITY AS k(attnum, i), pg_catalog.pg_attribute AS a
    WHERE c.conrelid = rel AND c.contype = 'p' AND a.attrelid = rel AND a.attnum = k.attnum;
    IF pk_columns IS NULL THEN
        RAISE EXCEPTION 'table % has no primary key', rel USING ERRCODE = 'invalid_table_definition',
            HINT = format('A vector job needs a single-column primary key to find rows again: ALTER TABLE %s ADD PRIMARY KEY (...).', rel);
    END IF;
    IF cardinality(pk_columns) > 1 THEN
        RAISE EXCEPTION 'the primary key of % has % columns (%); a vector job needs a single-column key',
                        rel, cardinality(pk_columns), array_to_string(pk_columns, ', ')
            USING ERRCODE = 'invalid_table_definition',
                  HINT = 'Add a single-column key (e.g. a bigint identity column made the primary key), or create the job over a table that has one.';
    END IF;
    IF primary_key IS DISTINCT FROM pk_columns[1] THEN
        RAISE EXCEPTION 'column "%" is not the primary key of %: its primary key is "%"', primary_key, rel, pk_columns[1]
            USING ERRCODE = 'invalid_parameter_value', HINT = format('Pass primary_key => %L.', pk_columns[1]);
    END IF;

    IF columns IS NULL OR cardinality(columns) = 0 OR array_position(columns, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'columns must name one or more text columns' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'e.g. columns => ARRAY[''title'', ''body''] (embedded as their texts joined by a space).';
    END IF;
    IF (SELECT count(DISTINCT c) FROM unnest(columns) AS c) <> cardinality(columns) THEN
        RAISE EXCEPTION 'columns % name a column twice', columns USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Name each column once.';
    END IF;
    FOREACH col IN ARRAY columns LOOP
        PERFORM ml_stack._text_column(rel, col);
    END LOOP;

    schedule := ml_stack._check_vector_schedule(coalesce(schedule, 'realtime'));
    options := ml_stack._check_options(options, ARRAY(SELECT jsonb_object_keys(coalesce(options, '{}'))), 'create_vector_job');
    job_options := (SELECT coalesce(jsonb_object_agg(o.key, o.value), '{}') FROM jsonb_each(options) AS o
                    WHERE o.key = ANY (ml_stack._vector_job_option_keys()));
    transformer_options := options - ml_stack._vector_job_option_keys();
    batch_size := ml_stack._integer_option(job_options, 'batch_size', 100, 1, 10000);
    spec := ml_stack._resolve_transformer(transformer, transformer_options);
    text_config := ml_stack._text_config(coalesce(job_options ->> 'keyword_config', spec ->> 'config', 'english'))::text;

    IF schedule <> 'realtime' THEN
        BEGIN
            PERFORM ml_stack._require_cron();
        EXCEPTION WHEN object_not_in_prerequisite_state OR insufficient_privilege THEN
            GET STACKED DIAGNOSTICS hint = PG_EXCEPTION_HINT;
            RAISE EXCEPTION 'vector job "%" on schedule "%" needs pg_cron: %', job_name, schedule, SQLERRM
                USING ERRCODE = SQLSTATE,
                      HINT = replace(hint, 'Scheduled training needs', 'A vector job on a cron schedule needs')
                             || ' Or use schedule => ''realtime''.';
        END;
    END IF;

    new_id := nextval(pg_get_serial_sequence('ml_stack.vector_job_definitions', 'id'));
    INSERT INTO ml_stack.vector_job_definitions AS d
        (id, job_name, relation, primary_key, columns, transformer, spec, schedule, options, text_config, batch_size, vectors_table)
    VALUES (new_id, job_name, rel, primary_key, columns, transformer, spec, schedule, options, text_config, batch_size,
            format('_vectors_%s', new_id))
    RETURNING d.* INTO job;

    SELECT format_type(a.atttypid, a.atttypmod) INTO key_type FROM pg_catalog.pg_attribute AS a
    WHERE a.attrelid = rel AND a.attname = primary_key;
    EXECUTE format('CREATE TABLE ml_stack.%I (id %s PRIMARY KEY, embedding real[] NOT NULL, norm float8 NOT NULL, '
                   'lexemes tsvector NOT NULL, doc_length integer NOT NULL, updated_at timestamptz NOT NULL DEFAULT now())',
                   job.vectors_table, key_type);
    EXECUTE format('CREATE INDEX ON ml_stack.%I USING gin (lexemes)', job.vectors_table);
    EXECUTE format('COMMENT ON TABLE ml_stack.%I IS %L', job.vectors_table,
                   format('ml_stack: embeddings of vector job "%s" (%s, columns %s, transformer %s): id = the primary key, '
                          'norm = L2 norm of embedding, lexemes and doc_length for keyword search.',
                          job.job_name, rel, array_to_string(columns, ', '), transformer));
    -- made at run time, so not a member: inside an extension script it would be, and pg_dump would skip it
    SELECT e.extname INTO ext FROM pg_catalog.pg_depend AS d JOIN pg_catalog.pg_extension AS e ON e.oid = d.refobjid
    WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = format('ml_stack.%I', job.vectors_table)::regclass
      AND d.deptype = 'e';
    IF FOUND THEN
        EXECUTE format('ALTER EXTENSION %I DROP TABLE ml_stack.%I', ext, job.vectors_table);
    END IF;

    SELECT string_agg(format('%I', c), ', '), string_agg(format('OLD.%1$I IS DISTINCT FROM NEW.%1$I', c), ' OR ')
    INTO update_columns, when_changed
    FROM (SELECT DISTINCT c FROM unnest(array_prepend(primary_key, columns)) AS c) AS u;
    EXECUTE format('CREATE TRIGGER %I AFTER INSERT ON %s REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT '
                   'EXECUTE FUNCTION ml_stack._vector_job_sync(%L)', ml_stack._vector_job_trigger_name(job.id, 'insert'), rel, job.id);
    EXECUTE format('CREATE TRIGGER %I AFTER UPDATE OF %s ON %s FOR EACH ROW WHEN (%s) '
                   'EXECUTE FUNCTION ml_stack._vector_job_sync(%L)', ml_stack._vector_job_trigger_name(job.id, 'update'),
                   update_columns, rel, when_changed, job.id);
    EXECUTE format('CREATE TRIGGER %I AFTER DELETE ON %s REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT '
                   'EXECUTE FUNCTION ml_stack._vector_job_sync(%L)', ml_stack._vector_job_trigger_name(job.id, 'delete'), rel, job.id);
    EXECUTE format('CREATE TRIGGER %I AFTER TRUNCATE ON %s FOR EACH STATEMENT '
                   'EXECUTE FUNCTION ml_stack._vector_job_sync(%L)', ml_stack._vector_job_trigger_name(job.id, 'truncate'), rel, job.id);

    -- the rows already there
    IF ml_stack._vector_job_inline(job) THEN
        PERFORM ml_stack._vector_job_embed(job, NULL);
    ELSE
        EXECUTE format('INSERT INTO ml_stack.vector_job_queue (job_id, key) SELECT $1, s.%I::text FROM %s AS s',
                       primary_key, rel) USING job.id;
    END IF;

    IF schedule <> 'realtime' OR ml_stack._cron_usable() THEN
        IF schedule <> 'realtime' OR spec ->> 'kind' = 'python' THEN
            BEGIN
                EXECUTE 'SELECT cron.schedule($1, $2, $3)'
                    USING ml_stack._vector_job_cron_name(job.id), CASE WHEN schedule = 'realtime' THEN '* * * * *' ELSE schedule END,
                          format('SELECT ml_stack.process_vector_jobs(%L)', job_name);
            EXCEPTION WHEN invalid_parameter_value THEN
                RAISE EXCEPTION 'unknown schedule "%": %', schedule, SQLERRM USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'pg_cron takes five fields (minute hour day-of-month month day-of-week), e.g. ''*/5 * * * *'', '
                           'or @hourly, @daily, ...; the finest is one minute.';
            END;
        END IF;
    ELSIF spec ->> 'kind' = 'python' THEN
        RAISE NOTICE 'ml_stack: vector job "%" queues its rows (a model transformer embeds in batches); without pg_cron here, run SELECT ml_stack.process_vector_jobs(%) to embed them',
                     job_name, quote_literal(job_name);
    END IF;
    RETURN job.id;
END
$$;

-- No SET clause: relation_name resolves with the caller's search_path (as fit_vectorizer's).
CREATE OR REPLACE FUNCTION ml_stack.create_vector_job(job_name text, relation_name text, primary_key text, columns text[],
                                                      transformer text DEFAULT 'hashing', schedule text DEFAULT 'realtime',
                                                      options jsonb DEFAULT '{}')
RETURNS bigint
LANGUAGE sql VOLATILE
AS $$
    SELECT ml_stack._create_vector_job(create_vector_job.job_name, create_vector_job.relation_name,
                                       create_vector_job.primary_key, create_vector_job.columns,
                                       create_vector_job.transformer, create_vector_job.schedule,
                                       create_vector_job.options, pg_catalog.current_setting('search_path'))
$$;
COMMENT ON FUNCTION ml_stack.create_vector_job(text, text, text, text[], text, text, jsonb) IS
    'ml_stack: keep the embeddings of a table''s text columns (joined by a space, NULLs skipped) in sync, for ml_stack.search. schedule ''realtime'' (triggers; a model transformer queues and embeds in batches) or a pg_cron schedule; options: the transformer''s, plus batch_size and keyword_config. Existing rows are embedded (or queued) at once. Returns the job id.';

CREATE OR REPLACE FUNCTION ml_stack.drop_vector_job(job_name text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM ml_stack._vector_job_remove(ml_stack._vector_job_by_name(job_name));
    RETURN true;
END
$$;
COMMENT ON FUNCTION ml_stack.drop_vector_job(text) IS
    'ml_stack: remove a vector job and everything it made: its triggers, its embeddings table, its queued rows and its pg_cron job. Returns true.';

-- One job's queue: every key queued when the run starts (locked: concurrent runs
-- skip them), in batches of batch_size; a batch that fails is retried key by key,
-- and a key that fails is recorded (attempts, last_error, failed_at) and stays.
CREATE OR REPLACE FUNCTION ml_stack._vector_job_process(job ml_stack.vector_job_definitions)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    keys text[];
    batch text[];
    k text;
    i integer;
    embedded bigint := 0;
    started timestamptz := clock_timestamp();
BEGIN
    keys := ARRAY(SELECT q.key FROM ml_stack.vector_job_queue AS q WHERE q.job_id = job.id
                  ORDER BY q.enqueued_at, q.key FOR UPDATE SKIP LOCKED);
    FOR i IN 1 .. coalesce(cardinality(keys), 0) BY job.batch_size LOOP
        batch := keys[i : i + job.batch_size - 1];
        BEGIN
            embedded := embedded + ml_stack._vector_job_embed(job, batch);
        EXCEPTION WHEN OTHERS THEN
            FOREACH k IN ARRAY batch LOOP
                BEGIN
                    embedded := embedded + ml_stack._vector_job_embed(job, ARRAY[k]);
                EXCEPTION WHEN OTHERS THEN
                    UPDATE ml_stack.vector_job_queue AS q
                    SET attempts = q.attempts + 1, last_error = SQLERRM, failed_at = now()
                    WHERE q.job_id = job.id AND q.key = k;
                END;
            END LOOP;
        END;
        IF clock_timestamp() - started > interval '5 seconds' THEN
            RAISE NOTICE 'ml_stack: vector job "%": % of % queued rows done, % embedded', job.job_name,
                least(i + job.batch_size - 1, cardinality(keys)), cardinality(keys), embedded;
            started := clock_timestamp();
        END IF;
    END LOOP;
    UPDATE ml_stack.vector_job_definitions AS d SET last_processed_at = now() WHERE d.id = job.id;
    RETURN embedded;
END
$$;

CREATE OR REPLACE FUNCTION ml_stack.process_vector_jobs(job_name text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    job ml_stack.vector_job_definitions;
    total bigint := 0;
BEGIN
    PERFORM ml_stack._vector_jobs_cleanup();
    IF job_name IS NOT NULL THEN
        PERFORM ml_stack._vector_job_by_name(job_name);
    END IF;
    FOR job IN SELECT d.* FROM ml_stack.vector_job_definitions AS d
               WHERE job_name IS NULL OR d.job_name = job_name ORDER BY d.id LOOP
        total := total + ml_stack._vector_job_process(job);
    END LOOP;
    RETURN total;
END
$$;
COMMENT ON FUNCTION ml_stack.process_vector_jobs(text) IS
    'ml_stack: embed the queued rows of one vector job (or of all, for NULL) in batches: rows of model transformers and cron schedules, and rows whose embedding failed before (a row that fails again keeps its error in ml_stack.vector_job_queue). Returns the number of rows embedded.';

-- The rows of view ml_stack.vector_jobs (a function: it counts per job and cleans up dropped tables' jobs).
CREATE OR REPLACE FUNCTION ml_stack._vector_job_list()
RETURNS TABLE (job_name text, relation_name text, transformer text, schedule text, source_rows bigint,
               embedded_rows bigint, pending bigint, failed bigint, last_processed_at timestamptz,
               last_embedded_at timestamptz, primary_key name, columns name[], dims integer, text_config text,
               vectors_table text, job_id bigint, created_by name, created_at timestamptz)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    job ml_stack.vector_job_definitions;
    n_source bigint;
    n_embedded bigint;
    last_embedded timestamptz;
    n_dims integer;
BEGIN
    PERFORM ml_stack._vector_jobs_cleanup();
    FOR job IN SELECT d.* FROM ml_stack.vector_job_definitions AS d
               WHERE EXISTS (SELECT FROM pg_catalog.pg_class AS c WHERE c.oid = d.relation) ORDER BY d.job_name LOOP
        n_source := NULL; n_embedded := NULL; last_embedded := NULL; n_dims := (job.spec ->> 'dims')::integer;
        IF has_table_privilege(job.relation, 'SELECT') THEN
            EXECUTE format('SELECT count(*) FROM %s', job.relation) INTO n_source;
        END IF;
        IF to_regclass(format('ml_stack.%I', job.vectors_table)) IS NOT NULL
           AND has_table_privilege(format('ml_stack.%I', job.vectors_table), 'SELECT') THEN
            EXECUTE format('SELECT count(*), max(v.updated_at), (SELECT cardinality(w.embedding) FROM ml_stack.%1$I AS w LIMIT 1) '
                           'FROM ml_stack.%1$I AS v', job.vectors_table)
                INTO n_embedded, last_embedded, n_dims;
            n_dims := coalesce((job.spec ->> 'dims')::integer, n_dims);
        END IF;
        RETURN QUERY SELECT job.job_name, job.relation::text, job.transformer, job.schedule, n_source, n_embedded,
               (SELECT count(*) FROM ml_stack.vector_job_queue AS q WHERE q.job_id = job.id AND q.failed_at IS NULL),
               (SELECT count(*) FROM ml_stack.vector_job_queue AS q WHERE q.job_id = job.id AND q.failed_at IS NOT NULL),
               job.last_processed_at, last_embedded, job.primary_key, job.columns, n_dims, job.text_config,
               format('ml_stack.%I', job.vectors_table), job.id, job.created_by, job.created_at;
    END LOOP;
END
$$;

CREATE OR REPLACE VIEW ml_stack.vector_jobs AS
    SELECT * FROM ml_stack._vector_job_list();
COMMENT ON VIEW ml_stack.vector_jobs IS
    'ml_stack: the vector jobs: source relation, transformer, schedule, source_rows (a live count(*)), embedded_rows, pending (queued, never failed), failed (queued, last attempt failed: see ml_stack.vector_job_queue), last_processed_at (last process_vector_jobs run), last_embedded_at, dims, and the embeddings table.';
