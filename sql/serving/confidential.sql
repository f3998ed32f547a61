-- Confidential projects (0.4.1). pg_proc.prosrc is readable by every role, so a compiled
-- predictor shows its model's parameters to anyone who can connect. A confidential
-- project's models are compiled without them: their predictors call the functions below,
-- which run as ml_stack's owner and read the parameters from ml_stack._model_parameters
-- (no other role reads it), and ml_stack.models shows their rows only inside the project.
-- Inside means: ml_stack_admin, or a role that may read the relation the model was trained
-- on (the issue's case: a model trained on a table a role cannot read must not teach that
-- role its coefficients). Predictions themselves stay open to whoever may predict.
-- The price is inlining: a SECURITY DEFINER call per row instead of the arithmetic
-- (bench/predict_linear.py, case c).

-- Whether the current role may see a model's parameters.
CREATE OR REPLACE FUNCTION ml_stack._inside_project(project_id bigint, snapshot_id bigint)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT NOT coalesce((SELECT p.confidential FROM ml_stack.projects AS p WHERE p.id = _inside_project.project_id), false)
        OR EXISTS (SELECT FROM pg_catalog.pg_roles AS r WHERE r.rolname = 'ml_stack_admin' AND pg_catalog.pg_has_role(r.oid, 'MEMBER'))
        -- the snapshot names the relation schema-qualified; a dropped one is nobody's
        OR coalesce((SELECT pg_catalog.has_table_privilege(pg_catalog.to_regclass(s.relation_name), 'SELECT')
                     FROM ml_stack.snapshots AS s WHERE s.id = _inside_project.snapshot_id), false)
$$;
COMMENT ON FUNCTION ml_stack._inside_project(bigint, bigint) IS
    'ml_stack internal: true when the current role may read the parameters of a model of this project and snapshot (the project is not confidential, the role is in ml_stack_admin, or it may read the training relation).';

-- The registry's model rows of a confidential project are visible (and writable) inside it
-- only. ml_stack's owner, which compiles and serves, is not subject to row security.
-- (Created or altered: this file runs in every install and upgrade script, and a DROP ... IF
-- EXISTS would print a NOTICE on each.)
ALTER TABLE ml_stack.models ENABLE ROW LEVEL SECURITY;
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_policy AS p
               WHERE p.polrelid = 'ml_stack.models'::regclass AND p.polname = 'inside_project') THEN
        ALTER POLICY inside_project ON ml_stack.models
            USING (ml_stack._inside_project(project_id, snapshot_id)) WITH CHECK (true);
    ELSE
        CREATE POLICY inside_project ON ml_stack.models
            USING (ml_stack._inside_project(project_id, snapshot_id)) WITH CHECK (true);
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION ml_stack._model_is_confidential(model_id bigint)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce((SELECT p.confidential FROM ml_stack.models AS m JOIN ml_stack.projects AS p ON p.id = m.project_id
                     WHERE m.id = _model_is_confidential.model_id), false)
$$;

