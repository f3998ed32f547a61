-- The python engine's training entry point, called by ml_stack._train
-- (contract: docs/python-engine.md). A thin body: load the package once per
-- function (SD is reset when the function is replaced, e.g. by an update),
-- then call into it; errors it raises carry a hint and a SQLSTATE.
CREATE OR REPLACE FUNCTION ml_stack._python_fit(task text, algorithm text, hyperparams jsonb, dataset jsonb)
RETURNS jsonb
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp
AS $ml_stack$
if "engine" not in SD:
    plpy.execute("SELECT ml_stack._python_import()")
    import ml_stack_python.engine
    import ml_stack_python.errors
    SD["errors"] = ml_stack_python.errors
    SD["engine"] = ml_stack_python.engine
return SD["errors"].call(plpy, SD["engine"].fit, plpy, task, algorithm, hyperparams, dataset)
$ml_stack$;
COMMENT ON FUNCTION ml_stack._python_fit(text, text, jsonb, jsonb) IS
    'ml_stack_python internal: fit an XGBoost or scikit-learn estimator on the split in pg_temp._ml_stack_rows; writes the test rows'' predictions to pg_temp._ml_stack_predictions and returns {"artifact", "hyperparams", "search"}.';
-- Internal to train(): it runs the SQL of its dataset argument (filters, preprocessing).
REVOKE EXECUTE ON FUNCTION ml_stack._python_fit(text, text, jsonb, jsonb) FROM PUBLIC;
-- 0.4.0: the trainers (ml_stack's group role) train with it. Its trust boundary: the estimator
-- runs inside the server as its OS user on the rows the trainer can read, with JSON
-- hyperparameters passed to the library's constructor; the pickle it returns is signed with
-- the server's key (serving.sql), so a trainer can make models but not plant a pickle.
DO $$
BEGIN
    IF to_regrole('ml_stack_trainer') IS NOT NULL THEN
        GRANT EXECUTE ON FUNCTION ml_stack._python_fit(text, text, jsonb, jsonb) TO ml_stack_trainer;
    END IF;
END
$$;
