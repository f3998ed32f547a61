-- Tree ensembles ('trees' artifact format, docs/python-engine.md) compiled to SQL,
-- so XGBoost and scikit-learn ensembles serve without Python, in any database
-- that has ml_stack. Per model:
--   ml_stack._model_<id>_margins(features float8[]) -> float8[]
--       PL/pgSQL: the features into local variables once (NaN as missing, then the
--       training transform), then one nested CASE per tree, summed per output in
--       tree order in the artifact's arithmetic (float4 for XGBoost, as the library);
--   ml_stack._model_<id>_predict / _proba(features float8[])
--       inlinable LANGUAGE sql wrappers that apply the link to the margins.
-- PL/pgSQL rather than one inlined expression: a 100-tree expression inlined
-- into a query costs 40-70 ms of planning per query, trips JIT (30-80 s), and
-- ran 2.3x slower than this form (docs/design-notes/xgboost-to-sql.md). The
-- wrappers mention `features` once: an inlined ARRAY[...] argument is rebuilt for
-- every mention, which made 200k predictions 1.5x slower with 41 of them.

-- The artifact's trees, checked: every number a JSON number, every index in
-- range, children after their parent (so every walk ends). Raises on the first
-- problem. Run before every compile, so also for what import_model brings in.
CREATE OR REPLACE FUNCTION ml_stack._check_trees_artifact(artifact jsonb, num_features integer, classes float8[])
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    outputs integer;
    tree jsonb;
    t integer := 0;
    n integer;
    key text;
    bad text;