-- Keep a confidential model's parameters where its predictors read them (or forget them).
CREATE OR REPLACE FUNCTION ml_stack._store_model_parameters(model_id bigint, num_features integer, artifact jsonb)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM ml_stack._model_parameters AS q WHERE q.model_id = _store_model_parameters.model_id;
    IF artifact IS NULL THEN
        RETURN;
    ELSIF artifact ->> 'format' = 'linear' THEN
        INSERT INTO ml_stack._model_parameters (model_id, format, weights, intercepts, impute)
        SELECT model_id, 'linear',
               (SELECT array_agg(w::float8 ORDER BY k, j) FROM jsonb_array_elements(artifact -> 'coefficients') WITH ORDINALITY AS c(v, k),
                                                         jsonb_array_elements_text(c.v) WITH ORDINALITY AS e(w, j)),
               (SELECT array_agg(b::float8 ORDER BY i) FROM jsonb_array_elements_text(artifact -> 'intercepts') WITH ORDINALITY AS t(b, i)),
               (SELECT array_agg(CASE WHEN jsonb_typeof(artifact -> 'impute' -> (j - 1)) = 'number'
                                      THEN (artifact -> 'impute' ->> (j - 1))::float8 END ORDER BY j)
                FROM generate_series(1, num_features) AS j);
    ELSE   -- 'trees', checked by _check_trees_artifact before: the nodes of all trees, one after another
        INSERT INTO ml_stack._model_parameters (model_id, format, node_feature, node_threshold, node_test, node_left, node_right,
                                                node_value, tree_root, tree_output, base, shift, scale, impute, sum_float4,
                                                divisor, missing_null)
        WITH trees AS (
            SELECT t.value AS tree, t.i, jsonb_array_length(t.value -> 'left') AS n,
                   coalesce(sum(jsonb_array_length(t.value -> 'left')) OVER (ORDER BY t.i ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0)::integer AS start
            FROM jsonb_array_elements(artifact -> 'trees') WITH ORDINALITY AS t(value, i)
        ), nodes AS (
            SELECT t.i, t.start, k, (t.tree -> 'left' ->> k)::integer AS l, (t.tree -> 'right' ->> k)::integer AS r,
                   t.tree -> 'feature' ->> k AS f, t.tree -> 'threshold' ->> k AS th, (t.tree -> 'inclusive' ->> k)::boolean AS inc,
                   (t.tree -> 'default_left' ->> k)::boolean AS dl, t.tree -> 'value' ->> k AS v
            FROM trees AS t CROSS JOIN LATERAL generate_series(0, t.n - 1) AS k
        ), transform AS (
            SELECT array_agg(coalesce((tr.value ->> 'shift')::float8, 0) ORDER BY j) AS shift,
                   array_agg(coalesce((tr.value ->> 'scale')::float8, 1) ORDER BY j) AS scale,
                   array_agg((tr.value ->> 'impute')::float8 ORDER BY j) AS impute
            FROM generate_series(1, num_features) AS j
            LEFT JOIN LATERAL (SELECT CASE WHEN jsonb_typeof(artifact -> 'transform' -> (j - 1)) = 'object'
                                           THEN artifact -> 'transform' -> (j - 1) ELSE '{}' END AS value) AS tr ON true
        )
        SELECT model_id, 'trees',
               array_agg(CASE WHEN n.l = -1 THEN 1 ELSE n.f::integer + 1 END ORDER BY n.i, n.k),
               array_agg(CASE WHEN n.l = -1 THEN 0 ELSE n.th::float8 END ORDER BY n.i, n.k),
               -- the tests of _tree_sql: 0 x < t, 1 x <= t (missing right); 2 x >= t, 3 x > t (missing left)
               array_agg(CASE WHEN n.l = -1 THEN 0 ELSE (CASE WHEN n.dl THEN 2 ELSE 0 END + CASE WHEN n.inc THEN 1 ELSE 0 END) END::smallint
                         ORDER BY n.i, n.k),
               array_agg(CASE WHEN n.l = -1 THEN 0 ELSE n.start + n.l + 1 END ORDER BY n.i, n.k),
               array_agg(CASE WHEN n.l = -1 THEN 0 ELSE n.start + n.r + 1 END ORDER BY n.i, n.k),
               array_agg(CASE WHEN n.l <> -1 THEN 0
                              WHEN artifact ->> 'sum' = 'float4' THEN n.v::float4::float8   -- from the text, as _tree_sql
                              ELSE n.v::float8 END ORDER BY n.i, n.k),
               (SELECT array_agg(t.start + 1 ORDER BY t.i) FROM trees AS t),
               (SELECT array_agg((t.tree ->> 'output')::integer + 1 ORDER BY t.i) FROM trees AS t),
               (SELECT array_agg(CASE WHEN artifact ->> 'sum' = 'float4' THEN b::float8::float4::float8 ELSE b::float8 END ORDER BY i)
                FROM jsonb_array_elements_text(artifact -> 'base') WITH ORDINALITY AS e(b, i)),
               (SELECT shift FROM transform), (SELECT scale FROM transform), (SELECT impute FROM transform),
               artifact ->> 'sum' = 'float4', (artifact ->> 'divisor')::float8, artifact ->> 'missing' = 'null'
        FROM nodes AS n;
    END IF;
END
$$;

-- A confidential linear model's scores (one per class or one), as _linear_scores computes them.
CREATE OR REPLACE FUNCTION ml_stack._confidential_scores(model_id bigint, features float8[])
RETURNS float8[]
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    weights float8[];
    intercepts float8[];
    impute float8[];
BEGIN
    SELECT q.weights, q.intercepts, q.impute INTO weights, intercepts, impute
    FROM ml_stack._model_parameters AS q WHERE q.model_id = _confidential_scores.model_id AND q.format = 'linear';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'model % is not compiled as a confidential linear model', model_id
            USING ERRCODE = 'PT503', HINT = 'SELECT ml_stack._compile_model(model_id) as ml_stack''s owner compiles it again.';
    END IF;
    RETURN ml_stack._linear_scores(features, weights, intercepts, impute);
END
$$;

-- A confidential tree ensemble's margins: the walk that the compiled CASE of serving/trees.sql
-- writes out, over the stored nodes, in the same arithmetic (float4 sums for XGBoost).
CREATE OR REPLACE FUNCTION ml_stack._confidential_margins(model_id bigint, features float8[])
RETURNS float8[]
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    feature integer[];
    threshold float8[];
    test smallint[];
    lefts integer[];
    rights integer[];
    leaf float8[];
    roots integer[];
    outputs integer[];
    m float8[];
    shift float8[];
    scale float8[];
    impute float8[];
    sum_float4 boolean;
    divisor float8;
    missing_null boolean;
    f float8[];
    x float8;
    n integer;
    k integer;
BEGIN
    IF features IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT q.node_feature, q.node_threshold, q.node_test, q.node_left, q.node_right, q.node_value, q.tree_root, q.tree_output,
           q.base, q.shift, q.scale, q.impute, q.sum_float4, q.divisor, q.missing_null
    INTO feature, threshold, test, lefts, rights, leaf, roots, outputs, m, shift, scale, impute, sum_float4, divisor, missing_null
    FROM ml_stack._model_parameters AS q WHERE q.model_id = _confidential_margins.model_id AND q.format = 'trees';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'model % is not compiled as a confidential tree model', model_id
            USING ERRCODE = 'PT503', HINT = 'SELECT ml_stack._compile_model(model_id) as ml_stack''s owner compiles it again.';
    END IF;
    IF cardinality(features) <> cardinality(shift) THEN
        RETURN ARRAY[ml_stack._wrong_feature_count(model_id, cardinality(shift), features)];
    END IF;
    f := features;
    FOR j IN 1 .. cardinality(f) LOOP
        x := coalesce(NULLIF(f[j], 'NaN'), impute[j]);   -- NaN is missing, as in XGBoost
        IF x IS NULL AND missing_null THEN
            RETURN NULL;
        END IF;
        IF shift[j] <> 0 OR scale[j] <> 1 THEN
            x := (x - shift[j]) / scale[j];
        END IF;
        f[j] := x;
    END LOOP;
    FOR t IN 1 .. cardinality(roots) LOOP
        n := roots[t];
        WHILE lefts[n] > 0 LOOP
            x := f[feature[n]];
            -- a missing feature fails every test, so it takes the ELSE side: the default branch
            n := CASE test[n] WHEN 0 THEN CASE WHEN x < threshold[n] THEN lefts[n] ELSE rights[n] END
                              WHEN 1 THEN CASE WHEN x <= threshold[n] THEN lefts[n] ELSE rights[n] END
                              WHEN 2 THEN CASE WHEN x >= threshold[n] THEN rights[n] ELSE lefts[n] END
                              ELSE CASE WHEN x > threshold[n] THEN rights[n] ELSE lefts[n] END END;
        END LOOP;
        k := outputs[t];
        m[k] := CASE WHEN sum_float4 THEN (m[k]::float4 + leaf[n]::float4)::float8 ELSE m[k] + leaf[n] END;
    END LOOP;
    IF divisor IS NOT NULL THEN
        FOR j IN 1 .. cardinality(m) LOOP
            m[j] := m[j] / divisor;
        END LOOP;
    END IF;
    RETURN m;
END
$$;

-- A confidential 'python'-format model loads its pickle as ml_stack's owner (the caller may not
-- read its row); the estimator cache is ml_stack_python's, as for any model. PL/pgSQL: the
-- functions they call exist only with ml_stack_python.
CREATE OR REPLACE FUNCTION ml_stack._confidential_python_predict(model_id bigint, generation bigint, features float8[])
RETURNS float8
LANGUAGE plpgsql STABLE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN ml_stack._python_predict(model_id, generation, features);
END
$$;

