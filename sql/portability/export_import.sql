-- Models as portable JSON documents: everything needed to serve the model in
-- another database, plus its provenance (features, label, metrics, hyperparameters).
CREATE OR REPLACE FUNCTION ml_stack.export_model(model_id bigint)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    doc jsonb;
BEGIN
    SELECT jsonb_build_object(
        'ml_stack_model', 1,
        'exported_by', 'ml_stack ' || (SELECT e.extversion FROM pg_catalog.pg_extension AS e WHERE e.extname = 'ml_stack'),
        'project', p.name,
        'task', m.task,
        'algorithm', m.algorithm,
        'engine', m.engine,
        'hyperparams', m.hyperparams,
        'preprocess', m.preprocess,
        'num_features', m.num_features,
        'classes', to_jsonb(m.classes),
        'features', coalesce(s.features, '[]'),
        'label', s.label,
        'relation_name', s.relation_name,
        'metrics', m.metrics,
        'search', m.search,
        'artifact', m.artifact,
        'created_at', m.created_at)
    INTO doc
    FROM ml_stack.models AS m
    JOIN ml_stack.projects AS p ON p.id = m.project_id
    LEFT JOIN ml_stack.snapshots AS s ON s.id = m.snapshot_id
    WHERE m.id = model_id;
    IF doc IS NULL THEN
        RAISE EXCEPTION 'model % does not exist', model_id
            USING ERRCODE = 'undefined_object', HINT = 'SELECT id, algorithm FROM ml_stack.models lists the models.';
    END IF;
    RETURN doc;
END
$$;
COMMENT ON FUNCTION ml_stack.export_model(bigint) IS
    'ml_stack: a model as a JSON document that ml_stack.import_model() loads into another database.';

CREATE OR REPLACE FUNCTION ml_stack.import_model(project_name text, model jsonb, deploy boolean DEFAULT true)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    proj     ml_stack.projects;
    task     text := model ->> 'task';
    art      jsonb := model -> 'artifact';
    p        integer;
    classes  float8[];
    k        integer;
    snap_id  bigint;
    new_id   bigint;
