-- ml_stack.search (DESIGN §3b; docs/vectors-jobs-search.md): top-k over a vector
-- job's embeddings. One dynamic query per call, built from parts:
--   semantic  _semantic_ranking_sql: exact cosine, brute force over ml_stack._vectors_<id>
--   keyword   _keyword_ranking_sql: BM25 over the stored lexemes (GIN index finds the candidates)
--   hybrid    reciprocal rank fusion of the two
-- then joined to the source rows (record) and filtered by _search_filter_sql.
-- Ties are broken by the primary key in its own type's order.

-- The WHERE clause of a filters object, over the source row alias s. Column
-- names are checked against the catalog and written with %I; values never enter
-- the SQL text: the clause reads them from the jsonb array `values` (bound as
-- $1 by search), cast to the column's type.
CREATE OR REPLACE FUNCTION ml_stack._search_filter_sql(rel regclass, filters jsonb, OUT clause text, OUT "values" jsonb)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    f record;
    c record;
    typ text;
    conditions text[] := '{}';
    op text;
    v jsonb;
    i integer;
    ops constant text[] := ARRAY['=', '<>', '<', '<=', '>', '>=', 'in', 'like'];
    filter_hint constant text := 'filters => ''{"col": value}'' (equality; null: IS NULL) or ''{"col": {"op": value}}'' with op one of =, <>, <, <=, >, >=, in (a JSON array), like.';
BEGIN
    "values" := '[]';
    IF filters IS NULL OR filters = '{}'::jsonb THEN
        clause := 'true';
        RETURN;
    END IF;
    IF jsonb_typeof(filters) <> 'object' THEN
        RAISE EXCEPTION 'filters must be a JSON object, got %', left(filters::text, 100)
            USING ERRCODE = 'invalid_parameter_value', HINT = filter_hint;
    END IF;
    FOR f IN SELECT e.key, e.value FROM jsonb_each(filters) AS e ORDER BY e.key LOOP
        SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS typ, a.atttypid INTO c
        FROM pg_catalog.pg_attribute AS a
        WHERE a.attrelid = rel AND a.attname = f.key AND a.attnum > 0 AND NOT a.attisdropped;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'filter on unknown column "%" of %', left(f.key, 100), rel
                USING ERRCODE = 'undefined_column',
                      HINT = format('Its columns: %s.', (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum)
                                                         FROM pg_catalog.pg_attribute AS a
                                                         WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped));
        END IF;
        typ := c.typ;
        FOR op, v IN SELECT '=', f.value WHERE jsonb_typeof(f.value) <> 'object'
                     UNION ALL
                     SELECT o.key, o.value FROM jsonb_each(CASE WHEN jsonb_typeof(f.value) = 'object' THEN f.value END) AS o
        LOOP
            IF NOT op = ANY (ops) THEN
                RAISE EXCEPTION 'unknown filter operator "%" for column "%"', left(op, 100), f.key
                    USING ERRCODE = 'invalid_parameter_value', HINT = filter_hint;
            END IF;
            i := jsonb_array_length("values");
            IF jsonb_typeof(v) = 'null' THEN
                IF op NOT IN ('=', '<>') THEN
                    RAISE EXCEPTION 'filter "%" on column "%" cannot take null', op, f.key
                        USING ERRCODE = 'invalid_parameter_value', HINT = 'null goes with = (IS NULL) or <> (IS NOT NULL).';
                END IF;
                conditions := conditions || format('s.%I IS %sNULL', c.attname, CASE WHEN op = '<>' THEN 'NOT ' ELSE '' END);
                CONTINUE;
            END IF;
            IF op = 'in' THEN
                IF jsonb_typeof(v) <> 'array' THEN
                    RAISE EXCEPTION 'filter "in" on column "%" needs a JSON array, got %', f.key, left(v::text, 100)
                        USING ERRCODE = 'invalid_parameter_value', HINT = 'e.g. {"section": {"in": ["games", "science"]}}';
                END IF;
            ELSIF op = 'like' AND jsonb_typeof(v) <> 'string' THEN
                RAISE EXCEPTION 'filter "like" on column "%" needs a string pattern, got %', f.key, left(v::text, 100)
                    USING ERRCODE = 'invalid_parameter_value', HINT = 'e.g. {"title": {"like": "%game%"}}';
            ELSIF jsonb_typeof(v) IN ('object', 'array') AND c.atttypid NOT IN ('jsonb'::regtype, 'json'::regtype) THEN
                RAISE EXCEPTION 'filter "%" on column "%" needs a scalar value, got %', op, f.key, left(v::text, 100)
                    USING ERRCODE = 'invalid_parameter_value', HINT = filter_hint;
            END IF;
            -- the value must read as the column's type: say so here rather than from inside the search query
            IF op <> 'like' THEN
                BEGIN
                    EXECUTE format('SELECT x::%s FROM (SELECT CASE WHEN jsonb_typeof(e) = ''string'' THEN e #>> ''{}'' ELSE e::text END AS x '
                                   'FROM jsonb_array_elements(CASE WHEN jsonb_typeof($1) = ''array'' AND $2 THEN $1 ELSE jsonb_build_array($1) END) AS e) AS t',
                                   typ) USING v, op = 'in';
                EXCEPTION WHEN OTHERS THEN
                    RAISE EXCEPTION 'filter value % for column "%" is not a valid %', left(v::text, 100), f.key, typ
                        USING ERRCODE = 'invalid_parameter_value', DETAIL = SQLERRM, HINT = filter_hint;
                END;
            END IF;
            "values" := "values" || jsonb_build_array(v);
            conditions := conditions || CASE
                WHEN op = 'in' THEN format('s.%I = ANY (ARRAY(SELECT e #>> ''{}'' FROM jsonb_array_elements($1 -> %s) AS e)::%s[])',
                                           c.attname, i, typ)
                WHEN op = 'like' THEN format('s.%I::text LIKE ($1 ->> %s)', c.attname, i)
                WHEN c.atttypid IN ('jsonb'::regtype, 'json'::regtype) THEN format('s.%I::jsonb %s ($1 -> %s)', c.attname, op, i)
                ELSE format('s.%I %s ($1 -> %s #>> ''{}'')::%s', c.attname, op, i, typ) END;
        END LOOP;
    END LOOP;
    clause := CASE WHEN cardinality(conditions) = 0 THEN 'true' ELSE array_to_string(conditions, ' AND ') END;
