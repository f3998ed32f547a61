-- Errors raised from compiled predictors. They are STABLE and take the feature array
-- so that the planner never runs them while simplifying a CASE arm that a row may not
-- reach (DESIGN §6): an IMMUTABLE one was folded when the array was a constant and
-- the project name or model id was not.

-- SECURITY DEFINER (as the errors below that read the registry): a role that may only
-- predict gets the names of the features without reading the snapshots.
CREATE OR REPLACE FUNCTION ml_stack._wrong_feature_count(model_id bigint, expected integer, features float8[])
RETURNS float8
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    names text;
BEGIN
    SELECT string_agg(CASE c.value ->> 'kind'
                          WHEN 'array' THEN format('%s[1:%s]', c.value ->> 'name', c.value ->> 'width')
                          WHEN 'text' THEN format('%s (text: %s features)', c.value ->> 'name', c.value ->> 'width')
                          ELSE c.value ->> 'name' END, ', ' ORDER BY c.ordinality)
    INTO names
    FROM jsonb_array_elements(ml_stack._model_layout(model_id)) WITH ORDINALITY AS c;   -- serving/typed.sql
    -- a model imported without column names has no DETAIL (RAISE refuses a NULL option)
    RAISE EXCEPTION 'model % takes % features, got %', model_id, expected, cardinality(features)
        USING ERRCODE = 'invalid_parameter_value',
              DETAIL = CASE WHEN names IS NOT NULL THEN format('The features, in order: %s.', left(names, 2000))
                            ELSE 'The model does not know their names.' END,
              HINT = 'Pass the features in the order of the training relation''s columns, label excluded.';
END
$$;

CREATE OR REPLACE FUNCTION ml_stack._no_probabilities(model_id bigint, features float8[])
RETURNS float8[]
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION 'model % is a regression model: it has no class probabilities', model_id
        USING ERRCODE = 'feature_not_supported',
              HINT = 'Use ml_stack.predict() for regression models.';
END
$$;

CREATE OR REPLACE FUNCTION ml_stack._engine_not_installed(model_id bigint, features float8[])
RETURNS float8
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION 'model % is served by the python engine, which is not installed in this database', model_id
        USING ERRCODE = 'feature_not_supported',
              HINT = 'CREATE EXTENSION ml_stack_python CASCADE (needs PL/Python, scikit-learn and xgboost); its models then serve at once.';
END
$$;

-- SQLSTATEs PT404 and PT503: PostgREST answers them as HTTP 404 and 503 (DESIGN §3c).
CREATE OR REPLACE FUNCTION ml_stack._no_deployed_model(project_name text, features float8[])
RETURNS float8
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    owner text;
BEGIN
    IF project_name IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT p.name INTO owner FROM ml_stack.projects AS p
    WHERE starts_with(project_name, p.name || '@') ORDER BY length(p.name) DESC LIMIT 1;
    IF NOT EXISTS (SELECT FROM ml_stack.projects AS p WHERE p.name = project_name) AND owner IS NOT NULL THEN
        -- '<project>@<alias>' (0.5.0)
        RAISE EXCEPTION 'project "%" has no alias "%"', owner, substr(project_name, length(owner) + 2)
            USING ERRCODE = 'PT404',
                  HINT = 'ml_stack.set_alias(project_name, alias, model_id) makes one; SELECT * FROM ml_stack.model_aliases lists them.';
    ELSIF NOT EXISTS (SELECT FROM ml_stack.projects AS p WHERE p.name = project_name) THEN
        RAISE EXCEPTION 'project "%" does not exist', project_name
            USING ERRCODE = 'PT404',
                  HINT = 'Train it first with ml_stack.train(); SELECT name FROM ml_stack.projects lists the projects.';
    END IF;
    RAISE EXCEPTION 'project "%" has no deployed model', project_name
        USING ERRCODE = 'PT503',
              HINT = 'Deploy one with ml_stack.deploy(project_name, ''best_score'').';
END
$$;

CREATE OR REPLACE FUNCTION ml_stack._unknown_model(model_id bigint, features float8[])
RETURNS float8
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF model_id IS NULL THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'model % does not exist', model_id
        USING ERRCODE = 'PT404',
              HINT = 'SELECT id, algorithm FROM ml_stack.models lists the models.';
END
$$;