BEGIN
    IF jsonb_typeof(artifact -> 'outputs') IS DISTINCT FROM 'number' OR jsonb_typeof(artifact -> 'trees') IS DISTINCT FROM 'array'
       OR jsonb_typeof(artifact -> 'base') IS DISTINCT FROM 'array' THEN
        bad := 'it needs "outputs" (a number), "base" and "trees" (arrays)';
    ELSE
        outputs := (artifact ->> 'outputs')::integer;
        IF outputs < 1 OR outputs > 1000 OR jsonb_array_length(artifact -> 'base') <> outputs
           OR EXISTS (SELECT FROM jsonb_array_elements(artifact -> 'base') AS b WHERE jsonb_typeof(b) <> 'number') THEN
            bad := '"base" must hold one number per output';
        ELSIF coalesce(artifact ->> 'sum', '') NOT IN ('float4', 'float8') THEN
            bad := '"sum" must be "float4" or "float8"';
        ELSIF coalesce(artifact ->> 'missing', '') NOT IN ('default', 'null') THEN
            bad := '"missing" must be "default" or "null"';
        ELSIF artifact ? 'divisor' AND (jsonb_typeof(artifact -> 'divisor') <> 'number' OR (artifact ->> 'divisor')::float8 <= 0) THEN
            bad := '"divisor" must be a positive number';
        ELSIF NOT coalesce(CASE artifact ->> 'link'
                    WHEN 'identity' THEN outputs = 1 AND classes IS NULL
                    WHEN 'exp' THEN outputs = 1 AND classes IS NULL
                    WHEN 'logistic' THEN outputs = 1 AND cardinality(classes) = 2
                    WHEN 'softmax' THEN outputs = cardinality(classes)
                    WHEN 'probability' THEN outputs = cardinality(classes) END, false) THEN
            bad := format('link "%s" does not fit %s output(s) and %s class(es)', artifact ->> 'link', outputs,
                          coalesce(cardinality(classes), 0));
        ELSIF jsonb_typeof(artifact -> 'transform') = 'array' AND (
                jsonb_array_length(artifact -> 'transform') <> num_features
                OR EXISTS (SELECT FROM jsonb_array_elements(artifact -> 'transform') AS tr,
                                       LATERAL (VALUES (tr -> 'impute'), (tr -> 'shift'), (tr -> 'scale')) AS v(x)
                           WHERE jsonb_typeof(tr) <> 'object'
                              OR coalesce(jsonb_typeof(v.x), 'null') NOT IN ('number', 'null'))
                OR EXISTS (SELECT FROM jsonb_array_elements(artifact -> 'transform') AS tr
                           WHERE (tr ->> 'scale')::float8 = 0)) THEN
            bad := format('"transform" must hold one {"impute", "shift", "scale"} object of numbers per feature (%s), scale not 0',
                          num_features);
        END IF;
    END IF;
    IF bad IS NULL THEN
        FOR tree IN SELECT value FROM jsonb_array_elements(artifact -> 'trees') LOOP
            IF jsonb_typeof(tree) <> 'object' OR jsonb_typeof(tree -> 'left') IS DISTINCT FROM 'array' THEN
                bad := format('tree %s is not an object with node arrays', t);
                EXIT;
            END IF;
            n := jsonb_array_length(tree -> 'left');
            FOREACH key IN ARRAY ARRAY['feature', 'threshold', 'inclusive', 'default_left', 'right', 'value'] LOOP
                IF jsonb_typeof(tree -> key) IS DISTINCT FROM 'array' OR jsonb_array_length(tree -> key) <> n THEN
                    bad := format('tree %s: "%s" must be an array of %s entries, like "left"', t, key, n);
                END IF;
            END LOOP;
            EXIT WHEN bad IS NOT NULL;
            IF n = 0 OR jsonb_typeof(tree -> 'output') IS DISTINCT FROM 'number'
               OR (tree ->> 'output')::numeric NOT BETWEEN 0 AND outputs - 1 THEN
                bad := format('tree %s: needs nodes and an "output" in [0, %s]', t, outputs - 1);
            ELSE
                SELECT format('tree %s, node %s: %s', t, a.i - 1, c.problem) INTO bad
                FROM jsonb_array_elements(tree -> 'left') WITH ORDINALITY AS a(l, i)
                CROSS JOIN LATERAL (SELECT tree -> 'right' -> (a.i::integer - 1) AS r, tree -> 'value' -> (a.i::integer - 1) AS v,
                                           tree -> 'feature' -> (a.i::integer - 1) AS f, tree -> 'threshold' -> (a.i::integer - 1) AS th,
                                           tree -> 'inclusive' -> (a.i::integer - 1) AS inc,
                                           tree -> 'default_left' -> (a.i::integer - 1) AS dl) AS node
                CROSS JOIN LATERAL (SELECT CASE
                    WHEN jsonb_typeof(a.l) <> 'number' OR jsonb_typeof(node.r) <> 'number' THEN 'children must be numbers'
                    WHEN a.l::text::numeric = -1 THEN
                        CASE WHEN jsonb_typeof(node.v) <> 'number' THEN 'a leaf needs a numeric value' END
                    WHEN a.l::text::numeric <= a.i - 1 OR node.r::text::numeric <= a.i - 1
                         OR a.l::text::numeric >= n OR node.r::text::numeric >= n
                         OR a.l::text::numeric % 1 <> 0 OR node.r::text::numeric % 1 <> 0
                        THEN 'children must be later nodes of the same tree'
                    WHEN jsonb_typeof(node.f) <> 'number' OR node.f::text::numeric NOT BETWEEN 0 AND num_features - 1
                         OR node.f::text::numeric % 1 <> 0
                        THEN format('feature must be an index in [0, %s]', num_features - 1)
                    WHEN jsonb_typeof(node.th) <> 'number' THEN 'threshold must be a number'
                    WHEN jsonb_typeof(node.inc) <> 'boolean' OR jsonb_typeof(node.dl) <> 'boolean'
                        THEN 'inclusive and default_left must be booleans'
                    END AS problem) AS c
                WHERE c.problem IS NOT NULL
                ORDER BY a.i LIMIT 1;
            END IF;
            EXIT WHEN bad IS NOT NULL;
            t := t + 1;
        END LOOP;
        IF bad IS NULL AND t = 0 THEN
            bad := 'it has no trees';
        END IF;
    END IF;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'invalid trees artifact: %', bad
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The ''trees'' format is described in ml_stack''s docs/python-engine.md; export the model again with ml_stack.export_model().';
    END IF;
END
$$;

