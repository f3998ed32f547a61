-- pgml.embed: PostgresML's embeddings over ml_stack.embed. A model name without an organisation is the
-- sentence-transformers one, as the library itself resolves it ('all-MiniLM-L6-v2' is
-- 'sentence-transformers/all-MiniLM-L6-v2': the same model, not a substitute); a model ml_stack does not
-- have is an error that lists the ones it has. kwargs are the transformer's options (ml_stack.transformers).
CREATE OR REPLACE FUNCTION pgml._transformer_name(transformer text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN transformer ~* '^all-(MiniLM|mpnet|distilroberta)' THEN 'sentence-transformers/' || transformer
                ELSE transformer END
$$;

CREATE OR REPLACE FUNCTION pgml.embed(transformer text, "text" text, kwargs jsonb DEFAULT '{}')
RETURNS real[]
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT ml_stack.embed(pgml._transformer_name(embed.transformer), embed."text", embed.kwargs) $$;
CREATE OR REPLACE FUNCTION pgml.embed(transformer text, inputs text[], kwargs jsonb DEFAULT '{}')
RETURNS SETOF real[]
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT e FROM ml_stack.embed(pgml._transformer_name(embed.transformer), embed.inputs, embed.kwargs) AS e $$;
COMMENT ON FUNCTION pgml.embed(text, text, jsonb) IS
    'ml_stack_pgml: PostgresML''s embed: the text''s embedding by a transformer ml_stack has (ml_stack.transformers: hashing, fitted vectorizers, sentence-transformers/all-MiniLM-L6-v2 with ml_stack_python).';
COMMENT ON FUNCTION pgml.embed(text, text[], jsonb) IS
    'ml_stack_pgml: the embeddings of several texts, in input order (batched: faster than one call per text).';
