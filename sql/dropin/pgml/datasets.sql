-- pgml.load_dataset: scikit-learn's toy datasets as PostgresML lays them out (pgml.iris with float4
-- features and an integer target, pgml.breast_cancer with its feature names and the boolean label
-- "malignant", pgml.digits with an 8x8 smallint[][] image, ...), read through ml_stack.load_dataset
-- (ml_stack_python). Hugging Face datasets need the network: refused with what is there.
CREATE OR REPLACE FUNCTION pgml.load_dataset(source text, subset text DEFAULT NULL, "limit" bigint DEFAULT NULL,
                                             kwargs jsonb DEFAULT '{}')
RETURNS TABLE (table_name text, "rows" bigint)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    builtin CONSTANT text[] := ARRAY['breast_cancer', 'diabetes', 'digits', 'iris', 'wine'];
    had_table boolean;
    features text[];
    columns text;
    n bigint;
BEGIN
    IF source IS NULL OR NOT source = ANY (builtin) THEN
        RAISE EXCEPTION 'dataset "%" is not available here', source
            USING ERRCODE = 'feature_not_supported',
                  HINT = format('ml_stack_pgml loads scikit-learn''s toy datasets: %s (linnerud needs joint training, which '
                                'ml_stack does not have). Hugging Face datasets need the network: load them into a table yourself.',
                                array_to_string(builtin, ', '));
    END IF;
    IF "limit" < 0 THEN
        RAISE EXCEPTION 'limit must be >= 0, got %', "limit" USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF to_regprocedure('ml_stack.load_dataset(text)') IS NULL THEN
        RAISE EXCEPTION 'pgml.load_dataset needs ml_stack_python, which is not installed'
            USING ERRCODE = 'feature_not_supported', HINT = 'CREATE EXTENSION ml_stack_python CASCADE (it reads scikit-learn''s datasets).';
    END IF;
    had_table := to_regclass(format('ml_stack.%I', source)) IS NOT NULL;
    PERFORM ml_stack.load_dataset(source);
    features := ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute AS a
                      WHERE a.attrelid = format('ml_stack.%I', source)::regclass AND a.attnum > 0 AND NOT a.attisdropped
                        AND a.attname <> 'target'
                      ORDER BY CASE WHEN source = 'wine' AND a.attname = 'hue' THEN 9.5 ELSE a.attnum END);
    IF source = 'digits' THEN
        -- pixel_<row>_<column> -> image[row + 1][column + 1]
        columns := format('ARRAY[%s]::smallint[][] AS image, target::smallint AS target',
                          (SELECT string_agg(format('ARRAY[%s]', r.cells), ', ' ORDER BY r.i)
                           FROM (SELECT i, string_agg(format('%I', format('pixel_%s_%s', i, j)), ', ' ORDER BY j) AS cells
                                 FROM generate_series(0, 7) AS i, generate_series(0, 7) AS j GROUP BY i) AS r));
    ELSE
        columns := (SELECT string_agg(format('%I::real AS %I', f, CASE source
                                        WHEN 'iris' THEN (ARRAY['sepal_length', 'sepal_width', 'petal_length', 'petal_width'])[i]
                                        WHEN 'breast_cancer' THEN replace(f, '_', ' ')
                                        WHEN 'wine' THEN CASE f WHEN 'od280_od315_of_diluted_wines' THEN 'od280/od315_of_diluted_wines' ELSE f END
                                        ELSE f END), ', ' ORDER BY i)
                    FROM unnest(features) WITH ORDINALITY AS c(f, i))
                   || CASE source WHEN 'breast_cancer' THEN ', target = 0 AS malignant'
                                  WHEN 'diabetes' THEN ', target::real AS target'
                                  ELSE ', target::integer AS target' END;
    END IF;
    IF to_regclass(format('pgml.%I', source)) IS NOT NULL THEN
        BEGIN
            EXECUTE format('DROP TABLE pgml.%I', source);   -- replaced, as PostgresML does
        EXCEPTION WHEN dependent_objects_still_exist THEN
            RAISE EXCEPTION 'pgml.% is replaced by load_dataset, but other objects depend on it', source
                USING ERRCODE = 'dependent_objects_still_exist', DETAIL = SQLERRM,
                      HINT = format('Drop them first (e.g. DROP VIEW pgml.%s_view), or DROP TABLE pgml.%s CASCADE.', source, source);
        END;
    END IF;
    EXECUTE format('CREATE TABLE pgml.%I AS SELECT %s FROM ml_stack.%I%s', source, columns, source,
                   CASE WHEN "limit" IS NOT NULL THEN format(' LIMIT %s', "limit") ELSE '' END);
    GET DIAGNOSTICS n = ROW_COUNT;
    EXECUTE format('COMMENT ON TABLE pgml.%I IS %L', source,
                   format('ml_stack_pgml: scikit-learn''s %s dataset, as PostgresML lays it out (pgml.load_dataset).', source));
    IF NOT had_table THEN
        EXECUTE format('DROP TABLE ml_stack.%I', source);
    END IF;
    table_name := format('pgml.%I', source);
    "rows" := n;
    RETURN NEXT;
END
$$;
COMMENT ON FUNCTION pgml.load_dataset(text, text, bigint, jsonb) IS
    'ml_stack_pgml: PostgresML''s load_dataset for scikit-learn''s toy datasets (breast_cancer, diabetes, digits, iris, wine) into pgml.<name>, replaced if it exists; limit keeps the first rows. Needs ml_stack_python.';
