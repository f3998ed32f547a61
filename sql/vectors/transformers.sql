-- Transformers by name: the built-in 'hashing', the vectorizers fitted with
-- fit_vectorizer, and the models of ml_stack_python (when it is installed).
-- _resolve_transformer checks a name and its options once and returns the
-- "spec" that the transform functions take:
--   {"name", "kind": "hashing" | "counts" | "tfidf" | "python", "dims", ...}.

-- Model transformers that some extension of the bundle provides, for the error
-- that says what to install when it is missing.
CREATE OR REPLACE FUNCTION ml_stack._known_model_transformers()
RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT ARRAY['sentence-transformers/all-MiniLM-L6-v2'] $$;

CREATE OR REPLACE FUNCTION ml_stack._python_embedding_installed()
RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT to_regprocedure('ml_stack._python_embed(text, text[], jsonb)') IS NOT NULL $$;

-- A text search configuration by name, or an error listing the ones there are.
CREATE OR REPLACE FUNCTION ml_stack._text_config(config text)
RETURNS regconfig
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cfg regconfig;
BEGIN
    BEGIN
        cfg := config::regconfig;
    EXCEPTION WHEN OTHERS THEN
        cfg := NULL;
    END;
    -- an unqualified name outside pg_catalog (this function's search_path): the one configuration of that
    -- name in any schema; several are ambiguous, and the hint lists them qualified
    IF cfg IS NULL AND position('.' IN config) = 0 AND (SELECT count(*) FROM pg_catalog.pg_ts_config AS c WHERE c.cfgname = config) = 1 THEN
        SELECT c.oid INTO cfg FROM pg_catalog.pg_ts_config AS c WHERE c.cfgname = config;
    END IF;
    IF cfg IS NULL THEN
        RAISE EXCEPTION 'unknown text search configuration "%"', config
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Use one of: %s.', (SELECT string_agg(c.oid::regconfig::text, ', ' ORDER BY c.cfgname, c.oid) FROM pg_catalog.pg_ts_config AS c));
    END IF;
    RETURN cfg;
END
$$;

-- Options must be a JSON object with only the given keys.
CREATE OR REPLACE FUNCTION ml_stack._check_options(options jsonb, valid text[], what text)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    key text;
BEGIN
    IF options IS NULL THEN
        RETURN '{}';
    END IF;
    IF jsonb_typeof(options) <> 'object' THEN
        RAISE EXCEPTION 'options of % must be a JSON object, got %', what, left(options::text, 100)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'e.g. options => ''{"dims": 256}''';
    END IF;
    FOR key IN SELECT jsonb_object_keys(options) LOOP
        IF NOT key = ANY (valid) THEN
            RAISE EXCEPTION 'unknown option "%" for %', key, what
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = CASE WHEN cardinality(valid) = 0 THEN format('%s takes no options.', what)
                                  ELSE format('Valid options: %s.', array_to_string(valid, ', ')) END;
        END IF;
    END LOOP;
    RETURN options;
END
$$;

-- An integer option in [lo, hi], or its default.
CREATE OR REPLACE FUNCTION ml_stack._integer_option(options jsonb, key text, default_value integer, lo integer, hi integer)
RETURNS integer
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v jsonb := options -> key;
BEGIN
    IF v IS NULL OR jsonb_typeof(v) = 'null' THEN
        RETURN default_value;
    END IF;
    IF jsonb_typeof(v) <> 'number' OR v::text::numeric <> trunc(v::text::numeric)
       OR v::text::numeric NOT BETWEEN lo AND hi THEN
        RAISE EXCEPTION 'option "%" must be a whole number from % to %, got %', key, lo, hi, left(v::text, 100)
            USING ERRCODE = 'invalid_parameter_value', HINT = format('The default is %s.', default_value);
    END IF;
    RETURN v::text::integer;
END
$$;

CREATE OR REPLACE FUNCTION ml_stack._boolean_option(options jsonb, key text, default_value boolean)
RETURNS boolean
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v jsonb := options -> key;
BEGIN
    IF v IS NULL OR jsonb_typeof(v) = 'null' THEN
        RETURN default_value;
    END IF;
    IF jsonb_typeof(v) <> 'boolean' THEN
        RAISE EXCEPTION 'option "%" must be true or false, got %', key, left(v::text, 100)
            USING ERRCODE = 'invalid_parameter_value', HINT = format('The default is %s.', default_value);
    END IF;
    RETURN v::text::boolean;
END
$$;

CREATE OR REPLACE FUNCTION ml_stack._resolve_transformer(transformer text, options jsonb)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    vz ml_stack.vectorizers;
    wanted_version integer;
BEGIN
    IF transformer IS NULL OR btrim(transformer) = '' THEN
        RAISE EXCEPTION 'transformer is required' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'e.g. ''hashing'', a name given to ml_stack.fit_vectorizer, or ''sentence-transformers/all-MiniLM-L6-v2''.';
    END IF;
    -- a sentence-transformers model by its bare name, as the library resolves it ('all-MiniLM-L6-v2' is
    -- 'sentence-transformers/all-MiniLM-L6-v2': the same model, PostgresML's and pg_vectorize's spelling)
    IF transformer ~ '^all-(MiniLM|mpnet|distilroberta)-' THEN
        transformer := 'sentence-transformers/' || transformer;
    END IF;
    IF transformer = 'hashing' THEN
        options := ml_stack._check_options(options, ARRAY['dims', 'config', 'signed'], 'transformer hashing');
        RETURN jsonb_build_object(
            'name', 'hashing', 'kind', 'hashing',
            'dims', ml_stack._integer_option(options, 'dims', 1024, 1, 65536),
            'config', ml_stack._text_config(coalesce(options ->> 'config', 'english'))::text,
            'signed', ml_stack._boolean_option(options, 'signed', true));
    END IF;
    IF transformer IN ('counts', 'tfidf') THEN
        RAISE EXCEPTION 'transformer % needs a fitted vocabulary', transformer
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Fit one first: SELECT ml_stack.fit_vectorizer(''my_%1$s'', ''my_table'', ''my_column'', ''%1$s''); '
                                'then embed(''my_%1$s'', ...). In train, preprocess => ''{"col": {"vectorize": "%1$s"}}'' fits it on the training rows.',
                                transformer);
    END IF;
    IF transformer = ANY (ml_stack._known_model_transformers()) OR transformer LIKE '%/%' THEN
        IF NOT ml_stack._python_embedding_installed() THEN
            RAISE EXCEPTION 'transformer "%" needs ml_stack_python, which is not installed', transformer
                USING ERRCODE = 'feature_not_supported',
                      HINT = CASE WHEN transformer = ANY (ml_stack._known_model_transformers())
                                  THEN 'CREATE EXTENSION ml_stack_python CASCADE, with sentence-transformers in the venv named by the setting ml_stack.venv (make setup prepares one); or use ''hashing''.'
                                  ELSE format('Model transformers: %s.', array_to_string(ml_stack._known_model_transformers(), ', ')) END;
        END IF;
        -- ml_stack_python checks the name and the options itself
        RETURN jsonb_build_object('name', transformer, 'kind', 'python', 'options', coalesce(options, '{}'));
    END IF;
    options := ml_stack._check_options(options, ARRAY['version'], format('vectorizer %s', transformer));
    wanted_version := ml_stack._integer_option(options, 'version', NULL, 1, 2147483647);
    SELECT v.* INTO vz FROM ml_stack.vectorizers AS v
    WHERE v.name = transformer AND (wanted_version IS NULL OR v.version = wanted_version)
    ORDER BY v.version DESC LIMIT 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown transformer "%"%', transformer,
                        CASE WHEN wanted_version IS NOT NULL THEN format(' (version %s)', wanted_version) ELSE '' END
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Transformers: %s (see ml_stack.transformers); fit a vocabulary with ml_stack.fit_vectorizer.',
                                (SELECT string_agg(t.name, ', ' ORDER BY t.name) FROM ml_stack._transformer_list() AS t));
    END IF;
    RETURN ml_stack._vectorizer_spec(vz.id);
