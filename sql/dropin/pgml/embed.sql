-- pgml.embed: PostgresML's embeddings over ml_stack.embed. A model name without its organisation
-- ('all-MiniLM-L6-v2') is the sentence-transformers one, as ml_stack resolves it; a model ml_stack does not
-- have is an error that lists the ones it has. kwargs are the transformer's options (ml_stack.transformers).
CREATE OR REPLACE FUNCTION pgml.embed(transformer text, "text" text, kwargs jsonb DEFAULT '{}')
RETURNS real[]
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT ml_stack.embed(embed.transformer, embed."text", embed.kwargs) $$;
CREATE OR REPLACE FUNCTION pgml.embed(transformer text, inputs text[], kwargs jsonb DEFAULT '{}')
RETURNS SETOF real[]
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT e FROM ml_stack.embed(embed.transformer, embed.inputs, embed.kwargs) AS e $$;
COMMENT ON FUNCTION pgml.embed(text, text, jsonb) IS
    'ml_stack_pgml: PostgresML''s embed: the text''s embedding by a transformer ml_stack has (ml_stack.transformers: hashing, fitted vectorizers, sentence-transformers/all-MiniLM-L6-v2 with ml_stack_python).';
COMMENT ON FUNCTION pgml.embed(text, text[], jsonb) IS
    'ml_stack_pgml: the embeddings of several texts, in input order (batched: faster than one call per text).';
