-- ml_stack_vectorize 0.5.1 install script. Generated from sql/ by 'make'; do not edit.
\echo Use "CREATE EXTENSION ml_stack_vectorize" to load this file. \quit

-- source: sql/dropin/vectorize/checks.sql
-- ml_stack_vectorize is pg_vectorize's API (schema vectorize) over ml_stack's vector jobs: it needs ml_stack 0.5.1 or later
-- (a dropped job takes the views of its embeddings along). Checked first, so that
-- CREATE EXTENSION says what to update.
DO LANGUAGE plpgsql $$
DECLARE
    v text := (SELECT e.extversion FROM pg_catalog.pg_extension AS e WHERE e.extname = 'ml_stack');
BEGIN
    IF v IS NULL OR pg_catalog.string_to_array(pg_catalog.regexp_replace(v, '[^0-9.].*$', ''), '.')::integer[]
                    < ARRAY[0, 5, 1] THEN
        RAISE EXCEPTION 'ml_stack_vectorize needs ml_stack 0.5.1 or later; ml_stack % is installed', v
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'ALTER EXTENSION ml_stack UPDATE; then CREATE EXTENSION ml_stack_vectorize.';
    END IF;
END
$$;

-- source: sql/dropin/vectorize/tables_0.5.1.sql
-- pg_vectorize's enum types (its labels, in its order) and its example table.
CREATE TYPE vectorize.tablemethod AS ENUM ('append', 'join');
CREATE TYPE vectorize.indexdist AS ENUM ('pgv_hnsw_l2', 'pgv_hnsw_ip', 'pgv_hnsw_cosine', 'vsc_diskann_cosine');
COMMENT ON TYPE vectorize.tablemethod IS 'ml_stack_vectorize: where embeddings live: join (vectorize._embeddings_<job>, a view of the job''s table in ml_stack); append is not available.';
COMMENT ON TYPE vectorize.indexdist IS 'ml_stack_vectorize: the distance of a search: the cosine ones (exact cosine similarity, no index: pgvector is not needed).';

-- What pg_vectorize keeps about a job beyond ml_stack's vector job (ml_stack.vector_job_definitions).
CREATE TABLE vectorize._job_settings (
    job_id          bigint PRIMARY KEY REFERENCES ml_stack.vector_job_definitions (id) ON DELETE CASCADE,
    index_dist_type vectorize.indexdist NOT NULL,
    table_method    vectorize.tablemethod NOT NULL,
    update_col      text,
    params          jsonb NOT NULL
);
COMMENT ON TABLE vectorize._job_settings IS
    'ml_stack_vectorize: each vectorize.table job''s pg_vectorize settings (its ml_stack vector job holds the rest); see vectorize.job.';
SELECT pg_catalog.pg_extension_config_dump('vectorize._job_settings', '');

