-- Compiled serving (DESIGN §2). Every model gets two functions, created at run
-- time (so they are not extension members and pg_dump keeps them):
--   ml_stack._model_<id>_predict(features float8[]) -> float8
--   ml_stack._model_<id>_proba(features float8[])   -> float8[]
-- made of its arithmetic (linear), of the link over a PL/pgSQL margins function
-- (trees, serving/trees.sql), or calling ml_stack_python (pickled estimators).
-- Four dispatch functions (extension members, regenerated from the registry by
-- the triggers below) route a project name or a model id to them with a CASE
-- that the planner folds when the name is a constant, so
-- predict('p', ARRAY[...]) inlines down to the model's expression.
-- pg_dump does not keep a member's regenerated body, but restoring the registry
-- tables fires the triggers, which regenerate it; install and upgrade scripts end
-- with serving/refresh.sql.

CREATE OR REPLACE FUNCTION ml_stack._compile_model(model_id bigint)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET extra_float_digits = 3
AS $$
DECLARE
    m record;
    guard text;
    confidential boolean := ml_stack._model_is_confidential(model_id);
BEGIN
    SELECT mo.id, mo.num_features, mo.classes, mo.artifact, mo.engine INTO m
    FROM ml_stack.models AS mo WHERE mo.id = model_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'model % does not exist', model_id USING ERRCODE = 'undefined_object';
    END IF;
    -- a confidential model's predictors read its parameters (serving/confidential.sql)
    PERFORM ml_stack._store_model_parameters(m.id, m.num_features,
                                             CASE WHEN confidential AND m.artifact ->> 'format' IN ('linear', 'trees') THEN m.artifact END);
    IF confidential AND m.artifact ->> 'format' = 'linear' THEN
        m.artifact := m.artifact || jsonb_build_object('confidential_model', m.id);   -- see _wide_scores_sql
    END IF;
    CASE m.artifact ->> 'format'
    WHEN 'linear' THEN
        guard := format('WHEN pg_catalog.cardinality(features) OPERATOR(pg_catalog.<>) %s THEN %%s', m.num_features);
        PERFORM ml_stack._create_model_function(format('_model_%s_predict', m.id), 'features float8[]', 'float8', 'sql',
            format('SELECT CASE %s ELSE %s END',
                   format(guard, format('ml_stack._wrong_feature_count(%s, %s, features)', m.id, m.num_features)),
                   ml_stack._predict_sql(m.artifact, m.classes, 'features[%s]')));
        PERFORM ml_stack._create_model_function(format('_model_%s_proba', m.id), 'features float8[]', 'float8[]', 'sql',
            CASE WHEN m.classes IS NULL
                 THEN format('SELECT ml_stack._no_probabilities(%s, features)', m.id)
                 ELSE format('SELECT CASE %s ELSE %s END',
                             format(guard, format('ARRAY[ml_stack._wrong_feature_count(%s, %s, features)]', m.id, m.num_features)),
                             ml_stack._proba_sql(m.artifact, 'features[%s]')) END);
    WHEN 'trees' THEN
        PERFORM ml_stack._compile_trees_model(m.id, m.num_features, m.classes, m.artifact);
    WHEN 'python' THEN
        PERFORM ml_stack._compile_python_model(m.id, ml_stack._serving_generation());
    ELSE
        RAISE EXCEPTION 'model % has artifact format "%", which ml_stack does not know', model_id, m.artifact ->> 'format'
            USING ERRCODE = 'feature_not_supported',
                  HINT = format('Install the extension of engine "%s", or update ml_stack.', m.engine);
    END CASE;
END
$$;

-- The serving generation: the time of the latest deployment, in microseconds. It
-- grows with every deployment (also across a DROP and CREATE EXTENSION, which
-- reuses model ids) and stays put when a model is only trained.
CREATE OR REPLACE FUNCTION ml_stack._serving_generation()
RETURNS bigint
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT coalesce((extract(epoch FROM max(d.created_at)) * 1000000)::bigint, 0) FROM ml_stack.deployments AS d $$;

