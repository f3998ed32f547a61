-- A model artifact turned into SQL expressions: the compiled predictors and the
-- test-split metrics are built from the same text, so what is scored is what is served.
-- `accessor` is a format() string naming raw feature j, e.g. 'features[%s]' or 'x%s'.
-- Operators and types are written schema-qualified (OPERATOR(pg_catalog.+), pg_catalog.float8):
-- an inlined serving function is parsed with the caller's search_path, and one that puts
-- another schema before pg_catalog (search_path = public, pg_catalog) would otherwise bind an
-- operator of that schema. OPERATOR() has the precedence of any operator, hence the parentheses.
-- A number is written (-0.5)::pg_catalog.float8: the parser folds a parenthesised negative
-- constant, where -0.5::float8 would apply the operator - that the search_path finds.

-- Probabilities of the two classes from a logistic score; the clamp keeps exp() finite.
CREATE OR REPLACE FUNCTION ml_stack._binary_proba(score float8)
RETURNS float8[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p1 float8;
BEGIN
    IF score IS NULL THEN
        RETURN NULL;
    END IF;
    p1 := 1 / (1 + exp(-least(greatest(score, -700), 700)));
    RETURN ARRAY[1 - p1, p1];
END
$$;

CREATE OR REPLACE FUNCTION ml_stack._softmax(scores float8[])
RETURNS float8[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    top float8;
    total float8 := 0;
    e float8[] := '{}';
    i integer;
BEGIN
    IF scores IS NULL OR array_position(scores, NULL) IS NOT NULL THEN
        RETURN NULL;
    END IF;
    SELECT max(s) INTO top FROM unnest(scores) AS s;
    FOR i IN 1 .. cardinality(scores) LOOP
        -- exp() raises an underflow error where a float would round to 0
        e := e || CASE WHEN scores[i] - top < -700 THEN 0 ELSE exp(scores[i] - top) END;
        total := total + e[i];
    END LOOP;
    FOR i IN 1 .. cardinality(scores) LOOP
        e[i] := e[i] / total;
    END LOOP;
    RETURN e;
END
$$;

-- Position of the largest score (the first on ties, as numpy's argmax); NULL if any is NULL.
CREATE OR REPLACE FUNCTION ml_stack._argmax(scores float8[])
RETURNS integer
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    best integer := 1;
    i integer;
BEGIN
    IF scores IS NULL OR array_position(scores, NULL) IS NOT NULL THEN
        RETURN NULL;
    END IF;
    FOR i IN 2 .. cardinality(scores) LOOP
        IF scores[i] > scores[best] THEN best := i; END IF;
    END LOOP;
    RETURN best;
END
$$;

-- The linear scores of a 'linear'-format artifact.
CREATE OR REPLACE FUNCTION ml_stack._score_sql(artifact jsonb, accessor text)
RETURNS text[]
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
SET extra_float_digits = 3
AS $$
DECLARE
    scores text[] := '{}';
    term text;
    wk jsonb;
    k integer := 0;
    j integer;
    iv float8;
    expr text;
BEGIN
    FOR wk IN SELECT value FROM jsonb_array_elements(artifact -> 'coefficients') LOOP
        expr := format('(%s)::pg_catalog.float8', (artifact -> 'intercepts' ->> k)::float8);
        FOR j IN 1 .. jsonb_array_length(wk) LOOP
            iv := (artifact -> 'impute' ->> (j - 1))::float8;
            term := format(accessor, j);
            IF iv IS NOT NULL THEN
                term := format('coalesce(%s, (%s)::pg_catalog.float8)', term, iv);
            END IF;
            -- every number goes through float8, so nothing but a number reaches the SQL text
            expr := expr || format(' OPERATOR(pg_catalog.+) (%s OPERATOR(pg_catalog.*) (%s)::pg_catalog.float8)', term, (wk ->> (j - 1))::float8);
        END LOOP;
        scores := scores || format('(%s)', expr);
        k := k + 1;
    END LOOP;
    RETURN scores;
END
$$;

-- A wide linear model's scores (more than _wide_model_features() features, served with the
-- features[%s] accessor): one _linear_scores call giving every score as a float8[]; NULL for
-- the others, whose scores _score_sql unrolls. A confidential model's predictors (marked by
-- the compiler with "confidential_model") read its weights instead (serving/confidential.sql).
CREATE OR REPLACE FUNCTION ml_stack._wide_scores_sql(artifact jsonb, accessor text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
SET extra_float_digits = 3
AS $$
BEGIN
    IF artifact ? 'confidential_model' AND accessor = 'features[%s]' THEN
        RETURN format('ml_stack._confidential_scores(%s::pg_catalog.int8, features)', (artifact ->> 'confidential_model')::bigint);
    ELSIF jsonb_array_length(artifact -> 'coefficients' -> 0) <= ml_stack._wide_model_features() OR accessor <> 'features[%s]' THEN
        RETURN NULL;
    END IF;
    RETURN format('ml_stack._linear_scores(features, %L::pg_catalog.float8[], %L::pg_catalog.float8[], %L::pg_catalog.float8[])',
                  (SELECT array_agg(w::float8 ORDER BY k, j) FROM jsonb_array_elements(artifact -> 'coefficients') WITH ORDINALITY AS c(v, k),
                                                            jsonb_array_elements_text(c.v) WITH ORDINALITY AS e(w, j)),
                  (SELECT array_agg(b::float8 ORDER BY i) FROM jsonb_array_elements_text(artifact -> 'intercepts') WITH ORDINALITY AS t(b, i)),
                  (SELECT array_agg(CASE WHEN v = 'null' THEN NULL ELSE v::text::float8 END ORDER BY i)
                   FROM jsonb_array_elements(artifact -> 'impute') WITH ORDINALITY AS t(v, i)));
END
$$;

-- SQL expression of the prediction (regression value or class label).
CREATE OR REPLACE FUNCTION ml_stack._predict_sql(artifact jsonb, classes float8[], accessor text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
SET extra_float_digits = 3
AS $$
DECLARE
    wide text := ml_stack._wide_scores_sql(artifact, accessor);
    scores text[] := CASE WHEN wide IS NULL THEN ml_stack._score_sql(artifact, accessor) END;
    first_score text := coalesce(scores[1], format('(%s)[1]', wide));
    class_array text := format('%L::pg_catalog.float8[]', classes);
BEGIN
    CASE artifact ->> 'link'
        WHEN 'identity' THEN
            RETURN first_score;
        WHEN 'logistic' THEN
            -- class 1 when the score is > 0 (scikit-learn's rule); a NULL score indexes to NULL
            RETURN format('(%s)[(%s OPERATOR(pg_catalog.>) 0::pg_catalog.float8)::pg_catalog.int4 OPERATOR(pg_catalog.+) 1]', class_array, first_score);
        WHEN 'softmax' THEN
            RETURN format('(%s)[ml_stack._argmax(%s)]', class_array,
                          coalesce(wide, format('ARRAY[%s]', array_to_string(scores, ', '))));
        ELSE
            RAISE EXCEPTION 'unknown model link "%"', artifact ->> 'link';
    END CASE;
END
$$;

-- SQL expression of the class probabilities (float8[], classes ascending); NULL for regression.
CREATE OR REPLACE FUNCTION ml_stack._proba_sql(artifact jsonb, accessor text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    wide text := ml_stack._wide_scores_sql(artifact, accessor);
    scores text[] := CASE WHEN wide IS NULL THEN ml_stack._score_sql(artifact, accessor) END;
BEGIN
    RETURN CASE artifact ->> 'link'
        WHEN 'logistic' THEN format('ml_stack._binary_proba(%s)', coalesce(scores[1], format('(%s)[1]', wide)))
        WHEN 'softmax' THEN format('ml_stack._softmax(%s)', coalesce(wide, format('ARRAY[%s]', array_to_string(scores, ', '))))
    END;
END
$$;

-- Wide linear models (text vocabularies: thousands of features) are not unrolled
-- into one expression (11k terms x 8 classes exceeded the stack depth): their
-- scores come from this loop over a constant weight array (class-major), which
-- skips zero features. A leaf of the predictors, like _softmax: not inlinable
-- anyway (a loop), so it is pinned.
CREATE OR REPLACE FUNCTION ml_stack._linear_scores(features float8[], weights float8[], intercepts float8[], impute float8[])
RETURNS float8[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p integer := cardinality(features);
    s float8[] := intercepts;
    x float8;
BEGIN
    IF features IS NULL THEN
        RETURN NULL;
    END IF;
    FOR j IN 1 .. p LOOP
        x := coalesce(features[j], impute[j]);
        IF x IS NULL THEN
            RETURN NULL;
        END IF;
        IF x <> 0 THEN
            FOR c IN 1 .. cardinality(s) LOOP
                s[c] := s[c] + x * weights[(c - 1) * p + j];
            END LOOP;
        END IF;
    END LOOP;
    RETURN s;
END
$$;

-- Above this many features a linear model is served through _linear_scores.
CREATE OR REPLACE FUNCTION ml_stack._wide_model_features()
RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT 256 $$;
