-- pgml.deploy: PostgresML's two forms over ml_stack.deploy. Strategy 'new_score' is what PostgresML's
-- train records for an automatic deploy; it is not a policy one can ask for (PostgresML refuses it too).
CREATE OR REPLACE FUNCTION pgml._deploy_strategy(strategy text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF strategy IS NULL OR strategy NOT IN ('best_score', 'most_recent', 'rollback') THEN
        RAISE EXCEPTION 'deploy strategy % is not a policy for a project', coalesce(quote_literal(strategy), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use ''best_score'', ''most_recent'' or ''rollback''; deploy one model with pgml.deploy(model_id).';
    END IF;
    RETURN strategy;
END
$$;

CREATE OR REPLACE FUNCTION pgml.deploy(project_name text, strategy pgml.strategy, algorithm pgml.algorithm DEFAULT NULL)
RETURNS TABLE (project text, strategy text, algorithm text)
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT d.project, d.strategy, d.algorithm
    FROM ml_stack.deploy(deploy.project_name, pgml._deploy_strategy(deploy.strategy::text), deploy.algorithm::text) AS d
$$;
CREATE OR REPLACE FUNCTION pgml.deploy(model_id bigint)
RETURNS TABLE (project text, strategy text, algorithm text)
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT d.project, d.strategy, d.algorithm FROM ml_stack.deploy(deploy.model_id) AS d $$;
COMMENT ON FUNCTION pgml.deploy(text, pgml.strategy, pgml.algorithm) IS
    'ml_stack_pgml: PostgresML''s deploy: the project''s best_score, most_recent or rollback model (of one algorithm when given) becomes the one predict serves (ml_stack.deploy).';
COMMENT ON FUNCTION pgml.deploy(bigint) IS 'ml_stack_pgml: deploy one model by id (strategy ''specific'').';
