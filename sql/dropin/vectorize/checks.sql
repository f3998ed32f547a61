-- ml_stack_vectorize is pg_vectorize's API (schema vectorize) over ml_stack's vector jobs: it needs ml_stack 0.5.1 or later
-- (a dropped job takes the views of its embeddings along). Checked first, so that
-- CREATE EXTENSION says what to update.
DO LANGUAGE plpgsql $$
DECLARE
    v text := (SELECT e.extversion FROM pg_catalog.pg_extension AS e WHERE e.extname = 'ml_stack');
BEGIN
    IF v IS NULL OR pg_catalog.string_to_array(pg_catalog.regexp_replace(v, '[^0-9.].*$', ''), '.')::integer[]
                    < ARRAY[0, 5, 1] THEN
        RAISE EXCEPTION 'ml_stack_vectorize needs ml_stack 0.5.1 or later; ml_stack % is installed', v
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'ALTER EXTENSION ml_stack UPDATE; then CREATE EXTENSION ml_stack_vectorize.';
    END IF;
END
$$;
