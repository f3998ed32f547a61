-- Evaluation (0.5.0): a model of the registry scored on any relation that has its feature
-- columns and its label, with the contract's metrics (training/metrics.sql: the same
-- definitions as the test split's), a confusion matrix, the ROC and precision-recall
-- curves of a binary classifier, and the importance of each feature.

-- Score `rel` with model `model_id` into pg_temp._ml_stack_rows(r, y) and
-- pg_temp._ml_stack_predictions(r, yhat, proba): the features built from the columns by
-- name as the typed serving function builds them, the label as at training (classes by
-- name: their position; a class the model never saw: -1). Rows with a NULL label, or that
-- the model gives no prediction for, are left out. Returns
-- {"task", "classes", "labels", "rows", "no_prediction"}.
CREATE OR REPLACE FUNCTION ml_stack._score_relation(model_id bigint, rel regclass)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
DECLARE
    m record;
    layout jsonb := ml_stack._model_layout(model_id);
    label_name text;
    label_type text;
    labels text[];
    missing text[];
    casts text;
    y_sql text;
    features text;
    n bigint;
    scored bigint;
    by_name boolean;
BEGIN
    SELECT mo.task, mo.classes, s.y_column_name, s.label ->> 'type' AS label_type,
           CASE WHEN jsonb_typeof(s.label -> 'class_labels') = 'array' THEN ARRAY(SELECT jsonb_array_elements_text(s.label -> 'class_labels')) END AS labels
    INTO m
    FROM ml_stack.models AS mo LEFT JOIN ml_stack.snapshots AS s ON s.id = mo.snapshot_id
    WHERE mo.id = _score_relation.model_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'model % does not exist', model_id
            USING ERRCODE = 'undefined_object', HINT = 'SELECT id, algorithm FROM ml_stack.models lists the models.';
    END IF;
    IF layout IS NULL OR m.y_column_name IS NULL OR m.y_column_name = 'unknown' THEN
        RAISE EXCEPTION 'model % does not know its columns (it was imported): it cannot read a relation by column names', model_id
            USING ERRCODE = 'feature_not_supported', HINT = 'Evaluate a model trained in this database.';
    END IF;
    label_name := m.y_column_name; label_type := m.label_type; labels := m.labels;
    SELECT array_agg(c.value ->> 'name' ORDER BY c.ordinality) INTO missing
    FROM jsonb_array_elements(layout || jsonb_build_array(jsonb_build_object('name', label_name))) WITH ORDINALITY AS c
    WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_attribute AS a
                      WHERE a.attrelid = rel AND a.attname = c.value ->> 'name' AND a.attnum > 0 AND NOT a.attisdropped);
    IF cardinality(missing) > 0 THEN
        RAISE EXCEPTION 'relation % lacks columns of model %: %', rel, model_id,
                        (SELECT string_agg(format('"%s"', x), ', ') FROM unnest(missing) AS x)
            USING ERRCODE = 'undefined_column',
                  HINT = 'The relation needs the feature columns the model was trained on and its label, by name (a view can rename them).';
    END IF;
    -- the columns as the serving function's arguments take them, then its feature array
    SELECT string_agg(format('%I::%s AS %I', c.value ->> 'name', ml_stack._serving_argument_type(c.value), c.value ->> 'name'), ', ')
    INTO casts FROM jsonb_array_elements(layout) AS c;
    features := ml_stack._serving_features_sql(layout);
    by_name := m.task = 'classification' AND label_type NOT IN ('smallint', 'integer', 'bigint', 'real', 'double precision',
                                                                'numeric', 'boolean');
    y_sql := CASE WHEN by_name
                  THEN format('coalesce(pg_catalog.array_position(%L::text[], %I::text) - 1, -1)::float8', labels, label_name)
                  WHEN label_type = 'boolean' THEN format('%I::integer::float8', label_name)
                  ELSE format('%I::float8', label_name) END;
    IF to_regclass('pg_temp._ml_stack_rows') IS NOT NULL THEN
        DROP TABLE pg_temp._ml_stack_rows;
    END IF;
    IF to_regclass('pg_temp._ml_stack_predictions') IS NOT NULL THEN
        DROP TABLE pg_temp._ml_stack_predictions;
    END IF;
    -- with probabilities when the model has them (one without fails on the first row: then without)
    FOR attempt IN 1 .. 2 LOOP
        BEGIN
            EXECUTE format('CREATE TEMPORARY TABLE _ml_stack_scored ON COMMIT DROP AS '
                           'SELECT row_number() OVER () AS r, %s AS y, ml_stack.predict(%s::bigint, _ml_stack_features) AS yhat, %s AS proba '
                           'FROM (SELECT %s AS _ml_stack_features, %s FROM (SELECT %s, %I FROM %s) AS c OFFSET 0) AS t WHERE %I IS NOT NULL',
                           y_sql, model_id, CASE WHEN m.task = 'classification' AND attempt = 1
                                                 THEN format('ml_stack.predict_proba(%s::bigint, _ml_stack_features)', model_id)
                                                 ELSE 'NULL::float8[]' END,
                           features, quote_ident(label_name), casts, label_name, rel, label_name);
            EXIT;
        EXCEPTION WHEN feature_not_supported THEN
            IF attempt = 2 OR m.task <> 'classification' THEN
                RAISE;
            END IF;
        END;
    END LOOP;
    GET DIAGNOSTICS n = ROW_COUNT;
    CREATE TEMPORARY TABLE _ml_stack_rows ON COMMIT DROP AS SELECT r, y FROM pg_temp._ml_stack_scored WHERE yhat IS NOT NULL;
    GET DIAGNOSTICS scored = ROW_COUNT;
    CREATE TEMPORARY TABLE _ml_stack_predictions ON COMMIT DROP AS
        SELECT r, yhat, proba FROM pg_temp._ml_stack_scored WHERE yhat IS NOT NULL;
    DROP TABLE pg_temp._ml_stack_scored;
    IF scored = 0 THEN
        RAISE EXCEPTION 'model % gives no prediction for any of the % labelled rows of %', model_id, n, rel
            USING ERRCODE = 'no_data_found',
                  HINT = CASE WHEN n = 0 THEN format('Every row has a NULL "%s", or the relation is empty.', label_name)
                              ELSE 'Its features are NULL where the model has no impute rule.' END;
    END IF;
    RETURN jsonb_build_object('task', m.task, 'classes', to_jsonb(m.classes), 'by_name', by_name,
                              'labels', to_jsonb(coalesce(labels, m.classes::text[])), 'rows', scored, 'no_prediction', n - scored);