-- Predictors of a 'python'-format model: calls into ml_stack_python, which caches
-- the unpickled estimator per backend and empties its cache when it is called
-- with a newer generation; every serving refresh compiles these with the current
-- one, so a deployment reaches every backend's cache. Without ml_stack_python,
-- they raise an error that says to install it (its install script compiles them
-- again). PARALLEL UNSAFE: PL/Python loads the model with a query, which parallel
-- mode forbids. Left as they are when their body would not change.
CREATE OR REPLACE FUNCTION ml_stack._compile_python_model(model_id bigint, generation bigint)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    installed boolean := to_regprocedure('ml_stack._python_predict(bigint, bigint, float8[])') IS NOT NULL;
    -- a confidential model's pickle is loaded as the owner (serving/confidential.sql)
    entry_points text[] := CASE WHEN ml_stack._model_is_confidential(model_id)
                                THEN ARRAY['_confidential_python_predict', '_confidential_python_proba']
                                ELSE ARRAY['_python_predict', '_python_predict_proba'] END;
    bodies text[] := CASE WHEN installed
        THEN ARRAY[format('SELECT ml_stack.%I(%s, %s, features)', entry_points[1], model_id, generation),
                   format('SELECT ml_stack.%I(%s, %s, features)', entry_points[2], model_id, generation)]
        ELSE ARRAY[format('SELECT ml_stack._engine_not_installed(%s, features)', model_id),
                   format('SELECT ARRAY[ml_stack._engine_not_installed(%s, features)]', model_id)] END;
BEGIN
    IF (SELECT count(*) FROM pg_catalog.pg_proc AS p
        WHERE p.pronamespace = 'ml_stack'::regnamespace
          AND (p.proname, p.prosrc) IN ((format('_model_%s_predict', model_id), bodies[1]),
                                        (format('_model_%s_proba', model_id), bodies[2]))) = 2 THEN
        RETURN;
    END IF;
    PERFORM ml_stack._create_model_function(format('_model_%s_predict', model_id), 'features float8[]', 'float8', 'sql',
                                            bodies[1], false);
    PERFORM ml_stack._create_model_function(format('_model_%s_proba', model_id), 'features float8[]', 'float8[]', 'sql',
                                            bodies[2], false);
END
$$;

-- (Re)create one function of a compiled model, ml_stack.<name>(<params>), as a
-- free-standing function. Drop-and-create rather than CREATE OR REPLACE: inside
-- CREATE or ALTER EXTENSION, PostgreSQL refuses to replace an object the
-- extension does not own, and a function created there becomes a member, which
-- pg_dump would leave out, so it is released from whichever extension took it.
CREATE OR REPLACE FUNCTION ml_stack._create_model_function(name text, params text, result_type text, language text, body text,
                                                           parallel_safe boolean DEFAULT true)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    fn regprocedure;
BEGIN
    FOR fn IN SELECT p.oid FROM pg_catalog.pg_proc AS p
              WHERE p.pronamespace = 'ml_stack'::regnamespace AND p.proname = name LOOP
        EXECUTE format('DROP FUNCTION %s', fn);
    END LOOP;
    EXECUTE format('CREATE FUNCTION ml_stack.%I(%s) RETURNS %s LANGUAGE %s %s %s AS %L',
                   name, params, result_type::regtype, CASE language WHEN 'sql' THEN 'sql' ELSE 'plpgsql' END,
                   -- STABLE, not IMMUTABLE: the planner must not run them on constant arguments (serving_errors.sql)
                   CASE WHEN parallel_safe THEN 'STABLE PARALLEL SAFE' ELSE 'STABLE PARALLEL UNSAFE' END,
                   -- a PL/pgSQL body (tree margins) never inlines, so it is pinned (DESIGN §4): its operators and
                   -- types cannot be taken by a schema the caller puts first (measured: 5-10% of a tree call);
                   -- SQL bodies inline and are written schema-qualified instead
                   CASE WHEN language = 'sql' THEN '' ELSE 'SET search_path = pg_catalog, pg_temp' END, body);
    SELECT p.oid INTO fn FROM pg_catalog.pg_proc AS p
    WHERE p.pronamespace = 'ml_stack'::regnamespace AND p.proname = name;
    PERFORM ml_stack._release_from_extension(fn);
END
$$;