-- A table to try the README's examples on (our own rows: products, each with a one-line description).
CREATE TABLE vectorize.example_products (
    product_id       serial PRIMARY KEY,
    product_name     text NOT NULL,
    description      text,
    product_category text NOT NULL,
    price            numeric(10, 2) NOT NULL,
    last_updated_at  timestamptz DEFAULT CURRENT_TIMESTAMP
);
COMMENT ON TABLE vectorize.example_products IS 'ml_stack_vectorize: 40 example products to try vectorize.table and vectorize.search on.';
INSERT INTO vectorize.example_products (product_name, description, product_category, price) VALUES
    ('Pencil', 'Wooden stick with a graphite core for writing and sketching on paper', 'stationery', 0.99),
    ('Laptop Stand', 'Raised aluminium platform that lifts a laptop screen to eye level', 'electronics', 34.50),
    ('Desk Lamp', 'Adjustable LED light for reading and working at a desk', 'home', 24.00),
    ('Bluetooth Speaker', 'Portable wireless speaker that plays music from a phone', 'electronics', 45.00),
    ('Notebook', 'Bound pad of lined paper for notes and journaling', 'stationery', 3.50),
    ('Backpack', 'Bag with shoulder straps for carrying books, a laptop and daily gear', 'travel', 39.99),
    ('Water Bottle', 'Reusable insulated flask that keeps drinks cold or hot', 'kitchen', 18.00),
    ('Coffee Mug', 'Ceramic cup with a handle for hot coffee or tea', 'kitchen', 8.50),
    ('Headphones', 'Over-ear headset with noise cancellation for music and calls', 'electronics', 89.00),
    ('Wireless Mouse', 'Cordless pointing device for a computer, with a USB receiver', 'electronics', 19.99),
    ('Stylus Pen', 'Pen with a soft tip for drawing and writing on a touch screen tablet or phone', 'electronics', 12.00),
    ('Sunglasses', 'Tinted glasses that protect the eyes from bright sunlight', 'apparel', 25.00),
    ('Phone Charger', 'Cable and wall plug that recharge the battery of a mobile phone', 'electronics', 15.00),
    ('Phone Case', 'Protective cover that shields a smartphone from drops and scratches', 'electronics', 14.00),
    ('Yoga Mat', 'Cushioned non-slip mat for yoga, stretching and floor exercise', 'sports', 29.00),
    ('Running Shoes', 'Lightweight sneakers with cushioned soles for jogging', 'sports', 79.00),
    ('Alarm Clock', 'Bedside clock that rings to wake you up in the morning', 'home', 16.00),
    ('Umbrella', 'Folding canopy that keeps you dry in the rain', 'travel', 12.50),
    ('Wall Calendar', 'Printed monthly planner to hang on a wall', 'stationery', 9.00),
    ('Scissors', 'Pair of steel blades for cutting paper, fabric and tape', 'stationery', 6.00),
    ('Keyboard', 'Mechanical typing keyboard that connects to a computer', 'electronics', 59.00),
    ('USB Flash Drive', 'Small portable storage stick for files and backups', 'electronics', 11.00),
    ('Power Bank', 'Rechargeable battery pack that charges phones and tablets on the go', 'electronics', 29.99),
    ('Tablet Holder', 'Adjustable arm that holds a tablet or e-reader upright', 'electronics', 21.00),
    ('Cutting Board', 'Thick wooden board for chopping vegetables and meat', 'kitchen', 22.00),
    ('Frying Pan', 'Non-stick skillet for cooking eggs, pancakes and stir fries', 'kitchen', 32.00),
    ('Tea Kettle', 'Stainless steel pot that boils water on the stove', 'kitchen', 27.00),
    ('Throw Blanket', 'Soft fleece blanket for the sofa on cold evenings', 'home', 35.00),
    ('Picture Frame', 'Wooden frame that displays a photo on a shelf or wall', 'home', 13.00),
    ('Plant Pot', 'Ceramic pot with a drainage hole for houseplants', 'home', 10.00),
    ('Tent', 'Two-person shelter for camping outdoors', 'outdoors', 120.00),
    ('Sleeping Bag', 'Insulated bag for sleeping warm while camping', 'outdoors', 65.00),
    ('Flashlight', 'Battery-powered torch that lights the way in the dark', 'outdoors', 14.50),
    ('Bicycle Helmet', 'Hard shell helmet that protects the head when cycling', 'sports', 45.00),
    ('Wristwatch', 'Analog watch with a leather strap that tells the time', 'apparel', 99.00),
    ('Winter Gloves', 'Knitted gloves that keep hands warm in the cold', 'apparel', 17.00),
    ('Board Game', 'Strategy game for the family to play around a table', 'toys', 30.00),
    ('Jigsaw Puzzle', 'A thousand cardboard pieces that make a landscape picture', 'toys', 15.00),
    ('Hammock', 'Woven fabric bed hung between two trees for resting outdoors', 'outdoors', 55.00),
    ('Luggage Tag', 'Label with your name and address to attach to a suitcase', 'travel', 5.00);

-- source: sql/dropin/vectorize/models.sql
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