END
$$;

CREATE OR REPLACE FUNCTION ml_stack._evaluate(model_id bigint, relation_name text, caller_search_path text)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    info jsonb := ml_stack._score_relation(model_id, ml_stack._resolve_relation(relation_name, caller_search_path));
BEGIN
    RETURN ml_stack._test_metrics(info ->> 'task', NULL,
                                  CASE WHEN jsonb_typeof(info -> 'classes') = 'array'
                                       THEN ARRAY(SELECT jsonb_array_elements_text(info -> 'classes')::float8) END,
                                  '{"engine_predictions": true, "test_filter": "true"}')
           || jsonb_build_object('rows', info -> 'rows', 'no_prediction', info -> 'no_prediction');
END
$$;

-- No SET clause: the relation name resolves with the caller's search_path (as train's).
CREATE OR REPLACE FUNCTION ml_stack.evaluate(model_id bigint, relation_name text)
RETURNS jsonb
LANGUAGE sql VOLATILE
AS $$ SELECT ml_stack._evaluate(model_id, relation_name, pg_catalog.current_setting('search_path')) $$;
COMMENT ON FUNCTION ml_stack.evaluate(bigint, text) IS
    'ml_stack: the metrics of a model (as on its test split) on any relation with its feature columns and label, plus "rows" scored and "no_prediction" (rows whose NULL features it has no impute rule for).';