-- One tree as a nested CASE over the feature references (format() strings, e.g.
-- 'f%s' for argument j). Nodes are built from the last to the first: children
-- come after their parent, so each node's subtrees are ready when it is built.
-- A NULL feature takes the node's default branch: the test is written so that
-- NULL falls to ELSE, and ELSE is the default side.
CREATE OR REPLACE FUNCTION ml_stack._tree_sql(tree jsonb, leaf_type text, feature_ref text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
SET extra_float_digits = 3  -- thresholds and leaves written back exactly
AS $$
DECLARE
    feature      integer[] := ARRAY(SELECT jsonb_array_elements_text(tree -> 'feature')::integer);
    threshold    float8[]  := ARRAY(SELECT jsonb_array_elements_text(tree -> 'threshold')::float8);
    inclusive    boolean[] := ARRAY(SELECT jsonb_array_elements_text(tree -> 'inclusive')::boolean);
    default_left boolean[] := ARRAY(SELECT jsonb_array_elements_text(tree -> 'default_left')::boolean);
    lefts        integer[] := ARRAY(SELECT jsonb_array_elements_text(tree -> 'left')::integer);
    rights       integer[] := ARRAY(SELECT jsonb_array_elements_text(tree -> 'right')::integer);
    leaf_values  text[]    := ARRAY(SELECT jsonb_array_elements_text(tree -> 'value'));
    n            integer   := cardinality(lefts);
    expr         text[]    := array_fill(NULL::text, ARRAY[n]);
    i            integer;
    f            text;
BEGIN
    FOR i IN REVERSE n .. 1 LOOP
        IF lefts[i] = -1 THEN
            -- float4 leaves are cast from their text: XGBoost writes the shortest float32 text
            expr[i] := CASE leaf_type WHEN 'float4' THEN format('%L::float4', leaf_values[i]::float4)
                                      ELSE format('%L::float8', leaf_values[i]::float8) END;
        ELSE
            f := format(feature_ref, feature[i] + 1);
            IF default_left[i] THEN
                expr[i] := format('CASE WHEN %s %s %L::float8 THEN %s ELSE %s END', f,
                                  CASE WHEN inclusive[i] THEN '>' ELSE '>=' END, threshold[i],
                                  expr[rights[i] + 1], expr[lefts[i] + 1]);
            ELSE
                expr[i] := format('CASE WHEN %s %s %L::float8 THEN %s ELSE %s END', f,
                                  CASE WHEN inclusive[i] THEN '<=' ELSE '<' END, threshold[i],
                                  expr[lefts[i] + 1], expr[rights[i] + 1]);
            END IF;
            expr[lefts[i] + 1] := NULL;   -- only the root's text is kept
            expr[rights[i] + 1] := NULL;
        END IF;
    END LOOP;
    RETURN expr[1];
END
$$;

-- Body of the PL/pgSQL margins function: the features into locals f1 .. fp, then per
-- output, base + tree + tree ... in tree order and in the artifact's arithmetic, a
-- statement per 100 trees (a single chain of thousands of '+' exhausts the parser's stack).
CREATE OR REPLACE FUNCTION ml_stack._trees_margins_body(model_id bigint, num_features integer, artifact jsonb)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
SET extra_float_digits = 3
AS $$
DECLARE
    sum_type text := artifact ->> 'sum';
    outputs  integer := (artifact ->> 'outputs')::integer;
    declares text := '';
    body     text := '';
    result   text[] := '{}';
    unimputed text[] := '{}';
    k        integer;
    j        integer;
    arg      text;
    tr       jsonb;
    chunk    text[];
    tree     jsonb;
BEGIN
    FOR j IN 1 .. num_features LOOP
        arg := format('NULLIF(features[%s], ''NaN'')', j);   -- NaN is missing, as in XGBoost
        tr := artifact -> 'transform' -> (j - 1);
        IF jsonb_typeof(tr) = 'object' AND tr ->> 'impute' IS NOT NULL THEN
            arg := format('coalesce(%s, %L::float8)', arg, (tr ->> 'impute')::float8);
        ELSE
            unimputed := unimputed || format('f%s IS NULL', j);
        END IF;
        IF jsonb_typeof(tr) = 'object'
           AND (coalesce((tr ->> 'shift')::float8, 0) <> 0 OR coalesce((tr ->> 'scale')::float8, 1) <> 1) THEN
            arg := format('(%s - %L::float8) / %L::float8', arg, coalesce((tr ->> 'shift')::float8, 0),
                          coalesce((tr ->> 'scale')::float8, 1));
        END IF;
        declares := declares || format('    f%s float8 := %s;%s', j, arg, chr(10));
    END LOOP;
    FOR k IN 0 .. outputs - 1 LOOP
        declares := declares || format('    m%s %s := %L::%s;%s', k, sum_type,
                                       CASE sum_type WHEN 'float4' THEN ((artifact -> 'base' ->> k)::float4)::text
                                                     ELSE ((artifact -> 'base' ->> k)::float8)::text END,
                                       sum_type, chr(10));
        chunk := '{}';
        FOR tree IN SELECT t.value FROM jsonb_array_elements(artifact -> 'trees') WITH ORDINALITY AS t(value, i)
                    WHERE (t.value ->> 'output')::integer = k ORDER BY t.i LOOP
            chunk := chunk || ml_stack._tree_sql(tree, sum_type, 'f%s');
            IF cardinality(chunk) = 100 THEN
                body := body || format('    m%s := m%s + %s;%s', k, k, array_to_string(chunk, ' + '), chr(10));
                chunk := '{}';
            END IF;
        END LOOP;
        IF cardinality(chunk) > 0 THEN
            body := body || format('    m%s := m%s + %s;%s', k, k, array_to_string(chunk, ' + '), chr(10));
        END IF;
        result := result || CASE WHEN artifact ? 'divisor'
                                 THEN format('m%s / %L::float8', k, (artifact ->> 'divisor')::float8)
                                 ELSE format('m%s', k) END;
    END LOOP;
    RETURN format('DECLARE%1$s%2$sBEGIN%1$s'
                  -- the count is checked first: the locals above read past a short array as NULL
                  '    IF features IS NULL THEN%1$s        RETURN NULL;%1$s    END IF;%1$s'
                  '    IF cardinality(features) <> %3$s THEN%1$s'
                  '        RETURN ARRAY[ml_stack._wrong_feature_count(%4$s, %3$s, features)];%1$s'
                  '    END IF;%1$s'
                  '%5$s'
                  '%6$s    RETURN ARRAY[%7$s]::float8[];%1$sEND',
                  chr(10), declares, num_features, model_id,
                  -- 'null' models have no rule for a missing value: NULL without an impute rule gives NULL
                  CASE WHEN artifact ->> 'missing' = 'null' AND cardinality(unimputed) > 0
                       THEN format('    IF %s THEN%s        RETURN NULL;%s    END IF;%s',
                                   array_to_string(unimputed, ' OR '), chr(10), chr(10), chr(10)) ELSE '' END,
                  body, array_to_string(result, ', '));
END
$$;

-- Compile a 'trees' model: its margins function and its two predictors.
CREATE OR REPLACE FUNCTION ml_stack._compile_trees_model(model_id bigint, num_features integer, classes float8[], artifact jsonb)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET extra_float_digits = 3
AS $$
DECLARE
    margins text := format('ml_stack.%I(features)', format('_model_%s_margins', model_id));
    class_array text := format('%L::pg_catalog.float8[]', classes);
    predict text;
    proba text;
BEGIN
    PERFORM ml_stack._check_trees_artifact(artifact, num_features, classes);
    IF ml_stack._model_is_confidential(model_id) THEN
        -- its nodes are in ml_stack._model_parameters (serving/confidential.sql)
        PERFORM ml_stack._create_model_function(format('_model_%s_margins', model_id), 'features float8[]', 'float8[]', 'sql',
                                                format('SELECT ml_stack._confidential_margins(%s::pg_catalog.int8, features)', model_id));
    ELSE
        PERFORM ml_stack._create_model_function(format('_model_%s_margins', model_id), 'features float8[]', 'float8[]', 'plpgsql',
                                                ml_stack._trees_margins_body(model_id, num_features, artifact));
    END IF;
    CASE artifact ->> 'link'
        WHEN 'identity' THEN predict := format('(%s)[1]', margins);
        WHEN 'exp' THEN predict := format('pg_catalog.exp((%s)[1])', margins);
        WHEN 'logistic' THEN
            -- inlined into the caller's query: operators schema-qualified (serving/expressions.sql)
            predict := format('(%s)[((%s)[1] OPERATOR(pg_catalog.>) 0::pg_catalog.float8)::pg_catalog.int4 OPERATOR(pg_catalog.+) 1]',
                              class_array, margins);
            proba := format('ml_stack._binary_proba((%s)[1])', margins);
        WHEN 'softmax' THEN
            predict := format('(%s)[ml_stack._argmax(%s)]', class_array, margins);
            proba := format('ml_stack._softmax(%s)', margins);
        WHEN 'probability' THEN
            predict := format('(%s)[ml_stack._argmax(%s)]', class_array, margins);
            proba := margins;
    END CASE;
    PERFORM ml_stack._create_model_function(format('_model_%s_predict', model_id), 'features float8[]', 'float8', 'sql',
                                            format('SELECT %s', predict));
    PERFORM ml_stack._create_model_function(format('_model_%s_proba', model_id), 'features float8[]', 'float8[]', 'sql',
        format('SELECT %s', coalesce(proba, format('ml_stack._no_probabilities(%s, features)', model_id))));
END
$$;
