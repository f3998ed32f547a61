-- Metrics of a model on the test split, computed in SQL from the same expressions
-- that serve it. Definitions follow scikit-learn: r2 (0 when the test labels are
-- constant and the fit is not exact), macro precision/recall/f1 over the labels
-- present in truth or prediction (0 where undefined), roc_auc from probabilities
-- with ties counted half (NULL when the test split has one class), log_loss with
-- probabilities clipped to [eps, 1 - eps].
-- An engine that predicts the test rows itself (the python engine, with the
-- library's own predict) leaves them in pg_temp._ml_stack_predictions(r, yhat,
-- proba) and sets dataset.engine_predictions; the metrics are then of those.
CREATE OR REPLACE FUNCTION ml_stack._test_metrics(task text, artifact jsonb, classes float8[], dataset jsonb)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
DECLARE
    engine_predictions boolean := coalesce((dataset ->> 'engine_predictions')::boolean, false);
    pred   text := CASE WHEN engine_predictions THEN 'p.yhat' ELSE ml_stack._predict_sql(artifact, classes, 'x%s') END;
    proba  text := CASE WHEN engine_predictions THEN 'p.proba' ELSE ml_stack._proba_sql(artifact, 'x%s') END;
    -- "predictions": "deployed": the deployed model's, on this split (training/compare.sql)
    source text := CASE WHEN engine_predictions AND dataset ->> 'predictions' = 'deployed'
                        THEN 'pg_temp._ml_stack_rows JOIN pg_temp._ml_stack_deployed_predictions AS p USING (r)'
                        WHEN engine_predictions
                        THEN 'pg_temp._ml_stack_rows JOIN pg_temp._ml_stack_predictions AS p USING (r)'
                        ELSE 'pg_temp._ml_stack_rows' END;
    result jsonb;
BEGIN
    IF task = 'regression' THEN
        EXECUTE format($q$
            SELECT jsonb_build_object(
                'r2', CASE WHEN sum((y - ybar) ^ 2) > 0 THEN 1 - sum((y - yhat) ^ 2) / sum((y - ybar) ^ 2)
                           WHEN sum((y - yhat) ^ 2) = 0 THEN 1 ELSE 0 END,
                'mean_squared_error', avg((y - yhat) ^ 2),
                'mean_absolute_error', avg(abs(y - yhat)))
            FROM (SELECT y, avg(y) OVER () AS ybar, %s AS yhat FROM %s WHERE %s OFFSET 0) AS t
            $q$, pred, source, dataset ->> 'test_filter')
        INTO result;
        RETURN result;
    END IF;

    EXECUTE format($q$
        WITH scored AS MATERIALIZED (
            SELECT y, %1$s AS yhat, %2$s AS proba FROM %5$s WHERE %3$s
        ), labels AS (
            SELECT y AS c FROM scored UNION SELECT yhat FROM scored
        ), per_class AS (
            SELECT l.c,
                   count(*) FILTER (WHERE s.y = l.c AND s.yhat = l.c) AS tp,
                   count(*) FILTER (WHERE s.y <> l.c AND s.yhat = l.c) AS fp,
                   count(*) FILTER (WHERE s.y = l.c AND s.yhat <> l.c) AS fn
            FROM labels AS l CROSS JOIN scored AS s
            GROUP BY l.c
        ), prf AS (
            SELECT CASE WHEN tp + fp > 0 THEN tp::float8 / (tp + fp) ELSE 0 END AS precision,
                   CASE WHEN tp + fn > 0 THEN tp::float8 / (tp + fn) ELSE 0 END AS recall,
                   CASE WHEN 2 * tp + fp + fn > 0 THEN 2 * tp::float8 / (2 * tp + fp + fn) ELSE 0 END AS f1
            FROM per_class
        ), ranked AS (
            -- binary: average rank of each positive's probability (Mann-Whitney U)
            SELECT y, rank() OVER (ORDER BY proba[2]) + (count(*) OVER (PARTITION BY proba[2]) - 1) / 2.0 AS r
            FROM scored
        )
        SELECT jsonb_build_object(
            'accuracy', (SELECT avg((y = yhat)::integer::float8) FROM scored),
            'precision', (SELECT avg(precision) FROM prf),
            'recall', (SELECT avg(recall) FROM prf),
            'f1', (SELECT avg(f1) FROM prf),
            'roc_auc', CASE WHEN cardinality(%4$L::float8[]) = 2 AND NOT EXISTS (SELECT FROM scored WHERE proba IS NULL) THEN (
                SELECT (sum(r) FILTER (WHERE y = (%4$L::float8[])[2])
                        - count(*) FILTER (WHERE y = (%4$L::float8[])[2]) * (count(*) FILTER (WHERE y = (%4$L::float8[])[2]) + 1) / 2.0)
                       / nullif(count(*) FILTER (WHERE y = (%4$L::float8[])[2]) * count(*) FILTER (WHERE y <> (%4$L::float8[])[2]), 0)
                FROM ranked)::float8 END,
            -- NULL when the model gives no probabilities (greatest() would turn NULL into eps)
            'log_loss', (SELECT CASE WHEN count(proba) = count(*) THEN
                                    avg(-ln(least(greatest(proba[array_position(%4$L::float8[], y)], 2.220446049250313e-16),
                                                  1 - 2.220446049250313e-16))) END
                         FROM scored))
        $q$, pred, proba, dataset ->> 'test_filter', classes, source)
    INTO result;
    RETURN result;
END
$$;
