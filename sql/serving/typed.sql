-- Typed serving (0.4.0): every deployed project has a serving function with one
-- named, typed argument per feature column of its deployed model, named as the
-- column (numbers float8, booleans boolean, arrays float8[], vectorized text text, dates
-- and times their type, categories text, bigint, boolean or their enum type):
--   ml_stack._project_<project id>_predict(<columns>) -> float8
--   ml_stack._project_<project id>_proba(<columns>)   -> float8[]   (classifiers)
-- found in ml_stack.deployed_models.serving_function. A linear model of at most
-- _wide_model_features() features over numbers, booleans and arrays is the
-- expression itself, written over the arguments: it inlines into the caller's
-- query and costs what the hand-written expression costs (no ARRAY[...] rebuilt
-- for every feature reference, as predict(name, ARRAY[...]) does). Other models
-- build their feature array once and call the model's compiled predictor.
-- A deployment of a model with the same columns replaces the body and keeps the
-- function (its oid: views and prepared statements that use it keep working);
-- other columns make another signature, so the old function is dropped (an error
-- with a hint when a view of the user depends on it). Created at run time, as the
-- models' predictors (serving/compile.sql): not extension members, kept by pg_dump.

-- The feature columns a model was trained on (snapshot columns; before 0.3.0 every
-- feature was a numeric column, as the snapshot's features list them); NULL when
-- the model does not know them (imported without names).
CREATE OR REPLACE FUNCTION ml_stack._model_layout(model_id bigint)
RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER   -- predict_row needs the columns of a confidential project's model too
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(s.columns, (SELECT jsonb_agg(jsonb_build_object('name', f.value ->> 'name', 'kind', 'number',
                                                                    'offset', f.ordinality - 1, 'width', 1) ORDER BY f.ordinality)
                                FROM jsonb_array_elements(s.features) WITH ORDINALITY AS f
                                HAVING count(*) = m.num_features))
    FROM ml_stack.models AS m
    LEFT JOIN ml_stack.snapshots AS s ON s.id = m.snapshot_id
    WHERE m.id = _model_layout.model_id
$$;

-- The SQL type of a layout column's serving argument. An array keeps its column's type
-- when it is real[] (embeddings) or float8[]: the inlined body reads it once per element,
-- and PostgreSQL inlines a function whose argument is used several times only when that
-- argument is cheap, which a real[] -> float8[] coercion is not. Dates and times keep their
-- type; categories are text, but for integer columns (bigint: any integer argument reaches
-- it), boolean and enum columns (an enum that no longer exists: text).
CREATE OR REPLACE FUNCTION ml_stack._serving_argument_type(col jsonb)
RETURNS regtype
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE col ->> 'kind' WHEN 'text' THEN 'text'::regtype
                WHEN 'array' THEN CASE WHEN col ->> 'type' IN ('real[]', 'double precision[]') THEN col ->> 'type' ELSE 'float8[]' END::regtype
                WHEN 'boolean' THEN 'boolean'::regtype
                WHEN 'temporal' THEN (col ->> 'type')::regtype
                WHEN 'category' THEN CASE WHEN col ->> 'type' IN ('smallint', 'integer', 'bigint') THEN 'bigint'::regtype
                                          WHEN col ->> 'type' = 'boolean' THEN 'boolean'::regtype
                                          ELSE coalesce((SELECT t.oid::regtype FROM pg_catalog.pg_type AS t
                                                         WHERE t.oid = to_regtype(col ->> 'type') AND t.typtype = 'e'), 'text'::regtype) END
                ELSE 'float8'::regtype END
$$;

-- A layout column's serving argument as SQL text (categories compare as text).
CREATE OR REPLACE FUNCTION ml_stack._serving_text_argument(col jsonb)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN ml_stack._serving_argument_type(col) = 'text'::regtype THEN quote_ident(col ->> 'name')
                ELSE format('%I::pg_catalog.text', col ->> 'name') END
$$;

-- The serving function's arguments, as pg_get_function_identity_arguments() prints them.
CREATE OR REPLACE FUNCTION ml_stack._serving_arguments(layout jsonb)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT string_agg(format('%s %s', quote_ident(c.value ->> 'name'), format_type(ml_stack._serving_argument_type(c.value), NULL)),
                      ', ' ORDER BY c.ordinality)
    FROM jsonb_array_elements(layout) WITH ORDINALITY AS c
$$;

-- An array column's features: its elements, all NULL for a NULL array, an error for another length.
CREATE OR REPLACE FUNCTION ml_stack._array_features(column_name text, width integer, value float8[])
RETURNS float8[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF value IS NULL THEN
        RETURN array_fill(NULL::float8, ARRAY[width]);
    ELSIF cardinality(value) <> width THEN
        RAISE EXCEPTION 'column "%" needs an array of % numbers, got %', column_name, width, cardinality(value)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Array features have the length they had at training.';
    ELSIF array_ndims(value) > 1 THEN
        RETURN ARRAY(SELECT unnest(value));   -- several dimensions: row-major, as training read them
    END IF;
    RETURN value;
END
$$;

-- A text column's features: its vector by the model's transformer; a NULL text has no terms (zeros).
CREATE OR REPLACE FUNCTION ml_stack._text_features(transformer jsonb, width integer, value text)
RETURNS float8[]
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce((SELECT e::float8[] FROM ml_stack._embed_batch(transformer, ARRAY[value]) AS e WHERE value IS NOT NULL),
                    array_fill(0::float8, ARRAY[width]))
$$;

-- The feature array of a row of serving arguments (the fallback of the inlined form).
CREATE OR REPLACE FUNCTION ml_stack._serving_features_sql(layout jsonb)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT string_agg(CASE c.value ->> 'kind'
                          WHEN 'text' THEN format('ml_stack._text_features(%L::pg_catalog.jsonb, %s, %I)', c.value -> 'transformer',
                                                  (c.value ->> 'width')::integer, c.value ->> 'name')
                          WHEN 'array' THEN format('ml_stack._array_features(%L, %s, %I)', c.value ->> 'name',
                                                   (c.value ->> 'width')::integer, c.value ->> 'name')
                          WHEN 'boolean' THEN format('ARRAY[%I::pg_catalog.int4::pg_catalog.float8]', c.value ->> 'name')
                          WHEN 'temporal' THEN format('ARRAY[pg_catalog.date_part(''epoch''::pg_catalog.text, %I)]', c.value ->> 'name')
                          WHEN 'category' THEN ml_stack._category_features_sql(c.value -> 'encoding', ml_stack._serving_text_argument(c.value))
                          ELSE format('ARRAY[%I]', c.value ->> 'name') END,
                      ' OPERATOR(pg_catalog.||) ' ORDER BY c.ordinality)
    FROM jsonb_array_elements(layout) WITH ORDINALITY AS c
$$;

-- The inlinable bodies of a linear model over the arguments (predict, proba), or NULL
-- when the model is not one (text columns, wide, another format). The expression is the
-- compiled one (serving/expressions.sql) with each feature j written as its argument.
CREATE OR REPLACE FUNCTION ml_stack._serving_inline_sql(artifact jsonb, classes float8[], num_features integer, layout jsonb)
RETURNS text[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    refs text[] := '{}';
    guards text := '';   -- a wrong array length: the error of the non-inlined form (chr(2): [1] for predict)
    col jsonb;
    marker CONSTANT text := chr(1) || '%s' || chr(1);   -- feature j, replaced below (numbers never hold chr(1))
    bodies text[];
    k integer;
BEGIN
    IF artifact ->> 'format' <> 'linear' OR num_features > ml_stack._wide_model_features()
       OR EXISTS (SELECT FROM jsonb_array_elements(layout) AS c
                  WHERE c.value ->> 'kind' = 'text'
                     OR (c.value ->> 'kind' = 'category' AND ml_stack._category_is_large(c.value -> 'encoding'))) THEN
        RETURN NULL;
    END IF;
    FOR col IN SELECT value FROM jsonb_array_elements(layout) LOOP
        CASE col ->> 'kind'
        WHEN 'array' THEN
            FOR k IN 1 .. (col ->> 'width')::integer LOOP
                refs := refs || format('%I[%s]', col ->> 'name', k);
            END LOOP;
            guards := guards || format('WHEN pg_catalog.cardinality(%1$I) OPERATOR(pg_catalog.<>) %2$s '
                                       'OR pg_catalog.array_ndims(%1$I) OPERATOR(pg_catalog.>) 1 '
                                       'THEN (ml_stack._array_features(%3$L, %2$s, %1$I))' || chr(2) || ' ',
                                       col ->> 'name', (col ->> 'width')::integer, col ->> 'name');
        WHEN 'boolean' THEN
            refs := refs || format('%I::pg_catalog.int4::pg_catalog.float8', col ->> 'name');
        WHEN 'temporal' THEN
            refs := refs || format('pg_catalog.date_part(''epoch''::pg_catalog.text, %I)', col ->> 'name');
        WHEN 'category' THEN
            FOR k IN 1 .. (col ->> 'width')::integer LOOP
                refs := refs || ml_stack._category_feature_sql(col -> 'encoding', ml_stack._serving_text_argument(col), k);
            END LOOP;
        ELSE
            refs := refs || format('%I', col ->> 'name');
        END CASE;
    END LOOP;
    IF cardinality(refs) <> num_features THEN
        RETURN NULL;
    END IF;
    bodies := ARRAY[ml_stack._predict_sql(artifact, classes, marker), ml_stack._proba_sql(artifact, marker)];
    FOR k IN 1 .. 2 LOOP
        IF bodies[k] IS NOT NULL THEN
            bodies[k] := (SELECT string_agg(CASE WHEN p.o % 2 = 0 THEN refs[p.piece::integer] ELSE p.piece END, '' ORDER BY p.o)
                          FROM regexp_split_to_table(bodies[k], chr(1)) WITH ORDINALITY AS p(piece, o));
            IF guards <> '' THEN
                bodies[k] := format('CASE %s ELSE %s END', replace(guards, chr(2), CASE WHEN k = 1 THEN '[1]' ELSE '' END), bodies[k]);
            END IF;
            bodies[k] := 'SELECT ' || bodies[k];
        END IF;
    END LOOP;
    RETURN bodies;
END
$$;

-- Release a function created at run time from the extension whose script created it
-- (inside CREATE or ALTER EXTENSION every new object becomes a member, which pg_dump
-- would leave out).
CREATE OR REPLACE FUNCTION ml_stack._release_from_extension(fn regprocedure)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ext name;
BEGIN
    SELECT e.extname INTO ext
    FROM pg_catalog.pg_depend AS d JOIN pg_catalog.pg_extension AS e ON e.oid = d.refobjid
    WHERE d.classid = 'pg_catalog.pg_proc'::regclass AND d.objid = fn AND d.deptype = 'e';
    IF FOUND THEN
        EXECUTE format('ALTER EXTENSION %I DROP FUNCTION %s', ext, fn);
    END IF;
END
$$;

-- Run a CREATE OR REPLACE FUNCTION of a function made at run time (replaced: its current oid, or
-- NULL). In an extension script PostgreSQL refuses to replace a function the extension does not
-- own: there it is taken in for the replacement, and released by the caller.
CREATE OR REPLACE FUNCTION ml_stack._create_or_replace(definition text, replaced regprocedure)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE definition;
EXCEPTION WHEN object_not_in_prerequisite_state THEN
    IF replaced IS NULL THEN
        RAISE;
    END IF;
    EXECUTE format('ALTER EXTENSION ml_stack ADD FUNCTION %s', replaced);
    EXECUTE definition;
END
$$;

-- Create or replace ml_stack.<name>(<arguments>) with this body, keeping the function (its
-- oid) when one of that name has the same arguments; others of that name are dropped.
CREATE OR REPLACE FUNCTION ml_stack._define_serving_function(name text, arguments text, result_type regtype, body text,
                                                             parallel_safe boolean, project_name text)
RETURNS regprocedure
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    fn regprocedure;
    kept regprocedure;
    definition text := format('CREATE OR REPLACE FUNCTION ml_stack.%I(%s) RETURNS %s LANGUAGE sql STABLE PARALLEL %s AS %L',
                              name, arguments, result_type, CASE WHEN parallel_safe THEN 'SAFE' ELSE 'UNSAFE' END, body);
    dependents text;
BEGIN
    FOR fn IN SELECT p.oid FROM pg_catalog.pg_proc AS p
              WHERE p.pronamespace = 'ml_stack'::regnamespace AND p.proname = name LOOP
        IF pg_catalog.pg_get_function_identity_arguments(fn) = arguments
           AND (SELECT p.prorettype FROM pg_catalog.pg_proc AS p WHERE p.oid = fn) = result_type THEN
            kept := fn;
            CONTINUE;
        END IF;
        BEGIN
            EXECUTE format('DROP FUNCTION %s', fn);
        EXCEPTION WHEN dependent_objects_still_exist THEN
            SELECT string_agg(regexp_replace(pg_catalog.pg_describe_object(d.classid, d.objid, d.objsubid), '^rule _RETURN on ', ''), ', ')
            INTO dependents
            FROM pg_catalog.pg_depend AS d WHERE d.refclassid = 'pg_catalog.pg_proc'::regclass AND d.refobjid = fn AND d.deptype = 'n';
            RAISE EXCEPTION 'the model to serve for project "%" has other feature columns than its serving function %, which % uses',
                            project_name, fn, coalesce(dependents, 'another object')
                USING ERRCODE = 'dependent_objects_still_exist',
                      HINT = format('The new serving function takes (%s). Drop or change what uses the old one first, or deploy a model with the same columns.',
                                    arguments);
        END;
    END LOOP;
    IF kept IS NOT NULL AND (SELECT p.prosrc = body AND p.proparallel = CASE WHEN parallel_safe THEN 's' ELSE 'u' END
                             FROM pg_catalog.pg_proc AS p WHERE p.oid = kept) THEN
        RETURN kept;
    END IF;
    PERFORM ml_stack._create_or_replace(definition, kept);
    SELECT p.oid INTO fn FROM pg_catalog.pg_proc AS p
    WHERE p.pronamespace = 'ml_stack'::regnamespace AND p.proname = name;   -- the only one of its name now
    PERFORM ml_stack._release_from_extension(fn);
    RETURN fn;
END
$$;

-- (Re)define a project's serving functions for its deployed model, or, without one,
-- bodies that raise why there is nothing to serve (the signature stays).
CREATE OR REPLACE FUNCTION ml_stack._compile_serving(project_id bigint)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET extra_float_digits = 3
AS $$
DECLARE
    proj record;
    m record;
    layout jsonb;
    arguments text;
    features text;
    inline text[];
    existing record;
BEGIN
    SELECT p.id, p.name, p.task, p.confidential INTO proj FROM ml_stack.projects AS p WHERE p.id = _compile_serving.project_id;
    SELECT mo.id, mo.artifact, mo.classes, mo.num_features INTO m
    FROM ml_stack.deployed_models AS d JOIN ml_stack.models AS mo ON mo.id = d.model_id
    WHERE d.project_id = _compile_serving.project_id;
    IF NOT FOUND THEN
        -- nothing deployed (or no such project any more): the functions that exist raise the reason
        FOR existing IN SELECT p.oid, p.proname, p.prorettype::regtype AS result FROM pg_catalog.pg_proc AS p
                        WHERE p.pronamespace = 'ml_stack'::regnamespace
                          AND p.proname IN (format('_project_%s_predict', project_id), format('_project_%s_proba', project_id)) LOOP
            -- the error function's argument is not a constant (DESIGN §6): $1
            PERFORM ml_stack._define_serving_function(existing.proname, pg_catalog.pg_get_function_identity_arguments(existing.oid),
                existing.result,
                format(CASE WHEN existing.result = 'float8[]'::regtype
                            THEN 'SELECT ARRAY[ml_stack._no_deployed_model(%L, ARRAY[length($1::text)]::float8[])]'
                            ELSE 'SELECT ml_stack._no_deployed_model(%L, ARRAY[length($1::text)]::float8[])' END,
                       coalesce(proj.name, format('#%s', project_id))),
                true, coalesce(proj.name, format('#%s', project_id)));
        END LOOP;
        RETURN;
    END IF;
    layout := ml_stack._model_layout(m.id);
    IF layout IS NULL THEN
        RETURN;   -- imported without column names: served by predict(name, ARRAY[...]) only
    END IF;
    arguments := ml_stack._serving_arguments(layout);
    -- a confidential project's function calls the model's predictor, which reads the parameters
    inline := CASE WHEN NOT proj.confidential THEN ml_stack._serving_inline_sql(m.artifact, m.classes, m.num_features, layout) END;
    features := ml_stack._serving_features_sql(layout);
    PERFORM ml_stack._define_serving_function(format('_project_%s_predict', project_id), arguments, 'float8',
        coalesce(inline[1], format('SELECT ml_stack.%I(%s)', format('_model_%s_predict', m.id), features)),
        m.artifact ->> 'format' <> 'python', proj.name);
    IF proj.task = 'classification' THEN
        PERFORM ml_stack._define_serving_function(format('_project_%s_proba', project_id), arguments, 'float8[]',
            coalesce(inline[2], format('SELECT ml_stack.%I(%s)', format('_model_%s_proba', m.id), features)),
            m.artifact ->> 'format' <> 'python', proj.name);
    END IF;
END
$$;

-- Serving functions of projects that are gone: dropped, or, when something of the user's
-- still uses one, left raising that the project does not exist.
CREATE OR REPLACE FUNCTION ml_stack._drop_orphan_serving()
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    fn record;
BEGIN
    FOR fn IN SELECT p.oid::regprocedure AS oid, substring(p.proname FROM '^_project_(\d+)_')::bigint AS project_id
              FROM pg_catalog.pg_proc AS p
              WHERE p.pronamespace = 'ml_stack'::regnamespace AND p.proname ~ '^_project_\d+_(predict|proba)$'
                AND NOT EXISTS (SELECT FROM ml_stack.projects AS pr
                                WHERE pr.id = substring(p.proname FROM '^_project_(\d+)_')::bigint) LOOP
        BEGIN
            EXECUTE format('DROP FUNCTION %s', fn.oid);
        EXCEPTION WHEN dependent_objects_still_exist THEN
            PERFORM ml_stack._compile_serving(fn.project_id);
        END;
    END LOOP;
END
$$;
