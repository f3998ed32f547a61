-- Solve A x = b for a symmetric positive semi-definite A (p x p, row-major flat
-- array), by Cholesky factorisation with symmetric pivoting on the scaled matrix.
-- A direction whose pivot falls below `tolerance` (relative to the unit diagonal
-- of the scaled matrix) is degenerate (constant or collinear features, the
-- softmax intercept shift): its component is set to 0, which gives a
-- least-squares solution with the same predictions as the minimum-norm one.
CREATE OR REPLACE FUNCTION ml_stack._solve_psd(a float8[], b float8[], tolerance float8 DEFAULT 1e-10)
RETURNS float8[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p       integer := cardinality(b);
    d       float8[] := array_fill(0::float8, ARRAY[p]);  -- scaling: 1/sqrt(diag)
    l       float8[];                                     -- factor, row-major, scaled system
    perm    integer[] := array_fill(0, ARRAY[p]);
    used    boolean[] := array_fill(false, ARRAY[p]);
    rank    integer := 0;
    y       float8[] := array_fill(0::float8, ARRAY[p]);
    x       float8[] := array_fill(0::float8, ARRAY[p]);
    i integer; j integer; k integer; best integer; pi integer; pj integer;
    s float8; v float8;
BEGIN
    IF cardinality(a) <> p * p THEN
        RAISE EXCEPTION '_solve_psd: matrix has % elements, expected %', cardinality(a), p * p;
    END IF;
    FOR i IN 1 .. p LOOP
        v := a[(i - 1) * p + i];
        d[i] := CASE WHEN v > 0 THEN 1 / sqrt(v) ELSE 0 END;
    END LOOP;
    -- l holds the scaled matrix, overwritten column by column with the factor.
    l := array_fill(0::float8, ARRAY[p * p]);
    FOR i IN 1 .. p LOOP
        FOR j IN 1 .. p LOOP
            l[(i - 1) * p + j] := a[(i - 1) * p + j] * d[i] * d[j];
        END LOOP;
    END LOOP;
    FOR k IN 1 .. p LOOP
        -- the remaining variable with the largest updated diagonal
        best := 0; v := tolerance;
        FOR i IN 1 .. p LOOP
            IF NOT used[i] AND d[i] > 0 THEN
                s := l[(i - 1) * p + i];
                IF s > v THEN v := s; best := i; END IF;
            END IF;
        END LOOP;
        EXIT WHEN best = 0;
        used[best] := true;
        rank := rank + 1;
        perm[rank] := best;
        s := sqrt(l[(best - 1) * p + best]);
        l[(best - 1) * p + best] := s;
        FOR i IN 1 .. p LOOP
            IF NOT used[i] AND d[i] > 0 THEN
                l[(i - 1) * p + best] := l[(i - 1) * p + best] / s;
            END IF;
        END LOOP;
        FOR i IN 1 .. p LOOP
            IF NOT used[i] AND d[i] > 0 THEN
                v := l[(i - 1) * p + best];
                FOR j IN 1 .. p LOOP
                    IF NOT used[j] AND d[j] > 0 THEN
                        l[(i - 1) * p + j] := l[(i - 1) * p + j] - v * l[(j - 1) * p + best];
                    END IF;
                END LOOP;
            END IF;
        END LOOP;
    END LOOP;
    -- forward substitution L y = P' D b, over the pivoted variables
    FOR k IN 1 .. rank LOOP
        pi := perm[k];
        s := b[pi] * d[pi];
        FOR j IN 1 .. k - 1 LOOP
            s := s - l[(pi - 1) * p + perm[j]] * y[j];
        END LOOP;
        y[k] := s / l[(pi - 1) * p + pi];
    END LOOP;
    -- back substitution L' z = y; x = D z (variables left out stay 0)
    FOR k IN REVERSE rank .. 1 LOOP
        pi := perm[k];
        s := y[k];
        FOR j IN k + 1 .. rank LOOP
            pj := perm[j];
            s := s - l[(pj - 1) * p + pi] * x[pj];
        END LOOP;
        x[pi] := s / l[(pi - 1) * p + pi];
    END LOOP;
    FOR i IN 1 .. p LOOP
        x[i] := x[i] * d[i];
    END LOOP;
    RETURN x;
END
$$;