BEGIN
    IF project_name IS NULL OR btrim(project_name) = '' THEN
        RAISE EXCEPTION 'project_name is required' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Name the project to import into, e.g. ml_stack.import_model(''house_prices'', doc).';
    END IF;
    IF model IS NULL OR jsonb_typeof(model) <> 'object' OR (model ->> 'ml_stack_model') IS DISTINCT FROM '1' THEN
        RAISE EXCEPTION 'not an ml_stack model document'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass what ml_stack.export_model() returned.';
    END IF;
    IF task IS NULL OR task NOT IN ('regression', 'classification') THEN
        RAISE EXCEPTION 'model document has unknown task "%"', task USING ERRCODE = 'invalid_parameter_value',
            HINT = 'The task must be ''regression'' or ''classification''; export the model again with ml_stack.export_model().';
    END IF;
    -- the artifact becomes SQL: check its shape, and let only numbers through (a 'trees' artifact's
    -- nodes are checked by _compile_trees_model, which the insert below runs, and says what is wrong)
    IF art ->> 'format' = 'python' THEN
        RAISE EXCEPTION 'model % is a pickled scikit-learn estimator, which import_model does not load', model ->> 'algorithm'
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Unpickling runs code. Train the model in this database instead (linear models and tree ensembles export as SQL-servable documents).';
    ELSIF coalesce(art ->> 'format', '') NOT IN ('linear', 'trees') THEN
        RAISE EXCEPTION 'model artifact format "%" is not supported here', art ->> 'format'
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'ml_stack serves the ''linear'' and ''trees'' formats; update ml_stack if the model comes from a newer version.';
    END IF;
    BEGIN
        p := (model ->> 'num_features')::integer;
        IF model -> 'classes' IS NOT NULL AND jsonb_typeof(model -> 'classes') = 'array' THEN
            classes := ARRAY(SELECT jsonb_array_elements_text(model -> 'classes')::float8);
        END IF;
        IF p IS NULL OR p < 1
           OR (jsonb_typeof(model -> 'features') = 'array' AND jsonb_array_length(model -> 'features') NOT IN (0, p))
           -- classes strictly ascending: predict_proba's columns follow them
           OR EXISTS (SELECT FROM unnest(classes) WITH ORDINALITY AS c(v, i) WHERE c.v >= classes[c.i + 1])
           OR (task = 'regression') <> (classes IS NULL)
           OR (task = 'classification' AND cardinality(classes) < 2)
           OR EXISTS (SELECT FROM jsonb_array_elements(model -> 'classes') AS x
                      WHERE jsonb_typeof(model -> 'classes') = 'array' AND jsonb_typeof(x) <> 'number')
        THEN
            RAISE EXCEPTION 'inconsistent';
        END IF;
        IF art ->> 'format' = 'linear' THEN
            k := jsonb_array_length(art -> 'coefficients');
            IF k < 1 OR jsonb_array_length(art -> 'intercepts') <> k
               OR jsonb_array_length(art -> 'impute') <> p
               OR EXISTS (SELECT FROM jsonb_array_elements(art -> 'coefficients') AS w WHERE jsonb_array_length(w) <> p)
               OR coalesce(art ->> 'link', '') NOT IN ('identity', 'logistic', 'softmax')
               OR (task = 'regression') <> (art ->> 'link' = 'identity')
               OR (task = 'classification' AND k <> CASE WHEN cardinality(classes) = 2 THEN 1 ELSE cardinality(classes) END)
            THEN
                RAISE EXCEPTION 'inconsistent';
            END IF;
            -- every number must be a JSON number (never a string, so never NaN or Infinity)
            IF EXISTS (SELECT FROM jsonb_array_elements(art -> 'intercepts') AS x WHERE jsonb_typeof(x) <> 'number')
               OR EXISTS (SELECT FROM jsonb_array_elements(art -> 'coefficients') AS w, jsonb_array_elements(w) AS x
                          WHERE jsonb_typeof(x) <> 'number')
               OR EXISTS (SELECT FROM jsonb_array_elements(art -> 'impute') AS x WHERE jsonb_typeof(x) NOT IN ('number', 'null'))
            THEN
                RAISE EXCEPTION 'not a number';
            END IF;
        END IF;
    EXCEPTION WHEN OTHERS THEN
        RAISE EXCEPTION 'model document is damaged: its artifact does not match its task and feature count'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Export the model again with ml_stack.export_model().';
    END;
    PERFORM pg_advisory_xact_lock(hashtext('ml_stack.project:' || project_name));
    SELECT pr.* INTO proj FROM ml_stack.projects AS pr WHERE pr.name = project_name;
    IF NOT FOUND THEN
        INSERT INTO ml_stack.projects (name, task, split_seed)
        VALUES (project_name, task, (random() * 2147483647)::bigint)
        RETURNING * INTO proj;
    ELSIF proj.task <> task THEN
        RAISE EXCEPTION 'project "%" is a % project; the model is for %', project_name, proj.task, task
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Import it under another project name.';
    END IF;
    INSERT INTO ml_stack.snapshots (project_id, relation_name, y_column_name, features, label, rows,
                                    train_rows, test_rows, test_size, test_sampling, seed)
    VALUES (proj.id, model ->> 'relation_name', coalesce(model -> 'label' ->> 'name', 'unknown'),
            coalesce(model -> 'features', '[]'), coalesce(model -> 'label', '{}'), 0, 0, 0, 0, 'random', 0)
    RETURNING id INTO snap_id;
    INSERT INTO ml_stack.models (project_id, snapshot_id, algorithm, engine, task, hyperparams, preprocess,
                                 num_features, classes, artifact, metrics, status, search)
    VALUES (proj.id, snap_id, coalesce(model ->> 'algorithm', 'unknown'), coalesce(model ->> 'engine', 'sql'), task,
            coalesce(model -> 'hyperparams', '{}'), coalesce(model -> 'preprocess', '{}'), p, classes, art,
            coalesce(model -> 'metrics', '{}'), 'imported', NULLIF(model -> 'search', 'null'))
    RETURNING id INTO new_id;
    IF deploy THEN
        INSERT INTO ml_stack.deployments (project_id, model_id, strategy) VALUES (proj.id, new_id, 'import');
    END IF;
    RETURN new_id;
END
$$;
COMMENT ON FUNCTION ml_stack.import_model(text, jsonb, boolean) IS
    'ml_stack: register a model document from ml_stack.export_model() under a project (created if needed), and deploy it unless deploy => false. Returns the new model id.';
