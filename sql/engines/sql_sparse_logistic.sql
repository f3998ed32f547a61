-- SQL engine: L2-regularised logistic regression on wide and sparse features
-- (vectorized text, hashing, embeddings), the objective of scikit-learn's
-- LogisticRegression (penalty 'l2', intercept not penalised; binary: one weight
-- vector, multiclass: multinomial softmax) over the model's full feature vector.
--
-- L-BFGS (10 pairs): no p x p Hessian, so the cost of an iteration is linear in
-- the non-zeros. The training rows are materialised once as a sparse triple
-- table pg_temp._ml_stack_lr_x(i, j, v): the numeric features (preprocessed, as the
-- dataset's x expressions) and each text block's sparse values (through real, as
-- embed() returns them), non-zeros only, plus an intercept column q = p + 1
-- (v = 1) in every row. An iteration is two grouped passes over it:
--   u = X d        (GROUP BY i: the scores along the search direction)
--   g = X' (P - Y) (GROUP BY j: the gradient)
-- with the weights and the per-row factors passed as float8[] parameters ($1[j],
-- $1[i]); the line search runs on per-row arrays (z + a u), not on the table.
-- Conditioning: the features are standardised implicitly (u_j = (x_j - m_j) / s_j
-- in the algebra of both passes; the table keeps the raw sparse values), so the
-- penalty on the model's own weights w_j = v_j / s_j is v_j^2 / (2 C s_j^2) and the
-- optimum is exactly scikit-learn's. Every query is short and fixed (no generated
-- feature list), each pass well under a second at the supported sizes: a cancel
-- lands between two of them; errors are re-raised with a short CONTEXT.
-- Returns the 'linear' artifact over the model's features (preprocessing folded
-- in), and scores the test rows itself into pg_temp._ml_stack_predictions.

-- What the sparse solver takes in reasonable time (measured: docs/vectors.md,
-- bench/sparse_logistic.py): NULL when the problem fits, else why not.
-- The cost of a pass grows with the stored values (training rows x dense features
-- + the text blocks' non-zeros, ~12 per short description, estimated at 40 per
-- row and block), the vector work of L-BFGS with the parameters.
-- Logistic regression goes to the sparse solver when the dataset has text blocks or is
-- above what the dense Newton solver takes (128 parameters).
CREATE OR REPLACE FUNCTION ml_stack._sparse_logistic_wanted(dataset jsonb)
RETURNS boolean
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_array_length(dataset -> 'blocks') > 0
        OR (CASE WHEN jsonb_array_length(dataset -> 'classes') = 2 THEN 1 ELSE jsonb_array_length(dataset -> 'classes') END)
           * (jsonb_array_length(dataset -> 'x') + 1) > 128
$$;
COMMENT ON FUNCTION ml_stack._sparse_logistic_wanted(jsonb) IS
    'ml_stack internal: whether logistic regression on the dataset goes to the sparse solver (text blocks, or too wide for Newton).';

