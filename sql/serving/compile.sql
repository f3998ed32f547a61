-- Compiled serving (DESIGN §2). Every model gets two SQL functions made of its
-- arithmetic, created at run time (so they are not extension members and pg_dump
-- keeps them):
--   ml_stack._model_<id>_predict(features float8[]) -> float8
--   ml_stack._model_<id>_proba(features float8[])   -> float8[]
-- Four dispatch functions (extension members, regenerated from the registry by
-- the triggers below) route a project name or a model id to them with a CASE
-- that the planner folds when the name is a constant, so
-- predict('p', ARRAY[...]) inlines down to the model's expression.
-- pg_dump does not keep a member's regenerated body, but restoring the registry
-- tables fires the triggers, which regenerate it; ALTER EXTENSION UPDATE scripts
-- call ml_stack._refresh_serving() at their end.

CREATE OR REPLACE FUNCTION ml_stack._compile_model(model_id bigint)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET extra_float_digits = 3
AS $$
DECLARE
    m record;
    guard text;
BEGIN
    SELECT mo.id, mo.num_features, mo.classes, mo.artifact, mo.engine INTO m
    FROM ml_stack.models AS mo WHERE mo.id = model_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'model % does not exist', model_id USING ERRCODE = 'undefined_object';
    END IF;
    IF m.artifact ->> 'format' IS DISTINCT FROM 'linear' THEN
        RAISE EXCEPTION 'model % has artifact format "%", which the SQL compiler does not know', model_id, m.artifact ->> 'format'
            USING ERRCODE = 'feature_not_supported',
                  HINT = format('Install the extension of engine "%s".', m.engine);
    END IF;
    guard := format('WHEN cardinality(features) <> %s THEN %%s', m.num_features);
    PERFORM ml_stack._create_predictor(format('_model_%s_predict', m.id), 'float8',
        format('SELECT CASE %s ELSE %s END',
               format(guard, format('ml_stack._wrong_feature_count(%s, %s, features)', m.id, m.num_features)),
               ml_stack._predict_sql(m.artifact, m.classes, 'features[%s]')));
    PERFORM ml_stack._create_predictor(format('_model_%s_proba', m.id), 'float8[]',
        CASE WHEN m.classes IS NULL
             THEN format('SELECT ml_stack._no_probabilities(%s, features)', m.id)
             ELSE format('SELECT CASE %s ELSE %s END',
                         format(guard, format('ARRAY[ml_stack._wrong_feature_count(%s, %s, features)]', m.id, m.num_features)),
                         ml_stack._proba_sql(m.artifact, 'features[%s]')) END);
END
$$;