END
$$;

CREATE OR REPLACE FUNCTION ml_stack._vectorizer_spec(vectorizer_id bigint)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_build_object('name', v.name, 'kind', v.method, 'dims', v.dims, 'config', v.config,
                              'vectorizer_id', v.id, 'version', v.version)
    FROM ml_stack.vectorizers AS v WHERE v.id = vectorizer_id
$$;

-- Every transformer there is (behind the view ml_stack.transformers).
CREATE OR REPLACE FUNCTION ml_stack._transformer_list()
RETURNS TABLE (name text, kind text, dims integer, version text, available boolean, provided_by text,
               fitted_on jsonb, options jsonb, description text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY VALUES
        ('hashing'::text, 'hashing'::text, 1024, '1'::text, true, 'ml_stack'::text, NULL::jsonb,
         '{"dims": 1024, "config": "english", "signed": true}'::jsonb,
         'signed feature hashing of the lexemes of to_tsvector(config, text), 1 + ln(tf), L2-normalised; stateless'::text),
        ('counts', 'counts', NULL::integer, NULL::text, true, 'ml_stack', NULL::jsonb, NULL::jsonb,
         'term counts over a fitted vocabulary: fit with ml_stack.fit_vectorizer(name, relation, column, ''counts'')'),
        ('tfidf', 'tfidf', NULL::integer, NULL::text, true, 'ml_stack', NULL::jsonb, NULL::jsonb,
         'tf-idf over a fitted vocabulary, L2-normalised: fit with ml_stack.fit_vectorizer(name, relation, column, ''tfidf'')');
    RETURN QUERY
        SELECT DISTINCT ON (v.name) v.name, v.method, v.dims, v.version::text, true, 'ml_stack'::text, v.fitted_on,
               v.options, format('fitted %s vocabulary of %s terms on %s documents', v.method, v.dims, v.documents)
        FROM ml_stack.vectorizers AS v
        ORDER BY v.name, v.version DESC;
    IF ml_stack._python_embedding_installed() THEN
        RETURN QUERY EXECUTE
            'SELECT t.name, t.kind, t.dims, t.version, true, ''ml_stack_python''::text, NULL::jsonb, NULL::jsonb, t.description
             FROM ml_stack._python_transformers() AS t';
    ELSE
        RETURN QUERY SELECT t, 'sentence_transformer'::text, NULL::integer, NULL::text, false, 'ml_stack_python'::text,
                            NULL::jsonb, NULL::jsonb, 'needs CREATE EXTENSION ml_stack_python'::text
                     FROM unnest(ml_stack._known_model_transformers()) AS t;
    END IF;
END
$$;

CREATE OR REPLACE VIEW ml_stack.transformers AS
    SELECT t.name, t.kind, t.dims, t.version, t.available, t.provided_by, t.fitted_on, t.options, t.description
    FROM ml_stack._transformer_list() AS t;
COMMENT ON VIEW ml_stack.transformers IS
    'ml_stack: the transformers that turn text into vectors: name, kind, dimensions, version, where they come from and what they were fitted on.';
