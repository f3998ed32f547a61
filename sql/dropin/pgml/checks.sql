-- ml_stack_pgml is PostgresML 2.x's API (schema pgml) over ml_stack: it needs ml_stack 0.5.1 or later
-- (test_sampling 'first', predict_row by model id, impute "mode", scale "robust"). Checked first, so that
-- CREATE EXTENSION says what to update.
DO LANGUAGE plpgsql $$
DECLARE
    v text := (SELECT e.extversion FROM pg_catalog.pg_extension AS e WHERE e.extname = 'ml_stack');
BEGIN
    IF v IS NULL OR pg_catalog.string_to_array(pg_catalog.regexp_replace(v, '[^0-9.].*$', ''), '.')::integer[]
                    < ARRAY[0, 5, 1] THEN
        RAISE EXCEPTION 'ml_stack_pgml needs ml_stack 0.5.1 or later; ml_stack % is installed', v
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'ALTER EXTENSION ml_stack UPDATE; then CREATE EXTENSION ml_stack_pgml.';
    END IF;
END
$$;
