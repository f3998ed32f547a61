-- Sentence embeddings by transformer models (python/ml_stack_python/embeddings.py; docs/python-engine.md,
-- "Embeddings (MiniLM)"). ml_stack.embed(transformer, ...) of the core calls ml_stack._python_embed by
-- dynamic SQL for a name that is not one of its own transformers, when this extension is installed.
--
-- VOLATILE: a call is expensive (a forward pass of the model per batch, the first call in a backend also loads
-- torch and the model, ~4 s), so the planner must never evaluate it on its own (it evaluates STABLE calls with
-- constant arguments when it estimates selectivity), and it changes the backend's state (the loaded model, the
-- thread count). PARALLEL UNSAFE: it runs queries through plpy.execute (the cancel check between batches),
-- which parallel mode refuses (see serving.sql).
CREATE OR REPLACE FUNCTION ml_stack._python_embed(transformer text, inputs text[], options jsonb)
RETURNS SETOF real[]
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $ml_stack$
if "embeddings" not in SD:
    plpy.execute("SELECT ml_stack._python_import()")
    import ml_stack_python.embeddings
    import ml_stack_python.errors
    SD["errors"] = ml_stack_python.errors
    SD["embeddings"] = ml_stack_python.embeddings
return SD["errors"].call(plpy, SD["embeddings"].embed, plpy, transformer, inputs, options)
$ml_stack$;
COMMENT ON FUNCTION ml_stack._python_embed(text, text[], jsonb) IS
    'ml_stack_python internal (called by ml_stack.embed): the embeddings of inputs by a model transformer (sentence-transformers/all-MiniLM-L6-v2), one real[] per input in input order, NULL for a NULL input; options {"batch_size": 32, "normalize": true|false}. Needs the setting ml_stack.venv.';

-- Listed by the core in its view of transformers: cheap, reads package metadata only (no torch).
CREATE OR REPLACE FUNCTION ml_stack._python_transformers()
RETURNS TABLE (name text, kind text, dims integer, version text, description text)
LANGUAGE plpython3u STABLE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $ml_stack$
if "embeddings" not in SD:
    plpy.execute("SELECT ml_stack._python_import()")
    import ml_stack_python.embeddings
    import ml_stack_python.errors
    SD["errors"] = ml_stack_python.errors
    SD["embeddings"] = ml_stack_python.embeddings
return SD["errors"].call(plpy, SD["embeddings"].transformers, plpy)
$ml_stack$;
COMMENT ON FUNCTION ml_stack._python_transformers() IS
    'ml_stack_python internal: the model transformers ml_stack_python provides (name, kind, dims, version of the model''s package, description); version is NULL when the package is not installed where the server looks (setting ml_stack.venv).';

-- What this backend has loaded (torch's thread counts, library versions, the model's path): for tests and
-- for finding out which libraries a server really uses. Loads nothing.
CREATE OR REPLACE FUNCTION ml_stack._python_embed_state()
RETURNS jsonb
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $ml_stack$
if "embeddings" not in SD:
    plpy.execute("SELECT ml_stack._python_import()")
    import ml_stack_python.embeddings
    SD["embeddings"] = ml_stack_python.embeddings
return SD["embeddings"].state()
$ml_stack$;
COMMENT ON FUNCTION ml_stack._python_embed_state() IS
    'ml_stack_python internal: the embedding models loaded in this backend, torch''s thread counts, the venv and library versions in use (loads nothing).';
