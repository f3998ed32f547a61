-- pgml.predict and friends: PostgresML's overloads over ml_stack's serving. They return real as
-- PostgresML's do. Unlike PostgresML's (IMMUTABLE STRICT), they are STABLE and not STRICT, as
-- ml_stack.predict is: so the planner inlines them into ml_stack's compiled serving (DESIGN §4).
-- The array forms take the features in training column order; the row forms take a row of the
-- relation (or any row with its columns by name) and apply the model's preprocessing, as PostgresML's do.
-- PostgresML flattens an array of several dimensions (pgml.digits' 8x8 image) into its features in
-- row-major order; ml_stack's predict takes one dimension, from 1. The overloads test the dimensions around the
-- call, not inside its argument: an argument that looks costly stops the planner from inlining ml_stack's
-- serving body (it reads the argument once per feature).
CREATE OR REPLACE FUNCTION pgml._flattened(features float8[])
RETURNS float8[] LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT ARRAY(SELECT unnest(features)) $$;

CREATE OR REPLACE FUNCTION pgml.predict(project_name text, features real[])
RETURNS real LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT (CASE WHEN pg_catalog.array_ndims(features) OPERATOR(pg_catalog.>) 1
                   OR pg_catalog.array_lower(features, 1) OPERATOR(pg_catalog.<>) 1 THEN ml_stack.predict(project_name, pgml._flattened(features::pg_catalog.float8[])) ELSE ml_stack.predict(project_name, features::pg_catalog.float8[]) END)::pg_catalog.float4 $$;
CREATE OR REPLACE FUNCTION pgml.predict(project_name text, features float8[])
RETURNS real LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT (CASE WHEN pg_catalog.array_ndims(features) OPERATOR(pg_catalog.>) 1
                   OR pg_catalog.array_lower(features, 1) OPERATOR(pg_catalog.<>) 1 THEN ml_stack.predict(project_name, pgml._flattened(features)) ELSE ml_stack.predict(project_name, features) END)::pg_catalog.float4 $$;
CREATE OR REPLACE FUNCTION pgml.predict(project_name text, features smallint[])
RETURNS real LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT (CASE WHEN pg_catalog.array_ndims(features) OPERATOR(pg_catalog.>) 1
                   OR pg_catalog.array_lower(features, 1) OPERATOR(pg_catalog.<>) 1 THEN ml_stack.predict(project_name, pgml._flattened(features::pg_catalog.float8[])) ELSE ml_stack.predict(project_name, features::pg_catalog.float8[]) END)::pg_catalog.float4 $$;
CREATE OR REPLACE FUNCTION pgml.predict(project_name text, features integer[])
RETURNS real LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT (CASE WHEN pg_catalog.array_ndims(features) OPERATOR(pg_catalog.>) 1
                   OR pg_catalog.array_lower(features, 1) OPERATOR(pg_catalog.<>) 1 THEN ml_stack.predict(project_name, pgml._flattened(features::pg_catalog.float8[])) ELSE ml_stack.predict(project_name, features::pg_catalog.float8[]) END)::pg_catalog.float4 $$;
CREATE OR REPLACE FUNCTION pgml.predict(project_name text, features bigint[])
RETURNS real LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT (CASE WHEN pg_catalog.array_ndims(features) OPERATOR(pg_catalog.>) 1
                   OR pg_catalog.array_lower(features, 1) OPERATOR(pg_catalog.<>) 1 THEN ml_stack.predict(project_name, pgml._flattened(features::pg_catalog.float8[])) ELSE ml_stack.predict(project_name, features::pg_catalog.float8[]) END)::pg_catalog.float4 $$;
-- not in PostgresML: ARRAY[3, 4.5] (numeric[]) would otherwise match no overload better than another
CREATE OR REPLACE FUNCTION pgml.predict(project_name text, features numeric[])
RETURNS real LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT (CASE WHEN pg_catalog.array_ndims(features) OPERATOR(pg_catalog.>) 1
                   OR pg_catalog.array_lower(features, 1) OPERATOR(pg_catalog.<>) 1 THEN ml_stack.predict(project_name, pgml._flattened(features::pg_catalog.float8[])) ELSE ml_stack.predict(project_name, features::pg_catalog.float8[]) END)::pg_catalog.float4 $$;
CREATE OR REPLACE FUNCTION pgml.predict(project_name text, features boolean[])
RETURNS real LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT (CASE WHEN pg_catalog.array_ndims(features) OPERATOR(pg_catalog.>) 1
                   OR pg_catalog.array_lower(features, 1) OPERATOR(pg_catalog.<>) 1 THEN ml_stack.predict(project_name, pgml._flattened(features::pg_catalog.int4[]::pg_catalog.float8[])) ELSE ml_stack.predict(project_name, features::pg_catalog.int4[]::pg_catalog.float8[]) END)::pg_catalog.float4 $$;
CREATE OR REPLACE FUNCTION pgml.predict(project_name text, "row" anyelement)
RETURNS real LANGUAGE sql STABLE
AS $$ SELECT ml_stack.predict_row(project_name, pg_catalog.to_jsonb("row"))::pg_catalog.float4 $$;
CREATE OR REPLACE FUNCTION pgml.predict(model_id bigint, features real[])
RETURNS real LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT (CASE WHEN pg_catalog.array_ndims(features) OPERATOR(pg_catalog.>) 1
                   OR pg_catalog.array_lower(features, 1) OPERATOR(pg_catalog.<>) 1 THEN ml_stack.predict(model_id, pgml._flattened(features::pg_catalog.float8[])) ELSE ml_stack.predict(model_id, features::pg_catalog.float8[]) END)::pg_catalog.float4 $$;
-- by model id, for every array type too (not in PostgresML: pgml.predict(1, image) would match no overload best)
CREATE OR REPLACE FUNCTION pgml.predict(model_id bigint, features float8[])
RETURNS real LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT (CASE WHEN pg_catalog.array_ndims(features) OPERATOR(pg_catalog.>) 1
                   OR pg_catalog.array_lower(features, 1) OPERATOR(pg_catalog.<>) 1 THEN ml_stack.predict(model_id, pgml._flattened(features)) ELSE ml_stack.predict(model_id, features) END)::pg_catalog.float4 $$;
CREATE OR REPLACE FUNCTION pgml.predict(model_id bigint, features numeric[])
RETURNS real LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT (CASE WHEN pg_catalog.array_ndims(features) OPERATOR(pg_catalog.>) 1
                   OR pg_catalog.array_lower(features, 1) OPERATOR(pg_catalog.<>) 1 THEN ml_stack.predict(model_id, pgml._flattened(features::pg_catalog.float8[])) ELSE ml_stack.predict(model_id, features::pg_catalog.float8[]) END)::pg_catalog.float4 $$;
CREATE OR REPLACE FUNCTION pgml.predict(model_id bigint, features smallint[])
RETURNS real LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT (CASE WHEN pg_catalog.array_ndims(features) OPERATOR(pg_catalog.>) 1
                   OR pg_catalog.array_lower(features, 1) OPERATOR(pg_catalog.<>) 1 THEN ml_stack.predict(model_id, pgml._flattened(features::pg_catalog.float8[])) ELSE ml_stack.predict(model_id, features::pg_catalog.float8[]) END)::pg_catalog.float4 $$;
CREATE OR REPLACE FUNCTION pgml.predict(model_id bigint, features integer[])
RETURNS real LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT (CASE WHEN pg_catalog.array_ndims(features) OPERATOR(pg_catalog.>) 1
                   OR pg_catalog.array_lower(features, 1) OPERATOR(pg_catalog.<>) 1 THEN ml_stack.predict(model_id, pgml._flattened(features::pg_catalog.float8[])) ELSE ml_stack.predict(model_id, features::pg_catalog.float8[]) END)::pg_catalog.float4 $$;
CREATE OR REPLACE FUNCTION pgml.predict(model_id bigint, features bigint[])
RETURNS real LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT (CASE WHEN pg_catalog.array_ndims(features) OPERATOR(pg_catalog.>) 1
                   OR pg_catalog.array_lower(features, 1) OPERATOR(pg_catalog.<>) 1 THEN ml_stack.predict(model_id, pgml._flattened(features::pg_catalog.float8[])) ELSE ml_stack.predict(model_id, features::pg_catalog.float8[]) END)::pg_catalog.float4 $$;
CREATE OR REPLACE FUNCTION pgml.predict(model_id bigint, features boolean[])
RETURNS real LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT (CASE WHEN pg_catalog.array_ndims(features) OPERATOR(pg_catalog.>) 1
                   OR pg_catalog.array_lower(features, 1) OPERATOR(pg_catalog.<>) 1 THEN ml_stack.predict(model_id, pgml._flattened(features::pg_catalog.int4[]::pg_catalog.float8[])) ELSE ml_stack.predict(model_id, features::pg_catalog.int4[]::pg_catalog.float8[]) END)::pg_catalog.float4 $$;
CREATE OR REPLACE FUNCTION pgml.predict(model_id bigint, "row" anyelement)
RETURNS real LANGUAGE sql STABLE
AS $$ SELECT ml_stack.predict_row(model_id, pg_catalog.to_jsonb("row"))::pg_catalog.float4 $$;
COMMENT ON FUNCTION pgml.predict(text, real[]) IS
    'ml_stack_pgml: PostgresML''s predict: the deployed model''s prediction (a value, or the class) for features in training column order (ml_stack.predict). Also for float8[], numeric[], smallint[], integer[], bigint[] and boolean[].';
COMMENT ON FUNCTION pgml.predict(text, float8[]) IS 'ml_stack_pgml: pgml.predict(text, real[]) for double precision features.';
COMMENT ON FUNCTION pgml.predict(text, smallint[]) IS 'ml_stack_pgml: pgml.predict(text, real[]) for smallint features.';
COMMENT ON FUNCTION pgml.predict(text, integer[]) IS 'ml_stack_pgml: pgml.predict(text, real[]) for integer features.';
COMMENT ON FUNCTION pgml.predict(text, bigint[]) IS 'ml_stack_pgml: pgml.predict(text, real[]) for bigint features.';
COMMENT ON FUNCTION pgml.predict(text, numeric[]) IS 'ml_stack_pgml: pgml.predict(text, real[]) for numeric features (ARRAY[3, 4.5]).';
COMMENT ON FUNCTION pgml.predict(text, boolean[]) IS 'ml_stack_pgml: pgml.predict(text, real[]) for boolean features (1 and 0).';
COMMENT ON FUNCTION pgml.predict(text, anyelement) IS
    'ml_stack_pgml: PostgresML''s predict of a row: its columns by name, preprocessed as at training (ml_stack.predict_row).';
COMMENT ON FUNCTION pgml.predict(bigint, real[]) IS 'ml_stack_pgml: the prediction of one model by id, deployed or not.';
COMMENT ON FUNCTION pgml.predict(bigint, float8[]) IS 'ml_stack_pgml: pgml.predict(bigint, real[]) for float8[] features.';
COMMENT ON FUNCTION pgml.predict(bigint, numeric[]) IS 'ml_stack_pgml: pgml.predict(bigint, real[]) for numeric[] features.';
COMMENT ON FUNCTION pgml.predict(bigint, smallint[]) IS 'ml_stack_pgml: pgml.predict(bigint, real[]) for smallint[] features.';
COMMENT ON FUNCTION pgml.predict(bigint, integer[]) IS 'ml_stack_pgml: pgml.predict(bigint, real[]) for integer[] features.';
COMMENT ON FUNCTION pgml.predict(bigint, bigint[]) IS 'ml_stack_pgml: pgml.predict(bigint, real[]) for bigint[] features.';
COMMENT ON FUNCTION pgml.predict(bigint, boolean[]) IS 'ml_stack_pgml: pgml.predict(bigint, real[]) for boolean[] features.';
COMMENT ON FUNCTION pgml.predict(bigint, anyelement) IS 'ml_stack_pgml: the prediction of one model by id for a row, its columns by name.';

CREATE OR REPLACE FUNCTION pgml.predict_proba(project_name text, features real[])
RETURNS real[] LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT (CASE WHEN pg_catalog.array_ndims(features) OPERATOR(pg_catalog.>) 1
                   OR pg_catalog.array_lower(features, 1) OPERATOR(pg_catalog.<>) 1 THEN ml_stack.predict_proba(project_name, pgml._flattened(features::pg_catalog.float8[])) ELSE ml_stack.predict_proba(project_name, features::pg_catalog.float8[]) END)::pg_catalog.float4[] $$;
CREATE OR REPLACE FUNCTION pgml.predict_proba(model_id bigint, features real[])
RETURNS real[] LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT (CASE WHEN pg_catalog.array_ndims(features) OPERATOR(pg_catalog.>) 1
                   OR pg_catalog.array_lower(features, 1) OPERATOR(pg_catalog.<>) 1 THEN ml_stack.predict_proba(model_id, pgml._flattened(features::pg_catalog.float8[])) ELSE ml_stack.predict_proba(model_id, features::pg_catalog.float8[]) END)::pg_catalog.float4[] $$;
COMMENT ON FUNCTION pgml.predict_proba(text, real[]) IS
    'ml_stack_pgml: PostgresML''s predict_proba: the deployed classifier''s probability of each class, classes ascending.';
COMMENT ON FUNCTION pgml.predict_proba(bigint, real[]) IS 'ml_stack_pgml: class probabilities of one model by id.';

-- predict_batch: the features of several rows, one after the other in one array.
CREATE OR REPLACE FUNCTION pgml._batch_rows(features real[], num_features integer, what text)
RETURNS SETOF float8[]
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF coalesce(cardinality(features), 0) % num_features <> 0 THEN
        RAISE EXCEPTION 'predict_batch: % features is not a whole number of rows of % features (%)',
                        coalesce(cardinality(features), 0), num_features, what
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass the rows'' features one row after the other, in training column order.';
    END IF;
    RETURN QUERY SELECT features[i * num_features + 1 : (i + 1) * num_features]::pg_catalog.float8[]
                 FROM generate_series(0, coalesce(cardinality(features), 0) / num_features - 1) AS i;
END
$$;

CREATE OR REPLACE FUNCTION pgml.predict_batch(model_id bigint, features real[])
RETURNS real[] LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    width integer := (SELECT m.num_features FROM ml_stack.models AS m WHERE m.id = predict_batch.model_id);
BEGIN
    IF width IS NULL THEN
        RAISE EXCEPTION 'model % does not exist', model_id
            USING ERRCODE = 'no_data_found', HINT = 'SELECT id, project_id, algorithm FROM pgml.models lists the models.';
    END IF;
    RETURN ARRAY(SELECT ml_stack.predict(model_id, r.b)::real
                 FROM pgml._batch_rows(ARRAY(SELECT unnest(features)), width, format('model %s', model_id))   -- from 1, flat
                      WITH ORDINALITY AS r(b, i) ORDER BY r.i);
END
$$;
CREATE OR REPLACE FUNCTION pgml.predict_batch(project_name text, features real[])
RETURNS SETOF real LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    deployed_id bigint := (SELECT d.model_id FROM ml_stack.deployed_models AS d WHERE d.project_name = predict_batch.project_name);
BEGIN
    IF deployed_id IS NULL THEN
        PERFORM ml_stack._no_deployed_model(project_name, NULL::pg_catalog.float8[]);   -- the error ml_stack.predict gives
    END IF;
    RETURN QUERY SELECT p FROM unnest(pgml.predict_batch(deployed_id, features)) AS p;
END
$$;
COMMENT ON FUNCTION pgml.predict_batch(text, real[]) IS
    'ml_stack_pgml: PostgresML''s predict_batch: the deployed model''s prediction for each row of a flat array of rows'' features.';
COMMENT ON FUNCTION pgml.predict_batch(bigint, real[]) IS
    'ml_stack_pgml: one model''s predictions, as an array, for a flat array of rows'' features.';