-- source: sql/dropin/vectorize/where_sql.sql
-- pg_vectorize's search(where_sql => ...) pastes SQL text into its query. Here it is never run as SQL:
-- it is read as a conjunction of simple conditions and turned into ml_stack.search's filters, whose
-- values are bound parameters. What it reads:
--   <column> <op> <literal> [AND ...]   op: =, <>, !=, <, <=, >, >=, LIKE
--   <column> IN (<literal>, ...)        <column> IS [NOT] NULL
-- a literal: 'text' (with '' for a quote), a number, true or false; a column: a name, or "quoted".
-- Anything else (OR, functions, subqueries, comments, ;) is an error that says what is read.
CREATE OR REPLACE FUNCTION vectorize._where_filters(where_sql text)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ident CONSTANT text := '("(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)';
    literal CONSTANT text := '(''(?:[^'']|'''')*''|[-+]?[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?|true|false)';
    hint CONSTANT text := 'where_sql takes conditions joined by AND: column = ''text'', column > 10, column IN (''a'', ''b''), '
                          'column LIKE ''%x%'', column IS [NOT] NULL (or pass ml_stack.search''s filters jsonb).';
    rest text := where_sql;
    m text[];
    col text;
    op text;
    value jsonb;
    filters jsonb := '{}';
BEGIN
    IF where_sql IS NULL OR btrim(where_sql) = '' THEN
        RETURN NULL;
    ELSIF length(where_sql) > 10000 THEN
        RAISE EXCEPTION 'where_sql is longer than 10000 characters' USING ERRCODE = 'program_limit_exceeded', HINT = hint;
    END IF;
    LOOP
        m := regexp_match(rest, '^\s*' || ident || '\s+IS\s+(NOT\s+)?NULL\s*(?:\mAND\M(.*))?$', 'i');
        IF m IS NOT NULL THEN
            col := m[1]; op := CASE WHEN m[2] IS NULL THEN '=' ELSE '<>' END; value := 'null'; rest := m[3];
        ELSE
            m := regexp_match(rest, '^\s*' || ident || '\s+IN\s*\(((?:\s*' || literal || '\s*,)*\s*' || literal
                                    || '\s*)\)\s*(?:\mAND\M(.*))?$', 'i');
            IF m IS NOT NULL THEN
                col := m[1]; op := 'in'; rest := m[array_length(m, 1)];
                value := (SELECT jsonb_agg(vectorize._literal(l[1]) ORDER BY o)
                          FROM regexp_matches(m[2], literal, 'gi') WITH ORDINALITY AS r(l, o));
            ELSE
                m := regexp_match(rest, '^\s*' || ident || '\s*(<>|!=|<=|>=|=|<|>|\mLIKE\M)\s*' || literal
                                        || '\s*(?:\mAND\M(.*))?$', 'i');
                IF m IS NULL THEN
                    RAISE EXCEPTION 'where_sql is not a condition ml_stack reads: %', left(where_sql, 200)
                        USING ERRCODE = 'syntax_error', HINT = hint;
                END IF;
                col := m[1]; op := CASE lower(m[2]) WHEN '!=' THEN '<>' ELSE lower(m[2]) END;
                value := vectorize._literal(m[3]); rest := m[4];
            END IF;
        END IF;
        col := CASE WHEN col LIKE '"%' THEN replace(substr(col, 2, length(col) - 2), '""', '"') ELSE lower(col) END;
        IF filters -> col ? op THEN
            RAISE EXCEPTION 'where_sql has two "%" conditions on column "%"', op, col USING ERRCODE = 'syntax_error', HINT = hint;
        END IF;
        filters := filters || jsonb_build_object(col, coalesce(filters -> col, '{}') || jsonb_build_object(op, value));
        EXIT WHEN rest IS NULL;
        IF btrim(rest) = '' THEN
            RAISE EXCEPTION 'where_sql ends with AND: %', left(where_sql, 200) USING ERRCODE = 'syntax_error', HINT = hint;
        END IF;
    END LOOP;
    RETURN filters;
END
$$;

-- A literal of where_sql as a JSON value.
CREATE OR REPLACE FUNCTION vectorize._literal(token text)
RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN token LIKE '''%' THEN to_jsonb(replace(substr(token, 2, length(token) - 2), '''''', ''''))
                WHEN lower(token) IN ('true', 'false') THEN to_jsonb(lower(token)::boolean)
                ELSE to_jsonb(token::numeric) END
$$;

-- source: sql/dropin/vectorize/table.sql
-- vectorize.table: pg_vectorize's job over ml_stack.create_vector_job. The embeddings live in ml_stack
-- (ml_stack.vector_jobs); vectorize._embeddings_<job> (primary key, embeddings, updated_at) and
-- vectorize.<job>_view (the source rows with their embeddings) are views of them, as pg_vectorize's
-- 'join' method lays them out. Both parameter names of the relation work: "relation" (pg_vectorize 0.22)
-- and "table" (before); so every parameter has a default and the required ones are checked here.
-- Rows already in the table are embedded before it returns (pg_vectorize's worker does it a moment
-- later), so a search right after finds them.
CREATE OR REPLACE FUNCTION vectorize._table(relation text, columns text[], job_name text, primary_key text, schema text,
                                            update_col text, index_dist_type vectorize.indexdist, transformer text,
                                            table_method vectorize.tablemethod, schedule text, caller_search_path text)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    job ml_stack.vector_job_definitions;
    new_id bigint;
    missing text;
    quiet text;
