-- pg_vectorize's search(where_sql => ...) pastes SQL text into its query. Here it is never run as SQL:
-- it is read as a conjunction of simple conditions and turned into ml_stack.search's filters, whose
-- values are bound parameters. What it reads:
--   <column> <op> <literal> [AND ...]   op: =, <>, !=, <, <=, >, >=, LIKE
--   <column> IN (<literal>, ...)        <column> IS [NOT] NULL
-- a literal: 'text' (with '' for a quote), a number, true or false; a column: a name, or "quoted".
-- Anything else (OR, functions, subqueries, comments, ;) is an error that says what is read.
CREATE OR REPLACE FUNCTION vectorize._where_filters(where_sql text)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ident CONSTANT text := '("(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)';
    literal CONSTANT text := '(''(?:[^'']|'''')*''|[-+]?[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?|true|false)';
    hint CONSTANT text := 'where_sql takes conditions joined by AND: column = ''text'', column > 10, column IN (''a'', ''b''), '
                          'column LIKE ''%x%'', column IS [NOT] NULL (or pass ml_stack.search''s filters jsonb).';
    rest text := where_sql;
    m text[];
    col text;
    op text;
    value jsonb;
    filters jsonb := '{}';
BEGIN
    IF where_sql IS NULL OR btrim(where_sql) = '' THEN
        RETURN NULL;
    ELSIF length(where_sql) > 10000 THEN
        RAISE EXCEPTION 'where_sql is longer than 10000 characters' USING ERRCODE = 'program_limit_exceeded', HINT = hint;
    END IF;
    LOOP
        m := regexp_match(rest, '^\s*' || ident || '\s+IS\s+(NOT\s+)?NULL\s*(?:\mAND\M(.*))?$', 'i');
        IF m IS NOT NULL THEN
            col := m[1]; op := CASE WHEN m[2] IS NULL THEN '=' ELSE '<>' END; value := 'null'; rest := m[3];
        ELSE
            m := regexp_match(rest, '^\s*' || ident || '\s+IN\s*\(((?:\s*' || literal || '\s*,)*\s*' || literal
                                    || '\s*)\)\s*(?:\mAND\M(.*))?$', 'i');
            IF m IS NOT NULL THEN
                col := m[1]; op := 'in'; rest := m[array_length(m, 1)];
                value := (SELECT jsonb_agg(vectorize._literal(l[1]) ORDER BY o)
                          FROM regexp_matches(m[2], literal, 'gi') WITH ORDINALITY AS r(l, o));
            ELSE
                m := regexp_match(rest, '^\s*' || ident || '\s*(<>|!=|<=|>=|=|<|>|\mLIKE\M)\s*' || literal
                                        || '\s*(?:\mAND\M(.*))?$', 'i');
                IF m IS NULL THEN
                    RAISE EXCEPTION 'where_sql is not a condition ml_stack reads: %', left(where_sql, 200)
                        USING ERRCODE = 'syntax_error', HINT = hint;
                END IF;
                col := m[1]; op := CASE lower(m[2]) WHEN '!=' THEN '<>' ELSE lower(m[2]) END;
                value := vectorize._literal(m[3]); rest := m[4];
            END IF;
        END IF;
        col := CASE WHEN col LIKE '"%' THEN replace(substr(col, 2, length(col) - 2), '""', '"') ELSE lower(col) END;
        IF filters -> col ? op THEN
            RAISE EXCEPTION 'where_sql has two "%" conditions on column "%"', op, col USING ERRCODE = 'syntax_error', HINT = hint;
        END IF;
        filters := filters || jsonb_build_object(col, coalesce(filters -> col, '{}') || jsonb_build_object(op, value));
        EXIT WHEN rest IS NULL;
        IF btrim(rest) = '' THEN
            RAISE EXCEPTION 'where_sql ends with AND: %', left(where_sql, 200) USING ERRCODE = 'syntax_error', HINT = hint;
        END IF;
    END LOOP;
    RETURN filters;
END
$$;

-- A literal of where_sql as a JSON value.
CREATE OR REPLACE FUNCTION vectorize._literal(token text)
RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN token LIKE '''%' THEN to_jsonb(replace(substr(token, 2, length(token) - 2), '''''', ''''))
                WHEN lower(token) IN ('true', 'false') THEN to_jsonb(lower(token)::boolean)
                ELSE to_jsonb(token::numeric) END
$$;
