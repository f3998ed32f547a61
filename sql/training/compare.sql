-- Automatic deploy decides on the same rows (0.5.0): before a retrained model replaces the
-- deployed one, the deployed model is scored on the new model's test rows (after a drift,
-- its score on its own, older test rows says nothing of today's data).

-- Metrics of a model on the test rows of the split in pg_temp._ml_stack_rows (its feature
-- columns must be those of the dataset: serving arguments compared by the caller), as
-- {"metrics": {...}, "rows": n}; {"no_prediction": k, "rows": n} when it gives NULL for k
-- rows (NULL features it has no impute rule for); {"skipped": why} when it cannot be scored.
CREATE OR REPLACE FUNCTION ml_stack._score_on_split(model_id bigint, task text, dataset jsonb)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
DECLARE
    old_layout jsonb := ml_stack._model_layout(model_id);
    new_layout jsonb := dataset -> 'columns';
    parts text[] := '{}';
    xi integer := 0;
    ti integer := 0;
    gi integer := 0;
    col jsonb;
    old jsonb;
    w integer;
    classes float8[];
    scoring text;
    missing bigint;
    total bigint;
    problem text;
    art jsonb;
    attempts integer := 2;
    x_positions integer[] := '{}';
    blocks jsonb := '[]';
BEGIN
    IF old_layout IS NULL OR jsonb_array_length(old_layout) <> jsonb_array_length(new_layout) THEN
        RETURN jsonb_build_object('skipped', 'its feature columns are not known');
    END IF;
    -- its feature array from the split's raw features x (in table order) and texts t, the texts
    -- vectorized by its own transformers
    FOR k IN 0 .. jsonb_array_length(new_layout) - 1 LOOP
        col := new_layout -> k;
        old := old_layout -> k;
        w := coalesce((col ->> 'width')::integer, 1);
        IF col ->> 'name' <> old ->> 'name' OR (col ->> 'kind' IN ('text', 'category', 'temporal') OR old ->> 'kind' IN ('text', 'category', 'temporal'))
                                                 AND col ->> 'kind' IS DISTINCT FROM old ->> 'kind'
           OR (col ->> 'kind' NOT IN ('text', 'category') AND w <> coalesce((old ->> 'width')::integer, 1)) THEN
            RETURN jsonb_build_object('skipped', format('column "%s" differs', col ->> 'name'));
        END IF;
        IF col ->> 'kind' = 'category' THEN
            -- its own encoding of the split's categories (which may have other categories now)
            gi := gi + 1;
            parts := parts || ml_stack._category_features_sql(old -> 'encoding', format('g%s', gi));
            xi := xi + w;
        ELSIF col ->> 'kind' = 'text' THEN
            ti := ti + 1;
            blocks := blocks || jsonb_build_array(jsonb_build_object('t', ti, 'spec', old -> 'transformer',
                                                                     'offset', (old ->> 'offset')::integer));
            parts := parts || format('ml_stack._text_features(%L::pg_catalog.jsonb, %s, t%s)', old -> 'transformer',
                                     (old ->> 'width')::integer, ti);
        ELSE
            parts := parts || format('ARRAY[%s]', (SELECT string_agg(format('x%s', xi + j), ', ' ORDER BY j)
                                                   FROM generate_series(1, w) AS j));
            x_positions := x_positions || ARRAY(SELECT (old ->> 'offset')::integer + j FROM generate_series(1, w) AS j);
            xi := xi + w;
        END IF;
    END LOOP;
    SELECT m.classes INTO classes FROM ml_stack.models AS m WHERE m.id = _score_on_split.model_id;
    IF (SELECT s.label -> 'class_labels' FROM ml_stack.models AS m JOIN ml_stack.snapshots AS s ON s.id = m.snapshot_id
        WHERE m.id = _score_on_split.model_id) IS DISTINCT FROM dataset -> 'label' -> 'class_labels'
       AND jsonb_typeof(dataset -> 'label' -> 'class_labels') = 'array' AND dataset -> 'label' ->> 'type' NOT IN
           ('smallint', 'integer', 'bigint', 'real', 'double precision', 'numeric', 'boolean') THEN
        RETURN jsonb_build_object('skipped', 'its classes differ');
    END IF;
    IF to_regclass('pg_temp._ml_stack_deployed_predictions') IS NOT NULL THEN
        DROP TABLE pg_temp._ml_stack_deployed_predictions;
    END IF;
    art := (SELECT m.artifact FROM ml_stack.models AS m WHERE m.id = _score_on_split.model_id);
    IF task = 'classification' AND art ->> 'format' = 'linear' AND art ->> 'link' IN ('logistic', 'softmax')
       AND NOT art ? 'confidential_model' AND ti > 0 AND gi = 0
       AND (SELECT bool_and(c ? 'offset') FROM jsonb_array_elements(old_layout) AS c)
       -- SQL transformers only: a model transformer's vectors (MiniLM) have no sparse form
       AND NOT EXISTS (SELECT FROM jsonb_array_elements(blocks) AS b WHERE b -> 'spec' ->> 'kind' NOT IN ('hashing', 'counts', 'tfidf')) THEN
        -- a linear classifier of text (naive Bayes, logistic regression) scores the split's texts
        -- sparsely, as its training scored its own test rows: row by row, its dense feature vector
        -- (a vocabulary of 11k terms) cost 2 ms a row, 34 s for the 7k test rows of 29k texts
        PERFORM ml_stack._predict_test_rows_sparse(dataset || jsonb_build_object(
                    'classes', to_jsonb(classes),
                    'num_features', jsonb_array_length(art -> 'coefficients' -> 0),
                    'x_positions', to_jsonb(x_positions),
                    'transform', (SELECT coalesce(jsonb_agg(jsonb_build_object('impute', art -> 'impute' -> (xp.pos - 1)) ORDER BY xp.i), '[]')
                                  FROM unnest(x_positions) WITH ORDINALITY AS xp(pos, i)),
                    'blocks', blocks),
                ARRAY(SELECT e.coefficient::float8 FROM jsonb_array_elements(art -> 'coefficients') WITH ORDINALITY AS c(v, k),
                                 jsonb_array_elements_text(c.v) WITH ORDINALITY AS e(coefficient, j) ORDER BY c.k, e.j),
                ARRAY(SELECT t.intercept::float8 FROM jsonb_array_elements_text(art -> 'intercepts') WITH ORDINALITY AS t(intercept, i) ORDER BY t.i),
                '_ml_stack_deployed_predictions');
        attempts := 0;
    END IF;
    -- with probabilities when it has them (a classifier without them fails on the first row: then without)
    FOR attempt IN 1 .. attempts LOOP
        scoring := format('CREATE TEMPORARY TABLE _ml_stack_deployed_predictions ON COMMIT DROP AS '
                          'SELECT r, ml_stack.predict(%1$s::bigint, f) AS yhat, %2$s AS proba '
                          'FROM (SELECT r, %3$s AS f FROM pg_temp._ml_stack_rows WHERE %4$s OFFSET 0) AS s',
                          model_id,
                          CASE WHEN task = 'classification' AND attempt = 1
                               THEN format('ml_stack.predict_proba(%s::bigint, f)', model_id) ELSE 'NULL::float8[]' END,
                          array_to_string(parts, ' OPERATOR(pg_catalog.||) '), dataset ->> 'test_filter');
        BEGIN
            EXECUTE scoring;
            problem := NULL;
            EXIT;
        EXCEPTION WHEN query_canceled THEN
            RAISE;
        WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS problem = MESSAGE_TEXT;
        END;
    END LOOP;
    IF problem IS NOT NULL THEN
        RETURN jsonb_build_object('skipped', left(problem, 300));
    END IF;
    SELECT count(*) FILTER (WHERE p.yhat IS NULL), count(*) INTO missing, total FROM pg_temp._ml_stack_deployed_predictions AS p;
    IF missing > 0 THEN
        RETURN jsonb_build_object('no_prediction', missing, 'rows', total);
    END IF;
    RETURN jsonb_build_object('metrics', ml_stack._test_metrics(task, NULL, classes,
                                                                 dataset || '{"engine_predictions": true, "predictions": "deployed"}'),
                              'rows', total);
END
$$;

-- How a decision on the deployed model's own test rows explains itself.
CREATE OR REPLACE FUNCTION ml_stack._own_rows_note(comparison jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN comparison ? 'skipped' THEN format(' on its own test rows (not scored on this split: %s)', comparison ->> 'skipped')
                ELSE ' on its own test rows' END
$$;
