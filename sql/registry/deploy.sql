-- The key metric that deploy decisions compare: higher is better.
CREATE OR REPLACE FUNCTION ml_stack._key_metric(task text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT CASE task WHEN 'regression' THEN 'r2' WHEN 'classification' THEN 'f1' END $$;

-- Record a deployment (the registry triggers recompile the dispatch, so it serves
-- every session once the transaction commits). Returns the model id.
CREATE OR REPLACE FUNCTION ml_stack._deploy(project_name text, strategy text, algorithm text DEFAULT NULL, model_id bigint DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    proj   ml_stack.projects;
    chosen bigint;
    metric text;
    stack  bigint[] := '{}';
    kept   bigint[];
    dropped boolean;
    entry  bigint;
    dep    record;
BEGIN
    IF strategy IS NULL OR strategy NOT IN ('best_score', 'most_recent', 'rollback', 'specific') THEN
        RAISE EXCEPTION 'unknown deploy strategy "%"', strategy
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use ''best_score'', ''most_recent'' or ''rollback'', or ml_stack.deploy(model_id).';
    END IF;
    IF strategy = 'specific' THEN
        IF model_id IS NULL THEN
            RAISE EXCEPTION 'model_id is required' USING ERRCODE = 'invalid_parameter_value',
                HINT = 'Deploy a specific model with ml_stack.deploy(model_id); SELECT id FROM ml_stack.models lists them.';
        END IF;
        SELECT p.* INTO proj FROM ml_stack.projects AS p JOIN ml_stack.models AS m ON m.project_id = p.id
        WHERE m.id = model_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'model % does not exist', model_id
                USING ERRCODE = 'undefined_object', HINT = 'SELECT id, algorithm FROM ml_stack.models lists the models.';
        END IF;
        chosen := model_id;
    ELSE
        SELECT p.* INTO proj FROM ml_stack.projects AS p WHERE p.name = project_name;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'project "%" does not exist', project_name
                USING ERRCODE = 'undefined_object', HINT = 'SELECT name FROM ml_stack.projects lists the projects.';
        END IF;
    END IF;
    -- one deployment at a time per project
    PERFORM 1 FROM ml_stack.projects AS p WHERE p.id = proj.id FOR UPDATE;

    CASE strategy
        WHEN 'best_score' THEN
            metric := ml_stack._key_metric(proj.task);
            SELECT m.id INTO chosen FROM ml_stack.models AS m
            WHERE m.project_id = proj.id AND (algorithm IS NULL OR m.algorithm = algorithm)
              AND (m.metrics ->> metric) IS NOT NULL
            ORDER BY (m.metrics ->> metric)::float8 DESC, m.id DESC
            LIMIT 1;
        WHEN 'most_recent' THEN
            SELECT m.id INTO chosen FROM ml_stack.models AS m
            WHERE m.project_id = proj.id AND (algorithm IS NULL OR m.algorithm = algorithm)
            ORDER BY m.id DESC
            LIMIT 1;
        WHEN 'rollback' THEN
            -- replay the history as a stack: a rollback pops, any other deployment pushes
            -- (a redeploy of the model already serving changes nothing to roll back to)
            FOR dep IN SELECT d.model_id, d.strategy FROM ml_stack.deployments AS d
                       WHERE d.project_id = proj.id ORDER BY d.id LOOP
                IF dep.strategy = 'rollback' THEN
                    stack := stack[1 : cardinality(stack) - 1];
                ELSIF stack[cardinality(stack)] IS DISTINCT FROM dep.model_id OR cardinality(stack) = 0 THEN   -- NULL too
                    stack := stack || dep.model_id;
                END IF;
            END LOOP;
            -- dropped models (NULL) cannot come back: they leave the stack; when the current one was
            -- dropped (the project serves nothing), a rollback goes to the newest one still there
            dropped := (SELECT d.model_id IS NULL FROM ml_stack.deployments AS d
                        WHERE d.project_id = proj.id ORDER BY d.id DESC LIMIT 1);
            kept := '{}';
            FOREACH entry IN ARRAY stack LOOP
                IF entry IS NOT NULL AND kept[cardinality(kept)] IS DISTINCT FROM entry THEN
                    kept := kept || entry;
                END IF;
            END LOOP;
            stack := CASE WHEN dropped THEN kept || NULL::bigint ELSE kept END;
            IF cardinality(stack) < 2 THEN
                RAISE EXCEPTION 'project "%" has nothing to roll back to', proj.name
                    USING ERRCODE = 'object_not_in_prerequisite_state',
                          HINT = CASE WHEN dropped IS NULL THEN 'The project has no deployment yet.'
                                      WHEN dropped THEN 'Its deployed model was dropped and no model deployed before it remains; deploy one.'
                                      ELSE 'The current deployment is the project''s first; deploy another model first.' END;
            END IF;
            chosen := stack[cardinality(stack) - 1];
        ELSE
            NULL;  -- 'specific': chosen above
    END CASE;
    IF chosen IS NULL THEN
        RAISE EXCEPTION 'project "%" has no model to deploy%', proj.name,
                        CASE WHEN algorithm IS NULL THEN '' ELSE format(' with algorithm "%s"', algorithm) END
            USING ERRCODE = 'no_data_found',
                  HINT = 'Train one first with ml_stack.train(); SELECT algorithm FROM ml_stack.models lists what exists.';
    END IF;
    INSERT INTO ml_stack.deployments (project_id, model_id, strategy) VALUES (proj.id, chosen, strategy);
    RETURN chosen;
END
$$;

CREATE OR REPLACE FUNCTION ml_stack.deploy(project_name text, strategy text DEFAULT 'best_score', algorithm text DEFAULT NULL)
RETURNS TABLE (project text, strategy text, algorithm text, model_id bigint)
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT p.name, deploy.strategy, m.algorithm, m.id
    FROM ml_stack._deploy(deploy.project_name, deploy.strategy, deploy.algorithm) AS chosen (id)
    JOIN ml_stack.models AS m ON m.id = chosen.id
    JOIN ml_stack.projects AS p ON p.id = m.project_id
$$;
COMMENT ON FUNCTION ml_stack.deploy(text, text, text) IS
    'ml_stack: deploy a model of the project by strategy: best_score (key metric r2 or f1), most_recent, or rollback (the model deployed before the current one); algorithm restricts the candidates.';

CREATE OR REPLACE FUNCTION ml_stack.deploy(model_id bigint)
RETURNS TABLE (project text, strategy text, algorithm text, model_id bigint)
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT p.name, 'specific'::text, m.algorithm, m.id
    FROM ml_stack._deploy(NULL, 'specific', NULL, deploy.model_id) AS chosen (id)
    JOIN ml_stack.models AS m ON m.id = chosen.id
    JOIN ml_stack.projects AS p ON p.id = m.project_id
$$;
COMMENT ON FUNCTION ml_stack.deploy(bigint) IS
    'ml_stack: deploy one specific model by id (strategy ''specific'').';