END
$$;

-- The semantic ranking: exact cosine similarity of every embedding with the query
-- vector, best `lim` (ties by key). The one place that computes it: a faster path
-- (a cached numpy matrix in ml_stack_python) replaces this function's SQL.
-- The dot product is written out over the query's non-zero components as
-- e[i] * <constant>: subscripting a flat real[] is O(1), and this ran 4-10x faster
-- than sum() over unnest(e, q) (10k x 384: 73-115 ms against 512-816 ms); a sparse
-- query (hashing) touches only its few buckets.
CREATE OR REPLACE FUNCTION ml_stack._semantic_ranking_sql(job ml_stack.vector_job_definitions, query_vector real[],
                                                          filter_clause text, lim integer)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET extra_float_digits = 1  -- shortest exact text of each float8 constant
AS $$
DECLARE
    qnorm float8;
    dot text;
    score text;
    ranking text;
BEGIN
    SELECT sqrt(coalesce(sum(x::float8 * x::float8), 0)) INTO qnorm FROM unnest(query_vector) AS x;
    -- groups of 32 terms keep the expression tree shallow
    SELECT string_agg('(' || g.terms || ')', ' + ') INTO dot
    FROM (SELECT string_agg(format('v.embedding[%s] * %L::float8', t.i, t.x::float8), ' + ' ORDER BY t.i) AS terms
          FROM unnest(query_vector) WITH ORDINALITY AS t(x, i)
          WHERE t.x <> 0
          GROUP BY (t.i - 1) / 32) AS g;
    score := format('CASE WHEN v.norm = 0 THEN 0::float8 ELSE (%s) / (v.norm * %L::float8) END',
                    CASE WHEN dot IS NULL OR qnorm = 0 THEN '0::float8' ELSE dot END, CASE WHEN qnorm = 0 THEN 1 ELSE qnorm END);
    -- ml_stack_python, when installed: a numpy matrix cached per backend picks the candidate rows, this same
    -- expression scores them (docs/vectors-jobs-search.md, "Semantic search in numpy"); NULL: not this time
    IF to_regprocedure('ml_stack._python_semantic_ranking_sql(ml_stack.vector_job_definitions, real[], text, integer, text)') IS NOT NULL THEN
        EXECUTE 'SELECT ml_stack._python_semantic_ranking_sql($1, $2, $3, $4, $5)' INTO ranking
            USING job, query_vector, filter_clause, lim, score;
        IF ranking IS NOT NULL THEN
            RETURN ranking;
        END IF;
    END IF;
    RETURN format($q$
        SELECT v.id, %1$s AS score
        FROM ml_stack.%2$I AS v %3$s
        ORDER BY 2 DESC NULLS LAST, 1 LIMIT %4$s$q$,
        score,
        job.vectors_table,
        CASE WHEN filter_clause = 'true' THEN ''
             ELSE format('JOIN %s AS s ON s.%I = v.id WHERE %s', job.relation, job.primary_key, filter_clause) END,
        lim);
