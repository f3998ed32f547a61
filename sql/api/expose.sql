-- HTTP endpoints through PostgREST (DESIGN §3c). ml_stack.expose() makes a project's
-- endpoints in an API schema that holds nothing else, for PostgREST's db-schemas:
--   predict_<project>(<feature columns>)         float8: the prediction
--   predict_proba_<project>(<feature columns>)   float8[]: class probabilities (classifiers)
--   classify_<project>(<feature columns>)        jsonb: {"label": ..., "probabilities": {"<class>": ...}}
--   predict_batch_<project>(rows jsonb)          a table: one row per element of a JSON array of rows
-- Each is a STABLE PL/pgSQL function (PostgREST serves it on GET and POST, in a READ ONLY
-- transaction) that calls the project's typed serving function (serving/typed.sql), so it
-- follows the current deployment. SECURITY DEFINER, owned by ml_stack's owner, with a pinned
-- search_path: the API role needs USAGE on the API schema and EXECUTE on the endpoints, and
-- nothing in schema ml_stack (no registry, no training relations, no other project).
-- PL/pgSQL rather than SQL: a SECURITY DEFINER SQL function is never inlined, and PL/pgSQL
-- keeps its plan for the session (PostgREST's pooled connections) where SQL would re-plan
-- the body at every request. The endpoints are remade from ml_stack.endpoints whenever
-- serving changes (_refresh_serving), and every change sends NOTIFY pgrst, 'reload schema'.

-- A prediction with its probabilities as the classify endpoints return it: the class of
-- the largest probability (the first on ties), probabilities keyed by class.
CREATE OR REPLACE FUNCTION ml_stack._labelled(classes float8[], probabilities float8[])
RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN probabilities IS NOT NULL THEN
        jsonb_build_object('label', classes[ml_stack._argmax(probabilities)],
                           'probabilities', (SELECT jsonb_object_agg(u.c::text, u.p) FROM unnest(classes, probabilities) AS u(c, p)))
    END
$$;

-- The rows of a batch endpoint must be a JSON array (of objects: jsonb_to_recordset says so).
CREATE OR REPLACE FUNCTION ml_stack._check_batch_rows(rows jsonb)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF jsonb_typeof(rows) IS DISTINCT FROM 'array' THEN
        RAISE EXCEPTION 'rows must be a JSON array of objects (one per row, feature columns by name)'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'e.g. {"rows": [{"a": 1}, {"a": 2}]}';
    END IF;
END
$$;

-- The names of a project's endpoints (NULL for those its task has not).
CREATE OR REPLACE FUNCTION ml_stack._endpoint_names(project_name text, task text,
    OUT predict text, OUT predict_proba text, OUT classify text, OUT predict_batch text)
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT 'predict_' || project_name,
           CASE WHEN task = 'classification' THEN 'predict_proba_' || project_name END,
           CASE WHEN task = 'classification' THEN 'classify_' || project_name END,
           'predict_batch_' || project_name
$$;

-- Why a role may not be granted endpoints, or NULL: an API role runs every request, so it
-- must not be able to do more than call them. Membership counts whether or not it inherits:
-- a NOINHERIT member can still SET ROLE to the role it belongs to.
CREATE OR REPLACE FUNCTION ml_stack._api_role_problem(role_name text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
        WHEN r.oid IS NULL THEN format('role "%s" does not exist', role_name)
        WHEN r.rolsuper THEN format('role "%s" is a superuser', role_name)
        WHEN r.rolbypassrls THEN format('role "%s" has BYPASSRLS', role_name)
        WHEN r.rolcreaterole THEN format('role "%s" has CREATEROLE (it could grant itself other roles)', role_name)
        WHEN r.oid = e.extowner THEN format('role "%s" owns ml_stack', role_name)
        WHEN EXISTS (SELECT FROM pg_catalog.pg_roles AS g
                     WHERE g.rolname IN ('ml_stack_admin', 'ml_stack_trainer', 'ml_stack_predictor')
                       AND pg_catalog.pg_has_role(r.oid, g.oid, 'MEMBER')) THEN
            format('role "%s" is a member of an ml_stack group role (it could read the registry or train)', role_name)
        WHEN pg_catalog.pg_has_role(r.oid, e.extowner, 'MEMBER') THEN format('role "%s" is a member of ml_stack''s owner', role_name)
        ELSE (SELECT format('role "%s" is a member of role "%s", which is a superuser or has BYPASSRLS or CREATEROLE',
                            role_name, g.rolname)
              FROM pg_catalog.pg_roles AS g
              WHERE (g.rolsuper OR g.rolbypassrls OR g.rolcreaterole) AND g.oid <> r.oid
                AND pg_catalog.pg_has_role(r.oid, g.oid, 'MEMBER')
              ORDER BY g.rolname LIMIT 1)
    END
    FROM pg_catalog.pg_extension AS e
    LEFT JOIN pg_catalog.pg_roles AS r ON r.rolname = role_name
    WHERE e.extname = 'ml_stack'
$$;

-- Why a project's endpoints may not be made in a schema, or NULL: the schema is one PostgREST may
-- publish whole, and no other exposed project there has an endpoint of the same name
-- ("proba_x"'s predict endpoint is "x"'s predict_proba endpoint).
CREATE OR REPLACE FUNCTION ml_stack._endpoint_schema_problem(project_id bigint, schema_name text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
        WHEN schema_name IS NULL OR schema_name = '' OR schema_name IN ('ml_stack', 'public', 'information_schema')
             OR schema_name LIKE 'pg\_%' OR schema_name IN (SELECT e.extnamespace::regnamespace::text FROM pg_catalog.pg_extension AS e)
            THEN format('schema "%s" cannot be an API schema', schema_name)
        ELSE (SELECT format('endpoint %s.%s would be both project "%s"''s and project "%s"''s', schema_name, mine.u, p.name, other.name)
              FROM ml_stack.projects AS p,
                   ml_stack._endpoint_names(p.name, p.task) AS en,
                   unnest(ARRAY[en.predict, en.predict_proba, en.classify, en.predict_batch]) AS mine(u),
                   ml_stack.endpoints AS oe JOIN ml_stack.projects AS other ON other.id = oe.project_id,
                   ml_stack._endpoint_names(other.name, other.task) AS on_,
                   unnest(ARRAY[on_.predict, on_.predict_proba, on_.classify, on_.predict_batch]) AS theirs(u)
              WHERE p.id = _endpoint_schema_problem.project_id AND oe.schema_name = _endpoint_schema_problem.schema_name
                AND other.id <> p.id AND mine.u = theirs.u
              ORDER BY other.id LIMIT 1)
    END
$$;

-- Whether the schema holds anything but the endpoints of exposed projects.
CREATE OR REPLACE FUNCTION ml_stack._api_schema_foreign_objects(schema_name text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT string_agg(o, ', ' ORDER BY o) FROM (
        SELECT format('%s %s', CASE c.relkind WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' WHEN 'S' THEN 'sequence'
                                              ELSE 'table' END, c.relname) AS o
        FROM pg_catalog.pg_class AS c JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.nspname = schema_name AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
        UNION ALL
        SELECT format('function %s', p.oid::regprocedure)
        FROM pg_catalog.pg_proc AS p JOIN pg_catalog.pg_namespace AS n ON n.oid = p.pronamespace
        WHERE n.nspname = schema_name
          AND p.proname NOT IN (SELECT u.name
                                FROM ml_stack.endpoints AS e JOIN ml_stack.projects AS pr ON pr.id = e.project_id,
                                     ml_stack._endpoint_names(pr.name, pr.task) AS en,
                                     unnest(ARRAY[en.predict, en.predict_proba, en.classify, en.predict_batch]) AS u(name)
                                WHERE e.schema_name = _api_schema_foreign_objects.schema_name)
        LIMIT 5) AS f
$$;

-- Create, or replace in place, one endpoint; with other arguments or another result, the old one
-- is dropped first. Grants EXECUTE to the API roles only. Returns whether anything changed.
CREATE OR REPLACE FUNCTION ml_stack._define_endpoint(schema_name text, name text, arguments text, result text, body text,
                                                     description text, grant_to text[])
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    fn regprocedure;
    kept regprocedure;
    changed boolean := false;
    r text;
BEGIN
    FOR fn IN SELECT p.oid FROM pg_catalog.pg_proc AS p JOIN pg_catalog.pg_namespace AS n ON n.oid = p.pronamespace
              WHERE n.nspname = schema_name AND p.proname = name LOOP
        IF pg_catalog.pg_get_function_identity_arguments(fn) = arguments AND pg_catalog.pg_get_function_result(fn) = result THEN
            kept := fn;
        ELSE
            EXECUTE format('DROP FUNCTION %s', fn);
            changed := true;
        END IF;
    END LOOP;
    IF kept IS NULL OR (SELECT p.prosrc <> body FROM pg_catalog.pg_proc AS p WHERE p.oid = kept) THEN
        PERFORM ml_stack._create_or_replace(
            format('CREATE OR REPLACE FUNCTION %I.%I(%s) RETURNS %s LANGUAGE plpgsql STABLE SECURITY DEFINER '
                   'SET search_path = pg_catalog, pg_temp AS %L', schema_name, name, arguments, result, body), kept);
        changed := true;
    END IF;
    SELECT p.oid INTO fn FROM pg_catalog.pg_proc AS p JOIN pg_catalog.pg_namespace AS n ON n.oid = p.pronamespace
    WHERE n.nspname = schema_name AND p.proname = name;
    PERFORM ml_stack._release_from_extension(fn);
    -- every refresh of serving comes here: leave the catalog alone when it already says all this
    IF NOT changed AND obj_description(fn, 'pg_proc') IS NOT DISTINCT FROM description
       AND ARRAY(SELECT DISTINCT a.grantee::regrole::text FROM pg_catalog.pg_proc AS p, aclexplode(p.proacl) AS a
                 WHERE p.oid = fn AND a.grantee <> p.proowner ORDER BY 1)
           = ARRAY(SELECT DISTINCT quote_ident(g) FROM unnest(grant_to) AS g ORDER BY 1) THEN
        RETURN false;
    END IF;
    EXECUTE format('COMMENT ON FUNCTION %s IS %L', fn, description);
    EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', fn);
    -- roles granted before (an expose with other roles) that are not API roles of it now
    FOR r IN SELECT a.grantee::regrole::text FROM pg_catalog.pg_proc AS p, aclexplode(p.proacl) AS a
             WHERE p.oid = fn AND a.grantee <> 0 AND a.grantee <> p.proowner
               AND a.grantee::regrole::text <> ALL (SELECT quote_ident(g) FROM unnest(grant_to) AS g) LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM %s', fn, r);
    END LOOP;
    FOREACH r IN ARRAY grant_to LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', fn, r);
    END LOOP;
    RETURN changed;
END
$$;

-- (Re)make a project's endpoints in one API schema from its serving functions; drops the
-- endpoints that its model no longer has. Returns whether anything changed.
CREATE OR REPLACE FUNCTION ml_stack._define_endpoints(project_id bigint, schema_name text, grant_to text[])
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d record;
    names record;
    arguments text;
    positional text;
    record_columns text;
    record_names text;
    classes text;
    about text;
    changed boolean := false;
    defined boolean;
BEGIN
    SELECT dm.project_name, dm.task, dm.model_id, dm.algorithm, dm.serving_function, dm.serving_proba_function, m.classes
    INTO d
    FROM ml_stack.deployed_models AS dm JOIN ml_stack.models AS m ON m.id = dm.model_id
    WHERE dm.project_id = _define_endpoints.project_id;
    IF d.serving_function IS NULL THEN
        RETURN false;   -- nothing deployed now: the endpoints stay, their serving function raises why
    END IF;
    names := ml_stack._endpoint_names(d.project_name, d.task);
    arguments := pg_catalog.pg_get_function_identity_arguments(d.serving_function);
    SELECT string_agg(format('$%s', a.n), ', ' ORDER BY a.n),
           string_agg(format('%I %s', a.name, format_type(a.typ, NULL)), ', ' ORDER BY a.n),
           string_agg(format('r.%I', a.name), ', ' ORDER BY a.n)
    INTO positional, record_columns, record_names
    FROM pg_catalog.pg_proc AS p,
         unnest(p.proargnames, p.proargtypes::oid[]) WITH ORDINALITY AS a(name, typ, n)
    WHERE p.oid = d.serving_function;
    classes := format('%L::float8[]', d.classes);
    about := format(E'Project "%s" (%s), served by its deployed model (model %s, %s) through ml_stack.\n'
                    'Arguments: the feature columns of the training relation, by name (%s).',
                    d.project_name, d.task, d.model_id, d.algorithm, arguments);

    -- (each call a statement of its own: in "f() OR changed" SQL may skip f())
    defined := ml_stack._define_endpoint(schema_name, names.predict, arguments, 'double precision',
        format('BEGIN RETURN %s(%s); END', d.serving_function::oid::regproc, positional),
        format(E'Prediction of %s: %s.\n%s', d.project_name,
               CASE WHEN d.task = 'classification' THEN 'the class' ELSE 'the value' END, about), grant_to);
    changed := changed OR defined;
    IF d.task = 'classification' THEN
        defined := ml_stack._define_endpoint(schema_name, names.predict_proba, arguments, 'double precision[]',
            format('BEGIN RETURN %s(%s); END', d.serving_proba_function::oid::regproc, positional),
            format(E'Class probabilities of %s, one per class (classes ascending: %s).\n%s', d.project_name,
                   array_to_string(d.classes, ', '), about), grant_to);
        changed := changed OR defined;
        defined := ml_stack._define_endpoint(schema_name, names.classify, arguments, 'jsonb',
            format('BEGIN RETURN ml_stack._labelled(%s, %s(%s)); END', classes, d.serving_proba_function::oid::regproc, positional),
            format(E'Class and probabilities of %s: {"label": ..., "probabilities": {"<class>": ...}}.\n%s', d.project_name, about),
            grant_to);
        changed := changed OR defined;
        defined := ml_stack._define_endpoint(schema_name, names.predict_batch, 'rows jsonb',
            'TABLE("row" integer, label double precision, probabilities jsonb)',
            format($b$#variable_conflict use_column
BEGIN
    PERFORM ml_stack._check_batch_rows(rows);
    RETURN QUERY SELECT s.n::integer, (s.l ->> 'label')::float8, s.l -> 'probabilities'
    FROM (SELECT r.ml_stack_row_number AS n, ml_stack._labelled(%s, %s(%s)) AS l
          FROM ROWS FROM (jsonb_to_recordset(rows) AS (%s)) WITH ORDINALITY AS r(%s, ml_stack_row_number)) AS s
    ORDER BY s.n;
END$b$, classes, d.serving_proba_function::oid::regproc, record_names, record_columns,
                   (SELECT string_agg(format('%I', a.name), ', ' ORDER BY a.n)
                    FROM pg_catalog.pg_proc AS p, unnest(p.proargnames) WITH ORDINALITY AS a(name, n) WHERE p.oid = d.serving_function)),
            format(E'Class and probabilities of %s for many rows: {"rows": [{<feature columns>}, ...]} gives one (row, label, probabilities) per row, in order.\n%s',
                   d.project_name, about), grant_to);
        changed := changed OR defined;
    ELSE
        defined := ml_stack._define_endpoint(schema_name, names.predict_batch, 'rows jsonb',
            'TABLE("row" integer, prediction double precision)',
            format($b$#variable_conflict use_column
BEGIN
    PERFORM ml_stack._check_batch_rows(rows);
    RETURN QUERY SELECT r.ml_stack_row_number::integer, %s(%s)
    FROM ROWS FROM (jsonb_to_recordset(rows) AS (%s)) WITH ORDINALITY AS r(%s, ml_stack_row_number)
    ORDER BY r.ml_stack_row_number;
END$b$, d.serving_function::oid::regproc, record_names, record_columns,
                   (SELECT string_agg(format('%I', a.name), ', ' ORDER BY a.n)
                    FROM pg_catalog.pg_proc AS p, unnest(p.proargnames) WITH ORDINALITY AS a(name, n) WHERE p.oid = d.serving_function)),
            format(E'Predictions of %s for many rows: {"rows": [{<feature columns>}, ...]} gives one (row, prediction) per row, in order.\n%s',
                   d.project_name, about), grant_to);
        changed := changed OR defined;
    END IF;
    RETURN changed;
END
$$;

-- Remake every exposed project's endpoints (after any change of serving); tells PostgREST
-- to reload its schema cache when an endpoint changed.
CREATE OR REPLACE FUNCTION ml_stack._refresh_endpoints()
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e record;
    changed boolean := false;
BEGIN
    IF to_regclass('ml_stack.endpoints') IS NULL THEN
        RETURN;   -- during an upgrade, before the table exists
    END IF;
    FOR e IN SELECT en.project_id, en.schema_name, en.grant_to,
                    coalesce(ml_stack._endpoint_schema_problem(en.project_id, en.schema_name),
                             'it holds ' || ml_stack._api_schema_foreign_objects(en.schema_name),
                             (SELECT string_agg(ml_stack._api_role_problem(g), '; ') FROM unnest(en.grant_to) AS g)) AS problem
             FROM ml_stack.endpoints AS en
             WHERE to_regnamespace(quote_ident(en.schema_name)) IS NOT NULL ORDER BY en.project_id, en.schema_name LOOP
        -- what expose() checked is checked again: a role may have been granted more since, and
        -- a row may have been written without expose()
        IF e.problem IS NOT NULL THEN
            RAISE WARNING 'ml_stack: the endpoints of project % in schema "%" are not refreshed: %', e.project_id, e.schema_name, e.problem
                USING HINT = 'Fix the role or schema and call ml_stack.expose() again, or ml_stack.unexpose() the project.';
            CONTINUE;
        END IF;
        -- (not "f() OR changed": SQL may skip f() once changed is true)
        IF ml_stack._define_endpoints(e.project_id, e.schema_name, e.grant_to) THEN
            changed := true;
        END IF;
    END LOOP;
    IF changed THEN
        NOTIFY pgrst, 'reload schema';
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION ml_stack.expose(project_name text, schema_name text DEFAULT 'api',
                                           grant_to text[] DEFAULT ARRAY['web_anon'])
RETURNS SETOF regprocedure
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    proj record;
    names record;
    problem text;
    r text;
BEGIN
    PERFORM ml_stack._refuse_on_standby('ml_stack.expose');
    SELECT p.id, p.name, p.task INTO proj FROM ml_stack.projects AS p WHERE p.name = expose.project_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'project "%" does not exist', project_name
            USING ERRCODE = 'undefined_object', HINT = 'SELECT name FROM ml_stack.projects lists the projects.';
    END IF;
    IF (SELECT d.serving_function FROM ml_stack.deployed_models AS d WHERE d.project_id = proj.id) IS NULL THEN
        RAISE EXCEPTION 'project "%" has no deployed model with named feature columns to expose', project_name
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Deploy a model trained on a relation (ml_stack.deploy); a model imported without column names has no typed endpoint.';
    END IF;
    problem := ml_stack._endpoint_schema_problem(proj.id, schema_name);
    IF problem LIKE 'schema %' THEN
        RAISE EXCEPTION '%', problem
            USING ERRCODE = 'invalid_schema_name',
                  HINT = 'An API schema holds the endpoints only (PostgREST publishes everything in it): use a schema of its own, e.g. ''api''.';
    ELSIF problem IS NOT NULL THEN
        RAISE EXCEPTION 'cannot expose project "%" in schema "%": %', project_name, schema_name, problem
            USING ERRCODE = 'duplicate_function',
                  HINT = 'Expose one of the two projects in another API schema, or rename it.';
    END IF;
    IF grant_to IS NULL OR cardinality(grant_to) = 0 THEN
        RAISE EXCEPTION 'grant_to names no role' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Name the roles PostgREST switches to, e.g. ARRAY[''web_anon''] (its db-anon-role).';
    END IF;
    FOREACH r IN ARRAY grant_to LOOP
        problem := ml_stack._api_role_problem(r);
        IF problem IS NOT NULL THEN
            RAISE EXCEPTION 'cannot grant endpoints to role "%": %', r, problem
                USING ERRCODE = CASE WHEN problem LIKE '%does not exist' THEN 'undefined_object' ELSE 'insufficient_privilege' END,
                      HINT = 'An API role calls the endpoints and nothing else: CREATE ROLE web_anon NOLOGIN, then GRANT web_anon TO authenticator.';
        END IF;
    END LOOP;
    names := ml_stack._endpoint_names(proj.name, proj.task);
    IF (SELECT max(octet_length(u)) FROM unnest(ARRAY[names.predict, names.predict_proba, names.classify, names.predict_batch]) AS u) > 63 THEN
        RAISE EXCEPTION 'the endpoint names of project "%" would be longer than 63 bytes, PostgreSQL''s limit', project_name
            USING ERRCODE = 'name_too_long', HINT = 'Rename the project to a shorter name (at most 49 bytes).';
    END IF;
    IF to_regnamespace(quote_ident(schema_name)) IS NULL THEN
        EXECUTE format('CREATE SCHEMA %I', schema_name);
        EXECUTE format('COMMENT ON SCHEMA %I IS %L', schema_name, 'ml_stack API schema: the HTTP endpoints of exposed projects (ml_stack.expose), for PostgREST''s db-schemas.');
    END IF;
    INSERT INTO ml_stack.endpoints AS e (project_id, schema_name, grant_to)
    VALUES (proj.id, schema_name, grant_to)
    ON CONFLICT ON CONSTRAINT endpoints_pkey DO UPDATE SET grant_to = EXCLUDED.grant_to;
    problem := ml_stack._api_schema_foreign_objects(schema_name);
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION 'schema "%" holds more than ml_stack''s endpoints: %', schema_name, problem
            USING ERRCODE = 'invalid_schema_name',
                  HINT = 'PostgREST publishes every function of its schemas: give the endpoints a schema of their own.';
    END IF;
    FOREACH r IN ARRAY grant_to LOOP
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', schema_name, r);
    END LOOP;
    PERFORM ml_stack._define_endpoints(proj.id, schema_name, grant_to);
    NOTIFY pgrst, 'reload schema';
    RETURN QUERY SELECT p.oid::regprocedure
                 FROM pg_catalog.pg_proc AS p JOIN pg_catalog.pg_namespace AS n ON n.oid = p.pronamespace
                 WHERE n.nspname = schema_name
                   AND p.proname IN (names.predict, names.predict_proba, names.classify, names.predict_batch)
                 ORDER BY p.proname;
END
$$;
COMMENT ON FUNCTION ml_stack.expose(text, text, text[]) IS
    'ml_stack: make the project''s HTTP endpoints (predict_, predict_proba_, classify_, predict_batch_<project>) in an API schema for PostgREST, granted to the API roles only; they follow the current deployment.';

-- Drop a project's endpoints from an API schema and tell PostgREST.
CREATE OR REPLACE FUNCTION ml_stack._drop_endpoints(schema_name text, project_name text, task text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    names record := ml_stack._endpoint_names(project_name, task);
    fn regprocedure;
BEGIN
    FOR fn IN SELECT p.oid FROM pg_catalog.pg_proc AS p JOIN pg_catalog.pg_namespace AS n ON n.oid = p.pronamespace
              WHERE n.nspname = schema_name
                AND p.proname IN (names.predict, names.predict_proba, names.classify, names.predict_batch) LOOP
        EXECUTE format('DROP FUNCTION %s', fn);
    END LOOP;
    NOTIFY pgrst, 'reload schema';
END
$$;

-- A deleted project takes its endpoints with it (its endpoints rows go by the foreign key's
-- cascade, after which the project's name, hence the endpoints' names, would be unknown).
-- As the owner, who owns the endpoints: a member of ml_stack_admin may delete projects.
CREATE OR REPLACE FUNCTION ml_stack._drop_deleted_project_endpoints()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM ml_stack._drop_endpoints(e.schema_name, OLD.name, OLD.task)
    FROM ml_stack.endpoints AS e WHERE e.project_id = OLD.id;
    RETURN OLD;
END
$$;

CREATE OR REPLACE TRIGGER drop_endpoints BEFORE DELETE ON ml_stack.projects
    FOR EACH ROW EXECUTE FUNCTION ml_stack._drop_deleted_project_endpoints();

CREATE OR REPLACE FUNCTION ml_stack.unexpose(project_name text, schema_name text DEFAULT 'api')
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    proj record;
BEGIN
    SELECT p.id, p.name, p.task INTO proj FROM ml_stack.projects AS p WHERE p.name = unexpose.project_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'project "%" does not exist', project_name
            USING ERRCODE = 'undefined_object', HINT = 'SELECT name FROM ml_stack.projects lists the projects.';
    END IF;
    DELETE FROM ml_stack.endpoints AS e WHERE e.project_id = proj.id AND e.schema_name = unexpose.schema_name;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM ml_stack._drop_endpoints(schema_name, proj.name, proj.task);
    RETURN true;
END
$$;
COMMENT ON FUNCTION ml_stack.unexpose(text, text) IS
    'ml_stack: remove the project''s HTTP endpoints from the API schema (true if it was exposed there).';

-- A postgrest.conf for the API schema (PostgREST 12's settings).
CREATE OR REPLACE FUNCTION ml_stack.postgrest_config(schema_name text DEFAULT 'api', anon_role text DEFAULT 'web_anon',
                                                     authenticator text DEFAULT 'authenticator', jwt_secret text DEFAULT NULL,
                                                     db_uri text DEFAULT NULL, server_port integer DEFAULT 3000)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    problem text := ml_stack._api_role_problem(anon_role);
BEGIN
    -- a line break in a name would start a setting of its own in the file
    IF concat(schema_name, anon_role, authenticator, jwt_secret, db_uri) ~ '[[:cntrl:]]' THEN
        RAISE EXCEPTION 'the names and values of a postgrest.conf cannot hold control characters (line breaks, tabs)'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Rename the schema or role.';
    END IF;
    IF problem IS NOT NULL AND problem NOT LIKE '%does not exist' THEN
        RAISE EXCEPTION 'role "%" cannot be PostgREST''s anonymous role: %', anon_role, problem
            USING ERRCODE = 'insufficient_privilege', HINT = 'CREATE ROLE web_anon NOLOGIN; GRANT web_anon TO authenticator;';
    END IF;
    RETURN format(E'# postgrest.conf for the ml_stack endpoints of database %1$s (ml_stack.postgrest_config)\n'
                  'db-uri = "%2$s"\n'
                  'db-schemas = "%3$s"\n'
                  'db-anon-role = "%4$s"\n'
                  '%5$s\n'
                  '# the endpoints need nothing of public or ml_stack: no extra search path\n'
                  'db-extra-search-path = ""\n'
                  'db-pool = 10\n'
                  'server-host = "127.0.0.1"\n'
                  'server-port = %6$s\n'
                  'openapi-mode = "follow-privileges"\n'
                  '# the authenticator: CREATE ROLE %7$s LOGIN NOINHERIT PASSWORD ''...''; GRANT %4$s TO %7$s;\n',
                  current_database(),
                  coalesce(db_uri, format('postgres://%s@localhost:%s/%s', authenticator, current_setting('port'), current_database())),
                  replace(schema_name, '"', '\"'), replace(anon_role, '"', '\"'),
                  CASE WHEN jwt_secret IS NULL THEN '# jwt-secret = "<at least 32 characters>"   (JWT roles: the "role" claim)'
                       ELSE format('jwt-secret = "%s"', replace(jwt_secret, '"', '\"')) END,
                  server_port, authenticator);
END
$$;
COMMENT ON FUNCTION ml_stack.postgrest_config(text, text, text, text, text, integer) IS
    'ml_stack: a postgrest.conf serving the API schema of ml_stack.expose() (PostgREST 12), with the anonymous role checked.';
