-- Shared by the sparse engines of the SQL engine (naive Bayes, logistic regression by L-BFGS): their models are
-- 'linear' artifacts over the model's full feature vector (numeric x and text blocks), in raw feature space.

-- The artifact's impute list: the x features' impute values at their positions, NULL for block features.
CREATE OR REPLACE FUNCTION ml_stack._model_impute(dataset jsonb)
RETURNS jsonb
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT to_jsonb(array_agg(i.v ORDER BY g.pos))
    FROM generate_series(1, (dataset ->> 'num_features')::integer) AS g(pos)
    LEFT JOIN (SELECT p.pos::integer AS pos, (dataset -> 'transform' -> (p.j - 1)::integer ->> 'impute')::float8 AS v
               FROM jsonb_array_elements_text(dataset -> 'x_positions') WITH ORDINALITY AS p(pos, j)) AS i
           ON i.pos = g.pos
$$;

-- Score the test rows with the served weights (raw space, class-major: weights[(c - 1) * P + j], one vector per
-- score), sparsely (text blocks through their sparse transform, never densified), into
-- pg_temp.<into_table>(r, yhat, proba). One score: logistic link (class 2 when > 0), else softmax.
-- The deployed model is scored so on a new split too (training/compare.sql), with a dataset that
-- describes its own features.
CREATE OR REPLACE FUNCTION ml_stack._predict_test_rows_sparse(dataset jsonb, weights float8[], intercepts float8[],
                                                              into_table text DEFAULT '_ml_stack_predictions')
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET jit = off
SET extra_float_digits = 3
AS $$
DECLARE
    classes float8[] := ARRAY(SELECT jsonb_array_elements_text(dataset -> 'classes')::float8);
    k integer := cardinality(intercepts);
    np integer := (dataset ->> 'num_features')::integer;
    p integer := jsonb_array_length(dataset -> 'x');
    xpos integer[] := ARRAY(SELECT jsonb_array_elements_text(dataset -> 'x_positions')::integer);
    tf jsonb := dataset -> 'transform';
    scores text[] := '{}';
    block_joins text := '';
    blk jsonb;
BEGIN
    FOR c IN 1 .. k LOOP
        scores := scores || format('%s::float8%s', intercepts[c],
            coalesce((SELECT string_agg(format(' + $1[%s] * %s', (c - 1) * np + xpos[g.i],
                                               CASE WHEN tf -> (g.i - 1) ->> 'impute' IS NULL THEN format('t.x%s', g.i)
                                                    ELSE format('coalesce(t.x%s, %s::float8)', g.i, (tf -> (g.i - 1) ->> 'impute')::float8) END), '')
                      FROM generate_series(1, p) AS g(i)), ''));
    END LOOP;
    FOR blk IN SELECT value FROM jsonb_array_elements(dataset -> 'blocks') LOOP
        -- one pass over the row's terms gives the block's contribution to every score
        block_joins := block_joins || format(
            ' CROSS JOIN LATERAL (SELECT ARRAY[%s] AS s FROM %s AS s) AS b%s',
            (SELECT string_agg(format('coalesce(sum(s.val::real::float8 * $1[%s + s.idx]), 0)', (g.c - 1) * np + (blk ->> 'offset')::integer), ', ')
             FROM generate_series(1, k) AS g(c)),
            ml_stack._sparse_terms_sql(blk -> 'spec', format('t.t%s', blk ->> 't')), blk ->> 't');
        FOR c IN 1 .. k LOOP
            scores[c] := scores[c] || format(' + b%s.s[%s]', blk ->> 't', c);
        END LOOP;
    END LOOP;
    IF to_regclass(format('pg_temp.%I', into_table)) IS NOT NULL THEN
        EXECUTE format('DROP TABLE pg_temp.%I', into_table);
    END IF;
    EXECUTE format('CREATE TEMPORARY TABLE %I ON COMMIT DROP AS SELECT r, %s '
                   'FROM (SELECT t.r, ARRAY[%s] AS sc FROM pg_temp._ml_stack_rows AS t%s WHERE %s OFFSET 0) AS q',
                   into_table,
                   CASE WHEN k = 1 THEN '($2::float8[])[(sc[1] > 0)::integer + 1] AS yhat, ml_stack._binary_proba(sc[1]) AS proba'
                        ELSE '($2::float8[])[ml_stack._argmax(sc)] AS yhat, ml_stack._softmax(sc) AS proba' END,
                   array_to_string(scores, ', '), block_joins, dataset ->> 'test_filter')
        USING weights, classes;
END
$$;
