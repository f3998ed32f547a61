-- vectorize.search and hybrid_search: pg_vectorize's result rows ({<return_columns>..., "similarity_score"})
-- from ml_stack.search: exact cosine similarity over the job's embeddings, best first; where_sql read as
-- filters (where_sql.sql), never run as SQL. api_key is not used (no remote provider).
CREATE OR REPLACE FUNCTION vectorize._search_results(job_name text, query text, return_columns text[], num_results integer,
                                                     where_sql text, mode text, score_key text)
RETURNS TABLE (search_results jsonb)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    job ml_stack.vector_job_definitions := ml_stack._vector_job_by_name(job_name);
    unknown text;
    filters jsonb;
BEGIN
    IF return_columns IS NULL OR cardinality(return_columns) = 0 THEN
        RAISE EXCEPTION 'return_columns is empty' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Name the columns to return, or ARRAY[''*''] (the default) for every column.';
    END IF;
    SELECT string_agg(format('%I', c), ', ') INTO unknown
    FROM unnest(return_columns) AS c
    WHERE c <> '*' AND NOT EXISTS (SELECT FROM pg_catalog.pg_attribute AS a
                                   WHERE a.attrelid = job.relation AND a.attname = c AND a.attnum > 0 AND NOT a.attisdropped);
    IF unknown IS NOT NULL THEN
        RAISE EXCEPTION 'return_columns names columns that % does not have: %', job.relation, unknown
            USING ERRCODE = 'undefined_column',
                  HINT = format('Its columns: %s.', (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum)
                                                     FROM pg_catalog.pg_attribute AS a
                                                     WHERE a.attrelid = job.relation AND a.attnum > 0 AND NOT a.attisdropped));
    END IF;
    filters := vectorize._where_filters(where_sql);
    PERFORM ml_stack._search_filter_sql(job.relation, filters);   -- its errors, before the query
    RETURN QUERY
    SELECT CASE WHEN '*' = ANY (return_columns) THEN s.record
                ELSE (SELECT jsonb_object_agg(c, s.record -> c) FROM unnest(return_columns) AS c) END
           || jsonb_build_object(score_key, s.score)
    FROM ml_stack.search(job_name, query, num_results, filters, mode) AS s
    ORDER BY s.rank;
END
$$;

CREATE OR REPLACE FUNCTION vectorize.search(job_name text, query text, api_key text DEFAULT NULL,
                                            return_columns text[] DEFAULT ARRAY['*'], num_results integer DEFAULT 10,
                                            where_sql text DEFAULT NULL)
RETURNS TABLE (search_results jsonb)
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT r.search_results
    FROM vectorize._search_results(search.job_name, search.query, search.return_columns, search.num_results,
                                   search.where_sql, 'semantic', 'similarity_score') AS r
$$;
COMMENT ON FUNCTION vectorize.search(text, text, text, text[], integer, text) IS
    'ml_stack_vectorize: pg_vectorize''s search: the num_results rows most similar to the query (cosine), as JSON of return_columns and "similarity_score", best first; where_sql: conditions joined by AND (column op literal, IN, IS NULL), read as bound filters.';

CREATE OR REPLACE FUNCTION vectorize.hybrid_search(job_name text, query text, api_key text DEFAULT NULL,
                                                   return_columns text[] DEFAULT ARRAY['*'], num_results integer DEFAULT 10,
                                                   where_sql text DEFAULT NULL)
RETURNS TABLE (search_results jsonb)
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT r.search_results
    FROM vectorize._search_results(hybrid_search.job_name, hybrid_search.query, hybrid_search.return_columns,
                                   hybrid_search.num_results, hybrid_search.where_sql, 'hybrid', 'rrf_score') AS r
$$;
COMMENT ON FUNCTION vectorize.hybrid_search(text, text, text, text[], integer, text) IS
    'ml_stack_vectorize: pg_vectorize''s hybrid_search: keyword (BM25) and semantic rankings fused by reciprocal rank (k = 60), as JSON of return_columns and "rrf_score", best first.';