CREATE OR REPLACE FUNCTION ml_stack._confusion_matrix(model_id bigint, relation_name text, caller_search_path text)
RETURNS TABLE (actual text, predicted text, count bigint)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    info jsonb := ml_stack._score_relation(model_id, ml_stack._resolve_relation(relation_name, caller_search_path));
    classes float8[];
    labels text[];
BEGIN
    IF info ->> 'task' <> 'classification' THEN
        RAISE EXCEPTION 'model % is a regression: it has no confusion matrix', model_id
            USING ERRCODE = 'wrong_object_type', HINT = 'Use ml_stack.evaluate() for its metrics.';
    END IF;
    classes := ARRAY(SELECT jsonb_array_elements_text(info -> 'classes')::float8);
    labels := ARRAY(SELECT jsonb_array_elements_text(info -> 'labels'));
    -- every pair of the model's classes (zeros included, as scikit-learn's matrix), then
    -- labels of the relation that the model never saw (classes by name: all of them as "(unseen)")
    RETURN QUERY
        WITH pairs AS (
            SELECT t.y, p.yhat FROM pg_temp._ml_stack_rows AS t JOIN pg_temp._ml_stack_predictions AS p USING (r)
        ), known AS (
            SELECT c.v, c.i FROM unnest(classes) WITH ORDINALITY AS c(v, i)
            UNION ALL SELECT DISTINCT y, NULL::bigint FROM pairs WHERE NOT y = ANY (classes)
        )
        SELECT coalesce(labels[a.i], CASE WHEN (info ->> 'by_name')::boolean THEN '(unseen)' ELSE a.v::text END),
               labels[b.i], (SELECT count(*) FROM pairs AS q WHERE q.y = a.v AND q.yhat = b.v)
        FROM known AS a CROSS JOIN known AS b
        WHERE b.i IS NOT NULL
        ORDER BY a.i NULLS LAST, a.v, b.i;
END
$$;

CREATE OR REPLACE FUNCTION ml_stack.confusion_matrix(model_id bigint, relation_name text)
RETURNS TABLE (actual text, predicted text, count bigint)
LANGUAGE sql VOLATILE
AS $$ SELECT * FROM ml_stack._confusion_matrix(model_id, relation_name, pg_catalog.current_setting('search_path')) $$;
COMMENT ON FUNCTION ml_stack.confusion_matrix(bigint, text) IS
    'ml_stack: how many rows of each actual class a classifier predicts as each class, on any relation with its feature columns and label (every pair of its classes, zeros included).';

