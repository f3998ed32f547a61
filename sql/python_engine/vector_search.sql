-- Semantic search in numpy (python/ml_stack_python/vector_search.py; docs/vectors-jobs-search.md, "Semantic
-- search in numpy"). The core's ml_stack._semantic_ranking_sql asks ml_stack._python_semantic_ranking_sql
-- (found by to_regprocedure, called by dynamic SQL) for the SQL of the ranking: numpy, over a float32 matrix of
-- the job's vectors cached per backend, picks a candidate set that provably holds the exact top k; the core's
-- own score expression then scores those rows, so ids, scores and order are the SQL path's. Without
-- ml_stack_python nothing here exists and the core ranks by its brute-force scan.
--
-- Change tracking (what makes the cache exact without scanning the vectors table): the statement trigger
-- ml_stack_vectors_changed on every job's ml_stack._vectors_<id> (ENABLE ALWAYS) records each writing
-- transaction in ml_stack.vector_job_changes; the trigger is put on existing jobs' tables by this script and on
-- new ones by the event trigger ml_stack_python_vector_jobs_track when create_vector_job makes the table.
-- Writers never wait for each other here: each transaction upserts its own row (its xid).

-- The tables it writes: python_engine/vector_search_tables.sql (run once).

-- The statement trigger on ml_stack._vectors_<id> (argument: the job id). SECURITY DEFINER: the roles that
-- write a job's table need no privilege on vector_job_changes.
CREATE OR REPLACE FUNCTION ml_stack._python_vectors_changed()
RETURNS trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    job bigint := TG_ARGV[0]::bigint;
    me xid8 := pg_current_xact_id();
    stamp bigint := nextval('ml_stack.vector_job_change_stamp');
BEGIN
    IF NOT EXISTS (SELECT FROM ml_stack.vector_job_definitions AS d WHERE d.id = job) THEN
        RETURN NULL;  -- a table left from a dropped job
    END IF;
    INSERT INTO ml_stack.vector_job_changes AS c (job_id, xid, n, xid_sum, stamp_sum)
    VALUES (job, me, 1, me::text::numeric, stamp)
    ON CONFLICT (job_id, xid) DO UPDATE SET stamp_sum = excluded.stamp_sum;
    -- now and then, fold the rows of finished transactions into one row of totals (the sums stay the same for
    -- every snapshot: a snapshot that sees this transaction sees all of them committed). Locked rows are
    -- skipped: no waiting, no deadlock. Only under READ COMMITTED (no serialization failure for the writer).
    IF stamp % 64 = 0 AND current_setting('transaction_isolation') = 'read committed' THEN
        WITH gone AS (
            DELETE FROM ml_stack.vector_job_changes AS c
            WHERE c.ctid = ANY (ARRAY(SELECT o.ctid FROM ml_stack.vector_job_changes AS o
                                      WHERE o.job_id = job
                                        AND (o.xid IS NULL OR o.xid < pg_snapshot_xmin(pg_current_snapshot()))
                                      FOR UPDATE SKIP LOCKED))
            RETURNING c.n, c.xid_sum, c.stamp_sum)
        INSERT INTO ml_stack.vector_job_changes (job_id, xid, n, xid_sum, stamp_sum)
        SELECT job, NULL, sum(g.n), sum(g.xid_sum), sum(g.stamp_sum) FROM gone AS g HAVING count(*) > 0;
    END IF;
    RETURN NULL;
END
$$;
REVOKE EXECUTE ON FUNCTION ml_stack._python_vectors_changed() FROM PUBLIC;
COMMENT ON FUNCTION ml_stack._python_vectors_changed() IS
    'ml_stack_python internal: statement trigger of a vector job''s table: records the writing transaction in ml_stack.vector_job_changes.';

-- Put the change trigger on a job's table (idempotent). Returns whether the job's table has it.
CREATE OR REPLACE FUNCTION ml_stack._python_vector_job_track(job_id bigint)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    vt regclass;
BEGIN
    SELECT to_regclass(format('ml_stack.%I', d.vectors_table)) INTO vt
    FROM ml_stack.vector_job_definitions AS d WHERE d.id = _python_vector_job_track.job_id;
    IF vt IS NULL THEN
        RETURN false;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_trigger AS t WHERE t.tgrelid = vt AND t.tgname = 'ml_stack_vectors_changed') THEN
        EXECUTE format('CREATE TRIGGER ml_stack_vectors_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON %s '
                       'FOR EACH STATEMENT EXECUTE FUNCTION ml_stack._python_vectors_changed(%L)', vt, job_id);
        -- fires under session_replication_role = replica too (logical replication, pg_restore --disable-triggers
        -- aside: that one changes the trigger's catalog row, which the cache's key holds)
        EXECUTE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER ml_stack_vectors_changed', vt);
    END IF;
    RETURN true;
