-- Resolve a user-given relation name to its OID, or fail with a clear message.
-- to_regclass() parses the name like SQL would (quotes, schema), so nothing in
-- it is ever executed; the OID is what later dynamic SQL uses (as regclass text).
CREATE OR REPLACE FUNCTION ml_stack._resolve_relation(relation_name text, caller_search_path text)
RETURNS regclass
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rel regclass;
BEGIN
    IF relation_name IS NULL OR btrim(relation_name) = '' THEN
        RAISE EXCEPTION 'relation_name is required'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Name the table or view to train on, e.g. ml_stack.train(''p'', ''regression'', ''my_table'', ''y'').';
    END IF;
    BEGIN
        -- Resolve with the caller's search_path, as a query they typed would;
        -- the function's own pinned path comes back right after.
        PERFORM set_config('search_path', coalesce(caller_search_path, 'pg_catalog, pg_temp'), true);
        rel := to_regclass(relation_name);
        PERFORM set_config('search_path', 'pg_catalog, pg_temp', true);
    EXCEPTION WHEN OTHERS THEN
        rel := NULL;  -- invalid name syntax: reported below like a missing relation
    END;
    IF rel IS NULL THEN
        RAISE EXCEPTION 'relation "%" does not exist', relation_name
            USING ERRCODE = 'undefined_table',
                  HINT = 'Check the name and schema (use ''schema.table''); quote mixed-case names as in SQL: ''"MyTable"''.';
    END IF;
    IF (SELECT c.relkind FROM pg_catalog.pg_class AS c WHERE c.oid = rel) NOT IN ('r', 'v', 'm', 'p', 'f') THEN
        RAISE EXCEPTION '"%" is not a table or view', relation_name
            USING ERRCODE = 'wrong_object_type',
                  HINT = 'Train on a table, view, materialized view or foreign table.';
    END IF;
    RETURN rel;
END
$$;

-- The numeric hyperparameter `name` of `hyperparams`, or `default_value`; a clear
-- error when it is not a number or outside [min_value, +inf).
CREATE OR REPLACE FUNCTION ml_stack._numeric_hyperparam(
    hyperparams jsonb, name text, default_value float8, min_value float8, exclusive_min boolean DEFAULT false)
RETURNS float8
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v jsonb := hyperparams -> name;
    x float8;
BEGIN
    IF v IS NULL OR jsonb_typeof(v) = 'null' THEN
        RETURN default_value;
    END IF;
    IF jsonb_typeof(v) <> 'number' THEN
        RAISE EXCEPTION 'hyperparameter "%" must be a number, got %', name, v::text
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('e.g. hyperparams => ''{"%s": %s}''', name, default_value);
    END IF;
    x := v::text::float8;
    IF x < min_value OR (exclusive_min AND x = min_value) OR x = 'Infinity'::float8 THEN
        RAISE EXCEPTION 'hyperparameter "%" must be % %, got %', name,
            CASE WHEN exclusive_min THEN '>' ELSE '>=' END, min_value, x
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('e.g. hyperparams => ''{"%s": %s}''', name, default_value);
    END IF;
    RETURN x;
END
$$;

-- A column of `rel` that holds text (text, varchar, char, citext or a domain over
-- them), or a clear error listing the text columns there are.
CREATE OR REPLACE FUNCTION ml_stack._text_column(rel regclass, column_name text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    typ regtype;
    text_columns text;
BEGIN
    SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO text_columns
    FROM pg_catalog.pg_attribute AS a
    WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped
      AND ml_stack._is_text_type(a.atttypid);
    SELECT a.atttypid::regtype INTO typ FROM pg_catalog.pg_attribute AS a
    WHERE a.attrelid = rel AND a.attname = column_name AND a.attnum > 0 AND NOT a.attisdropped;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'column "%" does not exist in relation %', column_name, rel
            USING ERRCODE = 'undefined_column',
                  HINT = coalesce(format('Its text columns are: %s.', text_columns), 'It has no text columns.');
    END IF;
    IF NOT ml_stack._is_text_type(typ) THEN
        RAISE EXCEPTION 'column "%" of % has type %, not text', column_name, rel, typ
            USING ERRCODE = 'datatype_mismatch',
                  HINT = coalesce(format('Its text columns are: %s.', text_columns),
                                  'It has no text columns; cast one in a view (col::text).');
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION ml_stack._is_text_type(typ oid)
RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT t.typcategory = 'S' FROM pg_catalog.pg_type AS t
    WHERE t.oid = CASE WHEN (SELECT d.typtype FROM pg_catalog.pg_type AS d WHERE d.oid = typ) = 'd'
                       THEN (SELECT d.typbasetype FROM pg_catalog.pg_type AS d WHERE d.oid = typ) ELSE typ END
$$;

-- A hot standby serves predictions but writes nothing: what would write is refused first, with where to run it
-- (instead of an error about a temporary table or a read-only transaction from deep inside).
CREATE OR REPLACE FUNCTION ml_stack._refuse_on_standby(what text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF pg_is_in_recovery() THEN
        RAISE EXCEPTION '% cannot run on a hot standby: it writes the registry', what
            USING ERRCODE = 'read_only_sql_transaction',
                  HINT = 'Run it on the primary; this server serves the result once it has replayed it.';
    END IF;
END
$$;
