-- SQL engine: ordinary least squares and ridge regression.
-- One pass over the training rows builds the centred normal equations
-- (X'X and X'y around a near-mean shift, so large offsets do not cancel), then a
-- small dense solve. Ridge adds alpha to the diagonal; the intercept is not
-- penalised (as scikit-learn's Ridge, which centres the data).
-- Returns {"intercepts": [b], "coefficients": [[w1..wp]]} on the preprocessed features.
CREATE OR REPLACE FUNCTION ml_stack._fit_least_squares(dataset jsonb, alpha float8)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET jit = off
SET extra_float_digits = 3
AS $$
#variable_conflict use_column  -- generated-column aliases (i, ci) in the queries below
DECLARE
    p      integer := jsonb_array_length(dataset -> 'x');
    cy     float8 := (dataset -> 'label' ->> 'mean')::float8;
    inner_cols text;
    aggs   text := 'count(*)::float8, sum(dy)';
    s      float8[];
    n      float8;
    sy     float8;
    a      float8[] := array_fill(0::float8, ARRAY[p * p]);
    b      float8[] := array_fill(0::float8, ARRAY[p]);
    sx     float8[] := array_fill(0::float8, ARRAY[p]);
    mx     float8[] := array_fill(0::float8, ARRAY[p]);
    w      float8[];
    pos    integer;
    i integer; j integer;
    started timestamptz := clock_timestamp();
BEGIN
    SELECT string_agg(format('%s - %s::float8 AS d%s', e, (dataset -> 'x_mean' ->> (i - 1)::integer), i), ', ')
    INTO inner_cols
    FROM jsonb_array_elements_text(dataset -> 'x') WITH ORDINALITY AS t(e, i);
    FOR i IN 1 .. p LOOP
        aggs := aggs || format(', sum(d%s), sum(d%s * dy)', i, i);
    END LOOP;
    FOR i IN 1 .. p LOOP
        FOR j IN i .. p LOOP
            aggs := aggs || format(', sum(d%s * d%s)', i, j);
        END LOOP;
    END LOOP;
    -- OFFSET 0 fences the per-row expressions: computed once, not once per aggregate
    EXECUTE format('SELECT ARRAY[%s] FROM (SELECT %s, y - %s::float8 AS dy FROM pg_temp._ml_stack_rows WHERE %s OFFSET 0) AS t',
                   aggs, inner_cols, cy, dataset ->> 'train_filter')
    INTO s;
    n := s[1]; sy := s[2];
    FOR i IN 1 .. p LOOP
        sx[i] := s[3 + (i - 1) * 2];
        b[i] := s[4 + (i - 1) * 2] - sx[i] * sy / n;
    END LOOP;
    pos := 2 + 2 * p;
    FOR i IN 1 .. p LOOP
        FOR j IN i .. p LOOP
            pos := pos + 1;
            a[(i - 1) * p + j] := s[pos] - sx[i] * sx[j] / n;
            a[(j - 1) * p + i] := a[(i - 1) * p + j];
        END LOOP;
        a[(i - 1) * p + i] := a[(i - 1) * p + i] + alpha;
    END LOOP;
    w := ml_stack._solve_psd(a, b);
    -- intercept = mean(y) - mean(x) . w
    sy := cy + sy / n;
    FOR i IN 1 .. p LOOP
        mx[i] := (dataset -> 'x_mean' ->> (i - 1))::float8 + sx[i] / n;
        sy := sy - mx[i] * w[i];
    END LOOP;
    RAISE NOTICE 'ml_stack: least squares on % rows x % features in % s', n, p,
        round(extract(epoch FROM clock_timestamp() - started)::numeric, 3);
    RETURN jsonb_build_object('intercepts', jsonb_build_array(sy), 'coefficients', jsonb_build_array(to_jsonb(w)));
END
$$;
