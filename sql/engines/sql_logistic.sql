-- SQL engine: L2-regularised logistic regression, as scikit-learn's
-- LogisticRegression (penalty 'l2', intercept not penalised): binary with one
-- weight vector, multiclass as multinomial softmax over K vectors.
--
-- Newton's method, one aggregate pass over the training rows per iteration for
-- the loss, gradient and Hessian. It runs on standardised features u = (x - m)/s
-- for conditioning; the penalty on the model's own weights w = v / s becomes
-- v^2 / (2 C s^2), so the optimum is exactly scikit-learn's. A step that raises
-- the objective is halved (backtracking). On large data, a first phase on a
-- sample of the rows gives the full-data Newton a starting point near the optimum.
-- Returns {"intercepts": [..], "coefficients": [[..], ..]} on the preprocessed features.
CREATE OR REPLACE FUNCTION ml_stack._fit_logistic(dataset jsonb, c float8, max_iter integer, tol float8)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET jit = off
SET extra_float_digits = 3
AS $$
#variable_conflict use_column  -- generated-column aliases (i, ci) in the queries below
DECLARE
    p       integer := jsonb_array_length(dataset -> 'x');
    classes float8[] := ARRAY(SELECT jsonb_array_elements_text(dataset -> 'classes')::float8);
    nk      integer := cardinality(classes);
    k       integer := CASE WHEN cardinality(classes) = 2 THEN 1 ELSE cardinality(classes) END;  -- weight vectors
    q       integer := p + 1;            -- parameters per vector (intercept first)
    np      integer := k * (p + 1);      -- all parameters
    m       float8[] := ARRAY(SELECT jsonb_array_elements_text(dataset -> 'x_mean')::float8);
    sd      float8[] := ARRAY(SELECT jsonb_array_elements_text(dataset -> 'x_std')::float8);
    pen     float8[] := array_fill(0::float8, ARRAY[np]);   -- penalty weight per parameter
    v       float8[] := array_fill(0::float8, ARRAY[np]);   -- parameters, standardised space
    v_prev  float8[];
    dir     float8[];
    step    float8 := 1;
    f       float8; f_prev float8 := 'Infinity';
    res     float8[];
    g       float8[]; h float8[];
    u_cols  text; y_cols text; z_cols text; agg text; prob_cols text; row_terms text;
    rows_filter text;
    n_train bigint;
    phase   integer;
    phase_iter integer;
    phase_tol float8;
    pen_scale float8;
    a_idx   integer; b_idx integer; ci integer; cj integer; ii integer; jj integer;
    dmax    float8;
    iter    integer := 0;
    pos     integer;
    i integer; j integer;
    intercepts float8[]; coefs jsonb := '[]'; w float8[]; b0 float8;
    started timestamptz := clock_timestamp();
    last_notice timestamptz := clock_timestamp();   -- progress lines only when a run is long: every 5 s
    sample_iters integer := 0;                       -- Newton steps of phase 1 (on a sample)
