-- Serving 'python'-format models (pickled estimators): called by the predictors
-- ml_stack compiles for them. The estimator is loaded once per backend (sha256
-- checked before unpickling) and cached; a larger generation than the cached
-- one (ml_stack's serving functions pass a new one after every deployment
-- change) drops the cache. NULL features without an impute rule give NULL.
-- Not STRICT (NULL handling is in Python), STABLE, PARALLEL UNSAFE: loading a
-- model runs a query through plpy.execute, which opens a subtransaction, and
-- PostgreSQL refuses subtransactions in parallel mode, also in the leader of a
-- parallel plan; the error escapes PL/Python before its error handling is set
-- up and crashed the backend (signal 11) when these were PARALLEL SAFE.
CREATE OR REPLACE FUNCTION ml_stack._python_predict(model_id bigint, generation bigint, features float8[])
RETURNS float8
LANGUAGE plpython3u STABLE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $ml_stack$
if "serving" not in SD:
    plpy.execute("SELECT ml_stack._python_import()")
    import ml_stack_python.serving
    import ml_stack_python.errors
    SD["errors"] = ml_stack_python.errors
    SD["serving"] = ml_stack_python.serving
return SD["errors"].call(plpy, SD["serving"].predict, plpy, model_id, generation, features)
$ml_stack$;
COMMENT ON FUNCTION ml_stack._python_predict(bigint, bigint, float8[]) IS
    'ml_stack_python internal: prediction of a python-format model (class label or value); the estimator is cached per backend.';

CREATE OR REPLACE FUNCTION ml_stack._python_predict_proba(model_id bigint, generation bigint, features float8[])
RETURNS float8[]
LANGUAGE plpython3u STABLE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $ml_stack$
if "serving" not in SD:
    plpy.execute("SELECT ml_stack._python_import()")
    import ml_stack_python.serving
    import ml_stack_python.errors
    SD["errors"] = ml_stack_python.errors
    SD["serving"] = ml_stack_python.serving
return SD["errors"].call(plpy, SD["serving"].predict_proba, plpy, model_id, generation, features)
$ml_stack$;
COMMENT ON FUNCTION ml_stack._python_predict_proba(bigint, bigint, float8[]) IS
    'ml_stack_python internal: class probabilities of a python-format classifier, in the order of ml_stack.models.classes.';

CREATE OR REPLACE FUNCTION ml_stack._python_cache()
RETURNS TABLE (model_id bigint, generation bigint, estimator text, loads integer, calls bigint, loaded_at timestamptz)
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp
AS $ml_stack$
if "serving" not in SD:
    plpy.execute("SELECT ml_stack._python_import()")
    import ml_stack_python.serving
    SD["serving"] = ml_stack_python.serving
return SD["serving"].cache_state()
$ml_stack$;
COMMENT ON FUNCTION ml_stack._python_cache() IS
    'ml_stack_python internal: the python-format models cached in this backend (generation they were loaded at, times loaded, calls).';

-- Pickles are loaded only when this server's engine signed them (signing.py); a
-- superuser vouches for one made elsewhere (e.g. restored from another server).
CREATE OR REPLACE FUNCTION ml_stack.trust_python_model(model_id bigint)
RETURNS void
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp
AS $ml_stack$
if "serving" not in SD:
    plpy.execute("SELECT ml_stack._python_import()")
    import ml_stack_python.serving
    import ml_stack_python.errors
    SD["errors"] = ml_stack_python.errors
    SD["serving"] = ml_stack_python.serving
SD["errors"].call(plpy, SD["serving"].trust, plpy, model_id)
$ml_stack$;
REVOKE EXECUTE ON FUNCTION ml_stack.trust_python_model(bigint) FROM PUBLIC;
COMMENT ON FUNCTION ml_stack.trust_python_model(bigint) IS
    'ml_stack_python: sign a pickled model with this server''s key so that it loads (pickles run code when loaded; the engine loads only those it signed). For models restored from another server that you trust. Superusers only.';