END
$$;
REVOKE EXECUTE ON FUNCTION ml_stack._python_vector_job_track(bigint) FROM PUBLIC;
COMMENT ON FUNCTION ml_stack._python_vector_job_track(bigint) IS
    'ml_stack_python internal: put the change trigger ml_stack_vectors_changed on a vector job''s table (done for every job by CREATE EXTENSION and by create_vector_job through an event trigger), so that searches can use the cached numpy matrix.';

-- Event trigger: a job's table made by create_vector_job (its definition row is there already) gets the trigger.
-- Never makes the CREATE TABLE fail.
CREATE OR REPLACE FUNCTION ml_stack._python_vector_jobs_on_create()
RETURNS event_trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    job_id bigint;
BEGIN
    FOR job_id IN
        SELECT d.id FROM pg_catalog.pg_event_trigger_ddl_commands() AS c
        JOIN pg_catalog.pg_class AS r ON r.oid = c.objid
        JOIN ml_stack.vector_job_definitions AS d ON d.vectors_table = r.relname
        WHERE c.classid = 'pg_catalog.pg_class'::regclass AND c.object_type = 'table'
          AND r.relnamespace = 'ml_stack'::regnamespace
    LOOP
        BEGIN
            PERFORM ml_stack._python_vector_job_track(job_id);
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'ml_stack_python: vector job %: no change trigger on its table (%): its searches take the SQL path',
                job_id, SQLERRM USING HINT = format('A superuser can run SELECT ml_stack._python_vector_job_track(%s);', job_id);
        END;
    END LOOP;
END
$$;
REVOKE EXECUTE ON FUNCTION ml_stack._python_vector_jobs_on_create() FROM PUBLIC;
COMMENT ON FUNCTION ml_stack._python_vector_jobs_on_create() IS
    'ml_stack_python internal: ddl_command_end event trigger: the table of a new vector job gets its change trigger.';

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_event_trigger WHERE evtname = 'ml_stack_python_vector_jobs_track') THEN
        CREATE EVENT TRIGGER ml_stack_python_vector_jobs_track ON ddl_command_end WHEN TAG IN ('CREATE TABLE')
            EXECUTE FUNCTION ml_stack._python_vector_jobs_on_create();
    END IF;
    PERFORM ml_stack._python_vector_job_track(d.id) FROM ml_stack.vector_job_definitions AS d ORDER BY d.id;
END
$$;

-- The candidates: rows (id, approximate score) holding the exact top k of the job's vectors for the query (among
-- candidate_ids when given), or one row (NULL, NULL) meaning "take the SQL path". STABLE: its queries run in the
-- snapshot of the statement that calls it (the fingerprint, the count and the load read the same state).
CREATE OR REPLACE FUNCTION ml_stack._python_semantic_search(job_id bigint, query_vector real[], k integer,
                                                            candidate_ids text[] DEFAULT NULL)
RETURNS TABLE (id text, score float8)
LANGUAGE plpython3u STABLE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $ml_stack$
if "vector_search" not in SD:
    plpy.execute("SELECT ml_stack._python_import()")
    import ml_stack_python.vector_search
    import ml_stack_python.errors
    SD["errors"] = ml_stack_python.errors
    SD["vector_search"] = ml_stack_python.vector_search
return SD["errors"].call(plpy, SD["vector_search"].search, plpy, job_id, query_vector, k, candidate_ids)
$ml_stack$;
COMMENT ON FUNCTION ml_stack._python_semantic_search(bigint, real[], integer, text[]) IS
    'ml_stack_python internal: the rows that hold the exact top k of a vector job''s semantic ranking, found in a float32 matrix of its vectors cached per backend (setting ml_stack.search_cache_mb, default 512); one row (NULL, NULL): take the SQL path.';

