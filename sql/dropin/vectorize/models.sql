-- pg_vectorize's model names over ml_stack's transformers. pg_vectorize names models 'provider/model'
-- and still takes two bare names ('all-MiniLM-L12-v2', 'text-embedding-ada-002'); its oldest releases
-- wrote 'all_MiniLM_L12_v2'. A sentence-transformers model is ml_stack_python's when ml_stack has it
-- (all-MiniLM-L6-v2; ml_stack resolves the bare names), else an error that says which it has; remote
-- providers (OpenAI, Ollama, ...) need the network and are refused. ml_stack's own transformers
-- ('hashing', fitted vectorizers) work too.
CREATE OR REPLACE FUNCTION vectorize._transformer(model text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    name text := CASE WHEN model ~ '^all_MiniLM_L[0-9]+_v[0-9]+$' THEN replace(model, '_', '-') ELSE model END;
BEGIN
    IF name IS NULL OR btrim(name) = '' THEN
        RAISE EXCEPTION 'a transformer is required' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'e.g. ''sentence-transformers/all-MiniLM-L6-v2'' (ml_stack_python) or ''hashing''.';
    END IF;
    IF name = 'text-embedding-ada-002' OR name ~ '^(openai|ollama|cohere|voyage|portkey|tembo)/' THEN
        RAISE EXCEPTION 'transformer "%" is a remote provider''s, which ml_stack does not call', model
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Embed in the database: ''sentence-transformers/all-MiniLM-L6-v2'' (ml_stack_python) or ''hashing''.';
    END IF;
    RETURN name;
END
$$;

CREATE OR REPLACE FUNCTION vectorize.encode(input text, model text DEFAULT 'sentence-transformers/all-MiniLM-L6-v2',
                                            api_key text DEFAULT NULL)
RETURNS float8[]
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT ml_stack.embed(vectorize._transformer(encode.model), encode.input)::float8[] $$;
CREATE OR REPLACE FUNCTION vectorize.transform_embeddings(input text,
                                                          model_name text DEFAULT 'sentence-transformers/all-MiniLM-L6-v2',
                                                          api_key text DEFAULT NULL)
RETURNS float8[]
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT ml_stack.embed(vectorize._transformer(transform_embeddings.model_name), transform_embeddings.input)::float8[] $$;
COMMENT ON FUNCTION vectorize.encode(text, text, text) IS
    'ml_stack_vectorize: pg_vectorize''s encode: the text''s embedding as double precision[] (ml_stack.embed); api_key is not used (no remote provider).';
COMMENT ON FUNCTION vectorize.transform_embeddings(text, text, text) IS
    'ml_stack_vectorize: pg_vectorize''s transform_embeddings: the text''s embedding as double precision[] (ml_stack.embed).';