-- Body of a dispatch function: a searched CASE whose arms compare the key with
-- OPERATOR(pg_catalog.=) (a simple CASE would look "=" up in the caller's search_path),
-- or only the fallback when there is no key yet (CASE needs at least one WHEN).
CREATE OR REPLACE FUNCTION ml_stack._case_dispatch(arms text, fallback text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN arms IS NULL THEN format('SELECT %s', fallback)
                ELSE format('SELECT CASE %s ELSE %s END', arms, fallback) END
$$;

-- Regenerate the dispatch functions from the registry (the models' own
-- predictors are compiled by the trigger on ml_stack.models). Serialised: two
-- sessions must not replace a function at the same time.
CREATE OR REPLACE FUNCTION ml_stack._refresh_serving()
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    generation bigint := ml_stack._serving_generation();
    by_project text;
    by_project_proba text;
    by_model text;
    by_model_proba text;
    parallel text;
    fn regprocedure;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('ml_stack._refresh_serving'));
    -- models of projects made confidential or public since they were compiled (set_confidential,
    -- or a restore that brought the models before their projects)
    PERFORM ml_stack._compile_model(m.id)
    FROM ml_stack.models AS m JOIN ml_stack.projects AS p ON p.id = m.project_id
    WHERE m.artifact ->> 'format' IN ('linear', 'trees')
      AND p.confidential IS DISTINCT FROM EXISTS (SELECT FROM ml_stack._model_parameters AS q WHERE q.model_id = m.id)
    ORDER BY m.id;
    -- projects by name, then their aliases as '<project>@<alias>' (set_alias refuses one that a
    -- project's name would shadow; the projects' arms come first all the same)
    SELECT string_agg(format('WHEN project_name OPERATOR(pg_catalog.=) %L::pg_catalog.text THEN ml_stack.%I(features)', d.name, format('_model_%s_predict', d.model_id)), ' '
                      ORDER BY d.alias IS NOT NULL, d.name),
           string_agg(format('WHEN project_name OPERATOR(pg_catalog.=) %L::pg_catalog.text THEN ml_stack.%I(features)', d.name, format('_model_%s_proba', d.model_id)), ' '
                      ORDER BY d.alias IS NOT NULL, d.name)
    INTO by_project, by_project_proba
    FROM (SELECT dm.project_name AS name, dm.model_id, NULL AS alias FROM ml_stack.deployed_models AS dm
          UNION ALL
          SELECT p.name || '@' || a.alias, a.model_id, a.alias
          FROM ml_stack.model_aliases AS a JOIN ml_stack.projects AS p ON p.id = a.project_id) AS d;
    SELECT string_agg(format('WHEN model_id OPERATOR(pg_catalog.=) %s::pg_catalog.int8 THEN ml_stack.%I(features)', m.id, format('_model_%s_predict', m.id)), ' ' ORDER BY m.id),
           string_agg(format('WHEN model_id OPERATOR(pg_catalog.=) %s::pg_catalog.int8 THEN ml_stack.%I(features)', m.id, format('_model_%s_proba', m.id)), ' ' ORDER BY m.id)
    INTO by_model, by_model_proba
    FROM ml_stack.models AS m;
    -- backends that cache a 'python'-format model drop it when a deployment changes
    PERFORM ml_stack._compile_python_model(m.id, generation)
    FROM ml_stack.models AS m WHERE m.artifact ->> 'format' = 'python';
    -- PL/Python cannot load a model in parallel mode (its queries open subtransactions), and the
    -- planner decides on parallelism from the labels of the functions the query names, before
    -- inlining: with a 'python'-format model in the registry, predict() itself says UNSAFE
    parallel := CASE WHEN FOUND THEN 'UNSAFE' ELSE 'SAFE' END;

    EXECUTE format(
        'CREATE OR REPLACE FUNCTION ml_stack._predict_project(project_name text, features float8[]) RETURNS float8 '
        'LANGUAGE sql STABLE PARALLEL ' || parallel || ' AS %L',
        ml_stack._case_dispatch(by_project, 'ml_stack._no_deployed_model(project_name, features)'));
    EXECUTE format(
        'CREATE OR REPLACE FUNCTION ml_stack._predict_proba_project(project_name text, features float8[]) RETURNS float8[] '
        'LANGUAGE sql STABLE PARALLEL ' || parallel || ' AS %L',
        ml_stack._case_dispatch(by_project_proba, 'ARRAY[ml_stack._no_deployed_model(project_name, features)]'));
    EXECUTE format(
        'CREATE OR REPLACE FUNCTION ml_stack._predict_model(model_id bigint, features float8[]) RETURNS float8 '
        'LANGUAGE sql STABLE PARALLEL ' || parallel || ' AS %L',
        ml_stack._case_dispatch(by_model, 'ml_stack._unknown_model(model_id, features)'));
    EXECUTE format(
        'CREATE OR REPLACE FUNCTION ml_stack._predict_proba_model(model_id bigint, features float8[]) RETURNS float8[] '
        'LANGUAGE sql STABLE PARALLEL ' || parallel || ' AS %L',
        ml_stack._case_dispatch(by_model_proba, 'ARRAY[ml_stack._unknown_model(model_id, features)]'));
    FOREACH fn IN ARRAY ARRAY['ml_stack.predict(text, float8[])', 'ml_stack.predict(bigint, float8[])',
                              'ml_stack.predict_proba(text, float8[])', 'ml_stack.predict_proba(bigint, float8[])']::regprocedure[] LOOP
        IF (SELECT p.proparallel FROM pg_catalog.pg_proc AS p WHERE p.oid = fn) <> lower(left(parallel, 1)) THEN
            EXECUTE format('ALTER FUNCTION %s PARALLEL %s', fn, parallel);
        END IF;
    END LOOP;
    -- the projects' typed serving functions (serving/typed.sql)
    PERFORM ml_stack._compile_serving(p.id) FROM ml_stack.projects AS p ORDER BY p.id;
    PERFORM ml_stack._drop_orphan_serving();
    -- the predictors of models that are gone (drop_model, a DELETE)
    FOR fn IN SELECT f.oid FROM pg_catalog.pg_proc AS f
              WHERE f.pronamespace = 'ml_stack'::regnamespace AND f.proname ~ '^_model_\d+_(predict|proba|margins)$'
                AND NOT EXISTS (SELECT FROM ml_stack.models AS m WHERE m.id = substring(f.proname FROM '^_model_(\d+)_')::bigint)
              ORDER BY f.proname LOOP
        EXECUTE format('DROP FUNCTION %s', fn);
    END LOOP;
    PERFORM ml_stack._refresh_endpoints();   -- api/expose.sql
END
$$;
COMMENT ON FUNCTION ml_stack._refresh_serving() IS
    'ml_stack internal: regenerate the predict() dispatch functions from the registry.';

-- The triggers compile as the owner of ml_stack (SECURITY DEFINER): a role that may write
-- the registry (ml_stack_trainer) trains and deploys without owning the functions that
-- serving regenerates. What they compile comes from the registry through format() with
-- %L/%I and numbers cast through float8 (serving/expressions.sql), never as SQL text.
CREATE OR REPLACE FUNCTION ml_stack._registry_changed()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM ml_stack._refresh_serving();
    RETURN NULL;
END
$$;

-- New or changed models are compiled even when a function of their name exists:
-- it may be left from an earlier DROP EXTENSION, whose ids the sequence reuses.
CREATE OR REPLACE FUNCTION ml_stack._models_written()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    model_id bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('ml_stack._refresh_serving'));
    FOR model_id IN SELECT w.id FROM written_models AS w ORDER BY w.id LOOP
        PERFORM ml_stack._compile_model(model_id);
    END LOOP;
    PERFORM ml_stack._refresh_serving();
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER refresh_serving AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ml_stack.projects
    FOR EACH STATEMENT EXECUTE FUNCTION ml_stack._registry_changed();
CREATE OR REPLACE TRIGGER refresh_serving AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ml_stack.deployments
    FOR EACH STATEMENT EXECUTE FUNCTION ml_stack._registry_changed();
CREATE OR REPLACE TRIGGER refresh_serving AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ml_stack.model_aliases
    FOR EACH STATEMENT EXECUTE FUNCTION ml_stack._registry_changed();
CREATE OR REPLACE TRIGGER refresh_serving AFTER DELETE OR TRUNCATE ON ml_stack.models
    FOR EACH STATEMENT EXECUTE FUNCTION ml_stack._registry_changed();
CREATE OR REPLACE TRIGGER compile_inserted AFTER INSERT ON ml_stack.models
    REFERENCING NEW TABLE AS written_models
    FOR EACH STATEMENT EXECUTE FUNCTION ml_stack._models_written();
CREATE OR REPLACE TRIGGER compile_updated AFTER UPDATE ON ml_stack.models
    REFERENCING NEW TABLE AS written_models
    FOR EACH STATEMENT EXECUTE FUNCTION ml_stack._models_written();