BEGIN
    -- its size is checked by _sql_fit (_sql_engine_too_large)
    FOR i IN 1 .. p LOOP
        IF sd[i] <= 0 THEN sd[i] := 1; END IF;   -- constant feature: its weight stays 0 (no signal)
    END LOOP;
    FOR ci IN 1 .. k LOOP
        FOR i IN 1 .. p LOOP
            pen[(ci - 1) * q + 1 + i] := 1 / (c * sd[i] * sd[i]);
        END LOOP;
    END LOOP;

    -- Level 1 (fenced): standardised features u1..up and class indicators y1..yk.
    SELECT string_agg(format('(%s - %s::float8) / %s::float8 AS u%s', e, m[i], sd[i], i), ', ')
    INTO u_cols FROM jsonb_array_elements_text(dataset -> 'x') WITH ORDINALITY AS t(e, i);
    IF k = 1 THEN
        y_cols := format('(y = %s::float8)::integer::float8 AS y1', classes[2]);
    ELSE
        SELECT string_agg(format('(y = %s::float8)::integer::float8 AS y%s', classes[i], i), ', ')
        INTO y_cols FROM generate_series(1, k) AS i;
    END IF;
    -- Last level (fenced): the per-row factors of the gradient and the Hessian, computed once per row and
    -- not once per aggregate: g_c = p_c - y_c, w_c = p_c (1 - p_c), b_c_i = w_c u_i, a_c_i = p_c u_i.
    SELECT string_agg(format('p%1$s - y%1$s AS g%1$s, p%1$s * (1 - p%1$s) AS w%1$s', ci)
                      || (SELECT string_agg(format(', p%1$s * (1 - p%1$s) * u%2$s AS b%1$s_%2$s', ci, i)
                                            || CASE WHEN k > 1 THEN format(', p%1$s * u%2$s AS a%1$s_%2$s', ci, i) ELSE '' END, '')
                          FROM generate_series(1, p) AS i), ', ')
    INTO row_terms FROM generate_series(1, k) AS ci;

    -- Aggregates: loss, gradient, Hessian (upper triangle).
    -- Parameter index of (vector ci, term ii) is (ci-1)*q + ii + 1, term 0 = intercept (u0 = 1).
    agg := 'sum(loss)';
    FOR ci IN 1 .. k LOOP
        FOR ii IN 0 .. p LOOP
            agg := agg || format(', sum(g%s%s)', ci, CASE WHEN ii = 0 THEN '' ELSE format(' * u%s', ii) END);
        END LOOP;
    END LOOP;
    FOR a_idx IN 1 .. np LOOP
        ci := (a_idx - 1) / q + 1; ii := (a_idx - 1) % q;
        FOR b_idx IN a_idx .. np LOOP
            cj := (b_idx - 1) / q + 1; jj := (b_idx - 1) % q;
            agg := agg || CASE
                -- one class: w_c u_i u_j
                WHEN ci = cj AND ii = 0 AND jj = 0 THEN format(', sum(w%s)', ci)
                WHEN ci = cj AND ii = 0 THEN format(', sum(b%s_%s)', ci, jj)
                WHEN ci = cj THEN format(', sum(b%s_%s * u%s)', ci, ii, jj)
                -- two classes (softmax): -p_c u_i p_c' u_j
                ELSE format(', -sum(%s * %s)',
                            CASE WHEN ii = 0 THEN format('p%s', ci) ELSE format('a%s_%s', ci, ii) END,
                            CASE WHEN jj = 0 THEN format('p%s', cj) ELSE format('a%s_%s', cj, jj) END) END;
        END LOOP;
    END LOOP;

    -- Phase 1, on large data only: Newton on a 1/16 sample of the training rows (the last hex digit of the
    -- split key, independent of the split itself), with the penalty scaled alike, to start phase 2 near the
    -- optimum. Phase 2: Newton on all training rows, to the tolerance. Newton converges quadratically from
    -- close by, so this saves most full passes.
    n_train := (dataset ->> 'train_rows')::bigint;
    FOR phase IN CASE WHEN n_train >= 160000 THEN 1 ELSE 2 END .. 2 LOOP
        rows_filter := dataset ->> 'train_filter';
        pen_scale := 1;
        phase_tol := tol;
        IF phase = 1 THEN
            rows_filter := format('(%s) AND right(k, 1) = ''0''', rows_filter);
            pen_scale := 1.0 / 16;
            phase_tol := greatest(tol, 1e-3);
        END IF;
        f_prev := 'Infinity'; step := 1; phase_iter := 0;
        LOOP
            iter := iter + 1; phase_iter := phase_iter + 1;
            IF phase = 1 THEN
                sample_iters := sample_iters + 1;
            END IF;
            -- Level 2 (fenced): the linear scores z1..zk at the current parameters.
            SELECT string_agg(format('%s::float8%s AS z%s', v[(ci - 1) * q + 1],
                                     (SELECT string_agg(format(' + u%s * %s::float8', i, v[(ci - 1) * q + 1 + i]), '')
                                      FROM generate_series(1, p) AS i), ci), ', ')
            INTO z_cols FROM generate_series(1, k) AS ci;
            -- Level 3: probabilities and the loss of each row.
            IF k = 1 THEN
                prob_cols := format(
                    'SELECT u.*, 1 / (1 + exp(-least(greatest(z1, -700), 700))) AS p1, '
                    '       greatest(z1, 0) + ln(1 + exp(-abs(least(greatest(z1, -700), 700)))) - y1 * z1 AS loss '
                    'FROM (SELECT u.*, %s FROM (SELECT %s, %s FROM pg_temp._ml_stack_rows WHERE %s OFFSET 0) AS u OFFSET 0) AS u',
                    z_cols, u_cols, y_cols, rows_filter);
            ELSE
                -- softmax with the largest score subtracted: exp never overflows
                prob_cols := format(
                    'SELECT e.*, %s, zmax + ln(esum) - (%s) AS loss FROM ('
                    '  SELECT s.*, %s FROM ('
                    '    SELECT z.*, greatest(%s) AS zmax FROM ('
                    '      SELECT u.*, %s FROM (SELECT %s, %s FROM pg_temp._ml_stack_rows WHERE %s OFFSET 0) AS u OFFSET 0'
                    '    ) AS z OFFSET 0'
                    '  ) AS s OFFSET 0'
                    ') AS e',
                    (SELECT string_agg(format('e%s / esum AS p%s', i, i), ', ') FROM generate_series(1, k) AS i),
                    (SELECT string_agg(format('y%s * z%s', i, i), ' + ') FROM generate_series(1, k) AS i),
                    (SELECT string_agg(format('exp(z%s - zmax) AS e%s', i, i), ', ') FROM generate_series(1, k) AS i)
                        || ', ' || (SELECT string_agg(format('exp(z%s - zmax)', i), ' + ') FROM generate_series(1, k) AS i) || ' AS esum',
                    (SELECT string_agg(format('z%s', i), ', ') FROM generate_series(1, k) AS i),
                    z_cols, u_cols, y_cols, rows_filter);
            END IF;
            EXECUTE format('SELECT ARRAY[%s] FROM (SELECT t.*, %s FROM (%s OFFSET 0) AS t OFFSET 0) AS r',
                           agg, row_terms, prob_cols)
            INTO res;

            f := res[1];
            FOR i IN 1 .. np LOOP
                f := f + 0.5 * pen_scale * pen[i] * v[i] * v[i];
            END LOOP;
            IF f > f_prev + 1e-12 * abs(f_prev) AND step > 1e-8 THEN
                -- the last step overshot: halve it and evaluate again
                step := step / 2;
                FOR i IN 1 .. np LOOP
                    v[i] := v_prev[i] + step * dir[i];
                END LOOP;
                IF clock_timestamp() - last_notice > interval '5 seconds' THEN
                    RAISE NOTICE 'ml_stack: logistic iteration %: loss % (step halved to %)', iter, f, step;
                    last_notice := clock_timestamp();
                END IF;
                CONTINUE WHEN phase_iter < max_iter * 2;
                EXIT;
            END IF;

            g := res[2 : 1 + np];
            h := array_fill(0::float8, ARRAY[np * np]);
            pos := 1 + np;
            FOR a_idx IN 1 .. np LOOP
                g[a_idx] := g[a_idx] + pen_scale * pen[a_idx] * v[a_idx];
                FOR b_idx IN a_idx .. np LOOP
                    pos := pos + 1;
                    h[(a_idx - 1) * np + b_idx] := res[pos];
                    h[(b_idx - 1) * np + a_idx] := res[pos];
                END LOOP;
                h[(a_idx - 1) * np + a_idx] := h[(a_idx - 1) * np + a_idx] + pen_scale * pen[a_idx];
            END LOOP;
            dir := ml_stack._solve_psd(h, g);
            dmax := 0;
            FOR i IN 1 .. np LOOP
                dir[i] := -dir[i];
                dmax := greatest(dmax, abs(dir[i]));
            END LOOP;
            IF clock_timestamp() - last_notice > interval '5 seconds' THEN
                RAISE NOTICE 'ml_stack: logistic iteration % (%): loss %, newton step % (% s)', iter,
                    CASE WHEN phase = 1 THEN 'sample' ELSE 'all rows' END, f, dmax,
                    round(extract(epoch FROM clock_timestamp() - started)::numeric, 1);
                last_notice := clock_timestamp();
            END IF;
            v_prev := v; f_prev := f; step := 1;
            FOR i IN 1 .. np LOOP
                v[i] := v[i] + dir[i];
            END LOOP;
            EXIT WHEN dmax < phase_tol OR phase_iter >= max_iter;
        END LOOP;
    END LOOP;
    IF dmax >= tol THEN
        RAISE WARNING 'ml_stack: logistic regression stopped after % iterations without converging (last step %)', iter, dmax
            USING HINT = 'Raise max_iter, or scale the features with preprocess.';
    END IF;

    -- back to the preprocessed features: w = v / s, b = v0 - sum(w * m)
    intercepts := '{}';
    FOR ci IN 1 .. k LOOP
        w := '{}'; b0 := v[(ci - 1) * q + 1];
        FOR i IN 1 .. p LOOP
            w := w || (v[(ci - 1) * q + 1 + i] / sd[i]);
            b0 := b0 - w[i] * m[i];
        END LOOP;
        intercepts := intercepts || b0;
        coefs := coefs || jsonb_build_array(to_jsonb(w));
    END LOOP;
    RAISE NOTICE 'ml_stack: logistic regression converged in % iterations%, % s', iter,
        CASE WHEN sample_iters > 0 THEN format(' (%s on a 1/16 sample, then %s on all rows)', sample_iters, iter - sample_iters)
             ELSE '' END,
        round(extract(epoch FROM clock_timestamp() - started)::numeric, 3);
    RETURN jsonb_build_object('intercepts', to_jsonb(intercepts), 'coefficients', coefs);
END
$$;