BEGIN
    missing := concat_ws(', ', CASE WHEN job_name IS NULL THEN 'job_name' END, CASE WHEN relation IS NULL THEN 'relation' END,
                         CASE WHEN primary_key IS NULL THEN 'primary_key' END, CASE WHEN columns IS NULL THEN 'columns' END);
    IF missing <> '' THEN
        RAISE EXCEPTION 'vectorize.table needs %', missing USING ERRCODE = 'invalid_parameter_value',
            HINT = 'e.g. vectorize.table(job_name => ''product_search'', relation => ''products'', primary_key => ''product_id'', columns => ARRAY[''product_name'', ''description''])';
    END IF;
    IF job_name !~ '^[A-Za-z0-9_]{1,50}$' THEN
        RAISE EXCEPTION 'job_name "%" must be letters, digits and underscores, at most 50', left(job_name, 100)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'e.g. ''product_search'' (its views are named after it).';
    END IF;
    IF schema IS NULL OR table_method IS NULL OR index_dist_type IS NULL OR schedule IS NULL THEN
        RAISE EXCEPTION 'vectorize.table: schema, table_method, index_dist_type and schedule cannot be NULL'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'Leave them out for their defaults.';
    END IF;
    IF table_method <> 'join' THEN
        RAISE EXCEPTION 'table_method ''append'' is not available: ml_stack does not write into the source table'
            USING ERRCODE = 'feature_not_supported',
                  HINT = format('Use table_method => ''join'' (the default): vectorize.%I joins the rows with their embeddings.', job_name || '_view');
    END IF;
    IF index_dist_type NOT IN ('pgv_hnsw_cosine', 'vsc_diskann_cosine') THEN
        RAISE EXCEPTION 'index_dist_type % is not implemented: the search ranks by cosine similarity', index_dist_type
            USING ERRCODE = 'feature_not_supported', HINT = 'Use index_dist_type => ''pgv_hnsw_cosine'' (the default).';
    END IF;
    -- the relation is in "schema" (pg_vectorize's parameter) unless its name says which; ml_stack's NOTICE
    -- about queued rows would mislead here (they are embedded below): ours comes after
    quiet := current_setting('client_min_messages');
    PERFORM set_config('client_min_messages', 'warning', true);
    new_id := ml_stack._create_vector_job(job_name, CASE WHEN relation LIKE '%.%' THEN relation ELSE format('%I.%I', schema, relation) END,
                                          primary_key, columns, vectorize._transformer(transformer), schedule, '{}',
                                          caller_search_path);
    PERFORM set_config('client_min_messages', quiet, true);
    SELECT d.* INTO job FROM ml_stack.vector_job_definitions AS d WHERE d.id = new_id;
    INSERT INTO vectorize._job_settings (job_id, index_dist_type, table_method, update_col, params)
    VALUES (new_id, index_dist_type, table_method, CASE WHEN schedule <> 'realtime' THEN update_col END,
            jsonb_build_object('schema', (SELECT n.nspname FROM pg_catalog.pg_class AS c JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace WHERE c.oid = job.relation),
                               'relation', (SELECT c.relname FROM pg_catalog.pg_class AS c WHERE c.oid = job.relation),
                               'columns', to_jsonb(columns), 'update_time_col', CASE WHEN schedule <> 'realtime' THEN update_col END,
                               'table_method', table_method, 'primary_key', primary_key,
                               'pkey_type', ml_stack._vector_job_key_type(job), 'schedule', schedule));
    EXECUTE format('CREATE VIEW vectorize.%I WITH (security_invoker = true) AS SELECT v.id AS %I, v.embedding AS embeddings, v.updated_at FROM ml_stack.%I AS v',
                   '_embeddings_' || job_name, primary_key, job.vectors_table);
    EXECUTE format('CREATE VIEW vectorize.%I WITH (security_invoker = true) AS SELECT t0.*, t1.embeddings, t1.updated_at AS embeddings_updated_at '
                   'FROM %s AS t0 JOIN vectorize.%I AS t1 ON t0.%I = t1.%I',
                   job_name || '_view', job.relation, '_embeddings_' || job_name, primary_key, primary_key);
    EXECUTE format('COMMENT ON VIEW vectorize.%I IS %L', '_embeddings_' || job_name,
                   format('ml_stack_vectorize: the embeddings of job %s (ml_stack.%s).', job_name, job.vectors_table));
    EXECUTE format('COMMENT ON VIEW vectorize.%I IS %L', job_name || '_view',
                   format('ml_stack_vectorize: the rows of %s with their embeddings (job %s).', job.relation, job_name));
    PERFORM ml_stack.process_vector_jobs(job_name);
    IF job.spec ->> 'kind' = 'python' AND schedule = 'realtime' AND NOT ml_stack._cron_usable() THEN
        RAISE NOTICE 'vectorize: job "%" embedded the rows there are; without pg_cron in this database, rows inserted or changed later wait for SELECT vectorize.job_execute(%)',
                     job_name, quote_literal(job_name);
    END IF;
    RETURN format('Successfully created job: %s', job_name);
END
$$;

-- No SET clause: a relation named with its schema resolves as the caller wrote it (a quoted or
-- mixed-case name too), through the caller's search_path.
CREATE OR REPLACE FUNCTION vectorize."table"(
    relation        text                  DEFAULT NULL,
    columns         text[]                DEFAULT NULL,
    job_name        text                  DEFAULT NULL,
    primary_key     text                  DEFAULT NULL,
    schema          text                  DEFAULT 'public',
    update_col      text                  DEFAULT 'last_updated_at',
    index_dist_type vectorize.indexdist   DEFAULT 'pgv_hnsw_cosine',
    transformer     text                  DEFAULT 'sentence-transformers/all-MiniLM-L6-v2',
    table_method    vectorize.tablemethod DEFAULT 'join',
    schedule        text                  DEFAULT '* * * * *',
    "table"         text                  DEFAULT NULL)   -- pg_vectorize before 0.22 named the relation "table"
RETURNS text
LANGUAGE sql VOLATILE
AS $$
    SELECT vectorize._table(coalesce("table".relation, "table"."table"), "table".columns, "table".job_name,
                            "table".primary_key, "table".schema, "table".update_col, "table".index_dist_type,
                            "table".transformer, "table".table_method, "table".schedule,
                            pg_catalog.current_setting('search_path'))
$$;
COMMENT ON FUNCTION vectorize."table"(text, text[], text, text, text, text, vectorize.indexdist, text, vectorize.tablemethod, text, text) IS
    'ml_stack_vectorize: pg_vectorize''s table: keep embeddings of the relation''s columns in sync (an ml_stack vector job), searchable with vectorize.search; schedule ''realtime'' (triggers) or a pg_cron schedule (default every minute). The existing rows are embedded before it returns.';

CREATE OR REPLACE FUNCTION vectorize.job_execute(job_name text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM ml_stack.process_vector_jobs(job_name);
END
$$;
COMMENT ON FUNCTION vectorize.job_execute(text) IS
    'ml_stack_vectorize: pg_vectorize''s job_execute: embed the job''s changed rows now (ml_stack.process_vector_jobs).';

-- pg_vectorize's job table, over ml_stack's vector jobs.
CREATE OR REPLACE VIEW vectorize.job WITH (security_invoker = true) AS
SELECT d.id AS job_id, d.job_name AS name, s.index_dist_type::text AS index_dist_type, d.transformer, s.params,
       d.last_processed_at AS last_completion
FROM ml_stack.vector_job_definitions AS d
JOIN vectorize._job_settings AS s ON s.job_id = d.id;
COMMENT ON VIEW vectorize.job IS 'ml_stack_vectorize: pg_vectorize''s jobs (their state: ml_stack.vector_jobs).';

-- source: sql/dropin/vectorize/search.sql
-- vectorize.search and hybrid_search: pg_vectorize's result rows ({<return_columns>..., "similarity_score"})
-- from ml_stack.search: exact cosine similarity over the job's embeddings, best first; where_sql read as
-- filters (where_sql.sql), never run as SQL. api_key is not used (no remote provider).
CREATE OR REPLACE FUNCTION vectorize._search_results(job_name text, query text, return_columns text[], num_results integer,
                                                     where_sql text, mode text, score_key text)
RETURNS TABLE (search_results jsonb)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    job ml_stack.vector_job_definitions := ml_stack._vector_job_by_name(job_name);
    unknown text;
    filters jsonb;
BEGIN
    IF return_columns IS NULL OR cardinality(return_columns) = 0 THEN
        RAISE EXCEPTION 'return_columns is empty' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Name the columns to return, or ARRAY[''*''] (the default) for every column.';
    END IF;
    SELECT string_agg(format('%I', c), ', ') INTO unknown
    FROM unnest(return_columns) AS c
    WHERE c <> '*' AND NOT EXISTS (SELECT FROM pg_catalog.pg_attribute AS a
                                   WHERE a.attrelid = job.relation AND a.attname = c AND a.attnum > 0 AND NOT a.attisdropped);
    IF unknown IS NOT NULL THEN
        RAISE EXCEPTION 'return_columns names columns that % does not have: %', job.relation, unknown
            USING ERRCODE = 'undefined_column',
                  HINT = format('Its columns: %s.', (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum)
                                                     FROM pg_catalog.pg_attribute AS a
                                                     WHERE a.attrelid = job.relation AND a.attnum > 0 AND NOT a.attisdropped));
    END IF;
    filters := vectorize._where_filters(where_sql);
    PERFORM ml_stack._search_filter_sql(job.relation, filters);   -- its errors, before the query
    RETURN QUERY
    SELECT CASE WHEN '*' = ANY (return_columns) THEN s.record
                ELSE (SELECT jsonb_object_agg(c, s.record -> c) FROM unnest(return_columns) AS c) END
           || jsonb_build_object(score_key, s.score)
    FROM ml_stack.search(job_name, query, num_results, filters, mode) AS s
    ORDER BY s.rank;
END
$$;

CREATE OR REPLACE FUNCTION vectorize.search(job_name text, query text, api_key text DEFAULT NULL,
                                            return_columns text[] DEFAULT ARRAY['*'], num_results integer DEFAULT 10,
                                            where_sql text DEFAULT NULL)
RETURNS TABLE (search_results jsonb)
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT r.search_results
    FROM vectorize._search_results(search.job_name, search.query, search.return_columns, search.num_results,
                                   search.where_sql, 'semantic', 'similarity_score') AS r
$$;
COMMENT ON FUNCTION vectorize.search(text, text, text, text[], integer, text) IS
    'ml_stack_vectorize: pg_vectorize''s search: the num_results rows most similar to the query (cosine), as JSON of return_columns and "similarity_score", best first; where_sql: conditions joined by AND (column op literal, IN, IS NULL), read as bound filters.';

CREATE OR REPLACE FUNCTION vectorize.hybrid_search(job_name text, query text, api_key text DEFAULT NULL,
                                                   return_columns text[] DEFAULT ARRAY['*'], num_results integer DEFAULT 10,
                                                   where_sql text DEFAULT NULL)
RETURNS TABLE (search_results jsonb)
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT r.search_results
    FROM vectorize._search_results(hybrid_search.job_name, hybrid_search.query, hybrid_search.return_columns,
                                   hybrid_search.num_results, hybrid_search.where_sql, 'hybrid', 'rrf_score') AS r
$$;
COMMENT ON FUNCTION vectorize.hybrid_search(text, text, text, text[], integer, text) IS
    'ml_stack_vectorize: pg_vectorize''s hybrid_search: keyword (BM25) and semantic rankings fused by reciprocal rank (k = 60), as JSON of return_columns and "rrf_score", best first.';

-- source: sql/dropin/vectorize/grants.sql
-- Schema vectorize follows ml_stack's boundary (ml_stack's api/grants.sql): no USAGE for PUBLIC, USAGE for
-- ml_stack's group roles; every function runs with the caller's rights and reaches ml_stack's. A trainer
-- may CREATE in vectorize: vectorize.table makes its views there, as pg_vectorize makes its tables.
DO $$
BEGIN
    IF to_regrole('ml_stack_predictor') IS NOT NULL THEN
        EXECUTE 'GRANT USAGE ON SCHEMA vectorize TO ml_stack_predictor';
        EXECUTE 'GRANT SELECT ON vectorize.job, vectorize._job_settings, vectorize.example_products TO ml_stack_predictor';
    END IF;
    IF to_regrole('ml_stack_trainer') IS NOT NULL THEN
        EXECUTE 'GRANT USAGE, CREATE ON SCHEMA vectorize TO ml_stack_trainer';
        EXECUTE 'GRANT SELECT, INSERT ON vectorize._job_settings TO ml_stack_trainer';
        EXECUTE 'GRANT SELECT ON vectorize.job, vectorize.example_products TO ml_stack_trainer';
    END IF;
    IF to_regrole('ml_stack_admin') IS NOT NULL THEN
        EXECUTE 'GRANT USAGE ON SCHEMA vectorize TO ml_stack_admin';
        EXECUTE 'GRANT SELECT, INSERT, DELETE ON vectorize._job_settings TO ml_stack_admin';
        EXECUTE 'GRANT SELECT ON vectorize.job, vectorize.example_products TO ml_stack_admin';
    END IF;
END
$$;