-- (Re)create one compiled predictor ml_stack.<name>(features float8[]) as a free-standing
-- function. Drop-and-create rather than CREATE OR REPLACE: inside ALTER EXTENSION UPDATE,
-- PostgreSQL refuses to replace an object the extension does not own, and a function
-- created there becomes a member, which pg_dump would leave out, so it is released.
CREATE OR REPLACE FUNCTION ml_stack._create_predictor(name text, result_type text, body text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    fn regprocedure;
BEGIN
    IF to_regprocedure(format('ml_stack.%I(float8[])', name)) IS NOT NULL THEN
        EXECUTE format('DROP FUNCTION ml_stack.%I(float8[])', name);
    END IF;
    EXECUTE format('CREATE FUNCTION ml_stack.%I(features float8[]) RETURNS %s '
                   'LANGUAGE sql IMMUTABLE PARALLEL SAFE AS %L',
                   name, result_type::regtype, body);
    fn := to_regprocedure(format('ml_stack.%I(float8[])', name));
    IF EXISTS (SELECT FROM pg_catalog.pg_depend AS d
               WHERE d.classid = 'pg_catalog.pg_proc'::regclass AND d.objid = fn AND d.deptype = 'e') THEN
        EXECUTE format('ALTER EXTENSION ml_stack DROP FUNCTION %s', fn);
    END IF;
END
$$;

-- Body of a dispatch function: CASE over the keys, or only the fallback when
-- there is no key yet (CASE needs at least one WHEN).
CREATE OR REPLACE FUNCTION ml_stack._case_dispatch(key text, arms text, fallback text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN arms IS NULL THEN format('SELECT %s', fallback)
                ELSE format('SELECT CASE %s %s ELSE %s END', key, arms, fallback) END
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
    by_project text;
    by_project_proba text;
    by_model text;
    by_model_proba text;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('ml_stack._refresh_serving'));
    SELECT string_agg(format('WHEN %L THEN ml_stack.%I(features)', d.project_name, format('_model_%s_predict', d.model_id)), ' '
                      ORDER BY d.project_name),
           string_agg(format('WHEN %L THEN ml_stack.%I(features)', d.project_name, format('_model_%s_proba', d.model_id)), ' '
                      ORDER BY d.project_name)
    INTO by_project, by_project_proba
    FROM ml_stack.deployed_models AS d;
    SELECT string_agg(format('WHEN %s THEN ml_stack.%I(features)', m.id, format('_model_%s_predict', m.id)), ' ' ORDER BY m.id),
           string_agg(format('WHEN %s THEN ml_stack.%I(features)', m.id, format('_model_%s_proba', m.id)), ' ' ORDER BY m.id)
    INTO by_model, by_model_proba
    FROM ml_stack.models AS m;

    EXECUTE format(
        'CREATE OR REPLACE FUNCTION ml_stack._predict_project(project_name text, features float8[]) RETURNS float8 '
        'LANGUAGE sql STABLE PARALLEL SAFE AS %L',
        ml_stack._case_dispatch('project_name', by_project, 'ml_stack._no_deployed_model(project_name, features)'));
    EXECUTE format(
        'CREATE OR REPLACE FUNCTION ml_stack._predict_proba_project(project_name text, features float8[]) RETURNS float8[] '
        'LANGUAGE sql STABLE PARALLEL SAFE AS %L',
        ml_stack._case_dispatch('project_name', by_project_proba, 'ARRAY[ml_stack._no_deployed_model(project_name, features)]'));
    EXECUTE format(
        'CREATE OR REPLACE FUNCTION ml_stack._predict_model(model_id bigint, features float8[]) RETURNS float8 '
        'LANGUAGE sql STABLE PARALLEL SAFE AS %L',
        ml_stack._case_dispatch('model_id', by_model, 'ml_stack._unknown_model(model_id, features)'));
    EXECUTE format(
        'CREATE OR REPLACE FUNCTION ml_stack._predict_proba_model(model_id bigint, features float8[]) RETURNS float8[] '
        'LANGUAGE sql STABLE PARALLEL SAFE AS %L',
        ml_stack._case_dispatch('model_id', by_model_proba, 'ARRAY[ml_stack._unknown_model(model_id, features)]'));
END
$$;
COMMENT ON FUNCTION ml_stack._refresh_serving() IS
    'ml_stack internal: regenerate the predict() dispatch functions from the registry.';

CREATE OR REPLACE FUNCTION ml_stack._registry_changed()
RETURNS trigger
LANGUAGE plpgsql
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
LANGUAGE plpgsql
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
CREATE OR REPLACE TRIGGER refresh_serving AFTER DELETE OR TRUNCATE ON ml_stack.models
    FOR EACH STATEMENT EXECUTE FUNCTION ml_stack._registry_changed();
CREATE OR REPLACE TRIGGER compile_inserted AFTER INSERT ON ml_stack.models
    REFERENCING NEW TABLE AS written_models
    FOR EACH STATEMENT EXECUTE FUNCTION ml_stack._models_written();
CREATE OR REPLACE TRIGGER compile_updated AFTER UPDATE ON ml_stack.models
    REFERENCING NEW TABLE AS written_models
    FOR EACH STATEMENT EXECUTE FUNCTION ml_stack._models_written();
