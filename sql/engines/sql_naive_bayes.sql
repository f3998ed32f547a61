-- SQL engine: multinomial naive Bayes, as scikit-learn's MultinomialNB (alpha,
-- fit_prior = true): feature_log_prob[c][j] = ln((F[c][j] + alpha) / (sum_j F[c][j]
-- + alpha * P)) over the per-class feature sums F, class_log_prior[c] = ln(n_c / n).
-- One grouped pass: the numeric features (x) are summed per class, the vectorized
-- text columns (blocks) per class and term from their sparse vectors, never densified.
-- Its scores are linear in the features, so the artifact is the 'linear' format
-- (softmax link over one score per class) and serves as compiled SQL arithmetic.
-- It scores the test rows itself, sparsely, into pg_temp._ml_stack_predictions.
-- Block values go through real, as embed() returns them, so that the features of
-- training and serving are the same numbers.
CREATE OR REPLACE FUNCTION ml_stack._fit_naive_bayes(dataset jsonb, alpha float8)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET jit = off
SET extra_float_digits = 3
AS $$
DECLARE
    classes float8[] := ARRAY(SELECT jsonb_array_elements_text(dataset -> 'classes')::float8);
    nk      integer := jsonb_array_length(dataset -> 'classes');
    p       integer := jsonb_array_length(dataset -> 'x');
    np      integer := (dataset ->> 'num_features')::integer;
    xpos    integer[] := ARRAY(SELECT jsonb_array_elements_text(dataset -> 'x_positions')::integer);
    tf      jsonb := dataset -> 'transform';
    train_filter text := dataset ->> 'train_filter';
    f       float8[];     -- per-class feature sums, class-major: f[(c - 1) * np + j]
    w       float8[];     -- feature log probabilities, then folded onto raw features
    counts  float8[];
    ints    float8[] := '{}';
    coefs   jsonb := '[]';
    blk     jsonb;
    term    record;
    grp     record;
    c integer; j integer; jj integer;
    total float8;
    started timestamptz := clock_timestamp();
BEGIN
    alpha := greatest(alpha, 1e-10);   -- scikit-learn's floor for alpha
    FOR blk IN SELECT value FROM jsonb_array_elements(dataset -> 'blocks') LOOP
        IF blk -> 'spec' ->> 'kind' = 'python' THEN
            RAISE EXCEPTION 'naive_bayes needs non-negative features; column "%" is vectorized by %, whose vectors have negative values',
                            blk ->> 'column', blk -> 'spec' ->> 'name'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Train the python engine on it (e.g. algorithm => ''xgboost''), or vectorize with "counts" or "tfidf".';
        END IF;
        IF blk -> 'spec' ->> 'kind' = 'hashing' AND (blk -> 'spec' ->> 'signed')::boolean THEN
            RAISE EXCEPTION 'naive_bayes needs non-negative features; column "%" is vectorized by signed hashing', blk ->> 'column'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = format('Use {"%s": {"vectorize": "hashing", "options": {"signed": false}}}, or "counts" or "tfidf".', blk ->> 'column');
        END IF;
    END LOOP;
    f := array_fill(0::float8, ARRAY[nk * np]);

    -- the class counts and the numeric features: one grouped pass (their minimum checks the sign)
    counts := array_fill(0::float8, ARRAY[nk]);
    FOR grp IN EXECUTE format('SELECT y, count(*)::float8 AS n, ARRAY[%s]::float8[] AS s, ARRAY[%s]::float8[] AS mn '
                              'FROM pg_temp._ml_stack_rows WHERE %s GROUP BY y',
                              coalesce((SELECT string_agg(format('sum(%s)', e), ', ' ORDER BY i)
                                        FROM jsonb_array_elements_text(dataset -> 'x') WITH ORDINALITY AS t(e, i)), ''),
                              coalesce((SELECT string_agg(format('min(%s)', e), ', ' ORDER BY i)
                                        FROM jsonb_array_elements_text(dataset -> 'x') WITH ORDINALITY AS t(e, i)), ''),
                              train_filter) LOOP
        c := array_position(classes, grp.y);
        counts[c] := grp.n;
        FOR j IN 1 .. p LOOP
            IF grp.mn[j] < 0 THEN
                RAISE EXCEPTION 'naive_bayes needs non-negative features; "%" has negative values', dataset -> 'features' -> (j - 1) ->> 'name'
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'Leave it out in a view, or scale it with preprocess {"scale": "min_max"}.';
            END IF;
            f[(c - 1) * np + xpos[j]] := grp.s[j];
        END LOOP;
    END LOOP;
    -- the text blocks: per class and term
    FOR blk IN SELECT value FROM jsonb_array_elements(dataset -> 'blocks') LOOP
        FOR term IN EXECUTE format('SELECT t.y, s.idx, sum(s.val::real::float8) AS v, min(s.val) AS mn '
                                   'FROM pg_temp._ml_stack_rows AS t, LATERAL %s AS s '
                                   'WHERE %s GROUP BY t.y, s.idx',
                                   ml_stack._sparse_terms_sql(blk -> 'spec', format('t.t%s', blk ->> 't')), train_filter) LOOP
            IF term.mn < 0 THEN
                RAISE EXCEPTION 'naive_bayes needs non-negative features; column "%" is vectorized to negative values', blk ->> 'column'
                    USING ERRCODE = 'invalid_parameter_value', HINT = 'Use "counts", "tfidf" or unsigned hashing.';
            END IF;
            c := array_position(classes, term.y);
            f[(c - 1) * np + (blk ->> 'offset')::integer + term.idx] := term.v;
        END LOOP;
    END LOOP;

    -- log probabilities, then the preprocessing of x folded in: x' = (coalesce(x, impute) - shift) / scale
    w := array_fill(0::float8, ARRAY[nk * np]);
    FOR c IN 1 .. nk LOOP
        SELECT sum(x) + alpha * np INTO total FROM unnest(f[(c - 1) * np + 1 : c * np]) AS x;
        FOR j IN 1 .. np LOOP
            w[(c - 1) * np + j] := ln(f[(c - 1) * np + j] + alpha) - ln(total);
        END LOOP;
        ints := ints || (ln(counts[c]) - ln((dataset ->> 'train_rows')::float8));
        FOR j IN 1 .. p LOOP
            jj := (c - 1) * np + xpos[j];
            w[jj] := w[jj] / (tf -> (j - 1) ->> 'scale')::float8;
            ints[c] := ints[c] - w[jj] * (tf -> (j - 1) ->> 'shift')::float8;
        END LOOP;
        coefs := coefs || jsonb_build_array(to_jsonb(w[(c - 1) * np + 1 : c * np]));
    END LOOP;
    PERFORM ml_stack._predict_test_rows_sparse(dataset, w, ints);
    IF clock_timestamp() - started > interval '2 seconds' THEN
        RAISE NOTICE 'ml_stack: naive_bayes fitted on % features in % s', np,
            round(extract(epoch FROM clock_timestamp() - started)::numeric, 1);
    END IF;
    RETURN jsonb_build_object('format', 'linear', 'link', 'softmax', 'intercepts', to_jsonb(ints),
                              'coefficients', coefs, 'impute', ml_stack._model_impute(dataset));
END
$$;
