-- Model management (0.5.0): dropping a model or a project with everything serving made of
-- it, MLflow-style aliases (predict('<project>@<alias>', ...)) and tags. Deleting from the
-- registry is ml_stack_admin's (api/grants.sql); these run with the caller's rights.

CREATE OR REPLACE FUNCTION ml_stack.drop_model(model_id bigint, force boolean DEFAULT false)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    m record;
BEGIN
    SELECT mo.id, mo.project_id, p.name AS project INTO m
    FROM ml_stack.models AS mo JOIN ml_stack.projects AS p ON p.id = mo.project_id
    WHERE mo.id = drop_model.model_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'model % does not exist', model_id
            USING ERRCODE = 'PT404', HINT = 'SELECT id, algorithm FROM ml_stack.models lists the models.';
    END IF;
    PERFORM FROM ml_stack.projects AS p WHERE p.id = m.project_id FOR UPDATE;   -- no deployment meanwhile
    IF EXISTS (SELECT FROM ml_stack.deployed_models AS d WHERE d.project_id = m.project_id AND d.model_id = m.id)
       AND NOT coalesce(force, false) THEN
        RAISE EXCEPTION 'model % is the deployed model of project "%"', m.id, m.project
            USING ERRCODE = 'object_in_use',
                  HINT = 'Deploy another model first (ml_stack.deploy), or drop_model(id, force => true): the project then serves nothing until its next deployment.';
    END IF;
    DELETE FROM ml_stack.models AS mo WHERE mo.id = m.id;
    RETURN true;
END
$$;
COMMENT ON FUNCTION ml_stack.drop_model(bigint, boolean) IS
    'ml_stack: delete a model and its compiled functions; refuses the deployed model unless force (the project then serves nothing until its next deployment; the history keeps the deployment, its model_id NULL).';

CREATE OR REPLACE FUNCTION ml_stack.drop_project(project_name text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM ml_stack.projects AS p WHERE p.name = drop_project.project_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'project "%" does not exist', project_name
            USING ERRCODE = 'PT404', HINT = 'SELECT name FROM ml_stack.projects lists the projects.';
    END IF;
    RETURN true;
END
$$;
COMMENT ON FUNCTION ml_stack.drop_project(text) IS
    'ml_stack: delete a project with its models, snapshots, deployments, aliases, run history, serving functions and HTTP endpoints.';

CREATE OR REPLACE FUNCTION ml_stack.set_alias(project_name text, alias text, model_id bigint)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    proj bigint;
BEGIN
    SELECT p.id INTO proj FROM ml_stack.projects AS p WHERE p.name = set_alias.project_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'project "%" does not exist', project_name
            USING ERRCODE = 'PT404', HINT = 'SELECT name FROM ml_stack.projects lists the projects.';
    ELSIF alias IS NULL OR alias !~ '^[A-Za-z_][A-Za-z0-9_-]*$' THEN
        RAISE EXCEPTION 'alias % is not a valid alias', coalesce(quote_literal(alias), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'An alias is a letter or "_" then letters, digits, "_" or "-", e.g. ''champion''.';
    ELSIF NOT EXISTS (SELECT FROM ml_stack.models AS m WHERE m.id = set_alias.model_id AND m.project_id = proj) THEN
        RAISE EXCEPTION 'model % is not a model of project "%"', model_id, project_name
            USING ERRCODE = 'PT404', HINT = format('SELECT id, algorithm FROM ml_stack.models WHERE project_id = %s lists them.', proj);
    ELSIF EXISTS (SELECT FROM ml_stack.projects AS p WHERE p.name = project_name || '@' || alias) THEN
        RAISE EXCEPTION 'a project is named "%@%"', project_name, alias
            USING ERRCODE = 'duplicate_object', HINT = 'predict(''<project>@<alias>'', ...) would be ambiguous: choose another alias.';
    END IF;
    INSERT INTO ml_stack.model_aliases AS a (project_id, alias, model_id) VALUES (proj, alias, model_id)
    ON CONFLICT ON CONSTRAINT model_aliases_pkey DO UPDATE SET model_id = EXCLUDED.model_id, created_at = now();
    RETURN model_id;
END
$$;
COMMENT ON FUNCTION ml_stack.set_alias(text, text, bigint) IS
    'ml_stack: point an alias of the project (e.g. ''champion'') at one of its models; predict(''<project>@<alias>'', ...) serves it.';

CREATE OR REPLACE FUNCTION ml_stack.delete_alias(project_name text, alias text)
RETURNS boolean
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH gone AS (
        DELETE FROM ml_stack.model_aliases AS a USING ml_stack.projects AS p
        WHERE p.id = a.project_id AND p.name = delete_alias.project_name AND a.alias = delete_alias.alias
        RETURNING 1
    ) SELECT EXISTS (SELECT FROM gone)
$$;
COMMENT ON FUNCTION ml_stack.delete_alias(text, text) IS
    'ml_stack: remove an alias (true if it existed).';

CREATE OR REPLACE FUNCTION ml_stack.set_tag(model_id bigint, key text, value text)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM ml_stack.models AS m WHERE m.id = set_tag.model_id) THEN
        RAISE EXCEPTION 'model % does not exist', model_id
            USING ERRCODE = 'PT404', HINT = 'SELECT id, algorithm FROM ml_stack.models lists the models.';
    ELSIF key IS NULL OR key = '' THEN
        RAISE EXCEPTION 'a tag needs a key' USING ERRCODE = 'invalid_parameter_value', HINT = 'e.g. set_tag(3, ''owner'', ''ada'').';
    ELSIF value IS NULL THEN
        DELETE FROM ml_stack.model_tags AS t WHERE t.model_id = set_tag.model_id AND t.key = set_tag.key;
    ELSE
        INSERT INTO ml_stack.model_tags AS t (model_id, key, value) VALUES (model_id, key, value)
        ON CONFLICT ON CONSTRAINT model_tags_pkey DO UPDATE SET value = EXCLUDED.value;
    END IF;
    RETURN (SELECT coalesce(jsonb_object_agg(t.key, t.value), '{}') FROM ml_stack.model_tags AS t
            WHERE t.model_id = set_tag.model_id);
END
$$;
COMMENT ON FUNCTION ml_stack.set_tag(bigint, text, text) IS
    'ml_stack: set a tag of a model (a NULL value removes it); returns the model''s tags as a JSON object.';
