-- Per-row explanations of XGBoost models: each feature's contribution to the margin, and the bias, which
-- add up to the margin the model predicts with (before the link: the log-odds of a binary classifier, a
-- class's score of a multiclass one). They are XGBoost's own approximate contributions
-- (predict(pred_contribs=True, approx_contribs=True), Saabas' method): along the row's path in each tree,
-- a split's feature gets the change of the node's mean value (its leaves' values weighted by their hessian
-- sums, the booster's "sum_hessian"); the bias is the base margin plus the trees' root means.
CREATE OR REPLACE FUNCTION ml_stack.feature_contributions(model_id bigint, features float8[])
RETURNS TABLE (feature text, contribution float8, class text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    m record;
    booster jsonb;
    tree jsonb;
    k integer; p integer;
    v float8[];
    tr jsonb;
    contrib float8[];
    lefts integer[]; rights integer[]; splits integer[]; default_left boolean[];
    conds float8[]; hess float8[]; means float8[];
    node integer; nxt integer; out integer; f integer;
    names text[];
BEGIN
    SELECT mo.artifact, mo.num_features, mo.classes, s.label INTO m
    FROM ml_stack.models AS mo LEFT JOIN ml_stack.snapshots AS s ON s.id = mo.snapshot_id
    WHERE mo.id = model_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'model % does not exist', model_id
            USING ERRCODE = 'undefined_object', HINT = 'SELECT id, algorithm FROM ml_stack.models lists the models.';
    END IF;
    booster := m.artifact #> '{booster,learner,gradient_booster,model}';
    IF m.artifact ->> 'format' IS DISTINCT FROM 'trees' OR booster IS NULL THEN
        RAISE EXCEPTION 'feature contributions are available for XGBoost models only'
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'ml_stack.feature_importance(model_id) ranks the features of every linear or tree model.';
    END IF;
    p := m.num_features;
    IF cardinality(features) IS DISTINCT FROM p THEN
        PERFORM ml_stack._wrong_feature_count(model_id, p, features);
    END IF;
    -- the values the trees test: the model's preprocessing (impute, shift, scale), as in serving
    v := features;
    FOR j IN 1 .. p LOOP
        tr := m.artifact -> 'transform' -> (j - 1);
        IF tr IS NOT NULL THEN
            v[j] := (coalesce(v[j], (tr ->> 'impute')::float8) - coalesce((tr ->> 'shift')::float8, 0))
                    / coalesce((tr ->> 'scale')::float8, 1);
        END IF;
    END LOOP;
    k := (m.artifact ->> 'outputs')::integer;
    contrib := array_fill(0::float8, ARRAY[k * (p + 1)]);
    FOR o IN 0 .. k - 1 LOOP
        contrib[o * (p + 1) + p + 1] := (m.artifact -> 'base' ->> o)::float8;
    END LOOP;
    -- the trees the model predicts with (its best iteration's), in the booster's own numbering
    FOR t IN 0 .. jsonb_array_length(m.artifact -> 'trees') - 1 LOOP
        tree := booster -> 'trees' -> t;
        out := (booster -> 'tree_info' ->> t)::integer;
        lefts := ARRAY(SELECT e::integer FROM jsonb_array_elements_text(tree -> 'left_children') AS e);
        rights := ARRAY(SELECT e::integer FROM jsonb_array_elements_text(tree -> 'right_children') AS e);
        splits := ARRAY(SELECT e::integer FROM jsonb_array_elements_text(tree -> 'split_indices') AS e);
        default_left := ARRAY(SELECT e::integer <> 0 FROM jsonb_array_elements_text(tree -> 'default_left') AS e);
        conds := ARRAY(SELECT e::float8 FROM jsonb_array_elements_text(tree -> 'split_conditions') AS e);
        hess := ARRAY(SELECT e::float8 FROM jsonb_array_elements_text(tree -> 'sum_hessian') AS e);
        -- node means bottom-up (XGBoost numbers a node's children after it); a leaf's value is its split_condition
        means := array_fill(0::float8, ARRAY[cardinality(lefts)]);
        FOR i IN REVERSE cardinality(lefts) .. 1 LOOP
            means[i] := CASE WHEN lefts[i] = -1 THEN conds[i]
                             ELSE (means[lefts[i] + 1] * hess[lefts[i] + 1] + means[rights[i] + 1] * hess[rights[i] + 1]) / hess[i] END;
        END LOOP;
        node := 0;
        contrib[out * (p + 1) + p + 1] := contrib[out * (p + 1) + p + 1] + means[1];
        WHILE lefts[node + 1] <> -1 LOOP
            f := splits[node + 1];
            -- XGBoost's rule: left when float32(value) < the float32 condition; missing values go the default way
            nxt := CASE WHEN v[f + 1] IS NULL OR v[f + 1] = 'NaN'::float8
                        THEN CASE WHEN default_left[node + 1] THEN lefts[node + 1] ELSE rights[node + 1] END
                        WHEN v[f + 1]::float4 < conds[node + 1]::float4 THEN lefts[node + 1]
                        ELSE rights[node + 1] END;
            contrib[out * (p + 1) + f + 1] := contrib[out * (p + 1) + f + 1] + means[nxt + 1] - means[node + 1];
            node := nxt;
        END LOOP;
    END LOOP;
    names := ml_stack._model_feature_names(model_id) || '(bias)'::text;
    RETURN QUERY
        SELECT names[j], contrib[o * (p + 1) + j],
               CASE WHEN k = 1 THEN NULL
                    ELSE coalesce(m.label -> 'class_labels' ->> o, m.classes[o + 1]::text) END
        FROM generate_series(0, k - 1) AS o, generate_series(1, p + 1) AS j
        ORDER BY o, j;
END
$$;
COMMENT ON FUNCTION ml_stack.feature_contributions(bigint, float8[]) IS
    'ml_stack: why an XGBoost model predicts what it does for one row: each feature''s contribution to the margin and the bias, which add up to the margin (per class of a multiclass model); XGBoost''s approximate contributions (pred_contribs with approx_contribs).';

CREATE OR REPLACE FUNCTION ml_stack.feature_contributions_row(project_name text, "row" jsonb)
RETURNS TABLE (feature text, contribution float8, class text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    deployed record := ml_stack._deployed_layout(project_name);
BEGIN
    RETURN QUERY SELECT * FROM ml_stack.feature_contributions(deployed.model_id, ml_stack._row_features(deployed.layout, "row"));
END
$$;
COMMENT ON FUNCTION ml_stack.feature_contributions_row(text, jsonb) IS
    'ml_stack: feature_contributions of the project''s deployed XGBoost model for a row given by column names.';
