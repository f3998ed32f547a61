-- pgml.version(): what is installed, as PostgresML answers "VERSION (COMMIT)": here the drop-in's version
-- and ml_stack's.
CREATE OR REPLACE FUNCTION pgml.version()
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format('%s (ml_stack %s)', (SELECT e.extversion FROM pg_extension AS e WHERE e.extname = 'ml_stack_pgml'),
                  (SELECT e.extversion FROM pg_extension AS e WHERE e.extname = 'ml_stack'))
$$;
COMMENT ON FUNCTION pgml.version() IS 'ml_stack_pgml: its version and ml_stack''s, e.g. "0.5.1 (ml_stack 0.5.1)".';