CREATE OR REPLACE FUNCTION ml_stack._confidential_python_proba(model_id bigint, generation bigint, features float8[])
RETURNS float8[]
LANGUAGE plpgsql STABLE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN ml_stack._python_predict_proba(model_id, generation, features);
END
$$;

-- Turning confidentiality off shows the parameters to every role: only a role inside the
-- project may (every model's training relation readable, or ml_stack_admin).
CREATE OR REPLACE FUNCTION ml_stack._count_project_models(project_id bigint)
RETURNS bigint
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT count(*) FROM ml_stack.models AS m WHERE m.project_id = _count_project_models.project_id $$;

CREATE OR REPLACE FUNCTION ml_stack._projects_confidential_check()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- while the project is still confidential, row security shows the role exactly the models it is inside of
    IF OLD.confidential AND NOT NEW.confidential
       AND (SELECT count(*) FROM ml_stack.models AS m WHERE m.project_id = OLD.id) <> ml_stack._count_project_models(OLD.id) THEN
        RAISE EXCEPTION 'role "%" may not make project "%" public: it cannot read what all of the project''s models were trained on',
                        current_user, OLD.name
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'A member of ml_stack_admin, or a role that may SELECT every training relation of the project, can.';
    END IF;
    RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER confidential_check BEFORE UPDATE OF confidential ON ml_stack.projects
    FOR EACH ROW EXECUTE FUNCTION ml_stack._projects_confidential_check();

CREATE OR REPLACE FUNCTION ml_stack.set_confidential(project_name text, confidential boolean DEFAULT true)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF confidential IS NULL THEN
        RAISE EXCEPTION 'confidential must be true or false' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    UPDATE ml_stack.projects AS p SET confidential = set_confidential.confidential
    WHERE p.name = set_confidential.project_name AND p.confidential <> set_confidential.confidential;
    IF NOT EXISTS (SELECT FROM ml_stack.projects AS p WHERE p.name = set_confidential.project_name) THEN
        RAISE EXCEPTION 'project "%" does not exist', project_name
            USING ERRCODE = 'PT404', HINT = 'SELECT name FROM ml_stack.projects lists the projects.';
    END IF;
    RETURN confidential;
END
$$;
COMMENT ON FUNCTION ml_stack.set_confidential(text, boolean) IS
    'ml_stack: make a project confidential (or public again; returns the new state): its models are served without their parameters in the catalog (pg_proc), and its rows of ml_stack.models are visible only to ml_stack_admin and to roles that may read the training relation. Predictions stay open to whoever may predict; serving costs a function call per row instead of inlined arithmetic.';

REVOKE EXECUTE ON FUNCTION ml_stack._confidential_scores(bigint, float8[]), ml_stack._confidential_margins(bigint, float8[]),
    ml_stack._confidential_python_predict(bigint, bigint, float8[]), ml_stack._confidential_python_proba(bigint, bigint, float8[]),
    ml_stack._count_project_models(bigint) FROM PUBLIC;