END
$$;

-- The keyword ranking: BM25 (k1 = 1.2, b = 0.75, idf = ln(1 + (N - df + 0.5) / (df + 0.5)))
-- over the query's distinct lexemes $2 (text[]), matched through $3 (tsquery: any
-- of them) and the GIN index. N = $4 embedded rows, avgdl = $5 their mean length;
-- df counts every embedded row, filters only restrict the rows ranked.
CREATE OR REPLACE FUNCTION ml_stack._keyword_ranking_sql(job ml_stack.vector_job_definitions, filter_clause text, lim integer)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format($q$
        SELECT b.id, b.score FROM (
            SELECT t.id, sum(ln(1 + ($4 - t.df + 0.5) / (t.df + 0.5))
                             * t.tf * (1.2 + 1) / (t.tf + 1.2 * (1 - 0.75 + 0.75 * t.doc_length / $5))) AS score
            FROM (SELECT m.*, count(*) OVER (PARTITION BY m.lexeme)::float8 AS df
                  FROM (SELECT v.id, v.doc_length, u.lexeme, cardinality(u.positions)::float8 AS tf
                        FROM ml_stack.%1$I AS v, unnest(v.lexemes) AS u
                        WHERE v.lexemes @@ $3 AND u.lexeme = ANY ($2)) AS m) AS t
            GROUP BY t.id) AS b %2$s
        ORDER BY 2 DESC, 1 LIMIT %3$s$q$,
        job.vectors_table,
        CASE WHEN filter_clause = 'true' THEN ''
             ELSE format('JOIN %s AS s ON s.%I = b.id WHERE %s', job.relation, job.primary_key, filter_clause) END,
        lim)
$$;

