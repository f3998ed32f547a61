-- The pure-SQL text transformers (DESIGN §3b). Every one of them starts from the
-- lexemes of to_tsvector(config, text) and their term frequencies (positions):
--   hashing: signed feature hashing, bucket = md5(lexeme)[hex 1..8] mod dims,
--            sign = + when md5(lexeme)[hex 9] < 8, value sign * (1 + ln tf),
--            summed per bucket, then L2-normalised; stateless;
--   counts:  tf per term of a fitted vocabulary (a bag of words);
--   tfidf:   tf * idf per term of a fitted vocabulary, L2-normalised (as
--            scikit-learn's TfidfVectorizer with its defaults: smooth idf).
-- Vectors are sparse here (idx, val), 1-based; embed() makes them dense real[].
-- _lexemes, _hashing_terms and _vocabulary_terms have no SET clause, so that the
-- planner inlines them into the queries over many rows (training, jobs): a pass of
-- the vocabulary transform over 29k descriptions took 1.09 s as a function call per
-- row, 0.44 s inlined. They are on the serving path (predict_row) and, as the
-- predictors, protected by schema-qualified names instead (DESIGN §4).
-- A text is read up to its first 65,536 characters (docs/vectors.md: tsvector
-- keeps at most 256 positions per lexeme and none past 16,383 words).

CREATE OR REPLACE FUNCTION ml_stack._max_text_length()
RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT 65536 $$;

-- The lexemes of a text and their term frequencies.
CREATE OR REPLACE FUNCTION ml_stack._lexemes(config regconfig, input text)
RETURNS TABLE (term text, tf integer)
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT u.lexeme, cardinality(u.positions)
    FROM unnest(to_tsvector(config, left(input, ml_stack._max_text_length()))) AS u
$$;

CREATE OR REPLACE FUNCTION ml_stack._hashing_terms(input text, dims integer, config regconfig, signed boolean)
RETURNS TABLE (idx integer, val float8)
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    WITH hashed AS (
        SELECT (('x' || substr(h, 1, 8))::bit(32)::bigint % dims)::integer + 1 AS idx,
               CASE WHEN signed AND substr(h, 9, 1) COLLATE "C" >= '8' THEN -1 ELSE 1 END * (1 + ln(l.tf)) AS v
        FROM ml_stack._lexemes(config, input) AS l, LATERAL md5(l.term) AS h
    ), buckets AS (
        SELECT b.idx, sum(b.v) AS v FROM hashed AS b GROUP BY b.idx
    )
    SELECT b.idx, b.v / sqrt(sum(b.v * b.v) OVER ()) FROM buckets AS b WHERE b.v <> 0
$$;

CREATE OR REPLACE FUNCTION ml_stack._vocabulary_terms(input text, vectorizer_id bigint, config regconfig, tfidf boolean)
RETURNS TABLE (idx integer, val float8)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    WITH weighted AS (
        SELECT v.idx, l.tf * CASE WHEN tfidf THEN v.idf ELSE 1 END AS w
        FROM ml_stack._lexemes(config, input) AS l
        JOIN ml_stack.vectorizer_terms AS v ON v.vectorizer_id = _vocabulary_terms.vectorizer_id
                                          AND v.term = l.term COLLATE "C"
    )
    SELECT w.idx, CASE WHEN tfidf THEN w.w / sqrt(sum(w.w * w.w) OVER ()) ELSE w.w END FROM weighted AS w
$$;

-- The sparse vector of a text under a resolved transformer (see _resolve_transformer).
CREATE OR REPLACE FUNCTION ml_stack._sparse_terms(spec jsonb, input text)
RETURNS TABLE (idx integer, val float8)
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF input IS NULL THEN
        RETURN;
    END IF;
    CASE spec ->> 'kind'
        WHEN 'hashing' THEN
            RETURN QUERY SELECT t.idx, t.val FROM ml_stack._hashing_terms(input, (spec ->> 'dims')::integer,
                (spec ->> 'config')::regconfig, (spec ->> 'signed')::boolean) AS t;
        WHEN 'counts', 'tfidf' THEN
            RETURN QUERY SELECT t.idx, t.val FROM ml_stack._vocabulary_terms(input, (spec ->> 'vectorizer_id')::bigint,
                (spec ->> 'config')::regconfig, spec ->> 'kind' = 'tfidf') AS t;
        ELSE
            RAISE EXCEPTION 'transformer "%" has no sparse form', spec ->> 'name'
                USING ERRCODE = 'feature_not_supported';
    END CASE;
END
$$;

-- Dense real[] of a sparse vector; NULL for a NULL text, zeros for a text without lexemes.
CREATE OR REPLACE FUNCTION ml_stack._dense_vector(spec jsonb, input text)
RETURNS real[]
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v real[];
    t record;
BEGIN
    IF input IS NULL THEN
        RETURN NULL;
    END IF;
    v := array_fill(0::real, ARRAY[(spec ->> 'dims')::integer]);
    FOR t IN SELECT s.idx, s.val FROM ml_stack._sparse_terms(spec, input) AS s LOOP
        v[t.idx] := t.val;
    END LOOP;
    RETURN v;
END
$$;

-- The SQL call of a transformer's sparse form over a text expression, for queries
-- over many rows: calling the inner function directly keeps its plan for the
-- whole query (through _sparse_terms, a PL/pgSQL wrapper, it is planned per row).
CREATE OR REPLACE FUNCTION ml_stack._sparse_terms_sql(spec jsonb, input_sql text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    CASE spec ->> 'kind'
        WHEN 'hashing' THEN
            RETURN format('ml_stack._hashing_terms(%s, %s, %L::regconfig, %L::boolean)', input_sql,
                          (spec ->> 'dims')::integer, spec ->> 'config', (spec ->> 'signed')::boolean);
        WHEN 'counts', 'tfidf' THEN
            RETURN format('ml_stack._vocabulary_terms(%s, %s, %L::regconfig, %L::boolean)', input_sql,
                          (spec ->> 'vectorizer_id')::bigint, spec ->> 'config', spec ->> 'kind' = 'tfidf');
        ELSE
            RAISE EXCEPTION 'transformer "%" has no sparse form', spec ->> 'name' USING ERRCODE = 'feature_not_supported';
    END CASE;
END
$$;
