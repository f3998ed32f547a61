-- Predictions from a row given by column names (to_jsonb(t) of a table row, or a
-- JSON object from an application): the deployed model's feature array is built
-- from the row following the snapshot's column layout (numbers, booleans, arrays, dates
-- and times, categories by their encoding, text through the model's own transformer),
-- then served as predict() serves it.
-- Extra keys are ignored; a missing key is a NULL feature (NULL text: no words).

-- A JSON value as a feature: numbers, booleans (1/0), numeric strings (PostgREST's
-- query parameters are strings), NULL.
CREATE OR REPLACE FUNCTION ml_stack._json_feature(v jsonb, column_name text)
RETURNS float8
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    CASE jsonb_typeof(v)
        WHEN 'number' THEN RETURN v::text::float8;
        WHEN 'boolean' THEN RETURN CASE WHEN v::text::boolean THEN 1 ELSE 0 END;
        WHEN 'null' THEN RETURN NULL;
        WHEN 'string' THEN
            BEGIN
                RETURN CASE lower(v #>> '{}') WHEN 'true' THEN 1 WHEN 'false' THEN 0 ELSE (v #>> '{}')::float8 END;
            EXCEPTION WHEN invalid_text_representation THEN
                NULL;  -- reported below
            END;
        ELSE
            IF v IS NULL THEN
                RETURN NULL;
            END IF;
    END CASE;
    RAISE EXCEPTION 'column "%" needs a number, got %', column_name, left(v::text, 100)
        USING ERRCODE = 'invalid_text_representation', HINT = 'Numbers, booleans, numeric strings and null are accepted.';
END
$$;

-- A JSON value for a date or time column: its text as the column's type reads it (to_jsonb
-- of a row writes them so), as seconds (date_part('epoch', ...), as at training); a number
-- is taken as those seconds.
CREATE OR REPLACE FUNCTION ml_stack._json_time_feature(v jsonb, column_name text, type_name text)
RETURNS float8
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF v IS NULL OR jsonb_typeof(v) IN ('null', 'number') THEN
        RETURN ml_stack._json_feature(v, column_name);
    ELSIF jsonb_typeof(v) = 'string' THEN
        BEGIN
            RETURN CASE type_name
                WHEN 'date' THEN date_part('epoch', (v #>> '{}')::date)
                WHEN 'timestamp without time zone' THEN date_part('epoch', (v #>> '{}')::timestamp)
                WHEN 'timestamp with time zone' THEN date_part('epoch', (v #>> '{}')::timestamptz)
                WHEN 'interval' THEN date_part('epoch', (v #>> '{}')::interval)
                WHEN 'time without time zone' THEN date_part('epoch', (v #>> '{}')::time) END;
        EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow OR invalid_text_representation THEN
            NULL;  -- reported below
        END;
    END IF;
    RAISE EXCEPTION 'column "%" needs a value of type %, got %', column_name, type_name, left(v::text, 100)
        USING ERRCODE = 'invalid_datetime_format', HINT = 'e.g. "2024-05-01" for a date, or the seconds as a number.';
END
$$;

CREATE OR REPLACE FUNCTION ml_stack._row_features(layout jsonb, input jsonb)
RETURNS float8[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    features float8[] := '{}';
    col jsonb;
    v jsonb;
    width integer;
BEGIN
    IF input IS NULL THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(input) <> 'object' THEN
        RAISE EXCEPTION 'the row must be a JSON object of column values, got a JSON %', jsonb_typeof(input)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'e.g. to_jsonb(t) of a table row, or ''{"title": "..."}''.';
    END IF;
    FOR col IN SELECT value FROM jsonb_array_elements(layout) LOOP
        v := input -> (col ->> 'name');
        width := coalesce((col ->> 'width')::integer, 1);
        CASE col ->> 'kind'
        WHEN 'text' THEN
            features := features || ml_stack._text_features(col -> 'transformer', width,
                                                            CASE jsonb_typeof(v) WHEN 'null' THEN NULL WHEN 'string' THEN v #>> '{}' ELSE v::text END);
        WHEN 'category' THEN
            -- as text, the way training read the column (char(n): without its padding, as ::text drops it)
            features := features || ml_stack._category_features(col -> 'encoding',
                                                                CASE jsonb_typeof(v) WHEN 'null' THEN NULL
                                                                     WHEN 'string' THEN CASE WHEN col ->> 'type' = 'character'
                                                                                             THEN (v #>> '{}')::bpchar::text ELSE v #>> '{}' END
                                                                     ELSE v::text END);
        WHEN 'temporal' THEN
            features := features || ml_stack._json_time_feature(v, col ->> 'name', col ->> 'type');
        WHEN 'array' THEN
            IF jsonb_typeof(v) = 'array' AND jsonb_path_exists(v, 'strict $[*] ? (@.type() == "array")') THEN
                -- an array of several dimensions (to_jsonb nests them): its elements in row-major order
                v := coalesce((SELECT jsonb_agg(e.value ORDER BY e.ordinality)
                               FROM jsonb_path_query(v, 'strict $.** ? (@.type() != "array")') WITH ORDINALITY AS e(value, ordinality)), '[]');
            END IF;
            IF v IS NULL OR jsonb_typeof(v) = 'null' THEN
                features := features || array_fill(NULL::float8, ARRAY[width]);
            ELSIF jsonb_typeof(v) <> 'array' OR jsonb_array_length(v) <> width THEN
                RAISE EXCEPTION 'column "%" needs an array of % numbers, got %', col ->> 'name', width, left(v::text, 100)
                    USING ERRCODE = 'invalid_parameter_value', HINT = 'Array features have the length they had at training.';
            ELSE
                features := features || ARRAY(SELECT ml_stack._json_feature(e.value, col ->> 'name')
                                              FROM jsonb_array_elements(v) WITH ORDINALITY AS e ORDER BY e.ordinality);
            END IF;
        ELSE
            features := features || ml_stack._json_feature(v, col ->> 'name');
        END CASE;
    END LOOP;
    RETURN features;
END
$$;

-- The deployed model of a project and its column layout.
CREATE OR REPLACE FUNCTION ml_stack._deployed_layout(project_name text, OUT model_id bigint, OUT layout jsonb)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    SELECT d.model_id, ml_stack._model_layout(d.model_id) INTO model_id, layout
    FROM ml_stack.deployed_models AS d
    WHERE d.project_name = _deployed_layout.project_name;
    IF NOT FOUND THEN
        PERFORM ml_stack._no_deployed_model(project_name, NULL::float8[]);
    ELSIF layout IS NULL THEN
        RAISE EXCEPTION 'model % of project "%" does not know its columns (it was imported without feature names)', model_id, project_name
            USING ERRCODE = 'feature_not_supported', HINT = 'Use ml_stack.predict(project_name, ARRAY[...]) with the features in order.';
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION ml_stack.predict_row(project_name text, "row" jsonb)
RETURNS float8
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    deployed record := ml_stack._deployed_layout(project_name);
BEGIN
    RETURN ml_stack.predict(deployed.model_id, ml_stack._row_features(deployed.layout, "row"));
END
$$;
COMMENT ON FUNCTION ml_stack.predict_row(text, jsonb) IS
    'ml_stack: prediction of the project''s deployed model for a row given by column names (to_jsonb(t) works; extra keys are ignored); text columns go through the model''s own transformer.';

-- A model of the registry, deployed or not, by id (PostgresML's predict(model_id, row)).
CREATE OR REPLACE FUNCTION ml_stack.predict_row(model_id bigint, "row" jsonb)
RETURNS float8
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    layout jsonb := ml_stack._model_layout(model_id);
BEGIN
    IF layout IS NULL THEN
        IF NOT EXISTS (SELECT FROM ml_stack.models AS m WHERE m.id = predict_row.model_id) THEN
            RAISE EXCEPTION 'model % does not exist', model_id
                USING ERRCODE = 'no_data_found', HINT = 'SELECT id, project_id, algorithm FROM ml_stack.models lists the models.';
        END IF;
        RAISE EXCEPTION 'model % does not know its columns (it was imported without feature names)', model_id
            USING ERRCODE = 'feature_not_supported', HINT = 'Use ml_stack.predict(model_id, ARRAY[...]) with the features in order.';
    END IF;
    RETURN ml_stack.predict(model_id, ml_stack._row_features(layout, "row"));
END
$$;
COMMENT ON FUNCTION ml_stack.predict_row(bigint, jsonb) IS
    'ml_stack: prediction of one model of the registry, deployed or not, for a row given by column names.';

CREATE OR REPLACE FUNCTION ml_stack.predict_proba_row(project_name text, "row" jsonb)
RETURNS float8[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    deployed record := ml_stack._deployed_layout(project_name);
BEGIN
    RETURN ml_stack.predict_proba(deployed.model_id, ml_stack._row_features(deployed.layout, "row"));
END
$$;
COMMENT ON FUNCTION ml_stack.predict_proba_row(text, jsonb) IS
    'ml_stack: class probabilities (classes ascending) of the project''s deployed classifier for a row given by column names.';