-- A tsquery matching any of the lexemes (each quoted as tsquery input wants).
CREATE OR REPLACE FUNCTION ml_stack._any_lexeme_query(terms text[])
RETURNS tsquery
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT string_agg('''' || replace(replace(t, '\', '\\'), '''', '''''') || '''', ' | ')::tsquery
    FROM unnest(terms) AS t
$$;

CREATE OR REPLACE FUNCTION ml_stack._search(job_name text, query text, num_results integer, filters jsonb, mode text)
RETURNS TABLE (id text, score float8, rank integer, record jsonb)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET jit = off  -- LLVM compile time of the long dot-product expression exceeds the whole query's run time
AS $$
#variable_conflict use_variable
DECLARE
    job ml_stack.vector_job_definitions;
    f record;
    qvec real[];
    terms text[];
    n_docs bigint;
    avgdl float8;
    lim integer;
    ranking text;
BEGIN
    IF mode IS NULL OR mode NOT IN ('semantic', 'keyword', 'hybrid') THEN
        RAISE EXCEPTION 'unknown search mode "%"', mode USING ERRCODE = 'invalid_parameter_value',
            HINT = 'mode => ''semantic'' (cosine similarity of the embeddings), ''keyword'' (BM25 over the words) or ''hybrid'' (both, fused by reciprocal rank).';
    END IF;
    IF query IS NULL OR btrim(query) = '' THEN
        RAISE EXCEPTION 'query text is required' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Pass the text to search for, e.g. ml_stack.search(''docs'', ''fast json parser'').';
    END IF;
    IF num_results IS NULL OR num_results NOT BETWEEN 1 AND 10000 THEN
        RAISE EXCEPTION 'num_results must be from 1 to 10000, got %', coalesce(num_results::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'The default is 10.';
    END IF;
    PERFORM ml_stack._vector_jobs_cleanup();
    job := ml_stack._vector_job_by_name(job_name);
    f := ml_stack._search_filter_sql(job.relation, filters);
    -- hybrid: each ranking contributes its best max(num_results, 100)
    lim := CASE WHEN mode = 'hybrid' THEN greatest(num_results, 100) ELSE num_results END;

    IF mode IN ('semantic', 'hybrid') THEN
        IF job.spec ->> 'kind' = 'python' THEN
            SELECT e INTO qvec FROM ml_stack._embed_batch(job.spec, ARRAY[query]) AS e;
        ELSE
            qvec := ml_stack._dense_vector(job.spec, query);
        END IF;
    END IF;
    IF mode IN ('keyword', 'hybrid') THEN
        terms := ARRAY(SELECT DISTINCT l.term FROM ml_stack._lexemes(job.text_config::regconfig, query) AS l ORDER BY 1);
        EXECUTE format('SELECT count(*), avg(v.doc_length)::float8 FROM ml_stack.%I AS v', job.vectors_table)
            INTO n_docs, avgdl;
    END IF;

    ranking := CASE mode
        WHEN 'semantic' THEN ml_stack._semantic_ranking_sql(job, qvec, f.clause, lim)
        WHEN 'keyword' THEN CASE WHEN cardinality(terms) = 0 THEN 'SELECT NULL AS id, NULL::float8 AS score LIMIT 0'
                                 ELSE ml_stack._keyword_ranking_sql(job, f.clause, lim) END
        ELSE format($q$
            SELECT coalesce(sr.id, kr.id) AS id,
                   coalesce(1 / (60 + sr.r)::float8, 0) + coalesce(1 / (60 + kr.r)::float8, 0) AS score
            FROM (SELECT sem.id, row_number() OVER (ORDER BY sem.score DESC NULLS LAST, sem.id) AS r FROM (%s) AS sem) AS sr
            FULL JOIN (SELECT kw.id, row_number() OVER (ORDER BY kw.score DESC, kw.id) AS r FROM (%s) AS kw) AS kr
              ON kr.id = sr.id$q$,
            ml_stack._semantic_ranking_sql(job, qvec, f.clause, lim),
            CASE WHEN cardinality(terms) = 0 THEN format('SELECT v.id, NULL::float8 AS score FROM ml_stack.%I AS v LIMIT 0', job.vectors_table)
                 ELSE ml_stack._keyword_ranking_sql(job, f.clause, lim) END) END;
    IF mode = 'keyword' AND cardinality(terms) = 0 THEN
        RETURN;  -- no word of the query is a lexeme (stop words only, say): nothing matches
    END IF;
    RETURN QUERY EXECUTE format($q$
        SELECT r.id::text, r.score, (row_number() OVER (ORDER BY r.score DESC NULLS LAST, r.id))::integer, to_jsonb(s.*)
        FROM (%s) AS r JOIN %s AS s ON s.%I = r.id
        ORDER BY r.score DESC NULLS LAST, r.id
        LIMIT %s$q$, ranking, job.relation, job.primary_key, num_results)
        USING f."values", terms, ml_stack._any_lexeme_query(terms), n_docs, nullif(avgdl, 0);
END
$$;

-- A LANGUAGE sql wrapper: PL/pgSQL would see the result columns (id, score, rank,
-- record) as variables inside every query of the body.
CREATE OR REPLACE FUNCTION ml_stack.search(job_name text, query text, num_results integer DEFAULT 10,
                                           filters jsonb DEFAULT NULL, mode text DEFAULT 'semantic')
RETURNS TABLE (id text, score float8, rank integer, record jsonb)
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT s.id, s.score, s.rank, s.record
    FROM ml_stack._search(search.job_name, search.query, search.num_results, search.filters, search.mode) AS s
$$;
COMMENT ON FUNCTION ml_stack.search(text, text, integer, jsonb, text) IS
    'ml_stack: the rows of a vector job''s table that best match a text: mode ''semantic'' (exact cosine similarity), ''keyword'' (BM25) or ''hybrid'' (reciprocal rank fusion, k = 60); filters on the table''s columns ({"col": value} or {"col": {"op": value}}). Returns id (the primary key as text), score, rank (1..n) and record (the row as jsonb). Rows still queued are not searched.';
