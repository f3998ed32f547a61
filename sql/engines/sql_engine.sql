-- The SQL engine: which algorithms it has, their hyperparameters, and fitting.
-- Engines fit on the preprocessed features; this folds the preprocessing back
-- into the weights, so the artifact works on raw feature values:
--   {"format": "linear", "link": "identity" | "logistic" | "softmax",
--    "intercepts": [b..], "coefficients": [[w..], ..], "impute": [v | null, ..]}
-- score_k = intercepts[k] + sum_j coefficients[k][j] * coalesce(x_j, impute[j]).

CREATE OR REPLACE FUNCTION ml_stack._sql_engine_hyperparams(task text, algorithm text)
RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
        WHEN algorithm = 'linear' AND task = 'regression' THEN ARRAY[]::text[]
        WHEN algorithm = 'ridge' AND task = 'regression' THEN ARRAY['alpha']
        WHEN algorithm = 'linear' AND task = 'classification' THEN ARRAY['C', 'max_iter', 'tol']
        WHEN algorithm = 'naive_bayes' AND task = 'classification' THEN ARRAY['alpha']
    END
$$;
COMMENT ON FUNCTION ml_stack._sql_engine_hyperparams(text, text) IS
    'ml_stack internal: the hyperparameters of a SQL-engine algorithm for a task; NULL when it lacks the pair.';

