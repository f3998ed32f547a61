-- ml_stack_python 0.2.0 install script. Generated from sql/ by 'make'; do not edit.
\echo Use "CREATE EXTENSION ml_stack_python" to load this file. \quit

-- source: python/ml_stack_python (generated: the package's modules as text)
CREATE OR REPLACE FUNCTION ml_stack._python_source(module text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $ml_stack_build$
SELECT CASE module
WHEN 'ml_stack_python' THEN $ml_stack_py$"""ml_stack_python: the Python engine of ml_stack (see docs/python-engine.md)."""
$ml_stack_py$
END
$ml_stack_build$;
CREATE OR REPLACE FUNCTION ml_stack._python_modules()
RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT ARRAY['ml_stack_python'] $$;