-- The solver's work, in units measured here (bench/sparse_logistic.py, 15.5k descriptions): each of its
-- 40-80 iterations costs the passes over the stored values (k score vectors each) and the L-BFGS vector work in
-- PL/pgSQL (~200 operations per parameter). Binary over 1024-dim hashing: 0.84M units, 3.2 s; 6 classes over
-- hashing: 5M units, 16 s; tfidf (54k parameters, 6 classes): 14M units, 54 s. Above 6M units (about 20 s)
-- train hands the problem to the python engine when it can, or refuses.
CREATE OR REPLACE FUNCTION ml_stack._sparse_logistic_too_large(dataset jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN k * values_est + 200 * params > 6000000 THEN
        format('logistic regression on %s training rows x %s features with %s classes (about %s units of work; '
               'the sql engine trains up to 6 million, about 20 seconds: e.g. six classes of 15,000 short texts '
               'hashed to 1024 dimensions)', train_rows, num_features, classes, k * values_est + 200 * params)
    END
    FROM (SELECT (dataset ->> 'train_rows')::bigint AS train_rows,
                 (dataset ->> 'num_features')::bigint AS num_features,
                 jsonb_array_length(dataset -> 'classes') AS classes,
                 (dataset ->> 'train_rows')::bigint
                     * (jsonb_array_length(dataset -> 'x') + 40 * jsonb_array_length(dataset -> 'blocks') + 1) AS values_est,
                 CASE WHEN jsonb_array_length(dataset -> 'classes') = 2 THEN 1 ELSE jsonb_array_length(dataset -> 'classes') END AS k,
                 (CASE WHEN jsonb_array_length(dataset -> 'classes') = 2 THEN 1 ELSE jsonb_array_length(dataset -> 'classes') END)
                     * ((dataset ->> 'num_features')::bigint + 1) AS params) AS s
$$;
COMMENT ON FUNCTION ml_stack._sparse_logistic_too_large(jsonb) IS
    'ml_stack internal: NULL when the sparse logistic solver trains the dataset in reasonable time, else why not.';

CREATE OR REPLACE FUNCTION ml_stack._fit_logistic_sparse_run(dataset jsonb, c float8, max_iter integer, tol float8)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET jit = off
SET extra_float_digits = 3
AS $$
#variable_conflict use_column  -- i, j: columns of the triple table in the queries below
DECLARE
    classes float8[] := ARRAY(SELECT jsonb_array_elements_text(dataset -> 'classes')::float8);
    nk      integer := jsonb_array_length(dataset -> 'classes');
    k       integer := CASE WHEN jsonb_array_length(dataset -> 'classes') = 2 THEN 1 ELSE jsonb_array_length(dataset -> 'classes') END;
    p       integer := jsonb_array_length(dataset -> 'x');
    np      integer := (dataset ->> 'num_features')::integer;
    q       integer := (dataset ->> 'num_features')::integer + 1;   -- per class: features, then the intercept
    nq      integer;                                                 -- k * q parameters
    xpos    integer[] := ARRAY(SELECT jsonb_array_elements_text(dataset -> 'x_positions')::integer);
    tf      jsonb := dataset -> 'transform';
    rows_sql text := format('(SELECT row_number() OVER (ORDER BY r)::integer AS i, * FROM pg_temp._ml_stack_rows WHERE %s) AS t',
                            dataset ->> 'train_filter');
    n       integer;
    yc      integer[];          -- class index (1-based) of each training row
    mj      float8[]; sj float8[]; pen float8[];
    theta   float8[]; d float8[]; g float8[]; g_new float8[]; wr float8[]; dr float8[];
    z       float8[]; u float8[]; gr float8[]; z_try float8[]; gr_try float8[];
    s_hist  float8[]; y_hist float8[]; rho float8[]; alpha_h float8[];
    hist_n  integer := 0; hist_pos integer := 0; mem CONSTANT integer := 10;
    sql_z   text; sql_g text; sql_row text;
    f float8; f_try float8; fd float8; dphi0 float8; dphi float8; a1 float8; a2 float8; pen0 float8;
    step float8; lo float8; hi float8; gmax float8; gmax0 float8; sy float8; yy float8; gam float8; beta float8;
    ls integer; iter integer := 0; evals integer := 0; passes integer := 0;
    i integer; j integer; kk integer; l integer; o integer;
    s1 float8[]; s2 float8[];
    acc float8;
    blk jsonb;
    ints float8[]; coefs jsonb := '[]'; b float8;
    started timestamptz := clock_timestamp();
    last_notice timestamptz := clock_timestamp();
    converged boolean := false;
BEGIN
    nq := k * q;
    IF to_regclass('pg_temp._ml_stack_lr_x') IS NOT NULL THEN
        DROP TABLE pg_temp._ml_stack_lr_x;
    END IF;
    CREATE TEMPORARY TABLE _ml_stack_lr_x (i integer, j integer, v float8) ON COMMIT DROP;
    EXECUTE format('SELECT count(*)::integer, array_agg(array_position($1, y) ORDER BY i) FROM %s', rows_sql)
        INTO n, yc USING classes;
    -- the numeric features, preprocessed, non-zeros only
    IF p > 0 THEN
        EXECUTE format('INSERT INTO pg_temp._ml_stack_lr_x SELECT t.i, u.j, u.v FROM %s, '
                       'LATERAL unnest($1::integer[], ARRAY[%s]::float8[]) AS u(j, v) WHERE u.v <> 0',
                       rows_sql, (SELECT string_agg(e, ', ' ORDER BY o) FROM jsonb_array_elements_text(dataset -> 'x') WITH ORDINALITY AS x(e, o)))
            USING xpos;
    END IF;
    -- each text block's sparse values, as served (through real)
    FOR blk IN SELECT value FROM jsonb_array_elements(dataset -> 'blocks') LOOP
        EXECUTE format('INSERT INTO pg_temp._ml_stack_lr_x SELECT t.i, %s + s.idx, s.val::real::float8 FROM %s, LATERAL %s AS s '
                       'WHERE s.val::real <> 0',
                       (blk ->> 'offset')::integer, rows_sql, ml_stack._sparse_terms_sql(blk -> 'spec', format('t.t%s', blk ->> 't')));
    END LOOP;
    -- the intercept column in every row (every row has a group in GROUP BY i), and one
    -- zero per feature (every feature has a group in GROUP BY j)
    INSERT INTO pg_temp._ml_stack_lr_x SELECT g.i, q, 1 FROM generate_series(1, n) AS g(i);
    INSERT INTO pg_temp._ml_stack_lr_x SELECT 1, g.j, 0 FROM generate_series(1, np) AS g(j);
    ANALYZE pg_temp._ml_stack_lr_x;
    SELECT array_agg(sv ORDER BY j), array_agg(sv2 ORDER BY j) INTO s1, s2
    FROM (SELECT x.j, sum(x.v) AS sv, sum(x.v * x.v) AS sv2 FROM pg_temp._ml_stack_lr_x AS x GROUP BY x.j) AS g;
    RAISE NOTICE 'ml_stack: logistic regression (sparse) on % training rows x % features, % non-zeros, % s', n, np,
        (SELECT count(*) FROM pg_temp._ml_stack_lr_x AS x WHERE x.v <> 0 AND x.j < q),
        round(extract(epoch FROM clock_timestamp() - started)::numeric, 2);

    -- implicit scaling: centred by the mean m_j, divided by s_j = sqrt(variance + 4 / (n C)). With
    -- s_j the standard deviation alone, a rare term (variance ~ 1/n) would get a penalty curvature
    -- 1 / (C s_j^2) hundreds of times the data's (~ n / 4) and L-BFGS would crawl (hundreds of
    -- iterations); this s_j makes the diagonal of the Hessian at the start ~ n / 4 for every feature
    -- (a Jacobi preconditioner). The optimum is the same: only the coordinates change.
    mj := array_fill(0::float8, ARRAY[q]); sj := array_fill(1::float8, ARRAY[q]);
    pen := array_fill(0::float8, ARRAY[nq]);
    FOR j IN 1 .. np LOOP
        mj[j] := s1[j] / n;
        acc := s2[j] / n - mj[j] * mj[j];
        IF acc > 1e-10 * s2[j] / n THEN
            sj[j] := sqrt(acc + 4 / (n * c));
        ELSE
            -- constant (or empty) feature: not centred, not scaled (a constant c <> 0 acts as a penalised intercept)
            mj[j] := 0;
        END IF;
        FOR kk IN 1 .. k LOOP
            pen[(kk - 1) * q + j] := 1 / (c * sj[j] * sj[j]);
        END LOOP;
    END LOOP;

    -- the passes and the per-row evaluation
    sql_z := format('SELECT %s FROM (SELECT x.i, %s FROM pg_temp._ml_stack_lr_x AS x GROUP BY x.i) AS g',
                    (SELECT string_agg(format('array_agg(z%s ORDER BY i)', kk), ' || ') FROM generate_series(1, k) AS kk),
                    (SELECT string_agg(format('sum(x.v * $1[%s + x.j]) AS z%s', (kk - 1) * q, kk), ', ') FROM generate_series(1, k) AS kk));
    sql_g := format('SELECT %s FROM (SELECT x.j, %s FROM pg_temp._ml_stack_lr_x AS x GROUP BY x.j) AS g',
                    (SELECT string_agg(format('array_agg(g%s ORDER BY j)', kk), ' || ') FROM generate_series(1, k) AS kk),
                    (SELECT string_agg(format('sum(x.v * $1[%s + x.i]) AS g%s', (kk - 1) * n, kk), ', ') FROM generate_series(1, k) AS kk));
    -- at z + a u ($1, $2, $3): loss, its derivative along u, the new scores and P - Y ($4: class of each row, $5: rows)
    IF k = 1 THEN
        sql_row := 'SELECT sum(greatest(z, 0) + ln(1 + exp(-abs(least(greatest(z, -700), 700)))) - y * z), sum((pr - y) * u), '
                   '       array_agg(z ORDER BY i), array_agg(pr - y ORDER BY i) '
                   'FROM (SELECT a.*, 1 / (1 + exp(-least(greatest(z, -700), 700))) AS pr FROM ('
                   '  SELECT g.i, $1[g.i] + $3 * $2[g.i] AS z, $2[g.i] AS u, ($4[g.i] = 2)::integer::float8 AS y '
                   '  FROM generate_series(1, $5) AS g(i) OFFSET 0) AS a OFFSET 0) AS b';
    ELSE
        sql_row := format(
            'SELECT sum(zmax + ln(esum) - (ARRAY[%1$s])[yc]), sum(%2$s), %3$s, %4$s '
            'FROM (SELECT e.*, %5$s AS esum FROM (SELECT a.*, %6$s FROM (SELECT s.*, greatest(%1$s) AS zmax FROM ('
            '  SELECT g.i, $4[g.i] AS yc, %7$s FROM generate_series(1, $5) AS g(i) OFFSET 0) AS s OFFSET 0) AS a OFFSET 0) AS e OFFSET 0) AS b',
            (SELECT string_agg(format('z%s', kk), ', ') FROM generate_series(1, k) AS kk),
            (SELECT string_agg(format('(e%1$s / esum - (yc = %1$s)::integer) * u%1$s', kk), ' + ') FROM generate_series(1, k) AS kk),
            (SELECT string_agg(format('array_agg(z%s ORDER BY i)', kk), ' || ') FROM generate_series(1, k) AS kk),
            (SELECT string_agg(format('array_agg(e%1$s / esum - (yc = %1$s)::integer ORDER BY i)', kk), ' || ') FROM generate_series(1, k) AS kk),
            (SELECT string_agg(format('e%s', kk), ' + ') FROM generate_series(1, k) AS kk),
            (SELECT string_agg(format('exp(greatest(z%1$s - zmax, -700)) AS e%1$s', kk), ', ') FROM generate_series(1, k) AS kk),
            (SELECT string_agg(format('$1[%1$s + g.i] + $3 * $2[%1$s + g.i] AS z%2$s, $2[%1$s + g.i] AS u%2$s', (kk - 1) * n, kk), ', ')
             FROM generate_series(1, k) AS kk));
    END IF;

    -- start at 0: every score is 0
    theta := array_fill(0::float8, ARRAY[nq]);
    z := array_fill(0::float8, ARRAY[k * n]);
    EXECUTE sql_row INTO f, dphi, z, gr USING z, z, 0::float8, yc, n;
    EXECUTE sql_g INTO g USING gr;
    passes := 1;
    -- the gradient in the standardised parameters
    gmax := 0;
    FOR kk IN 0 .. k - 1 LOOP
        FOR j IN 1 .. np LOOP
            g[kk * q + j] := (g[kk * q + j] - mj[j] * g[kk * q + q]) / sj[j] + pen[kk * q + j] * theta[kk * q + j];
        END LOOP;
    END LOOP;
    SELECT max(abs(x)) INTO gmax FROM unnest(g) AS x;
    gmax0 := greatest(gmax, 1);
    s_hist := array_fill(0::float8, ARRAY[mem * nq]); y_hist := array_fill(0::float8, ARRAY[mem * nq]);
    rho := array_fill(0::float8, ARRAY[mem]); alpha_h := array_fill(0::float8, ARRAY[mem]);

    LOOP
        IF gmax <= tol * gmax0 THEN
            converged := true;
            EXIT;
        END IF;
        EXIT WHEN iter >= max_iter;
        iter := iter + 1;
        -- direction: -H g (two-loop recursion over the stored pairs, newest first)
        d := g;
        FOR l IN 0 .. hist_n - 1 LOOP
            o := ((hist_pos - 1 - l + mem) % mem);   -- slot, 0-based
            acc := 0;
            FOR j IN 1 .. nq LOOP acc := acc + s_hist[o * nq + j] * d[j]; END LOOP;
            alpha_h[o + 1] := rho[o + 1] * acc;
            FOR j IN 1 .. nq LOOP d[j] := d[j] - alpha_h[o + 1] * y_hist[o * nq + j]; END LOOP;
        END LOOP;
        IF hist_n > 0 THEN
            o := (hist_pos - 1 + mem) % mem;
            sy := 1 / rho[o + 1]; yy := 0;
            FOR j IN 1 .. nq LOOP yy := yy + y_hist[o * nq + j] * y_hist[o * nq + j]; END LOOP;
            gam := sy / yy;
            FOR j IN 1 .. nq LOOP d[j] := gam * d[j]; END LOOP;
        ELSE
            FOR j IN 1 .. nq LOOP d[j] := d[j] / gmax; END LOOP;   -- first step: unit length in the largest coordinate
        END IF;
        FOR l IN REVERSE hist_n - 1 .. 0 LOOP
            o := ((hist_pos - 1 - l + mem) % mem);
            acc := 0;
            FOR j IN 1 .. nq LOOP acc := acc + y_hist[o * nq + j] * d[j]; END LOOP;
            beta := rho[o + 1] * acc;
            FOR j IN 1 .. nq LOOP d[j] := d[j] + (alpha_h[o + 1] - beta) * s_hist[o * nq + j]; END LOOP;
        END LOOP;
        dphi0 := 0;
        FOR j IN 1 .. nq LOOP d[j] := -d[j]; dphi0 := dphi0 + d[j] * g[j]; END LOOP;
        IF dphi0 >= 0 THEN   -- not a descent direction (rounding): forget the pairs, steepest descent
            hist_n := 0;
            dphi0 := 0;
            FOR j IN 1 .. nq LOOP d[j] := -g[j] / gmax; dphi0 := dphi0 + d[j] * g[j]; END LOOP;
        END IF;
        -- the direction on the raw sparse values: w_j = d_j / s_j, intercept d_0 - sum m_j w_j
        dr := d; a1 := 0; a2 := 0; pen0 := 0;
        FOR kk IN 0 .. k - 1 LOOP
            acc := d[kk * q + q];
            FOR j IN 1 .. np LOOP
                dr[kk * q + j] := d[kk * q + j] / sj[j];
                acc := acc - mj[j] * dr[kk * q + j];
                a1 := a1 + pen[kk * q + j] * theta[kk * q + j] * d[kk * q + j];
                a2 := a2 + pen[kk * q + j] * d[kk * q + j] * d[kk * q + j];
                pen0 := pen0 + 0.5 * pen[kk * q + j] * theta[kk * q + j] * theta[kk * q + j];
            END LOOP;
            dr[kk * q + q] := acc;
        END LOOP;
        EXECUTE sql_z INTO u USING dr;
        passes := passes + 1;
        -- line search (strong Wolfe, c1 = 1e-4, c2 = 0.9) on the rows' scores z + a u: no pass over the table
        step := 1; lo := 0; hi := 'Infinity';
        FOR ls IN 1 .. 40 LOOP
            EXECUTE sql_row INTO fd, dphi, z_try, gr_try USING z, u, step, yc, n;
            evals := evals + 1;
            f_try := fd + pen0 + step * a1 + 0.5 * step * step * a2;
            dphi := dphi + a1 + step * a2;
            IF f_try > f + 1e-4 * step * dphi0 OR f_try <> f_try THEN
                hi := step;
            ELSIF dphi < 0.9 * dphi0 THEN
                lo := step;
            ELSIF dphi > -0.9 * dphi0 THEN
                hi := step;
            ELSE
                EXIT;
            END IF;
            step := CASE WHEN hi = 'Infinity' THEN 2 * step ELSE (lo + hi) / 2 END;
        END LOOP;
        IF f_try > f THEN
            -- no step lowers the loss any further (float64's limit): done
            converged := gmax <= sqrt(tol) * gmax0;
            EXIT;
        END IF;
        FOR j IN 1 .. nq LOOP theta[j] := theta[j] + step * d[j]; END LOOP;
        z := z_try; gr := gr_try;
        EXECUTE sql_g INTO g_new USING gr;
        passes := passes + 1;
        FOR kk IN 0 .. k - 1 LOOP
            FOR j IN 1 .. np LOOP
                g_new[kk * q + j] := (g_new[kk * q + j] - mj[j] * g_new[kk * q + q]) / sj[j] + pen[kk * q + j] * theta[kk * q + j];
            END LOOP;
        END LOOP;
        -- the new pair s = step d, y = g_new - g
        o := hist_pos;
        sy := 0;
        FOR j IN 1 .. nq LOOP
            s_hist[o * nq + j] := step * d[j];
            y_hist[o * nq + j] := g_new[j] - g[j];
            sy := sy + s_hist[o * nq + j] * y_hist[o * nq + j];
        END LOOP;
        IF sy > 1e-300 THEN
            rho[o + 1] := 1 / sy;
            hist_pos := (hist_pos + 1) % mem;
            hist_n := least(hist_n + 1, mem);
        END IF;
        g := g_new;
        f := f_try;
        SELECT max(abs(x)) INTO gmax FROM unnest(g) AS x;
        IF clock_timestamp() - last_notice > interval '10 seconds' THEN
            RAISE NOTICE 'ml_stack: logistic iteration %: loss %, gradient % (% passes, % s)', iter, f, gmax, passes,
                round(extract(epoch FROM clock_timestamp() - started)::numeric, 1);
            last_notice := clock_timestamp();
        END IF;
    END LOOP;
    IF NOT converged THEN
        RAISE WARNING 'ml_stack: logistic regression stopped after % iterations without converging (gradient % of %)', iter, gmax, gmax0
            USING HINT = 'Raise max_iter (hyperparams => ''{"max_iter": 5000}''), or lower C.';
    END IF;

    -- back to the model's features: w_j = theta_j / s_j, b = theta_0 - sum m_j w_j, then the
    -- preprocessing of x folded in: x' = (coalesce(x, impute) - shift) / scale
    ints := '{}'; wr := array_fill(0::float8, ARRAY[k * np]);
    FOR kk IN 0 .. k - 1 LOOP
        b := theta[kk * q + q];
        FOR j IN 1 .. np LOOP
            wr[kk * np + j] := theta[kk * q + j] / sj[j];
            b := b - mj[j] * wr[kk * np + j];
        END LOOP;
        FOR j IN 1 .. p LOOP
            wr[kk * np + xpos[j]] := wr[kk * np + xpos[j]] / (tf -> (j - 1) ->> 'scale')::float8;
            b := b - wr[kk * np + xpos[j]] * (tf -> (j - 1) ->> 'shift')::float8;
        END LOOP;
        IF b IS NULL OR b IN ('NaN', 'Infinity', '-Infinity') OR EXISTS (
                SELECT FROM unnest(wr[kk * np + 1 : (kk + 1) * np]) AS x WHERE x IN ('NaN', 'Infinity', '-Infinity')) THEN
            RAISE EXCEPTION 'training linear diverged: the weights are not finite numbers'
                USING ERRCODE = 'data_exception',
                      HINT = 'Scale the features (preprocess => ''{"col": {"scale": "standard"}}'') or regularise more (a lower C).';
        END IF;
        ints := ints || b;
        coefs := coefs || jsonb_build_array(to_jsonb(wr[kk * np + 1 : (kk + 1) * np]));
    END LOOP;
    DROP TABLE pg_temp._ml_stack_lr_x;

    PERFORM ml_stack._predict_test_rows_sparse(dataset, wr, ints);
    RAISE NOTICE 'ml_stack: logistic regression (sparse) % in % iterations (% passes, % line-search evaluations), loss %, % s',
        CASE WHEN converged THEN 'converged' ELSE 'stopped' END, iter, passes, evals, f,
        round(extract(epoch FROM clock_timestamp() - started)::numeric, 2);
    RETURN jsonb_build_object('format', 'linear', 'link', CASE WHEN k = 1 THEN 'logistic' ELSE 'softmax' END,
                              'intercepts', to_jsonb(ints), 'coefficients', coefs, 'impute', ml_stack._model_impute(dataset));
END
$$;

-- The solver, with its errors re-raised here: an error inside one of its generated
-- queries (a cancel, most often) would otherwise carry the query's text as CONTEXT.
CREATE OR REPLACE FUNCTION ml_stack._fit_logistic_sparse(dataset jsonb, c float8, max_iter integer, tol float8)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    st text; msg text; det text; hnt text;
BEGIN
    RETURN ml_stack._fit_logistic_sparse_run(dataset, c, max_iter, tol);
EXCEPTION WHEN OTHERS OR query_canceled THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL, hnt = PG_EXCEPTION_HINT;
    IF det <> '' AND hnt <> '' THEN
        RAISE EXCEPTION USING ERRCODE = st, MESSAGE = msg, DETAIL = det, HINT = hnt;
    ELSIF det <> '' THEN
        RAISE EXCEPTION USING ERRCODE = st, MESSAGE = msg, DETAIL = det;
    ELSIF hnt <> '' THEN
        RAISE EXCEPTION USING ERRCODE = st, MESSAGE = msg, HINT = hnt;
    ELSE
        RAISE EXCEPTION USING ERRCODE = st, MESSAGE = msg;
    END IF;
END
$$;
COMMENT ON FUNCTION ml_stack._fit_logistic_sparse(jsonb, float8, integer, float8) IS
    'ml_stack internal: L2 logistic regression (scikit-learn''s objective) by L-BFGS over the sparse form of the training rows; returns a linear artifact and scores the test rows.';
COMMENT ON FUNCTION ml_stack._fit_logistic_sparse_run(jsonb, float8, integer, float8) IS
    'ml_stack internal: the body of _fit_logistic_sparse.';