-- The dense solvers' cost grows with the square (least squares: p^2/2 sums in one
-- pass) or the cube (logistic Newton steps) of the features; measured on 2,000
-- rows here: least squares 3.5 s at 160 features, logistic 2.3 s at 80 and 8 s
-- at 120. Above these sizes they would run for minutes: NULL when the problem
-- fits, else why not (train then hands over to the python engine, or refuses).
CREATE OR REPLACE FUNCTION ml_stack._sql_engine_too_large(task text, algorithm text, dataset jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
        WHEN algorithm IN ('linear', 'ridge') AND task = 'regression' AND jsonb_array_length(dataset -> 'x') > 200 THEN
            format('least squares on %s features (the sql engine solves up to 200 in seconds)', jsonb_array_length(dataset -> 'x'))
        -- wide or text: the sparse solver (sql_sparse_logistic.sql), with its own limit
        WHEN algorithm = 'linear' AND task = 'classification' AND ml_stack._sparse_logistic_wanted(dataset) THEN
            ml_stack._sparse_logistic_too_large(dataset)
        WHEN algorithm = 'linear' AND task = 'classification'
             AND (CASE WHEN jsonb_array_length(dataset -> 'classes') = 2 THEN 1 ELSE jsonb_array_length(dataset -> 'classes') END)
                 * (jsonb_array_length(dataset -> 'x') + 1) > 128 THEN
            format('logistic regression with %s classes and %s features (the sql engine solves up to 128 parameters in seconds)',
                   jsonb_array_length(dataset -> 'classes'), jsonb_array_length(dataset -> 'x'))
    END
$$;

CREATE OR REPLACE FUNCTION ml_stack._sql_fit(task text, algorithm text, hyperparams jsonb, dataset jsonb)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET extra_float_digits = 3
AS $$
DECLARE
    valid   text[] := ml_stack._sql_engine_hyperparams(task, algorithm);
    key     text;
    fit     jsonb;
    link    text;
    tf      jsonb := dataset -> 'transform';
    p       integer := jsonb_array_length(dataset -> 'transform');
    coefs   jsonb := '[]';
    ints    float8[] := '{}';
    w       float8[];
    b       float8;
    wk      jsonb;
    kk      integer;
    j       integer;
BEGIN
    FOR key IN SELECT jsonb_object_keys(hyperparams) LOOP
        IF NOT key = ANY (valid) THEN
            RAISE EXCEPTION 'unknown hyperparameter "%" for algorithm % (%)', key, algorithm, task
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = CASE WHEN cardinality(valid) = 0 THEN 'This algorithm takes no hyperparameters.'
                                  ELSE format('Valid hyperparameters: %s.', array_to_string(valid, ', ')) END;
        END IF;
    END LOOP;
    IF ml_stack._sql_engine_too_large(task, algorithm, dataset) IS NOT NULL THEN
        RAISE EXCEPTION 'too large for the sql engine: %', ml_stack._sql_engine_too_large(task, algorithm, dataset)
            USING ERRCODE = 'program_limit_exceeded',
                  HINT = 'CREATE EXTENSION ml_stack_python and train with engine => ''python'' (or leave engine out: it is chosen then); '
                         'for text, algorithm => ''naive_bayes'' on a vectorized column; or use fewer features.';
    END IF;
    IF algorithm = 'naive_bayes' THEN
        RETURN ml_stack._fit_naive_bayes(dataset, ml_stack._numeric_hyperparam(hyperparams, 'alpha', 1.0, 0));
    END IF;
    IF algorithm = 'linear' AND task = 'classification' AND ml_stack._sparse_logistic_wanted(dataset) THEN
        RETURN ml_stack._fit_logistic_sparse(dataset,  -- L-BFGS; it folds the preprocessing and scores the test rows itself
                   ml_stack._numeric_hyperparam(hyperparams, 'C', 1.0, 0, true),
                   ml_stack._numeric_hyperparam(hyperparams, 'max_iter', 1000, 1)::integer,
                   ml_stack._numeric_hyperparam(hyperparams, 'tol', 1e-8, 0, true));
    END IF;
    IF task = 'regression' THEN
        link := 'identity';
        fit := ml_stack._fit_least_squares(dataset,
                   CASE WHEN algorithm = 'ridge' THEN ml_stack._numeric_hyperparam(hyperparams, 'alpha', 1.0, 0) ELSE 0 END);
    ELSE
        link := CASE WHEN jsonb_array_length(dataset -> 'classes') = 2 THEN 'logistic' ELSE 'softmax' END;
        fit := ml_stack._fit_logistic(dataset,
                   ml_stack._numeric_hyperparam(hyperparams, 'C', 1.0, 0, true),
                   ml_stack._numeric_hyperparam(hyperparams, 'max_iter', 100, 1)::integer,
                   ml_stack._numeric_hyperparam(hyperparams, 'tol', 1e-8, 0, true));
    END IF;
    -- fold x' = (coalesce(x, impute) - shift) / scale into the weights
    kk := 0;
    FOR wk IN SELECT value FROM jsonb_array_elements(fit -> 'coefficients') LOOP
        kk := kk + 1;
        b := (fit -> 'intercepts' ->> (kk - 1))::float8;
        w := '{}';
        FOR j IN 1 .. p LOOP
            w := w || ((wk ->> (j - 1))::float8 / (tf -> (j - 1) ->> 'scale')::float8);
            b := b - w[j] * (tf -> (j - 1) ->> 'shift')::float8;
        END LOOP;
        IF b IS NULL OR b IN ('NaN', 'Infinity', '-Infinity') OR EXISTS (
                SELECT FROM unnest(w) AS x WHERE x IS NULL OR x IN ('NaN', 'Infinity', '-Infinity')) THEN
            RAISE EXCEPTION 'training % diverged: the weights are not finite numbers', algorithm
                USING ERRCODE = 'data_exception',
                      HINT = 'Scale the features (preprocess => ''{"col": {"scale": "standard"}}'') or regularise more.';
        END IF;
        ints := ints || b;
        coefs := coefs || jsonb_build_array(to_jsonb(w));
    END LOOP;
    RETURN jsonb_build_object(
        'format', 'linear', 'link', link, 'intercepts', to_jsonb(ints), 'coefficients', coefs,
        'impute', (SELECT jsonb_agg(t -> 'impute' ORDER BY i) FROM jsonb_array_elements(tf) WITH ORDINALITY AS e(t, i)));
END
$$;
