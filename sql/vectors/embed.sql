-- embed(): a text (or a batch of texts) to real[] with a named transformer.

-- One resolved transformer, many texts, in input order. Model transformers
-- (ml_stack_python) get the whole batch: batching is where their throughput is.
CREATE OR REPLACE FUNCTION ml_stack._embed_batch(spec jsonb, inputs text[])
RETURNS SETOF real[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF spec ->> 'kind' = 'python' THEN
        RETURN QUERY EXECUTE 'SELECT v FROM ml_stack._python_embed($1, $2, $3) AS v'
            USING spec ->> 'name', inputs, spec -> 'options';
    ELSE
        RETURN QUERY SELECT ml_stack._dense_vector(spec, t.input)
                     FROM unnest(inputs) WITH ORDINALITY AS t(input, i) ORDER BY t.i;
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION ml_stack.embed(transformer text, input text, options jsonb DEFAULT '{}')
RETURNS real[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    spec jsonb := ml_stack._resolve_transformer(transformer, options);
    v real[];
BEGIN
    IF spec ->> 'kind' = 'python' THEN
        SELECT e INTO v FROM ml_stack._embed_batch(spec, ARRAY[input]) AS e;
        RETURN v;
    END IF;
    RETURN ml_stack._dense_vector(spec, input);
END
$$;
COMMENT ON FUNCTION ml_stack.embed(text, text, jsonb) IS
    'ml_stack: the vector (real[]) of a text under a transformer (''hashing'', a fitted vectorizer''s name, or a model of ml_stack_python); NULL for NULL, zeros for a text without words.';

CREATE OR REPLACE FUNCTION ml_stack.embed(transformer text, inputs text[], options jsonb DEFAULT '{}')
RETURNS SETOF real[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY SELECT e FROM ml_stack._embed_batch(ml_stack._resolve_transformer(transformer, options), inputs) AS e;
END
$$;
COMMENT ON FUNCTION ml_stack.embed(text, text[], jsonb) IS
    'ml_stack: the vectors of a batch of texts, one row each, in input order (a model transformer embeds them in batches).';

CREATE OR REPLACE FUNCTION ml_stack._df_bound(v jsonb, n bigint)
RETURNS float8
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN v IS NULL THEN NULL
                WHEN v::text LIKE '%.%' AND v::text::float8 <= 1 THEN v::text::float8 * n
                ELSE v::text::float8 END
$$;

-- Fit a vocabulary on the texts that `source` (a query of one text column)
-- returns. Terms: the lexemes of to_tsvector(config, text); kept when their
-- document frequency is within [min_df, max_df] (a whole number is a count, a
-- fraction a share of the documents, as scikit-learn), then the max_features most
-- frequent (by total count; ties by term). Positions follow the terms' byte order.
CREATE OR REPLACE FUNCTION ml_stack._fit_vocabulary(name text, method text, options jsonb, source text, fitted_on jsonb)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
DECLARE
    cfg regconfig;
    n bigint;
    min_df float8;
    max_df float8;
    max_features integer;
    next_version integer;
    vid bigint;
    terms bigint;
    started timestamptz := clock_timestamp();

BEGIN
    IF method IS NULL OR method NOT IN ('counts', 'tfidf') THEN
        RAISE EXCEPTION 'unknown vectorizer method "%"', method
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Use ''tfidf'' or ''counts''; ''hashing'' needs no fitting.';
    END IF;
    options := ml_stack._check_options(options, ARRAY['config', 'min_df', 'max_df', 'max_features'], format('a %s vectorizer', method));
    cfg := ml_stack._text_config(coalesce(options ->> 'config', 'english'));
    FOR n IN SELECT 1 FROM jsonb_each(options) AS o WHERE o.key IN ('min_df', 'max_df')
                          AND (jsonb_typeof(o.value) <> 'number' OR o.value::text::float8 < 0) LOOP
        RAISE EXCEPTION 'min_df and max_df must be numbers >= 0 (a whole number: documents; a fraction: share of the documents)'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'e.g. options => ''{"min_df": 2, "max_df": 0.95}''';
    END LOOP;
    max_features := ml_stack._integer_option(options, 'max_features', NULL, 1, 65536);

    CREATE TEMPORARY TABLE _ml_stack_documents ON COMMIT DROP AS
        SELECT 0::bigint AS d, NULL::tsvector AS tv WITH NO DATA;
    EXECUTE format('INSERT INTO pg_temp._ml_stack_documents SELECT row_number() OVER (), to_tsvector(%L::regconfig, left(doc, ml_stack._max_text_length())) '
                   'FROM (%s) AS s(doc) WHERE doc IS NOT NULL', cfg, source);
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n = 0 THEN
        DROP TABLE pg_temp._ml_stack_documents;
        RAISE EXCEPTION 'no text to fit the vocabulary on: every value is NULL, or there are no rows'
            USING ERRCODE = 'no_data_found', HINT = 'Fit on a column with some non-NULL text.';
    END IF;
    -- as scikit-learn: a number written with a fraction (0.5, 1.0) is a share of the documents, else a count
    min_df := coalesce(ml_stack._df_bound(options -> 'min_df', n), 1);
    max_df := coalesce(ml_stack._df_bound(options -> 'max_df', n), n);

    PERFORM pg_advisory_xact_lock(hashtext('ml_stack.vectorizer:' || name));
    next_version := coalesce((SELECT max(v.version) FROM ml_stack.vectorizers AS v WHERE v.name = _fit_vocabulary.name), 0) + 1;
    INSERT INTO ml_stack.vectorizers (name, version, method, config, options, dims, documents, fitted_on)
    VALUES (name, next_version, method, cfg::text, options, 1, n, fitted_on)
    RETURNING id INTO vid;
    INSERT INTO ml_stack.vectorizer_terms (vectorizer_id, term, idx, df, idf)
    SELECT vid, k.term, row_number() OVER (ORDER BY k.term), k.df, ln((1 + n)::float8 / (1 + k.df)) + 1
    FROM (SELECT c.term, c.df FROM (
              SELECT u.lexeme COLLATE "C" AS term, count(*) AS df, sum(cardinality(u.positions)) AS tf
              FROM pg_temp._ml_stack_documents AS d, unnest(d.tv) AS u
              GROUP BY 1) AS c
          WHERE c.df >= min_df AND c.df <= max_df
          ORDER BY c.tf DESC, c.term
          LIMIT max_features) AS k;
    GET DIAGNOSTICS terms = ROW_COUNT;
    DROP TABLE pg_temp._ml_stack_documents;
    IF terms = 0 THEN
        RAISE EXCEPTION 'the vocabulary is empty: no term of % documents is within min_df and max_df', n
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Lower min_df or raise max_df; texts of stop words only have no terms (config ''simple'' keeps every word).';
    END IF;
    UPDATE ml_stack.vectorizers AS v SET dims = terms WHERE v.id = vid;
    IF clock_timestamp() - started > interval '2 seconds' THEN
        RAISE NOTICE 'ml_stack: fitted % vocabulary "%" (% terms, % documents) in % s', method, name, terms, n,
            round(extract(epoch FROM clock_timestamp() - started)::numeric, 1);
    END IF;
    RETURN vid;
END
$$;

CREATE OR REPLACE FUNCTION ml_stack._fit_vectorizer(name text, relation_name text, column_name text, method text,
                                                    options jsonb, caller_search_path text)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rel regclass;
BEGIN
    IF name IS NULL OR btrim(name) = '' OR name IN ('hashing', 'counts', 'tfidf') OR name LIKE '%/%' THEN
        RAISE EXCEPTION 'invalid vectorizer name "%"', name
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give it a name of its own, without ''/'' (reserved for models), other than hashing, counts or tfidf.';
    END IF;
    rel := ml_stack._resolve_relation(relation_name, caller_search_path);
    PERFORM ml_stack._text_column(rel, column_name);
    RETURN ml_stack._fit_vocabulary(name, method, options, format('SELECT %I::text FROM %s', column_name, rel),
                                    jsonb_build_object('relation', rel::text, 'column', column_name));
END
$$;

-- No SET clause: relation_name resolves with the caller's search_path (as train's).
CREATE OR REPLACE FUNCTION ml_stack.fit_vectorizer(name text, relation_name text, column_name text, method text DEFAULT 'tfidf',
                                                   options jsonb DEFAULT '{}')
RETURNS bigint
LANGUAGE sql VOLATILE
AS $$
    SELECT ml_stack._fit_vectorizer(fit_vectorizer.name, fit_vectorizer.relation_name, fit_vectorizer.column_name,
                                    fit_vectorizer.method, fit_vectorizer.options, pg_catalog.current_setting('search_path'))
$$;
COMMENT ON FUNCTION ml_stack.fit_vectorizer(text, text, text, text, jsonb) IS
    'ml_stack: fit a counts or tfidf vocabulary on a text column (options: config, min_df, max_df, max_features); embed(name, ...) then uses its newest version. Returns the vectorizer id.';