-- The scores of the positive (second) class of a binary classifier on a relation, with the
-- truth: pg_temp._ml_stack_curve(score, positive). An error for other models.
CREATE OR REPLACE FUNCTION ml_stack._binary_scores(model_id bigint, relation_name text, caller_search_path text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    info jsonb := ml_stack._score_relation(model_id, ml_stack._resolve_relation(relation_name, caller_search_path));
BEGIN
    IF info ->> 'task' <> 'classification' OR jsonb_array_length(info -> 'classes') <> 2 THEN
        RAISE EXCEPTION 'model % is not a binary classifier: its curves are not defined', model_id
            USING ERRCODE = 'wrong_object_type', HINT = 'ROC and precision-recall curves are of two classes; ml_stack.confusion_matrix() takes any classifier.';
    END IF;
    IF to_regclass('pg_temp._ml_stack_curve') IS NOT NULL THEN
        DROP TABLE pg_temp._ml_stack_curve;
    END IF;
    CREATE TEMPORARY TABLE _ml_stack_curve ON COMMIT DROP AS
        SELECT p.proba[2] AS score, t.y = (info -> 'classes' ->> 1)::float8 AS positive
        FROM pg_temp._ml_stack_rows AS t JOIN pg_temp._ml_stack_predictions AS p USING (r);
    IF EXISTS (SELECT FROM pg_temp._ml_stack_rows AS t WHERE NOT t.y = ANY (ARRAY[(info -> 'classes' ->> 0)::float8, (info -> 'classes' ->> 1)::float8])) THEN
        RAISE EXCEPTION 'the rows of % hold classes model % never saw', relation_name, model_id
            USING ERRCODE = 'invalid_parameter_value', HINT = 'The curves are of the model''s two classes: filter the rows in a view.';
    END IF;
    IF (SELECT count(DISTINCT positive) FROM pg_temp._ml_stack_curve) < 2 THEN
        RAISE EXCEPTION 'the rows of % hold one class only: the curves need both', relation_name
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Evaluate on rows of both classes.';
    END IF;
END
$$;

-- scikit-learn's roc_curve(drop_intermediate=False): one point per distinct score, from the
-- highest, after the point (0, 0) at threshold +Infinity.
CREATE OR REPLACE FUNCTION ml_stack._roc_curve(model_id bigint, relation_name text, caller_search_path text)
RETURNS TABLE (threshold float8, fpr float8, tpr float8)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM ml_stack._binary_scores(model_id, relation_name, caller_search_path);
    RETURN QUERY
        WITH steps AS (
            SELECT c.score, count(*) FILTER (WHERE c.positive) AS tp, count(*) FILTER (WHERE NOT c.positive) AS fp
            FROM pg_temp._ml_stack_curve AS c GROUP BY c.score
        ), totals AS (
            SELECT count(*) FILTER (WHERE c.positive)::float8 AS p, count(*) FILTER (WHERE NOT c.positive)::float8 AS n
            FROM pg_temp._ml_stack_curve AS c
        )
        SELECT 'Infinity'::float8, 0::float8, 0::float8
        UNION ALL
        (SELECT s.score, sum(s.fp) OVER w / t.n, sum(s.tp) OVER w / t.p
         FROM steps AS s, totals AS t
         WINDOW w AS (ORDER BY s.score DESC)
         ORDER BY s.score DESC);
END
$$;

CREATE OR REPLACE FUNCTION ml_stack.roc_curve(model_id bigint, relation_name text)
RETURNS TABLE (threshold float8, fpr float8, tpr float8)
LANGUAGE sql VOLATILE
AS $$ SELECT * FROM ml_stack._roc_curve(model_id, relation_name, pg_catalog.current_setting('search_path')) $$;
COMMENT ON FUNCTION ml_stack.roc_curve(bigint, text) IS
    'ml_stack: the ROC curve of a binary classifier on a relation: false and true positive rates when the positive (second) class is predicted for probabilities >= threshold, one point per distinct probability (scikit-learn''s roc_curve, drop_intermediate=False).';

-- scikit-learn's precision_recall_curve (1.2): for each distinct score, ascending, the precision
-- and recall of predicting positive at score >= threshold (its last point, precision 1 and
-- recall 0 without a threshold, left out).
CREATE OR REPLACE FUNCTION ml_stack._precision_recall_curve(model_id bigint, relation_name text, caller_search_path text)
RETURNS TABLE (threshold float8, "precision" float8, recall float8)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM ml_stack._binary_scores(model_id, relation_name, caller_search_path);
    RETURN QUERY
        WITH steps AS (
            SELECT c.score, count(*) FILTER (WHERE c.positive) AS tp, count(*) AS k
            FROM pg_temp._ml_stack_curve AS c GROUP BY c.score
        ), cumulative AS (
            SELECT s.score, sum(s.tp) OVER w AS tp, sum(s.k) OVER w AS k,
                   (SELECT count(*) FROM pg_temp._ml_stack_curve AS c WHERE c.positive) AS p
            FROM steps AS s WINDOW w AS (ORDER BY s.score DESC)
        )
        SELECT c.score, c.tp::float8 / c.k, c.tp::float8 / c.p
        FROM cumulative AS c
        ORDER BY c.score;
END
$$;

CREATE OR REPLACE FUNCTION ml_stack.precision_recall_curve(model_id bigint, relation_name text)
RETURNS TABLE (threshold float8, "precision" float8, recall float8)
LANGUAGE sql VOLATILE
AS $$ SELECT * FROM ml_stack._precision_recall_curve(model_id, relation_name, pg_catalog.current_setting('search_path')) $$;
COMMENT ON FUNCTION ml_stack.precision_recall_curve(bigint, text) IS
    'ml_stack: the precision-recall curve of a binary classifier on a relation (scikit-learn''s precision_recall_curve, without its last point: precision 1, recall 0).';

-- The name of each of a model's features: its columns' in order, an array's elements, a text column's
-- vector dimensions and a target encoding's classes as <column>[i], a one-hot feature as <column>=<category>;
-- 'feature <j>' for a model imported without names.
CREATE OR REPLACE FUNCTION ml_stack._model_feature_names(model_id bigint)
RETURNS text[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT ARRAY(
        SELECT coalesce(n.name, format('feature %s', f.j))
        FROM generate_series(1, (SELECT m.num_features FROM ml_stack.models AS m WHERE m.id = _model_feature_names.model_id)) AS f(j)
        LEFT JOIN (SELECT row_number() OVER (ORDER BY c.o, q) AS j,
                          CASE WHEN c.col #>> '{encoding,method}' = 'one_hot'
                               -- a one-hot feature by its category (the first one left out by "drop", NULL last)
                               THEN format('%s=%s', c.col ->> 'name',
                                           coalesce(c.col #> '{encoding,categories}' ->> (q - 1 + CASE WHEN c.col #>> '{encoding,drop}' = 'first'
                                                                                                   THEN 1 ELSE 0 END), 'NULL'))
                               WHEN c.col ->> 'kind' IN ('text', 'array') OR (c.col ->> 'width')::integer > 1
                               THEN format('%s[%s]', c.col ->> 'name', q)
                               ELSE c.col ->> 'name' END AS name
                   FROM jsonb_array_elements(coalesce(ml_stack._model_layout(_model_feature_names.model_id), '[]'))
                        WITH ORDINALITY AS c(col, o),
                        generate_series(1, coalesce((c.col ->> 'width')::integer, 1)) AS q) AS n ON n.j = f.j
        ORDER BY f.j)
$$;

-- Feature importance. Linear models: each coefficient times its feature's standard deviation on the
-- training rows (the coefficient of the standardised feature; a text column's dimensions: the coefficient
-- as it is), one row per score (per class of a multinomial model). Tree ensembles: XGBoost's importance
-- types from the booster's own statistics (weight: the splits on the feature; gain / cover: the mean loss
-- reduction / hessian sum of those splits; total_gain, total_cover: their sums), over the trees the model
-- predicts with; other libraries' trees: weight only.
CREATE OR REPLACE FUNCTION ml_stack.feature_importance(model_id bigint, importance_type text DEFAULT NULL)
RETURNS TABLE (feature text, importance float8, class text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    m record;
    col jsonb;
    names text[] := ml_stack._model_feature_names(feature_importance.model_id);
    stds float8[] := '{}';
    xi integer := 0;
    kind text;
    booster_trees jsonb;
BEGIN
    SELECT mo.artifact, mo.num_features, mo.classes, s.features, s.label INTO m
    FROM ml_stack.models AS mo LEFT JOIN ml_stack.snapshots AS s ON s.id = mo.snapshot_id
    WHERE mo.id = feature_importance.model_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'model % does not exist', feature_importance.model_id
            USING ERRCODE = 'undefined_object', HINT = 'SELECT id, algorithm FROM ml_stack.models lists the models.';
    END IF;
    booster_trees := m.artifact #> '{booster,learner,gradient_booster,model,trees}';
    kind := coalesce(importance_type, CASE WHEN booster_trees IS NOT NULL THEN 'gain' ELSE 'weight' END);
    IF m.artifact ->> 'format' = 'linear' THEN
        IF importance_type IS NOT NULL THEN
            RAISE EXCEPTION 'a linear model has one importance: its standardised coefficients' USING ERRCODE = 'invalid_parameter_value',
                HINT = 'Leave importance_type out; importance types are for tree ensembles.';
        END IF;
        -- each feature's training std (a text column's dimensions have none: their values are the transformer's)
        FOR col IN SELECT value FROM jsonb_array_elements(coalesce(ml_stack._model_layout(feature_importance.model_id), '[]')) LOOP
            FOR q IN 1 .. coalesce((col ->> 'width')::integer, 1) LOOP
                IF col ->> 'kind' = 'text' THEN
                    stds := stds || NULL::float8;
                ELSE
                    stds := stds || (m.features -> xi ->> 'std')::float8;
                    xi := xi + 1;
                END IF;
            END LOOP;
        END LOOP;
        RETURN QUERY
            SELECT names[j.i], j.w::float8 * coalesce(stds[j.i], 1),
                   CASE WHEN jsonb_array_length(m.artifact -> 'coefficients') = 1 THEN NULL
                        ELSE coalesce(m.label -> 'class_labels' ->> (k.o::integer - 1), m.classes[k.o]::text) END
            FROM jsonb_array_elements(m.artifact -> 'coefficients') WITH ORDINALITY AS k(ws, o),
                 jsonb_array_elements_text(k.ws) WITH ORDINALITY AS j(w, i)
            ORDER BY k.o, j.i;
    ELSIF m.artifact ->> 'format' = 'trees' AND kind = 'weight' AND booster_trees IS NULL THEN
        RETURN QUERY
            SELECT names[f.i + 1],
                   (SELECT count(*)::float8 FROM jsonb_array_elements(m.artifact -> 'trees') AS t,
                                              jsonb_array_elements_text(t -> 'feature') WITH ORDINALITY AS n(v, o)
                    WHERE (t -> 'left' ->> (n.o::integer - 1))::integer >= 0 AND n.v::integer = f.i),
                   NULL::text
            FROM generate_series(0, m.num_features - 1) AS f(i)
            ORDER BY f.i;
    ELSIF m.artifact ->> 'format' = 'trees' AND booster_trees IS NOT NULL
          AND kind IN ('weight', 'gain', 'total_gain', 'cover', 'total_cover') THEN
        RETURN QUERY
            WITH splits AS (
                SELECT (t.tree -> 'split_indices' ->> (n.o::integer - 1))::integer AS f,
                       (t.tree -> 'loss_changes' ->> (n.o::integer - 1))::float8 AS gain,
                       (t.tree -> 'sum_hessian' ->> (n.o::integer - 1))::float8 AS cover
                FROM jsonb_array_elements(booster_trees) WITH ORDINALITY AS t(tree, ti),
                     jsonb_array_elements_text(t.tree -> 'left_children') WITH ORDINALITY AS n(v, o)
                WHERE t.ti <= jsonb_array_length(m.artifact -> 'trees') AND n.v::integer <> -1
            )
            SELECT names[f.i + 1],
                   (SELECT CASE kind WHEN 'weight' THEN count(*)::float8 WHEN 'gain' THEN coalesce(avg(sp.gain), 0)
                                     WHEN 'total_gain' THEN coalesce(sum(sp.gain), 0) WHEN 'cover' THEN coalesce(avg(sp.cover), 0)
                                     ELSE coalesce(sum(sp.cover), 0) END
                    FROM splits AS sp WHERE sp.f = f.i),
                   NULL::text
            FROM generate_series(0, m.num_features - 1) AS f(i)
            ORDER BY f.i;
    ELSIF m.artifact ->> 'format' = 'trees' THEN
        RAISE EXCEPTION 'unknown importance_type "%" for this model', kind
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = CASE WHEN booster_trees IS NOT NULL THEN 'XGBoost models: weight, gain (the default), total_gain, cover, total_cover.'
                              ELSE 'These trees have weight (the number of splits on each feature).' END;
    ELSE
        RAISE EXCEPTION 'feature importance of % models is not available', coalesce(m.artifact ->> 'format', 'these')
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Linear models and tree ensembles (xgboost, random_forest, gradient boosting) have it.';
    END IF;
END
$$;
COMMENT ON FUNCTION ml_stack.feature_importance(bigint, text) IS
    'ml_stack: importance of each feature: linear models, the coefficient times the feature''s standard deviation on the training rows (per class of a multinomial model); XGBoost models, the booster''s importance_type (gain by default; weight, total_gain, cover, total_cover); other tree ensembles, the number of splits on the feature (weight).';