-- The SQL of the semantic ranking, for ml_stack._semantic_ranking_sql (same arguments, plus its score
-- expression over v): numpy's candidates scored by that expression, or, when numpy says so, the plain scan.
-- NULL when the setting ml_stack.search_cache_mb is 0 (the core then uses its own SQL).
CREATE OR REPLACE FUNCTION ml_stack._python_semantic_ranking_sql(job ml_stack.vector_job_definitions,
                                                                 query_vector real[], filter_clause text,
                                                                 lim integer, score_sql text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET extra_float_digits = 1  -- the query vector's text reads back as the same float4 values
AS $$
DECLARE
    src text;
    ids text;
BEGIN
    IF coalesce(nullif(current_setting('ml_stack.search_cache_mb', true), ''), '512') ~ '^\s*0*(\.0*)?\s*$' THEN
        RETURN NULL;
    END IF;
    IF filter_clause = 'true' THEN
        src := '';
        ids := 'NULL::text[]';
    ELSE
        src := format('JOIN %s AS s ON s.%I = v.id WHERE %s AND', job.relation, job.primary_key, filter_clause);
        ids := format('ARRAY(SELECT s.%I::text FROM %s AS s WHERE %s)', job.primary_key, job.relation, filter_clause);
    END IF;
    RETURN format($q$
        WITH c AS MATERIALIZED (SELECT c.id FROM ml_stack._python_semantic_search(%1$s, %2$L::real[], %3$s, %4$s) AS c)
        SELECT v.id, %5$s AS score
        FROM ml_stack.%6$I AS v %7$s v.id = ANY (ARRAY(SELECT c.id::%8$s FROM c WHERE c.id IS NOT NULL))
        UNION ALL
        SELECT v.id, %5$s AS score
        FROM ml_stack.%6$I AS v %7$s (SELECT bool_or(c.id IS NULL) FROM c)
        ORDER BY 2 DESC NULLS LAST, 1 LIMIT %3$s$q$,
        job.id, query_vector::text, lim, ids, score_sql, job.vectors_table,
        CASE WHEN src = '' THEN 'WHERE' ELSE src END, ml_stack._vector_job_key_type(job));
END
$$;
COMMENT ON FUNCTION ml_stack._python_semantic_ranking_sql(ml_stack.vector_job_definitions, real[], text, integer, text) IS
    'ml_stack_python internal (called by ml_stack._semantic_ranking_sql): the semantic ranking''s SQL through the numpy candidates of ml_stack._python_semantic_search, scored exactly by the core''s expression.';

CREATE OR REPLACE FUNCTION ml_stack._python_vector_cache()
RETURNS TABLE (job_id bigint, rows bigint, dims integer, bytes bigint, loads integer, hits bigint, fallbacks integer,
               load_seconds float8, unusable text)
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp
AS $ml_stack$
if "vector_search" not in SD:
    plpy.execute("SELECT ml_stack._python_import()")
    import ml_stack_python.vector_search
    SD["vector_search"] = ml_stack_python.vector_search
return SD["vector_search"].cache_state()
$ml_stack$;
COMMENT ON FUNCTION ml_stack._python_vector_cache() IS
    'ml_stack_python internal: the vector jobs whose matrix this backend holds (rows, dims, bytes, loads, hits, fallbacks to SQL, why unusable).';

CREATE OR REPLACE FUNCTION ml_stack._python_vector_search_stats()
RETURNS jsonb
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp
AS $ml_stack$
import json
if "vector_search" not in SD:
    plpy.execute("SELECT ml_stack._python_import()")
    import ml_stack_python.vector_search
    SD["vector_search"] = ml_stack_python.vector_search
return json.dumps(SD["vector_search"].stats())
$ml_stack$;
COMMENT ON FUNCTION ml_stack._python_vector_search_stats() IS
    'ml_stack_python internal: loads, cache hits and fallbacks to SQL of the numpy semantic search in this backend (per job), and the last fallback''s reason.';
