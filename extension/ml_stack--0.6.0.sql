-- ml_stack 0.6.0 install script. Generated from sql/ by 'make'; do not edit.
\echo Use "CREATE EXTENSION ml_stack" to load this file. \quit

-- source: sql/common/serving_errors.sql
-- Errors raised from compiled predictors. They are STABLE and take the feature array
-- so that the planner never runs them while simplifying a CASE arm that a row may not
-- reach (DESIGN §6): an IMMUTABLE one was folded when the array was a constant and
-- the project name or model id was not.

-- SECURITY DEFINER (as the errors below that read the registry): a role that may only
-- predict gets the names of the features without reading the snapshots.
CREATE OR REPLACE FUNCTION ml_stack._wrong_feature_count(model_id bigint, expected integer, features float8[])
RETURNS float8
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    names text;
BEGIN
    SELECT string_agg(CASE c.value ->> 'kind'
                          WHEN 'array' THEN format('%s[1:%s]', c.value ->> 'name', c.value ->> 'width')
                          WHEN 'text' THEN format('%s (text: %s features)', c.value ->> 'name', c.value ->> 'width')
                          ELSE c.value ->> 'name' END, ', ' ORDER BY c.ordinality)
    INTO names
    FROM jsonb_array_elements(ml_stack._model_layout(model_id)) WITH ORDINALITY AS c;   -- serving/typed.sql
    -- a model imported without column names has no DETAIL (RAISE refuses a NULL option)
    RAISE EXCEPTION 'model % takes % features, got %', model_id, expected, cardinality(features)
        USING ERRCODE = 'invalid_parameter_value',
              DETAIL = CASE WHEN names IS NOT NULL THEN format('The features, in order: %s.', left(names, 2000))
                            ELSE 'The model does not know their names.' END,
              HINT = 'Pass the features in the order of the training relation''s columns, label excluded.';
END
$$;

CREATE OR REPLACE FUNCTION ml_stack._no_probabilities(model_id bigint, features float8[])
RETURNS float8[]
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION 'model % is a regression model: it has no class probabilities', model_id
        USING ERRCODE = 'feature_not_supported',
              HINT = 'Use ml_stack.predict() for regression models.';
END
$$;

CREATE OR REPLACE FUNCTION ml_stack._engine_not_installed(model_id bigint, features float8[])
RETURNS float8
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION 'model % is served by the python engine, which is not installed in this database', model_id
        USING ERRCODE = 'feature_not_supported',
              HINT = 'CREATE EXTENSION ml_stack_python CASCADE (needs PL/Python, scikit-learn and xgboost); its models then serve at once.';
END
$$;

-- SQLSTATEs PT404 and PT503: PostgREST answers them as HTTP 404 and 503 (DESIGN §3c).
CREATE OR REPLACE FUNCTION ml_stack._no_deployed_model(project_name text, features float8[])
RETURNS float8
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    owner text;
BEGIN
    IF project_name IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT p.name INTO owner FROM ml_stack.projects AS p
    WHERE starts_with(project_name, p.name || '@') ORDER BY length(p.name) DESC LIMIT 1;
    IF NOT EXISTS (SELECT FROM ml_stack.projects AS p WHERE p.name = project_name) AND owner IS NOT NULL THEN
        -- '<project>@<alias>' (0.5.0)
        RAISE EXCEPTION 'project "%" has no alias "%"', owner, substr(project_name, length(owner) + 2)
            USING ERRCODE = 'PT404',
                  HINT = 'ml_stack.set_alias(project_name, alias, model_id) makes one; SELECT * FROM ml_stack.model_aliases lists them.';
    ELSIF NOT EXISTS (SELECT FROM ml_stack.projects AS p WHERE p.name = project_name) THEN
        RAISE EXCEPTION 'project "%" does not exist', project_name
            USING ERRCODE = 'PT404',
                  HINT = 'Train it first with ml_stack.train(); SELECT name FROM ml_stack.projects lists the projects.';
    END IF;
    RAISE EXCEPTION 'project "%" has no deployed model', project_name
        USING ERRCODE = 'PT503',
              HINT = 'Deploy one with ml_stack.deploy(project_name, ''best_score'').';
END
$$;

CREATE OR REPLACE FUNCTION ml_stack._unknown_model(model_id bigint, features float8[])
RETURNS float8
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF model_id IS NULL THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'model % does not exist', model_id
        USING ERRCODE = 'PT404',
              HINT = 'SELECT id, algorithm FROM ml_stack.models lists the models.';
END
$$;

-- source: sql/common/identifiers.sql
-- Resolve a user-given relation name to its OID, or fail with a clear message.
-- to_regclass() parses the name like SQL would (quotes, schema), so nothing in
-- it is ever executed; the OID is what later dynamic SQL uses (as regclass text).
CREATE OR REPLACE FUNCTION ml_stack._resolve_relation(relation_name text, caller_search_path text)
RETURNS regclass
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rel regclass;
BEGIN
    IF relation_name IS NULL OR btrim(relation_name) = '' THEN
        RAISE EXCEPTION 'relation_name is required'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Name the table or view to train on, e.g. ml_stack.train(''p'', ''regression'', ''my_table'', ''y'').';
    END IF;
    BEGIN
        -- Resolve with the caller's search_path, as a query they typed would;
        -- the function's own pinned path comes back right after.
        PERFORM set_config('search_path', coalesce(caller_search_path, 'pg_catalog, pg_temp'), true);
        rel := to_regclass(relation_name);
        PERFORM set_config('search_path', 'pg_catalog, pg_temp', true);
    EXCEPTION WHEN OTHERS THEN
        rel := NULL;  -- invalid name syntax: reported below like a missing relation
    END;
    IF rel IS NULL THEN
        RAISE EXCEPTION 'relation "%" does not exist', relation_name
            USING ERRCODE = 'undefined_table',
                  HINT = 'Check the name and schema (use ''schema.table''); quote mixed-case names as in SQL: ''"MyTable"''.';
    END IF;
    IF (SELECT c.relkind FROM pg_catalog.pg_class AS c WHERE c.oid = rel) NOT IN ('r', 'v', 'm', 'p', 'f') THEN
        RAISE EXCEPTION '"%" is not a table or view', relation_name
            USING ERRCODE = 'wrong_object_type',
                  HINT = 'Train on a table, view, materialized view or foreign table.';
    END IF;
    RETURN rel;
END
$$;

-- The numeric hyperparameter `name` of `hyperparams`, or `default_value`; a clear
-- error when it is not a number or outside [min_value, +inf).
CREATE OR REPLACE FUNCTION ml_stack._numeric_hyperparam(
    hyperparams jsonb, name text, default_value float8, min_value float8, exclusive_min boolean DEFAULT false)
RETURNS float8
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v jsonb := hyperparams -> name;
    x float8;
BEGIN
    IF v IS NULL OR jsonb_typeof(v) = 'null' THEN
        RETURN default_value;
    END IF;
    IF jsonb_typeof(v) <> 'number' THEN
        RAISE EXCEPTION 'hyperparameter "%" must be a number, got %', name, v::text
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('e.g. hyperparams => ''{"%s": %s}''', name, default_value);
    END IF;
    x := v::text::float8;
    IF x < min_value OR (exclusive_min AND x = min_value) OR x = 'Infinity'::float8 THEN
        RAISE EXCEPTION 'hyperparameter "%" must be % %, got %', name,
            CASE WHEN exclusive_min THEN '>' ELSE '>=' END, min_value, x
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('e.g. hyperparams => ''{"%s": %s}''', name, default_value);
    END IF;
    RETURN x;
END
$$;

-- A column of `rel` that holds text (text, varchar, char, citext or a domain over
-- them), or a clear error listing the text columns there are.
CREATE OR REPLACE FUNCTION ml_stack._text_column(rel regclass, column_name text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    typ regtype;
    text_columns text;
BEGIN
    SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO text_columns
    FROM pg_catalog.pg_attribute AS a
    WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped
      AND ml_stack._is_text_type(a.atttypid);
    SELECT a.atttypid::regtype INTO typ FROM pg_catalog.pg_attribute AS a
    WHERE a.attrelid = rel AND a.attname = column_name AND a.attnum > 0 AND NOT a.attisdropped;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'column "%" does not exist in relation %', column_name, rel
            USING ERRCODE = 'undefined_column',
                  HINT = coalesce(format('Its text columns are: %s.', text_columns), 'It has no text columns.');
    END IF;
    IF NOT ml_stack._is_text_type(typ) THEN
        RAISE EXCEPTION 'column "%" of % has type %, not text', column_name, rel, typ
            USING ERRCODE = 'datatype_mismatch',
                  HINT = coalesce(format('Its text columns are: %s.', text_columns),
                                  'It has no text columns; cast one in a view (col::text).');
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION ml_stack._is_text_type(typ oid)
RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT t.typcategory = 'S' FROM pg_catalog.pg_type AS t
    WHERE t.oid = CASE WHEN (SELECT d.typtype FROM pg_catalog.pg_type AS d WHERE d.oid = typ) = 'd'
                       THEN (SELECT d.typbasetype FROM pg_catalog.pg_type AS d WHERE d.oid = typ) ELSE typ END
$$;

-- A hot standby serves predictions but writes nothing: what would write is refused first, with where to run it
-- (instead of an error about a temporary table or a read-only transaction from deep inside).
CREATE OR REPLACE FUNCTION ml_stack._refuse_on_standby(what text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF pg_is_in_recovery() THEN
        RAISE EXCEPTION '% cannot run on a hot standby: it writes the registry', what
            USING ERRCODE = 'read_only_sql_transaction',
                  HINT = 'Run it on the primary; this server serves the result once it has replayed it.';
    END IF;
END
$$;

-- source: sql/registry/projects.sql
-- A project is one prediction problem: a name, a task, and where its data lives.
CREATE TABLE ml_stack.projects (
    id            bigserial PRIMARY KEY,
    name          text NOT NULL UNIQUE CHECK (name <> ''),
    task          text NOT NULL CHECK (task IN ('regression', 'classification')),
    relation_name text,      -- as last given to train(); NULL for projects made by import_model()
    y_column_name text,
    split_seed    bigint NOT NULL,  -- one seed per project, so every model is scored on the same split
    created_at    timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE ml_stack.projects IS
    'ml_stack registry: one row per project (prediction problem). Extension configuration: kept by pg_dump.';

SELECT pg_catalog.pg_extension_config_dump('ml_stack.projects', '');
SELECT pg_catalog.pg_extension_config_dump('ml_stack.projects_id_seq', '');

-- source: sql/registry/snapshots.sql
-- What a model was trained on: the relation, its columns and statistics, and the split.
CREATE TABLE ml_stack.snapshots (
    id            bigserial PRIMARY KEY,
    project_id    bigint NOT NULL REFERENCES ml_stack.projects (id) ON DELETE CASCADE,
    relation_name text,
    y_column_name text NOT NULL,
    features      jsonb NOT NULL,   -- [{name, type, count, nulls, mean, std, min, max}, ...] in table order
    label         jsonb NOT NULL,   -- {name, type, mean, std, min, max, classes}
    rows          bigint NOT NULL,  -- rows used (label not NULL)
    skipped_rows  bigint NOT NULL DEFAULT 0,  -- rows read whose label was NULL
    train_rows    bigint NOT NULL,
    test_rows     bigint NOT NULL,
    test_size     real NOT NULL,
    test_sampling text NOT NULL CHECK (test_sampling IN ('random', 'last', 'stratified')),
    seed          bigint NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON ml_stack.snapshots (project_id);
COMMENT ON TABLE ml_stack.snapshots IS
    'ml_stack registry: the data each model was trained on (columns, statistics, split and its seed).';

SELECT pg_catalog.pg_extension_config_dump('ml_stack.snapshots', '');
SELECT pg_catalog.pg_extension_config_dump('ml_stack.snapshots_id_seq', '');

-- source: sql/registry/models.sql
-- Every trained or imported model, versioned by id, with what it needs to be served.
CREATE TABLE ml_stack.models (
    id           bigserial PRIMARY KEY,
    project_id   bigint NOT NULL REFERENCES ml_stack.projects (id) ON DELETE CASCADE,
    snapshot_id  bigint REFERENCES ml_stack.snapshots (id) ON DELETE SET NULL,
    algorithm    text NOT NULL,
    engine       text NOT NULL,
    task         text NOT NULL CHECK (task IN ('regression', 'classification')),
    hyperparams  jsonb NOT NULL DEFAULT '{}',
    preprocess   jsonb NOT NULL DEFAULT '{}',
    num_features integer NOT NULL CHECK (num_features > 0),
    classes      float8[],          -- classification: class labels, ascending
    artifact     jsonb NOT NULL,    -- the fitted model, in raw feature space (see serving/expressions.sql)
    metrics      jsonb NOT NULL DEFAULT '{}',
    status       text NOT NULL DEFAULT 'successful' CHECK (status IN ('successful', 'imported')),
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON ml_stack.models (project_id);
COMMENT ON TABLE ml_stack.models IS
    'ml_stack registry: every model (algorithm, engine, hyperparameters, metrics on the test split, artifact).';

SELECT pg_catalog.pg_extension_config_dump('ml_stack.models', '');
SELECT pg_catalog.pg_extension_config_dump('ml_stack.models_id_seq', '');

-- source: sql/registry/deployments.sql
-- Append-only deployment history; the newest row of a project is what predict() serves.
CREATE TABLE ml_stack.deployments (
    id         bigserial PRIMARY KEY,
    project_id bigint NOT NULL REFERENCES ml_stack.projects (id) ON DELETE CASCADE,
    model_id   bigint NOT NULL REFERENCES ml_stack.models (id) ON DELETE CASCADE,
    strategy   text NOT NULL
               CHECK (strategy IN ('best_score', 'most_recent', 'rollback', 'specific', 'automatic', 'import')),
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX ON ml_stack.deployments (project_id, id);
COMMENT ON TABLE ml_stack.deployments IS
    'ml_stack registry: append-only deployment history; the newest row per project is the deployed model.';

SELECT pg_catalog.pg_extension_config_dump('ml_stack.deployments', '');
SELECT pg_catalog.pg_extension_config_dump('ml_stack.deployments_id_seq', '');

-- source: sql/registry/models_0.2.0.sql
-- 0.2.0: the hyperparameter search behind a model (every candidate's scores).
ALTER TABLE ml_stack.models ADD COLUMN search jsonb;
COMMENT ON COLUMN ml_stack.models.search IS
    'ml_stack: the hyperparameter search that chose this model''s hyperparameters (method, scoring, cv, every candidate''s parameters and scores); NULL without a search.';

-- source: sql/vectors/vectorizers.sql
-- 0.3.0: fitted vectorizers (counts, tfidf): a vocabulary of lexemes, fitted on a
-- column or on a model's training rows, stored and versioned. A name's newest
-- version is what embed(name, ...) uses; a model keeps the id of the version it
-- was trained with, so refitting a name never changes a deployed model.
CREATE TABLE ml_stack.vectorizers (
    id            bigserial PRIMARY KEY,
    name          text NOT NULL CHECK (name <> ''),
    version       integer NOT NULL CHECK (version > 0),
    method        text NOT NULL CHECK (method IN ('counts', 'tfidf')),
    config        text NOT NULL,                  -- the text search configuration of to_tsvector
    options       jsonb NOT NULL DEFAULT '{}',    -- the fit options as given, defaults filled in
    dims          integer NOT NULL CHECK (dims > 0),
    documents     bigint NOT NULL,                -- rows it was fitted on (NULL texts not counted)
    fitted_on     jsonb NOT NULL,                 -- {"relation": .., "column": ..} or {"model_training": ..}
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (name, version)
);
COMMENT ON TABLE ml_stack.vectorizers IS
    'ml_stack: fitted text vectorizers (counts, tfidf): one row per version of a name; the newest version serves embed(name, ...).';

-- The vocabulary: term -> position (1-based, terms in byte order as scikit-learn
-- sorts them), document frequency and inverse document frequency.
CREATE TABLE ml_stack.vectorizer_terms (
    vectorizer_id bigint NOT NULL REFERENCES ml_stack.vectorizers (id) ON DELETE CASCADE,
    term          text COLLATE "C" NOT NULL,
    idx           integer NOT NULL,
    df            bigint NOT NULL,
    idf           float8 NOT NULL,
    PRIMARY KEY (vectorizer_id, term),
    UNIQUE (vectorizer_id, idx)
);
COMMENT ON TABLE ml_stack.vectorizer_terms IS
    'ml_stack: the vocabulary of each fitted vectorizer (term, its position in the vector, document frequency, idf).';

SELECT pg_catalog.pg_extension_config_dump('ml_stack.vectorizers', '');
SELECT pg_catalog.pg_extension_config_dump('ml_stack.vectorizers_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('ml_stack.vectorizer_terms', '');

-- source: sql/registry/snapshots_0.3.0.sql
-- 0.3.0: the layout of a model's features by column (numbers, arrays, vectorized
-- text with its transformer), which predict_row() follows; NULL before 0.3.0 (every
-- feature was then one numeric column, as "features" lists them).
ALTER TABLE ml_stack.snapshots ADD COLUMN columns jsonb;
COMMENT ON COLUMN ml_stack.snapshots.columns IS
    'ml_stack: per feature column, in table order: name, type, kind (number, boolean, array, text), offset and width among the model''s features, and for text its transformer.';
-- _prepare_dataset takes the project's name now (it names the vocabularies it fits).
DROP FUNCTION IF EXISTS ml_stack._prepare_dataset(regclass, text, text, real, text, bigint, jsonb);

-- source: sql/registry/models_0.4.0.sql
-- 0.4.0: why a trained model was deployed automatically or not (train's decision, kept
-- for the user and the retraining history: a better score, or other feature columns
-- than the deployed model's, which would change the serving function's signature).
ALTER TABLE ml_stack.models ADD COLUMN deploy_decision text;
COMMENT ON COLUMN ml_stack.models.deploy_decision IS
    'ml_stack: train''s automatic-deploy decision for this model and why (e.g. "not deployed: its feature columns differ from the deployed model 3''s"); NULL for imported models and before 0.4.0.';

-- source: sql/registry/confidential_0.4.1.sql
-- 0.4.1: confidential projects. A confidential project's models are served without
-- their parameters in the catalog (pg_proc.prosrc is readable by every role): the
-- serving functions read them from ml_stack._model_parameters, which only ml_stack's
-- owner reads, and the registry's model rows are visible only inside the project
-- (serving/confidential.sql).
ALTER TABLE ml_stack.projects ADD COLUMN confidential boolean NOT NULL DEFAULT false;
COMMENT ON COLUMN ml_stack.projects.confidential IS
    'ml_stack: the models'' parameters are hidden from roles outside the project (those that cannot read its training relation and are not ml_stack_admin): not in the serving functions'' source, not in ml_stack.models. Set with ml_stack.set_confidential().';

-- The parameters of the confidential projects' models, in the arrays their serving
-- functions read. Derived from ml_stack.models by compiling (serving/confidential.sql),
-- so not dumped: restoring the registry compiles them again.
CREATE TABLE ml_stack._model_parameters (
    model_id   bigint PRIMARY KEY REFERENCES ml_stack.models (id) ON DELETE CASCADE,
    format     text NOT NULL CHECK (format IN ('linear', 'trees')),
    -- linear: weights class-major, one intercept per score, impute per feature (NULL: none)
    weights    float8[],
    intercepts float8[],
    impute     float8[],
    -- trees: every tree's nodes one after another (child indexes global, -1 for a leaf)
    node_feature   integer[],
    node_threshold float8[],
    node_test      smallint[],   -- 0 '<', 1 '<=', 2 '>=' (missing left), 3 '>' (missing left): serving/trees.sql's tests
    node_left      integer[],
    node_right     integer[],
    node_value     float8[],     -- leaves, in the artifact's sum type (float4 values stored exactly)
    tree_root      integer[],
    tree_output    integer[],
    base           float8[],
    shift          float8[],     -- per feature: (x - shift) / scale after impute
    scale          float8[],
    sum_float4     boolean,
    divisor        float8,
    missing_null   boolean       -- 'null' models: a missing feature without impute gives NULL
);
REVOKE ALL ON ml_stack._model_parameters FROM PUBLIC;
COMMENT ON TABLE ml_stack._model_parameters IS
    'ml_stack internal: parameters of confidential projects'' models, read by their serving functions as ml_stack''s owner; no role but the owner reads it.';

-- source: sql/registry/management_0.5.0.sql
-- 0.5.0: a dropped model leaves its place in the deployment history (model_id NULL: "a model
-- since dropped") instead of taking its rows with it. Before, deleting the deployed model
-- deleted its deployments, and the project silently served the model deployed before it.
ALTER TABLE ml_stack.deployments ALTER COLUMN model_id DROP NOT NULL;
ALTER TABLE ml_stack.deployments DROP CONSTRAINT deployments_model_id_fkey;
ALTER TABLE ml_stack.deployments ADD CONSTRAINT deployments_model_id_fkey
    FOREIGN KEY (model_id) REFERENCES ml_stack.models (id) ON DELETE SET NULL;
COMMENT ON COLUMN ml_stack.deployments.model_id IS
    'ml_stack: the model deployed; NULL once that model was dropped (a project whose newest deployment is NULL serves nothing).';

-- MLflow-style aliases: a name per project for one of its models (predict(''project@alias'', ...)).
CREATE TABLE ml_stack.model_aliases (
    project_id bigint NOT NULL REFERENCES ml_stack.projects (id) ON DELETE CASCADE,
    alias      text NOT NULL CHECK (alias ~ '^[A-Za-z_][A-Za-z0-9_-]*$'),
    model_id   bigint NOT NULL REFERENCES ml_stack.models (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, alias)
);
COMMENT ON TABLE ml_stack.model_aliases IS
    'ml_stack registry: aliases of models (set_alias), served as predict(''<project>@<alias>'', ...).';
SELECT pg_catalog.pg_extension_config_dump('ml_stack.model_aliases', '');

-- Free-form tags on models (set_tag), as MLflow's; a table of their own, since an UPDATE of
-- ml_stack.models recompiles the models it touches.
CREATE TABLE ml_stack.model_tags (
    model_id bigint NOT NULL REFERENCES ml_stack.models (id) ON DELETE CASCADE,
    key      text NOT NULL CHECK (key <> ''),
    value    text NOT NULL,
    PRIMARY KEY (model_id, key)
);
COMMENT ON TABLE ml_stack.model_tags IS 'ml_stack registry: tags of models (ml_stack.set_tag).';
SELECT pg_catalog.pg_extension_config_dump('ml_stack.model_tags', '');

-- source: sql/training/train_0.5.0.sql
-- 0.5.0: train takes exclude (columns that are not features), kept in the snapshot so that a
-- retrain by project name leaves out the same columns; the internal functions on the way take
-- it too, and _prepare_dataset the default encoding of categorical columns. Their 0.4.x
-- signatures go (a DO block: DROP FUNCTION IF EXISTS would print a NOTICE on a fresh install).
ALTER TABLE ml_stack.snapshots ADD COLUMN exclude text[];
COMMENT ON COLUMN ml_stack.snapshots.exclude IS
    'ml_stack: the columns of the relation left out of the features (train''s exclude).';
DO $$
DECLARE
    fn text;
BEGIN
    FOREACH fn IN ARRAY ARRAY[
        'ml_stack.train(text, text, text, text, text, jsonb, text, jsonb, jsonb, real, text, jsonb, boolean, text)',
        'ml_stack._train(text, text, text, text, text, jsonb, text, jsonb, jsonb, real, text, jsonb, boolean, text, text)',
        'ml_stack._train_unguarded(text, text, text, text, text, jsonb, text, jsonb, jsonb, real, text, jsonb, boolean, text, text)',
        'ml_stack._prepare_dataset(regclass, text, text, real, text, bigint, jsonb, text)'] LOOP
        IF to_regprocedure(fn) IS NOT NULL THEN
            EXECUTE format('DROP FUNCTION %s', fn);
        END IF;
    END LOOP;
END
$$;

-- source: sql/registry/snapshots_0.5.1.sql
-- 0.5.1: test_sampling 'first' (PostgresML's: the test rows are the relation's first rows).
ALTER TABLE ml_stack.snapshots DROP CONSTRAINT snapshots_test_sampling_check;
ALTER TABLE ml_stack.snapshots ADD CONSTRAINT snapshots_test_sampling_check
    CHECK (test_sampling IN ('random', 'first', 'last', 'stratified'));

-- source: sql/engines/linear_algebra.sql
-- Solve A x = b for a symmetric positive semi-definite A (p x p, row-major flat
-- array), by Cholesky factorisation with symmetric pivoting on the scaled matrix.
-- A direction whose pivot falls below `tolerance` (relative to the unit diagonal
-- of the scaled matrix) is degenerate (constant or collinear features, the
-- softmax intercept shift): its component is set to 0, which gives a
-- least-squares solution with the same predictions as the minimum-norm one.
CREATE OR REPLACE FUNCTION ml_stack._solve_psd(a float8[], b float8[], tolerance float8 DEFAULT 1e-10)
RETURNS float8[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p       integer := cardinality(b);
    d       float8[] := array_fill(0::float8, ARRAY[p]);  -- scaling: 1/sqrt(diag)
    l       float8[];                                     -- factor, row-major, scaled system
    perm    integer[] := array_fill(0, ARRAY[p]);
    used    boolean[] := array_fill(false, ARRAY[p]);
    rank    integer := 0;
    y       float8[] := array_fill(0::float8, ARRAY[p]);
    x       float8[] := array_fill(0::float8, ARRAY[p]);
    i integer; j integer; k integer; best integer; pi integer; pj integer;
    s float8; v float8;
BEGIN
    IF cardinality(a) <> p * p THEN
        RAISE EXCEPTION '_solve_psd: matrix has % elements, expected %', cardinality(a), p * p;
    END IF;
    FOR i IN 1 .. p LOOP
        v := a[(i - 1) * p + i];
        d[i] := CASE WHEN v > 0 THEN 1 / sqrt(v) ELSE 0 END;
    END LOOP;
    -- l holds the scaled matrix, overwritten column by column with the factor.
    l := array_fill(0::float8, ARRAY[p * p]);
    FOR i IN 1 .. p LOOP
        FOR j IN 1 .. p LOOP
            l[(i - 1) * p + j] := a[(i - 1) * p + j] * d[i] * d[j];
        END LOOP;
    END LOOP;
    FOR k IN 1 .. p LOOP
        -- the remaining variable with the largest updated diagonal
        best := 0; v := tolerance;
        FOR i IN 1 .. p LOOP
            IF NOT used[i] AND d[i] > 0 THEN
                s := l[(i - 1) * p + i];
                IF s > v THEN v := s; best := i; END IF;
            END IF;
        END LOOP;
        EXIT WHEN best = 0;
        used[best] := true;
        rank := rank + 1;
        perm[rank] := best;
        s := sqrt(l[(best - 1) * p + best]);
        l[(best - 1) * p + best] := s;
        FOR i IN 1 .. p LOOP
            IF NOT used[i] AND d[i] > 0 THEN
                l[(i - 1) * p + best] := l[(i - 1) * p + best] / s;
            END IF;
        END LOOP;
        FOR i IN 1 .. p LOOP
            IF NOT used[i] AND d[i] > 0 THEN
                v := l[(i - 1) * p + best];
                FOR j IN 1 .. p LOOP
                    IF NOT used[j] AND d[j] > 0 THEN
                        l[(i - 1) * p + j] := l[(i - 1) * p + j] - v * l[(j - 1) * p + best];
                    END IF;
                END LOOP;
            END IF;
        END LOOP;
    END LOOP;
    -- forward substitution L y = P' D b, over the pivoted variables
    FOR k IN 1 .. rank LOOP
        pi := perm[k];
        s := b[pi] * d[pi];
        FOR j IN 1 .. k - 1 LOOP
            s := s - l[(pi - 1) * p + perm[j]] * y[j];
        END LOOP;
        y[k] := s / l[(pi - 1) * p + pi];
    END LOOP;
    -- back substitution L' z = y; x = D z (variables left out stay 0)
    FOR k IN REVERSE rank .. 1 LOOP
        pi := perm[k];
        s := y[k];
        FOR j IN k + 1 .. rank LOOP
            pj := perm[j];
            s := s - l[(pj - 1) * p + pi] * x[pj];
        END LOOP;
        x[pi] := s / l[(pi - 1) * p + pi];
    END LOOP;
    FOR i IN 1 .. p LOOP
        x[i] := x[i] * d[i];
    END LOOP;
    RETURN x;
END
$$;

-- source: sql/engines/sql_least_squares.sql
-- SQL engine: ordinary least squares and ridge regression.
-- One pass over the training rows builds the centred normal equations
-- (X'X and X'y around a near-mean shift, so large offsets do not cancel), then a
-- small dense solve. Ridge adds alpha to the diagonal; the intercept is not
-- penalised (as scikit-learn's Ridge, which centres the data).
-- Returns {"intercepts": [b], "coefficients": [[w1..wp]]} on the preprocessed features.
CREATE OR REPLACE FUNCTION ml_stack._fit_least_squares(dataset jsonb, alpha float8)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET jit = off
SET extra_float_digits = 3
AS $$
#variable_conflict use_column  -- generated-column aliases (i, ci) in the queries below
DECLARE
    p      integer := jsonb_array_length(dataset -> 'x');
    cy     float8 := (dataset -> 'label' ->> 'mean')::float8;
    inner_cols text;
    aggs   text := 'count(*)::float8, sum(dy)';
    s      float8[];
    n      float8;
    sy     float8;
    a      float8[] := array_fill(0::float8, ARRAY[p * p]);
    b      float8[] := array_fill(0::float8, ARRAY[p]);
    sx     float8[] := array_fill(0::float8, ARRAY[p]);
    mx     float8[] := array_fill(0::float8, ARRAY[p]);
    w      float8[];
    pos    integer;
    i integer; j integer;
    started timestamptz := clock_timestamp();
BEGIN
    SELECT string_agg(format('%s - %s::float8 AS d%s', e, (dataset -> 'x_mean' ->> (i - 1)::integer), i), ', ')
    INTO inner_cols
    FROM jsonb_array_elements_text(dataset -> 'x') WITH ORDINALITY AS t(e, i);
    FOR i IN 1 .. p LOOP
        aggs := aggs || format(', sum(d%s), sum(d%s * dy)', i, i);
    END LOOP;
    FOR i IN 1 .. p LOOP
        FOR j IN i .. p LOOP
            aggs := aggs || format(', sum(d%s * d%s)', i, j);
        END LOOP;
    END LOOP;
    -- OFFSET 0 fences the per-row expressions: computed once, not once per aggregate
    EXECUTE format('SELECT ARRAY[%s] FROM (SELECT %s, y - %s::float8 AS dy FROM pg_temp._ml_stack_rows WHERE %s OFFSET 0) AS t',
                   aggs, inner_cols, cy, dataset ->> 'train_filter')
    INTO s;
    n := s[1]; sy := s[2];
    FOR i IN 1 .. p LOOP
        sx[i] := s[3 + (i - 1) * 2];
        b[i] := s[4 + (i - 1) * 2] - sx[i] * sy / n;
    END LOOP;
    pos := 2 + 2 * p;
    FOR i IN 1 .. p LOOP
        FOR j IN i .. p LOOP
            pos := pos + 1;
            a[(i - 1) * p + j] := s[pos] - sx[i] * sx[j] / n;
            a[(j - 1) * p + i] := a[(i - 1) * p + j];
        END LOOP;
        a[(i - 1) * p + i] := a[(i - 1) * p + i] + alpha;
    END LOOP;
    w := ml_stack._solve_psd(a, b);
    -- intercept = mean(y) - mean(x) . w
    sy := cy + sy / n;
    FOR i IN 1 .. p LOOP
        mx[i] := (dataset -> 'x_mean' ->> (i - 1))::float8 + sx[i] / n;
        sy := sy - mx[i] * w[i];
    END LOOP;
    RAISE NOTICE 'ml_stack: least squares on % rows x % features in % s', n, p,
        round(extract(epoch FROM clock_timestamp() - started)::numeric, 3);
    RETURN jsonb_build_object('intercepts', jsonb_build_array(sy), 'coefficients', jsonb_build_array(to_jsonb(w)));
END
$$;

-- source: sql/engines/sql_logistic.sql
-- SQL engine: L2-regularised logistic regression, as scikit-learn's
-- LogisticRegression (penalty 'l2', intercept not penalised): binary with one
-- weight vector, multiclass as multinomial softmax over K vectors.
--
-- Newton's method, one aggregate pass over the training rows per iteration for
-- the loss, gradient and Hessian. It runs on standardised features u = (x - m)/s
-- for conditioning; the penalty on the model's own weights w = v / s becomes
-- v^2 / (2 C s^2), so the optimum is exactly scikit-learn's. A step that raises
-- the objective is halved (backtracking). On large data, a first phase on a
-- sample of the rows gives the full-data Newton a starting point near the optimum.
-- Returns {"intercepts": [..], "coefficients": [[..], ..]} on the preprocessed features.
CREATE OR REPLACE FUNCTION ml_stack._fit_logistic(dataset jsonb, c float8, max_iter integer, tol float8)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET jit = off
SET extra_float_digits = 3
AS $$
#variable_conflict use_column  -- generated-column aliases (i, ci) in the queries below
DECLARE
    p       integer := jsonb_array_length(dataset -> 'x');
    classes float8[] := ARRAY(SELECT jsonb_array_elements_text(dataset -> 'classes')::float8);
    nk      integer := cardinality(classes);
    k       integer := CASE WHEN cardinality(classes) = 2 THEN 1 ELSE cardinality(classes) END;  -- weight vectors
    q       integer := p + 1;            -- parameters per vector (intercept first)
    np      integer := k * (p + 1);      -- all parameters
    m       float8[] := ARRAY(SELECT jsonb_array_elements_text(dataset -> 'x_mean')::float8);
    sd      float8[] := ARRAY(SELECT jsonb_array_elements_text(dataset -> 'x_std')::float8);
    pen     float8[] := array_fill(0::float8, ARRAY[np]);   -- penalty weight per parameter
    v       float8[] := array_fill(0::float8, ARRAY[np]);   -- parameters, standardised space
    v_prev  float8[];
    dir     float8[];
    step    float8 := 1;
    f       float8; f_prev float8 := 'Infinity';
    res     float8[];
    g       float8[]; h float8[];
    u_cols  text; y_cols text; z_cols text; agg text; prob_cols text; row_terms text;
    rows_filter text;
    n_train bigint;
    phase   integer;
    phase_iter integer;
    phase_tol float8;
    pen_scale float8;
    a_idx   integer; b_idx integer; ci integer; cj integer; ii integer; jj integer;
    dmax    float8;
    iter    integer := 0;
    pos     integer;
    i integer; j integer;
    intercepts float8[]; coefs jsonb := '[]'; w float8[]; b0 float8;
    started timestamptz := clock_timestamp();
    last_notice timestamptz := clock_timestamp();   -- progress lines only when a run is long: every 5 s
    sample_iters integer := 0;                       -- Newton steps of phase 1 (on a sample)
BEGIN
    -- its size is checked by _sql_fit (_sql_engine_too_large)
    FOR i IN 1 .. p LOOP
        IF sd[i] <= 0 THEN sd[i] := 1; END IF;   -- constant feature: its weight stays 0 (no signal)
    END LOOP;
    FOR ci IN 1 .. k LOOP
        FOR i IN 1 .. p LOOP
            pen[(ci - 1) * q + 1 + i] := 1 / (c * sd[i] * sd[i]);
        END LOOP;
    END LOOP;

    -- Level 1 (fenced): standardised features u1..up and class indicators y1..yk.
    SELECT string_agg(format('(%s - %s::float8) / %s::float8 AS u%s', e, m[i], sd[i], i), ', ')
    INTO u_cols FROM jsonb_array_elements_text(dataset -> 'x') WITH ORDINALITY AS t(e, i);
    IF k = 1 THEN
        y_cols := format('(y = %s::float8)::integer::float8 AS y1', classes[2]);
    ELSE
        SELECT string_agg(format('(y = %s::float8)::integer::float8 AS y%s', classes[i], i), ', ')
        INTO y_cols FROM generate_series(1, k) AS i;
    END IF;
    -- Last level (fenced): the per-row factors of the gradient and the Hessian, computed once per row and
    -- not once per aggregate: g_c = p_c - y_c, w_c = p_c (1 - p_c), b_c_i = w_c u_i, a_c_i = p_c u_i.
    SELECT string_agg(format('p%1$s - y%1$s AS g%1$s, p%1$s * (1 - p%1$s) AS w%1$s', ci)
                      || (SELECT string_agg(format(', p%1$s * (1 - p%1$s) * u%2$s AS b%1$s_%2$s', ci, i)
                                            || CASE WHEN k > 1 THEN format(', p%1$s * u%2$s AS a%1$s_%2$s', ci, i) ELSE '' END, '')
                          FROM generate_series(1, p) AS i), ', ')
    INTO row_terms FROM generate_series(1, k) AS ci;

    -- Aggregates: loss, gradient, Hessian (upper triangle).
    -- Parameter index of (vector ci, term ii) is (ci-1)*q + ii + 1, term 0 = intercept (u0 = 1).
    agg := 'sum(loss)';
    FOR ci IN 1 .. k LOOP
        FOR ii IN 0 .. p LOOP
            agg := agg || format(', sum(g%s%s)', ci, CASE WHEN ii = 0 THEN '' ELSE format(' * u%s', ii) END);
        END LOOP;
    END LOOP;
    FOR a_idx IN 1 .. np LOOP
        ci := (a_idx - 1) / q + 1; ii := (a_idx - 1) % q;
        FOR b_idx IN a_idx .. np LOOP
            cj := (b_idx - 1) / q + 1; jj := (b_idx - 1) % q;
            agg := agg || CASE
                -- one class: w_c u_i u_j
                WHEN ci = cj AND ii = 0 AND jj = 0 THEN format(', sum(w%s)', ci)
                WHEN ci = cj AND ii = 0 THEN format(', sum(b%s_%s)', ci, jj)
                WHEN ci = cj THEN format(', sum(b%s_%s * u%s)', ci, ii, jj)
                -- two classes (softmax): -p_c u_i p_c' u_j
                ELSE format(', -sum(%s * %s)',
                            CASE WHEN ii = 0 THEN format('p%s', ci) ELSE format('a%s_%s', ci, ii) END,
                            CASE WHEN jj = 0 THEN format('p%s', cj) ELSE format('a%s_%s', cj, jj) END) END;
        END LOOP;
    END LOOP;

    -- Phase 1, on large data only: Newton on a 1/16 sample of the training rows (the last hex digit of the
    -- split key, independent of the split itself), with the penalty scaled alike, to start phase 2 near the
    -- optimum. Phase 2: Newton on all training rows, to the tolerance. Newton converges quadratically from
    -- close by, so this saves most full passes.
    n_train := (dataset ->> 'train_rows')::bigint;
    FOR phase IN CASE WHEN n_train >= 160000 THEN 1 ELSE 2 END .. 2 LOOP
        rows_filter := dataset ->> 'train_filter';
        pen_scale := 1;
        phase_tol := tol;
        IF phase = 1 THEN
            rows_filter := format('(%s) AND right(k, 1) = ''0''', rows_filter);
            pen_scale := 1.0 / 16;
            phase_tol := greatest(tol, 1e-3);
        END IF;
        f_prev := 'Infinity'; step := 1; phase_iter := 0;
        LOOP
            iter := iter + 1; phase_iter := phase_iter + 1;
            IF phase = 1 THEN
                sample_iters := sample_iters + 1;
            END IF;
            -- Level 2 (fenced): the linear scores z1..zk at the current parameters.
            SELECT string_agg(format('%s::float8%s AS z%s', v[(ci - 1) * q + 1],
                                     (SELECT string_agg(format(' + u%s * %s::float8', i, v[(ci - 1) * q + 1 + i]), '')
                                      FROM generate_series(1, p) AS i), ci), ', ')
            INTO z_cols FROM generate_series(1, k) AS ci;
            -- Level 3: probabilities and the loss of each row.
            IF k = 1 THEN
                prob_cols := format(
                    'SELECT u.*, 1 / (1 + exp(-least(greatest(z1, -700), 700))) AS p1, '
                    '       greatest(z1, 0) + ln(1 + exp(-abs(least(greatest(z1, -700), 700)))) - y1 * z1 AS loss '
                    'FROM (SELECT u.*, %s FROM (SELECT %s, %s FROM pg_temp._ml_stack_rows WHERE %s OFFSET 0) AS u OFFSET 0) AS u',
                    z_cols, u_cols, y_cols, rows_filter);
            ELSE
                -- softmax with the largest score subtracted: exp never overflows
                prob_cols := format(
                    'SELECT e.*, %s, zmax + ln(esum) - (%s) AS loss FROM ('
                    '  SELECT s.*, %s FROM ('
                    '    SELECT z.*, greatest(%s) AS zmax FROM ('
                    '      SELECT u.*, %s FROM (SELECT %s, %s FROM pg_temp._ml_stack_rows WHERE %s OFFSET 0) AS u OFFSET 0'
                    '    ) AS z OFFSET 0'
                    '  ) AS s OFFSET 0'
                    ') AS e',
                    (SELECT string_agg(format('e%s / esum AS p%s', i, i), ', ') FROM generate_series(1, k) AS i),
                    (SELECT string_agg(format('y%s * z%s', i, i), ' + ') FROM generate_series(1, k) AS i),
                    (SELECT string_agg(format('exp(z%s - zmax) AS e%s', i, i), ', ') FROM generate_series(1, k) AS i)
                        || ', ' || (SELECT string_agg(format('exp(z%s - zmax)', i), ' + ') FROM generate_series(1, k) AS i) || ' AS esum',
                    (SELECT string_agg(format('z%s', i), ', ') FROM generate_series(1, k) AS i),
                    z_cols, u_cols, y_cols, rows_filter);
            END IF;
            EXECUTE format('SELECT ARRAY[%s] FROM (SELECT t.*, %s FROM (%s OFFSET 0) AS t OFFSET 0) AS r',
                           agg, row_terms, prob_cols)
            INTO res;

            f := res[1];
            FOR i IN 1 .. np LOOP
                f := f + 0.5 * pen_scale * pen[i] * v[i] * v[i];
            END LOOP;
            IF f > f_prev + 1e-12 * abs(f_prev) AND step > 1e-8 THEN
                -- the last step overshot: halve it and evaluate again
                step := step / 2;
                FOR i IN 1 .. np LOOP
                    v[i] := v_prev[i] + step * dir[i];
                END LOOP;
                IF clock_timestamp() - last_notice > interval '5 seconds' THEN
                    RAISE NOTICE 'ml_stack: logistic iteration %: loss % (step halved to %)', iter, f, step;
                    last_notice := clock_timestamp();
                END IF;
                CONTINUE WHEN phase_iter < max_iter * 2;
                EXIT;
            END IF;

            g := res[2 : 1 + np];
            h := array_fill(0::float8, ARRAY[np * np]);
            pos := 1 + np;
            FOR a_idx IN 1 .. np LOOP
                g[a_idx] := g[a_idx] + pen_scale * pen[a_idx] * v[a_idx];
                FOR b_idx IN a_idx .. np LOOP
                    pos := pos + 1;
                    h[(a_idx - 1) * np + b_idx] := res[pos];
                    h[(b_idx - 1) * np + a_idx] := res[pos];
                END LOOP;
                h[(a_idx - 1) * np + a_idx] := h[(a_idx - 1) * np + a_idx] + pen_scale * pen[a_idx];
            END LOOP;
            dir := ml_stack._solve_psd(h, g);
            dmax := 0;
            FOR i IN 1 .. np LOOP
                dir[i] := -dir[i];
                dmax := greatest(dmax, abs(dir[i]));
            END LOOP;
            IF clock_timestamp() - last_notice > interval '5 seconds' THEN
                RAISE NOTICE 'ml_stack: logistic iteration % (%): loss %, newton step % (% s)', iter,
                    CASE WHEN phase = 1 THEN 'sample' ELSE 'all rows' END, f, dmax,
                    round(extract(epoch FROM clock_timestamp() - started)::numeric, 1);
                last_notice := clock_timestamp();
            END IF;
            v_prev := v; f_prev := f; step := 1;
            FOR i IN 1 .. np LOOP
                v[i] := v[i] + dir[i];
            END LOOP;
            EXIT WHEN dmax < phase_tol OR phase_iter >= max_iter;
        END LOOP;
    END LOOP;
    IF dmax >= tol THEN
        RAISE WARNING 'ml_stack: logistic regression stopped after % iterations without converging (last step %)', iter, dmax
            USING HINT = 'Raise max_iter, or scale the features with preprocess.';
    END IF;

    -- back to the preprocessed features: w = v / s, b = v0 - sum(w * m)
    intercepts := '{}';
    FOR ci IN 1 .. k LOOP
        w := '{}'; b0 := v[(ci - 1) * q + 1];
        FOR i IN 1 .. p LOOP
            w := w || (v[(ci - 1) * q + 1 + i] / sd[i]);
            b0 := b0 - w[i] * m[i];
        END LOOP;
        intercepts := intercepts || b0;
        coefs := coefs || jsonb_build_array(to_jsonb(w));
    END LOOP;
    RAISE NOTICE 'ml_stack: logistic regression converged in % iterations%, % s', iter,
        CASE WHEN sample_iters > 0 THEN format(' (%s on a 1/16 sample, then %s on all rows)', sample_iters, iter - sample_iters)
             ELSE '' END,
        round(extract(epoch FROM clock_timestamp() - started)::numeric, 3);
    RETURN jsonb_build_object('intercepts', to_jsonb(intercepts), 'coefficients', coefs);
END
$$;

-- source: sql/engines/sparse_predictions_0.6.0.sql
-- 0.6.0: the sparse scoring of test rows writes into a table the caller names (the deployed
-- model is scored so on a new split: training/compare.sql); the signature before that goes.
DROP FUNCTION IF EXISTS ml_stack._predict_test_rows_sparse(jsonb, float8[], float8[]);

-- source: sql/engines/sparse_predictions.sql
-- Shared by the sparse engines of the SQL engine (naive Bayes, logistic regression by L-BFGS): their models are
-- 'linear' artifacts over the model's full feature vector (numeric x and text blocks), in raw feature space.

-- The artifact's impute list: the x features' impute values at their positions, NULL for block features.
CREATE OR REPLACE FUNCTION ml_stack._model_impute(dataset jsonb)
RETURNS jsonb
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT to_jsonb(array_agg(i.v ORDER BY g.pos))
    FROM generate_series(1, (dataset ->> 'num_features')::integer) AS g(pos)
    LEFT JOIN (SELECT p.pos::integer AS pos, (dataset -> 'transform' -> (p.j - 1)::integer ->> 'impute')::float8 AS v
               FROM jsonb_array_elements_text(dataset -> 'x_positions') WITH ORDINALITY AS p(pos, j)) AS i
           ON i.pos = g.pos
$$;

-- Score the test rows with the served weights (raw space, class-major: weights[(c - 1) * P + j], one vector per
-- score), sparsely (text blocks through their sparse transform, never densified), into
-- pg_temp.<into_table>(r, yhat, proba). One score: logistic link (class 2 when > 0), else softmax.
-- The deployed model is scored so on a new split too (training/compare.sql), with a dataset that
-- describes its own features.
CREATE OR REPLACE FUNCTION ml_stack._predict_test_rows_sparse(dataset jsonb, weights float8[], intercepts float8[],
                                                              into_table text DEFAULT '_ml_stack_predictions')
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET jit = off
SET extra_float_digits = 3
AS $$
DECLARE
    classes float8[] := ARRAY(SELECT jsonb_array_elements_text(dataset -> 'classes')::float8);
    k integer := cardinality(intercepts);
    np integer := (dataset ->> 'num_features')::integer;
    p integer := jsonb_array_length(dataset -> 'x');
    xpos integer[] := ARRAY(SELECT jsonb_array_elements_text(dataset -> 'x_positions')::integer);
    tf jsonb := dataset -> 'transform';
    scores text[] := '{}';
    block_joins text := '';
    blk jsonb;
BEGIN
    FOR c IN 1 .. k LOOP
        scores := scores || format('%s::float8%s', intercepts[c],
            coalesce((SELECT string_agg(format(' + $1[%s] * %s', (c - 1) * np + xpos[g.i],
                                               CASE WHEN tf -> (g.i - 1) ->> 'impute' IS NULL THEN format('t.x%s', g.i)
                                                    ELSE format('coalesce(t.x%s, %s::float8)', g.i, (tf -> (g.i - 1) ->> 'impute')::float8) END), '')
                      FROM generate_series(1, p) AS g(i)), ''));
    END LOOP;
    FOR blk IN SELECT value FROM jsonb_array_elements(dataset -> 'blocks') LOOP
        -- one pass over the row's terms gives the block's contribution to every score
        block_joins := block_joins || format(
            ' CROSS JOIN LATERAL (SELECT ARRAY[%s] AS s FROM %s AS s) AS b%s',
            (SELECT string_agg(format('coalesce(sum(s.val::real::float8 * $1[%s + s.idx]), 0)', (g.c - 1) * np + (blk ->> 'offset')::integer), ', ')
             FROM generate_series(1, k) AS g(c)),
            ml_stack._sparse_terms_sql(blk -> 'spec', format('t.t%s', blk ->> 't')), blk ->> 't');
        FOR c IN 1 .. k LOOP
            scores[c] := scores[c] || format(' + b%s.s[%s]', blk ->> 't', c);
        END LOOP;
    END LOOP;
    IF to_regclass(format('pg_temp.%I', into_table)) IS NOT NULL THEN
        EXECUTE format('DROP TABLE pg_temp.%I', into_table);
    END IF;
    EXECUTE format('CREATE TEMPORARY TABLE %I ON COMMIT DROP AS SELECT r, %s '
                   'FROM (SELECT t.r, ARRAY[%s] AS sc FROM pg_temp._ml_stack_rows AS t%s WHERE %s OFFSET 0) AS q',
                   into_table,
                   CASE WHEN k = 1 THEN '($2::float8[])[(sc[1] > 0)::integer + 1] AS yhat, ml_stack._binary_proba(sc[1]) AS proba'
                        ELSE '($2::float8[])[ml_stack._argmax(sc)] AS yhat, ml_stack._softmax(sc) AS proba' END,
                   array_to_string(scores, ', '), block_joins, dataset ->> 'test_filter')
        USING weights, classes;
END
$$;

-- source: sql/engines/sql_naive_bayes.sql
-- SQL engine: multinomial naive Bayes, as scikit-learn's MultinomialNB (alpha,
-- fit_prior = true): feature_log_prob[c][j] = ln((F[c][j] + alpha) / (sum_j F[c][j]
-- + alpha * P)) over the per-class feature sums F, class_log_prior[c] = ln(n_c / n).
-- One grouped pass: the numeric features (x) are summed per class, the vectorized
-- text columns (blocks) per class and term from their sparse vectors, never densified.
-- Its scores are linear in the features, so the artifact is the 'linear' format
-- (softmax link over one score per class) and serves as compiled SQL arithmetic.
-- It scores the test rows itself, sparsely, into pg_temp._ml_stack_predictions.
-- Block values go through real, as embed() returns them, so that the features of
-- training and serving are the same numbers.
CREATE OR REPLACE FUNCTION ml_stack._fit_naive_bayes(dataset jsonb, alpha float8)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET jit = off
SET extra_float_digits = 3
AS $$
DECLARE
    classes float8[] := ARRAY(SELECT jsonb_array_elements_text(dataset -> 'classes')::float8);
    nk      integer := jsonb_array_length(dataset -> 'classes');
    p       integer := jsonb_array_length(dataset -> 'x');
    np      integer := (dataset ->> 'num_features')::integer;
    xpos    integer[] := ARRAY(SELECT jsonb_array_elements_text(dataset -> 'x_positions')::integer);
    tf      jsonb := dataset -> 'transform';
    train_filter text := dataset ->> 'train_filter';
    f       float8[];     -- per-class feature sums, class-major: f[(c - 1) * np + j]
    w       float8[];     -- feature log probabilities, then folded onto raw features
    counts  float8[];
    ints    float8[] := '{}';
    coefs   jsonb := '[]';
    blk     jsonb;
    term    record;
    grp     record;
    c integer; j integer; jj integer;
    total float8;
    started timestamptz := clock_timestamp();
BEGIN
    alpha := greatest(alpha, 1e-10);   -- scikit-learn's floor for alpha
    FOR blk IN SELECT value FROM jsonb_array_elements(dataset -> 'blocks') LOOP
        IF blk -> 'spec' ->> 'kind' = 'python' THEN
            RAISE EXCEPTION 'naive_bayes needs non-negative features; column "%" is vectorized by %, whose vectors have negative values',
                            blk ->> 'column', blk -> 'spec' ->> 'name'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Train the python engine on it (e.g. algorithm => ''xgboost''), or vectorize with "counts" or "tfidf".';
        END IF;
        IF blk -> 'spec' ->> 'kind' = 'hashing' AND (blk -> 'spec' ->> 'signed')::boolean THEN
            RAISE EXCEPTION 'naive_bayes needs non-negative features; column "%" is vectorized by signed hashing', blk ->> 'column'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = format('Use {"%s": {"vectorize": "hashing", "options": {"signed": false}}}, or "counts" or "tfidf".', blk ->> 'column');
        END IF;
    END LOOP;
    f := array_fill(0::float8, ARRAY[nk * np]);

    -- the class counts and the numeric features: one grouped pass (their minimum checks the sign)
    counts := array_fill(0::float8, ARRAY[nk]);
    FOR grp IN EXECUTE format('SELECT y, count(*)::float8 AS n, ARRAY[%s]::float8[] AS s, ARRAY[%s]::float8[] AS mn '
                              'FROM pg_temp._ml_stack_rows WHERE %s GROUP BY y',
                              coalesce((SELECT string_agg(format('sum(%s)', e), ', ' ORDER BY i)
                                        FROM jsonb_array_elements_text(dataset -> 'x') WITH ORDINALITY AS t(e, i)), ''),
                              coalesce((SELECT string_agg(format('min(%s)', e), ', ' ORDER BY i)
                                        FROM jsonb_array_elements_text(dataset -> 'x') WITH ORDINALITY AS t(e, i)), ''),
                              train_filter) LOOP
        c := array_position(classes, grp.y);
        counts[c] := grp.n;
        FOR j IN 1 .. p LOOP
            IF grp.mn[j] < 0 THEN
                RAISE EXCEPTION 'naive_bayes needs non-negative features; "%" has negative values', dataset -> 'features' -> (j - 1) ->> 'name'
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'Leave it out in a view, or scale it with preprocess {"scale": "min_max"}.';
            END IF;
            f[(c - 1) * np + xpos[j]] := grp.s[j];
        END LOOP;
    END LOOP;
    -- the text blocks: per class and term
    FOR blk IN SELECT value FROM jsonb_array_elements(dataset -> 'blocks') LOOP
        FOR term IN EXECUTE format('SELECT t.y, s.idx, sum(s.val::real::float8) AS v, min(s.val) AS mn '
                                   'FROM pg_temp._ml_stack_rows AS t, LATERAL %s AS s '
                                   'WHERE %s GROUP BY t.y, s.idx',
                                   ml_stack._sparse_terms_sql(blk -> 'spec', format('t.t%s', blk ->> 't')), train_filter) LOOP
            IF term.mn < 0 THEN
                RAISE EXCEPTION 'naive_bayes needs non-negative features; column "%" is vectorized to negative values', blk ->> 'column'
                    USING ERRCODE = 'invalid_parameter_value', HINT = 'Use "counts", "tfidf" or unsigned hashing.';
            END IF;
            c := array_position(classes, term.y);
            f[(c - 1) * np + (blk ->> 'offset')::integer + term.idx] := term.v;
        END LOOP;
    END LOOP;

    -- log probabilities, then the preprocessing of x folded in: x' = (coalesce(x, impute) - shift) / scale
    w := array_fill(0::float8, ARRAY[nk * np]);
    FOR c IN 1 .. nk LOOP
        SELECT sum(x) + alpha * np INTO total FROM unnest(f[(c - 1) * np + 1 : c * np]) AS x;
        FOR j IN 1 .. np LOOP
            w[(c - 1) * np + j] := ln(f[(c - 1) * np + j] + alpha) - ln(total);
        END LOOP;
        ints := ints || (ln(counts[c]) - ln((dataset ->> 'train_rows')::float8));
        FOR j IN 1 .. p LOOP
            jj := (c - 1) * np + xpos[j];
            w[jj] := w[jj] / (tf -> (j - 1) ->> 'scale')::float8;
            ints[c] := ints[c] - w[jj] * (tf -> (j - 1) ->> 'shift')::float8;
        END LOOP;
        coefs := coefs || jsonb_build_array(to_jsonb(w[(c - 1) * np + 1 : c * np]));
    END LOOP;
    PERFORM ml_stack._predict_test_rows_sparse(dataset, w, ints);
    IF clock_timestamp() - started > interval '2 seconds' THEN
        RAISE NOTICE 'ml_stack: naive_bayes fitted on % features in % s', np,
            round(extract(epoch FROM clock_timestamp() - started)::numeric, 1);
    END IF;
    RETURN jsonb_build_object('format', 'linear', 'link', 'softmax', 'intercepts', to_jsonb(ints),
                              'coefficients', coefs, 'impute', ml_stack._model_impute(dataset));
END
$$;

-- source: sql/engines/sql_sparse_logistic.sql
-- SQL engine: L2-regularised logistic regression on wide and sparse features
-- (vectorized text, hashing, embeddings), the objective of scikit-learn's
-- LogisticRegression (penalty 'l2', intercept not penalised; binary: one weight
-- vector, multiclass: multinomial softmax) over the model's full feature vector.
--
-- L-BFGS (10 pairs): no p x p Hessian, so the cost of an iteration is linear in
-- the non-zeros. The training rows are materialised once as a sparse triple
-- table pg_temp._ml_stack_lr_x(i, j, v): the numeric features (preprocessed, as the
-- dataset's x expressions) and each text block's sparse values (through real, as
-- embed() returns them), non-zeros only, plus an intercept column q = p + 1
-- (v = 1) in every row. An iteration is two grouped passes over it:
--   u = X d        (GROUP BY i: the scores along the search direction)
--   g = X' (P - Y) (GROUP BY j: the gradient)
-- with the weights and the per-row factors passed as float8[] parameters ($1[j],
-- $1[i]); the line search runs on per-row arrays (z + a u), not on the table.
-- Conditioning: the features are standardised implicitly (u_j = (x_j - m_j) / s_j
-- in the algebra of both passes; the table keeps the raw sparse values), so the
-- penalty on the model's own weights w_j = v_j / s_j is v_j^2 / (2 C s_j^2) and the
-- optimum is exactly scikit-learn's. Every query is short and fixed (no generated
-- feature list), each pass well under a second at the supported sizes: a cancel
-- lands between two of them; errors are re-raised with a short CONTEXT.
-- Returns the 'linear' artifact over the model's features (preprocessing folded
-- in), and scores the test rows itself into pg_temp._ml_stack_predictions.

-- What the sparse solver takes in reasonable time (measured: docs/vectors.md,
-- bench/sparse_logistic.py): NULL when the problem fits, else why not.
-- The cost of a pass grows with the stored values (training rows x dense features
-- + the text blocks' non-zeros, ~12 per short description, estimated at 40 per
-- row and block), the vector work of L-BFGS with the parameters.
-- Logistic regression goes to the sparse solver when the dataset has text blocks or is
-- above what the dense Newton solver takes (128 parameters).
CREATE OR REPLACE FUNCTION ml_stack._sparse_logistic_wanted(dataset jsonb)
RETURNS boolean
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_array_length(dataset -> 'blocks') > 0
        OR (CASE WHEN jsonb_array_length(dataset -> 'classes') = 2 THEN 1 ELSE jsonb_array_length(dataset -> 'classes') END)
           * (jsonb_array_length(dataset -> 'x') + 1) > 128
$$;
COMMENT ON FUNCTION ml_stack._sparse_logistic_wanted(jsonb) IS
    'ml_stack internal: whether logistic regression on the dataset goes to the sparse solver (text blocks, or too wide for Newton).';

-- The solver's work, in units measured here (bench/sparse_logistic.py, 15.5k descriptions): each of its
-- 40-80 iterations costs the passes over the stored values (k score vectors each) and the L-BFGS vector work in
-- PL/pgSQL (~200 operations per parameter). Binary over 1024-dim hashing: 0.84M units, 3.2 s; 6 classes over
-- hashing: 5M units, 16 s; tfidf (54k parameters, 6 classes): 14M units, 54 s. Above 6M units (about 20 s)
-- train hands the problem to the python engine when it can, or refuses.
CREATE OR REPLACE FUNCTION ml_stack._sparse_logistic_too_large(dataset jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN k * values_est + 200 * params > 6000000 THEN
        format('logistic regression on %s training rows x %s features with %s classes (about %s units of work; '
               'the sql engine trains up to 6 million, about 20 seconds: e.g. six classes of 15,000 short texts '
               'hashed to 1024 dimensions)', train_rows, num_features, classes, k * values_est + 200 * params)
    END
    FROM (SELECT (dataset ->> 'train_rows')::bigint AS train_rows,
                 (dataset ->> 'num_features')::bigint AS num_features,
                 jsonb_array_length(dataset -> 'classes') AS classes,
                 (dataset ->> 'train_rows')::bigint
                     * (jsonb_array_length(dataset -> 'x') + 40 * jsonb_array_length(dataset -> 'blocks') + 1) AS values_est,
                 CASE WHEN jsonb_array_length(dataset -> 'classes') = 2 THEN 1 ELSE jsonb_array_length(dataset -> 'classes') END AS k,
                 (CASE WHEN jsonb_array_length(dataset -> 'classes') = 2 THEN 1 ELSE jsonb_array_length(dataset -> 'classes') END)
                     * ((dataset ->> 'num_features')::bigint + 1) AS params) AS s
$$;
COMMENT ON FUNCTION ml_stack._sparse_logistic_too_large(jsonb) IS
    'ml_stack internal: NULL when the sparse logistic solver trains the dataset in reasonable time, else why not.';

CREATE OR REPLACE FUNCTION ml_stack._fit_logistic_sparse_run(dataset jsonb, c float8, max_iter integer, tol float8)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET jit = off
SET extra_float_digits = 3
AS $$
#variable_conflict use_column  -- i, j: columns of the triple table in the queries below
DECLARE
    classes float8[] := ARRAY(SELECT jsonb_array_elements_text(dataset -> 'classes')::float8);
    nk      integer := jsonb_array_length(dataset -> 'classes');
    k       integer := CASE WHEN jsonb_array_length(dataset -> 'classes') = 2 THEN 1 ELSE jsonb_array_length(dataset -> 'classes') END;
    p       integer := jsonb_array_length(dataset -> 'x');
    np      integer := (dataset ->> 'num_features')::integer;
    q       integer := (dataset ->> 'num_features')::integer + 1;   -- per class: features, then the intercept
    nq      integer;                                                 -- k * q parameters
    xpos    integer[] := ARRAY(SELECT jsonb_array_elements_text(dataset -> 'x_positions')::integer);
    tf      jsonb := dataset -> 'transform';
    rows_sql text := format('(SELECT row_number() OVER (ORDER BY r)::integer AS i, * FROM pg_temp._ml_stack_rows WHERE %s) AS t',
                            dataset ->> 'train_filter');
    n       integer;
    yc      integer[];          -- class index (1-based) of each training row
    mj      float8[]; sj float8[]; pen float8[];
    theta   float8[]; d float8[]; g float8[]; g_new float8[]; wr float8[]; dr float8[];
    z       float8[]; u float8[]; gr float8[]; z_try float8[]; gr_try float8[];
    s_hist  float8[]; y_hist float8[]; rho float8[]; alpha_h float8[];
    hist_n  integer := 0; hist_pos integer := 0; mem CONSTANT integer := 10;
    sql_z   text; sql_g text; sql_row text;
    f float8; f_try float8; fd float8; dphi0 float8; dphi float8; a1 float8; a2 float8; pen0 float8;
    step float8; lo float8; hi float8; gmax float8; gmax0 float8; sy float8; yy float8; gam float8; beta float8;
    ls integer; iter integer := 0; evals integer := 0; passes integer := 0;
    i integer; j integer; kk integer; l integer; o integer;
    s1 float8[]; s2 float8[];
    acc float8;
    blk jsonb;
    ints float8[]; coefs jsonb := '[]'; b float8;
    started timestamptz := clock_timestamp();
    last_notice timestamptz := clock_timestamp();
    converged boolean := false;
BEGIN
    nq := k * q;
    IF to_regclass('pg_temp._ml_stack_lr_x') IS NOT NULL THEN
        DROP TABLE pg_temp._ml_stack_lr_x;
    END IF;
    CREATE TEMPORARY TABLE _ml_stack_lr_x (i integer, j integer, v float8) ON COMMIT DROP;
    EXECUTE format('SELECT count(*)::integer, array_agg(array_position($1, y) ORDER BY i) FROM %s', rows_sql)
        INTO n, yc USING classes;
    -- the numeric features, preprocessed, non-zeros only
    IF p > 0 THEN
        EXECUTE format('INSERT INTO pg_temp._ml_stack_lr_x SELECT t.i, u.j, u.v FROM %s, '
                       'LATERAL unnest($1::integer[], ARRAY[%s]::float8[]) AS u(j, v) WHERE u.v <> 0',
                       rows_sql, (SELECT string_agg(e, ', ' ORDER BY o) FROM jsonb_array_elements_text(dataset -> 'x') WITH ORDINALITY AS x(e, o)))
            USING xpos;
    END IF;
    -- each text block's sparse values, as served (through real)
    FOR blk IN SELECT value FROM jsonb_array_elements(dataset -> 'blocks') LOOP
        EXECUTE format('INSERT INTO pg_temp._ml_stack_lr_x SELECT t.i, %s + s.idx, s.val::real::float8 FROM %s, LATERAL %s AS s '
                       'WHERE s.val::real <> 0',
                       (blk ->> 'offset')::integer, rows_sql, ml_stack._sparse_terms_sql(blk -> 'spec', format('t.t%s', blk ->> 't')));
    END LOOP;
    -- the intercept column in every row (every row has a group in GROUP BY i), and one
    -- zero per feature (every feature has a group in GROUP BY j)
    INSERT INTO pg_temp._ml_stack_lr_x SELECT g.i, q, 1 FROM generate_series(1, n) AS g(i);
    INSERT INTO pg_temp._ml_stack_lr_x SELECT 1, g.j, 0 FROM generate_series(1, np) AS g(j);
    ANALYZE pg_temp._ml_stack_lr_x;
    SELECT array_agg(sv ORDER BY j), array_agg(sv2 ORDER BY j) INTO s1, s2
    FROM (SELECT x.j, sum(x.v) AS sv, sum(x.v * x.v) AS sv2 FROM pg_temp._ml_stack_lr_x AS x GROUP BY x.j) AS g;
    RAISE NOTICE 'ml_stack: logistic regression (sparse) on % training rows x % features, % non-zeros, % s', n, np,
        (SELECT count(*) FROM pg_temp._ml_stack_lr_x AS x WHERE x.v <> 0 AND x.j < q),
        round(extract(epoch FROM clock_timestamp() - started)::numeric, 2);

    -- implicit scaling: centred by the mean m_j, divided by s_j = sqrt(variance + 4 / (n C)). With
    -- s_j the standard deviation alone, a rare term (variance ~ 1/n) would get a penalty curvature
    -- 1 / (C s_j^2) hundreds of times the data's (~ n / 4) and L-BFGS would crawl (hundreds of
    -- iterations); this s_j makes the diagonal of the Hessian at the start ~ n / 4 for every feature
    -- (a Jacobi preconditioner). The optimum is the same: only the coordinates change.
    mj := array_fill(0::float8, ARRAY[q]); sj := array_fill(1::float8, ARRAY[q]);
    pen := array_fill(0::float8, ARRAY[nq]);
    FOR j IN 1 .. np LOOP
        mj[j] := s1[j] / n;
        acc := s2[j] / n - mj[j] * mj[j];
        IF acc > 1e-10 * s2[j] / n THEN
            sj[j] := sqrt(acc + 4 / (n * c));
        ELSE
            -- constant (or empty) feature: not centred, not scaled (a constant c <> 0 acts as a penalised intercept)
            mj[j] := 0;
        END IF;
        FOR kk IN 1 .. k LOOP
            pen[(kk - 1) * q + j] := 1 / (c * sj[j] * sj[j]);
        END LOOP;
    END LOOP;

    -- the passes and the per-row evaluation
    sql_z := format('SELECT %s FROM (SELECT x.i, %s FROM pg_temp._ml_stack_lr_x AS x GROUP BY x.i) AS g',
                    (SELECT string_agg(format('array_agg(z%s ORDER BY i)', kk), ' || ') FROM generate_series(1, k) AS kk),
                    (SELECT string_agg(format('sum(x.v * $1[%s + x.j]) AS z%s', (kk - 1) * q, kk), ', ') FROM generate_series(1, k) AS kk));
    sql_g := format('SELECT %s FROM (SELECT x.j, %s FROM pg_temp._ml_stack_lr_x AS x GROUP BY x.j) AS g',
                    (SELECT string_agg(format('array_agg(g%s ORDER BY j)', kk), ' || ') FROM generate_series(1, k) AS kk),
                    (SELECT string_agg(format('sum(x.v * $1[%s + x.i]) AS g%s', (kk - 1) * n, kk), ', ') FROM generate_series(1, k) AS kk));
    -- at z + a u ($1, $2, $3): loss, its derivative along u, the new scores and P - Y ($4: class of each row, $5: rows)
    IF k = 1 THEN
        sql_row := 'SELECT sum(greatest(z, 0) + ln(1 + exp(-abs(least(greatest(z, -700), 700)))) - y * z), sum((pr - y) * u), '
                   '       array_agg(z ORDER BY i), array_agg(pr - y ORDER BY i) '
                   'FROM (SELECT a.*, 1 / (1 + exp(-least(greatest(z, -700), 700))) AS pr FROM ('
                   '  SELECT g.i, $1[g.i] + $3 * $2[g.i] AS z, $2[g.i] AS u, ($4[g.i] = 2)::integer::float8 AS y '
                   '  FROM generate_series(1, $5) AS g(i) OFFSET 0) AS a OFFSET 0) AS b';
    ELSE
        sql_row := format(
            'SELECT sum(zmax + ln(esum) - (ARRAY[%1$s])[yc]), sum(%2$s), %3$s, %4$s '
            'FROM (SELECT e.*, %5$s AS esum FROM (SELECT a.*, %6$s FROM (SELECT s.*, greatest(%1$s) AS zmax FROM ('
            '  SELECT g.i, $4[g.i] AS yc, %7$s FROM generate_series(1, $5) AS g(i) OFFSET 0) AS s OFFSET 0) AS a OFFSET 0) AS e OFFSET 0) AS b',
            (SELECT string_agg(format('z%s', kk), ', ') FROM generate_series(1, k) AS kk),
            (SELECT string_agg(format('(e%1$s / esum - (yc = %1$s)::integer) * u%1$s', kk), ' + ') FROM generate_series(1, k) AS kk),
            (SELECT string_agg(format('array_agg(z%s ORDER BY i)', kk), ' || ') FROM generate_series(1, k) AS kk),
            (SELECT string_agg(format('array_agg(e%1$s / esum - (yc = %1$s)::integer ORDER BY i)', kk), ' || ') FROM generate_series(1, k) AS kk),
            (SELECT string_agg(format('e%s', kk), ' + ') FROM generate_series(1, k) AS kk),
            (SELECT string_agg(format('exp(greatest(z%1$s - zmax, -700)) AS e%1$s', kk), ', ') FROM generate_series(1, k) AS kk),
            (SELECT string_agg(format('$1[%1$s + g.i] + $3 * $2[%1$s + g.i] AS z%2$s, $2[%1$s + g.i] AS u%2$s', (kk - 1) * n, kk), ', ')
             FROM generate_series(1, k) AS kk));
    END IF;

    -- start at 0: every score is 0
    theta := array_fill(0::float8, ARRAY[nq]);
    z := array_fill(0::float8, ARRAY[k * n]);
    EXECUTE sql_row INTO f, dphi, z, gr USING z, z, 0::float8, yc, n;
    EXECUTE sql_g INTO g USING gr;
    passes := 1;
    -- the gradient in the standardised parameters
    gmax := 0;
    FOR kk IN 0 .. k - 1 LOOP
        FOR j IN 1 .. np LOOP
            g[kk * q + j] := (g[kk * q + j] - mj[j] * g[kk * q + q]) / sj[j] + pen[kk * q + j] * theta[kk * q + j];
        END LOOP;
    END LOOP;
    SELECT max(abs(x)) INTO gmax FROM unnest(g) AS x;
    gmax0 := greatest(gmax, 1);
    s_hist := array_fill(0::float8, ARRAY[mem * nq]); y_hist := array_fill(0::float8, ARRAY[mem * nq]);
    rho := array_fill(0::float8, ARRAY[mem]); alpha_h := array_fill(0::float8, ARRAY[mem]);

    LOOP
        IF gmax <= tol * gmax0 THEN
            converged := true;
            EXIT;
        END IF;
        EXIT WHEN iter >= max_iter;
        iter := iter + 1;
        -- direction: -H g (two-loop recursion over the stored pairs, newest first)
        d := g;
        FOR l IN 0 .. hist_n - 1 LOOP
            o := ((hist_pos - 1 - l + mem) % mem);   -- slot, 0-based
            acc := 0;
            FOR j IN 1 .. nq LOOP acc := acc + s_hist[o * nq + j] * d[j]; END LOOP;
            alpha_h[o + 1] := rho[o + 1] * acc;
            FOR j IN 1 .. nq LOOP d[j] := d[j] - alpha_h[o + 1] * y_hist[o * nq + j]; END LOOP;
        END LOOP;
        IF hist_n > 0 THEN
            o := (hist_pos - 1 + mem) % mem;
            sy := 1 / rho[o + 1]; yy := 0;
            FOR j IN 1 .. nq LOOP yy := yy + y_hist[o * nq + j] * y_hist[o * nq + j]; END LOOP;
            gam := sy / yy;
            FOR j IN 1 .. nq LOOP d[j] := gam * d[j]; END LOOP;
        ELSE
            FOR j IN 1 .. nq LOOP d[j] := d[j] / gmax; END LOOP;   -- first step: unit length in the largest coordinate
        END IF;
        FOR l IN REVERSE hist_n - 1 .. 0 LOOP
            o := ((hist_pos - 1 - l + mem) % mem);
            acc := 0;
            FOR j IN 1 .. nq LOOP acc := acc + y_hist[o * nq + j] * d[j]; END LOOP;
            beta := rho[o + 1] * acc;
            FOR j IN 1 .. nq LOOP d[j] := d[j] + (alpha_h[o + 1] - beta) * s_hist[o * nq + j]; END LOOP;
        END LOOP;
        dphi0 := 0;
        FOR j IN 1 .. nq LOOP d[j] := -d[j]; dphi0 := dphi0 + d[j] * g[j]; END LOOP;
        IF dphi0 >= 0 THEN   -- not a descent direction (rounding): forget the pairs, steepest descent
            hist_n := 0;
            dphi0 := 0;
            FOR j IN 1 .. nq LOOP d[j] := -g[j] / gmax; dphi0 := dphi0 + d[j] * g[j]; END LOOP;
        END IF;
        -- the direction on the raw sparse values: w_j = d_j / s_j, intercept d_0 - sum m_j w_j
        dr := d; a1 := 0; a2 := 0; pen0 := 0;
        FOR kk IN 0 .. k - 1 LOOP
            acc := d[kk * q + q];
            FOR j IN 1 .. np LOOP
                dr[kk * q + j] := d[kk * q + j] / sj[j];
                acc := acc - mj[j] * dr[kk * q + j];
                a1 := a1 + pen[kk * q + j] * theta[kk * q + j] * d[kk * q + j];
                a2 := a2 + pen[kk * q + j] * d[kk * q + j] * d[kk * q + j];
                pen0 := pen0 + 0.5 * pen[kk * q + j] * theta[kk * q + j] * theta[kk * q + j];
            END LOOP;
            dr[kk * q + q] := acc;
        END LOOP;
        EXECUTE sql_z INTO u USING dr;
        passes := passes + 1;
        -- line search (strong Wolfe, c1 = 1e-4, c2 = 0.9) on the rows' scores z + a u: no pass over the table
        step := 1; lo := 0; hi := 'Infinity';
        FOR ls IN 1 .. 40 LOOP
            EXECUTE sql_row INTO fd, dphi, z_try, gr_try USING z, u, step, yc, n;
            evals := evals + 1;
            f_try := fd + pen0 + step * a1 + 0.5 * step * step * a2;
            dphi := dphi + a1 + step * a2;
            IF f_try > f + 1e-4 * step * dphi0 OR f_try <> f_try THEN
                hi := step;
            ELSIF dphi < 0.9 * dphi0 THEN
                lo := step;
            ELSIF dphi > -0.9 * dphi0 THEN
                hi := step;
            ELSE
                EXIT;
            END IF;
            step := CASE WHEN hi = 'Infinity' THEN 2 * step ELSE (lo + hi) / 2 END;
        END LOOP;
        IF f_try > f THEN
            -- no step lowers the loss any further (float64's limit): done
            converged := gmax <= sqrt(tol) * gmax0;
            EXIT;
        END IF;
        FOR j IN 1 .. nq LOOP theta[j] := theta[j] + step * d[j]; END LOOP;
        z := z_try; gr := gr_try;
        EXECUTE sql_g INTO g_new USING gr;
        passes := passes + 1;
        FOR kk IN 0 .. k - 1 LOOP
            FOR j IN 1 .. np LOOP
                g_new[kk * q + j] := (g_new[kk * q + j] - mj[j] * g_new[kk * q + q]) / sj[j] + pen[kk * q + j] * theta[kk * q + j];
            END LOOP;
        END LOOP;
        -- the new pair s = step d, y = g_new - g
        o := hist_pos;
        sy := 0;
        FOR j IN 1 .. nq LOOP
            s_hist[o * nq + j] := step * d[j];
            y_hist[o * nq + j] := g_new[j] - g[j];
            sy := sy + s_hist[o * nq + j] * y_hist[o * nq + j];
        END LOOP;
        IF sy > 1e-300 THEN
            rho[o + 1] := 1 / sy;
            hist_pos := (hist_pos + 1) % mem;
            hist_n := least(hist_n + 1, mem);
        END IF;
        g := g_new;
        f := f_try;
        SELECT max(abs(x)) INTO gmax FROM unnest(g) AS x;
        IF clock_timestamp() - last_notice > interval '10 seconds' THEN
            RAISE NOTICE 'ml_stack: logistic iteration %: loss %, gradient % (% passes, % s)', iter, f, gmax, passes,
                round(extract(epoch FROM clock_timestamp() - started)::numeric, 1);
            last_notice := clock_timestamp();
        END IF;
    END LOOP;
    IF NOT converged THEN
        RAISE WARNING 'ml_stack: logistic regression stopped after % iterations without converging (gradient % of %)', iter, gmax, gmax0
            USING HINT = 'Raise max_iter (hyperparams => ''{"max_iter": 5000}''), or lower C.';
    END IF;

    -- back to the model's features: w_j = theta_j / s_j, b = theta_0 - sum m_j w_j, then the
    -- preprocessing of x folded in: x' = (coalesce(x, impute) - shift) / scale
    ints := '{}'; wr := array_fill(0::float8, ARRAY[k * np]);
    FOR kk IN 0 .. k - 1 LOOP
        b := theta[kk * q + q];
        FOR j IN 1 .. np LOOP
            wr[kk * np + j] := theta[kk * q + j] / sj[j];
            b := b - mj[j] * wr[kk * np + j];
        END LOOP;
        FOR j IN 1 .. p LOOP
            wr[kk * np + xpos[j]] := wr[kk * np + xpos[j]] / (tf -> (j - 1) ->> 'scale')::float8;
            b := b - wr[kk * np + xpos[j]] * (tf -> (j - 1) ->> 'shift')::float8;
        END LOOP;
        IF b IS NULL OR b IN ('NaN', 'Infinity', '-Infinity') OR EXISTS (
                SELECT FROM unnest(wr[kk * np + 1 : (kk + 1) * np]) AS x WHERE x IN ('NaN', 'Infinity', '-Infinity')) THEN
            RAISE EXCEPTION 'training linear diverged: the weights are not finite numbers'
                USING ERRCODE = 'data_exception',
                      HINT = 'Scale the features (preprocess => ''{"col": {"scale": "standard"}}'') or regularise more (a lower C).';
        END IF;
        ints := ints || b;
        coefs := coefs || jsonb_build_array(to_jsonb(wr[kk * np + 1 : (kk + 1) * np]));
    END LOOP;
    DROP TABLE pg_temp._ml_stack_lr_x;

    PERFORM ml_stack._predict_test_rows_sparse(dataset, wr, ints);
    RAISE NOTICE 'ml_stack: logistic regression (sparse) % in % iterations (% passes, % line-search evaluations), loss %, % s',
        CASE WHEN converged THEN 'converged' ELSE 'stopped' END, iter, passes, evals, f,
        round(extract(epoch FROM clock_timestamp() - started)::numeric, 2);
    RETURN jsonb_build_object('format', 'linear', 'link', CASE WHEN k = 1 THEN 'logistic' ELSE 'softmax' END,
                              'intercepts', to_jsonb(ints), 'coefficients', coefs, 'impute', ml_stack._model_impute(dataset));
END
$$;

-- The solver, with its errors re-raised here: an error inside one of its generated
-- queries (a cancel, most often) would otherwise carry the query's text as CONTEXT.
CREATE OR REPLACE FUNCTION ml_stack._fit_logistic_sparse(dataset jsonb, c float8, max_iter integer, tol float8)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    st text; msg text; det text; hnt text;
BEGIN
    RETURN ml_stack._fit_logistic_sparse_run(dataset, c, max_iter, tol);
EXCEPTION WHEN OTHERS OR query_canceled THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL, hnt = PG_EXCEPTION_HINT;
    IF det <> '' AND hnt <> '' THEN
        RAISE EXCEPTION USING ERRCODE = st, MESSAGE = msg, DETAIL = det, HINT = hnt;
    ELSIF det <> '' THEN
        RAISE EXCEPTION USING ERRCODE = st, MESSAGE = msg, DETAIL = det;
    ELSIF hnt <> '' THEN
        RAISE EXCEPTION USING ERRCODE = st, MESSAGE = msg, HINT = hnt;
    ELSE
        RAISE EXCEPTION USING ERRCODE = st, MESSAGE = msg;
    END IF;
END
$$;
COMMENT ON FUNCTION ml_stack._fit_logistic_sparse(jsonb, float8, integer, float8) IS
    'ml_stack internal: L2 logistic regression (scikit-learn''s objective) by L-BFGS over the sparse form of the training rows; returns a linear artifact and scores the test rows.';
COMMENT ON FUNCTION ml_stack._fit_logistic_sparse_run(jsonb, float8, integer, float8) IS
    'ml_stack internal: the body of _fit_logistic_sparse.';

-- source: sql/engines/sql_engine.sql
-- The SQL engine: which algorithms it has, their hyperparameters, and fitting.
-- Engines fit on the preprocessed features; this folds the preprocessing back
-- into the weights, so the artifact works on raw feature values:
--   {"format": "linear", "link": "identity" | "logistic" | "softmax",
--    "intercepts": [b..], "coefficients": [[w..], ..], "impute": [v | null, ..]}
-- score_k = intercepts[k] + sum_j coefficients[k][j] * coalesce(x_j, impute[j]).

CREATE OR REPLACE FUNCTION ml_stack._sql_engine_hyperparams(task text, algorithm text)
RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
        WHEN algorithm = 'linear' AND task = 'regression' THEN ARRAY[]::text[]
        WHEN algorithm = 'ridge' AND task = 'regression' THEN ARRAY['alpha']
        WHEN algorithm = 'linear' AND task = 'classification' THEN ARRAY['C', 'max_iter', 'tol']
        WHEN algorithm = 'naive_bayes' AND task = 'classification' THEN ARRAY['alpha']
    END
$$;
COMMENT ON FUNCTION ml_stack._sql_engine_hyperparams(text, text) IS
    'ml_stack internal: the hyperparameters of a SQL-engine algorithm for a task; NULL when it lacks the pair.';

-- The dense solvers' cost grows with the square (least squares: p^2/2 sums in one
-- pass) or the cube (logistic Newton steps) of the features; measured on 2,000
-- rows here: least squares 3.5 s at 160 features, logistic 2.3 s at 80 and 8 s
-- at 120. Above these sizes they would run for minutes: NULL when the problem
-- fits, else why not (train then hands over to the python engine, or refuses).
CREATE OR REPLACE FUNCTION ml_stack._sql_engine_too_large(task text, algorithm text, dataset jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
        WHEN algorithm IN ('linear', 'ridge') AND task = 'regression' AND jsonb_array_length(dataset -> 'x') > 200 THEN
            format('least squares on %s features (the sql engine solves up to 200 in seconds)', jsonb_array_length(dataset -> 'x'))
        -- wide or text: the sparse solver (sql_sparse_logistic.sql), with its own limit
        WHEN algorithm = 'linear' AND task = 'classification' AND ml_stack._sparse_logistic_wanted(dataset) THEN
            ml_stack._sparse_logistic_too_large(dataset)
        WHEN algorithm = 'linear' AND task = 'classification'
             AND (CASE WHEN jsonb_array_length(dataset -> 'classes') = 2 THEN 1 ELSE jsonb_array_length(dataset -> 'classes') END)
                 * (jsonb_array_length(dataset -> 'x') + 1) > 128 THEN
            format('logistic regression with %s classes and %s features (the sql engine solves up to 128 parameters in seconds)',
                   jsonb_array_length(dataset -> 'classes'), jsonb_array_length(dataset -> 'x'))
    END
$$;

CREATE OR REPLACE FUNCTION ml_stack._sql_fit(task text, algorithm text, hyperparams jsonb, dataset jsonb)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET extra_float_digits = 3
AS $$
DECLARE
    valid   text[] := ml_stack._sql_engine_hyperparams(task, algorithm);
    key     text;
    fit     jsonb;
    link    text;
    tf      jsonb := dataset -> 'transform';
    p       integer := jsonb_array_length(dataset -> 'transform');
    coefs   jsonb := '[]';
    ints    float8[] := '{}';
    w       float8[];
    b       float8;
    wk      jsonb;
    kk      integer;
    j       integer;
BEGIN
    FOR key IN SELECT jsonb_object_keys(hyperparams) LOOP
        IF NOT key = ANY (valid) THEN
            RAISE EXCEPTION 'unknown hyperparameter "%" for algorithm % (%)', key, algorithm, task
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = CASE WHEN cardinality(valid) = 0 THEN 'This algorithm takes no hyperparameters.'
                                  ELSE format('Valid hyperparameters: %s.', array_to_string(valid, ', ')) END;
        END IF;
    END LOOP;
    IF ml_stack._sql_engine_too_large(task, algorithm, dataset) IS NOT NULL THEN
        RAISE EXCEPTION 'too large for the sql engine: %', ml_stack._sql_engine_too_large(task, algorithm, dataset)
            USING ERRCODE = 'program_limit_exceeded',
                  HINT = 'CREATE EXTENSION ml_stack_python and train with engine => ''python'' (or leave engine out: it is chosen then); '
                         'for text, algorithm => ''naive_bayes'' on a vectorized column; or use fewer features.';
    END IF;
    IF algorithm = 'naive_bayes' THEN
        RETURN ml_stack._fit_naive_bayes(dataset, ml_stack._numeric_hyperparam(hyperparams, 'alpha', 1.0, 0));
    END IF;
    IF algorithm = 'linear' AND task = 'classification' AND ml_stack._sparse_logistic_wanted(dataset) THEN
        RETURN ml_stack._fit_logistic_sparse(dataset,  -- L-BFGS; it folds the preprocessing and scores the test rows itself
                   ml_stack._numeric_hyperparam(hyperparams, 'C', 1.0, 0, true),
                   ml_stack._numeric_hyperparam(hyperparams, 'max_iter', 1000, 1)::integer,
                   ml_stack._numeric_hyperparam(hyperparams, 'tol', 1e-8, 0, true));
    END IF;
    IF task = 'regression' THEN
        link := 'identity';
        fit := ml_stack._fit_least_squares(dataset,
                   CASE WHEN algorithm = 'ridge' THEN ml_stack._numeric_hyperparam(hyperparams, 'alpha', 1.0, 0) ELSE 0 END);
    ELSE
        link := CASE WHEN jsonb_array_length(dataset -> 'classes') = 2 THEN 'logistic' ELSE 'softmax' END;
        fit := ml_stack._fit_logistic(dataset,
                   ml_stack._numeric_hyperparam(hyperparams, 'C', 1.0, 0, true),
                   ml_stack._numeric_hyperparam(hyperparams, 'max_iter', 100, 1)::integer,
                   ml_stack._numeric_hyperparam(hyperparams, 'tol', 1e-8, 0, true));
    END IF;
    -- fold x' = (coalesce(x, impute) - shift) / scale into the weights
    kk := 0;
    FOR wk IN SELECT value FROM jsonb_array_elements(fit -> 'coefficients') LOOP
        kk := kk + 1;
        b := (fit -> 'intercepts' ->> (kk - 1))::float8;
        w := '{}';
        FOR j IN 1 .. p LOOP
            w := w || ((wk ->> (j - 1))::float8 / (tf -> (j - 1) ->> 'scale')::float8);
            b := b - w[j] * (tf -> (j - 1) ->> 'shift')::float8;
        END LOOP;
        IF b IS NULL OR b IN ('NaN', 'Infinity', '-Infinity') OR EXISTS (
                SELECT FROM unnest(w) AS x WHERE x IS NULL OR x IN ('NaN', 'Infinity', '-Infinity')) THEN
            RAISE EXCEPTION 'training % diverged: the weights are not finite numbers', algorithm
                USING ERRCODE = 'data_exception',
                      HINT = 'Scale the features (preprocess => ''{"col": {"scale": "standard"}}'') or regularise more.';
        END IF;
        ints := ints || b;
        coefs := coefs || jsonb_build_array(to_jsonb(w));
    END LOOP;
    RETURN jsonb_build_object(
        'format', 'linear', 'link', link, 'intercepts', to_jsonb(ints), 'coefficients', coefs,
        'impute', (SELECT jsonb_agg(t -> 'impute' ORDER BY i) FROM jsonb_array_elements(tf) WITH ORDINALITY AS e(t, i)));
END
$$;

-- source: sql/vectors/text_features.sql
-- The pure-SQL text transformers (DESIGN §3b). Every one of them starts from the
-- lexemes of to_tsvector(config, text) and their term frequencies (positions):
--   hashing: signed feature hashing, bucket = md5(lexeme)[hex 1..8] mod dims,
--            sign = + when md5(lexeme)[hex 9] < 8, value sign * (1 + ln tf),
--            summed per bucket, then L2-normalised; stateless;
--   counts:  tf per term of a fitted vocabulary (a bag of words);
--   tfidf:   tf * idf per term of a fitted vocabulary, L2-normalised (as
--            scikit-learn's TfidfVectorizer with its defaults: smooth idf).
-- Vectors are sparse here (idx, val), 1-based; embed() makes them dense real[].
-- _lexemes, _hashing_terms and _vocabulary_terms have no SET clause, so that the
-- planner inlines them into the queries over many rows (training, jobs): a pass of
-- the vocabulary transform over 29k descriptions took 1.09 s as a function call per
-- row, 0.44 s inlined. They are on the serving path (predict_row) and, as the
-- predictors, protected by schema-qualified names instead (DESIGN §4).
-- A text is read up to its first 65,536 characters (docs/vectors.md: tsvector
-- keeps at most 256 positions per lexeme and none past 16,383 words).

CREATE OR REPLACE FUNCTION ml_stack._max_text_length()
RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT 65536 $$;

-- The lexemes of a text and their term frequencies.
CREATE OR REPLACE FUNCTION ml_stack._lexemes(config regconfig, input text)
RETURNS TABLE (term text, tf integer)
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT u.lexeme, cardinality(u.positions)
    FROM unnest(to_tsvector(config, left(input, ml_stack._max_text_length()))) AS u
$$;

CREATE OR REPLACE FUNCTION ml_stack._hashing_terms(input text, dims integer, config regconfig, signed boolean)
RETURNS TABLE (idx integer, val float8)
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    WITH hashed AS (
        SELECT (('x' || substr(h, 1, 8))::bit(32)::bigint % dims)::integer + 1 AS idx,
               CASE WHEN signed AND substr(h, 9, 1) COLLATE "C" >= '8' THEN -1 ELSE 1 END * (1 + ln(l.tf)) AS v
        FROM ml_stack._lexemes(config, input) AS l, LATERAL md5(l.term) AS h
    ), buckets AS (
        SELECT b.idx, sum(b.v) AS v FROM hashed AS b GROUP BY b.idx
    )
    SELECT b.idx, b.v / sqrt(sum(b.v * b.v) OVER ()) FROM buckets AS b WHERE b.v <> 0
$$;

CREATE OR REPLACE FUNCTION ml_stack._vocabulary_terms(input text, vectorizer_id bigint, config regconfig, tfidf boolean)
RETURNS TABLE (idx integer, val float8)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    WITH weighted AS (
        SELECT v.idx, l.tf * CASE WHEN tfidf THEN v.idf ELSE 1 END AS w
        FROM ml_stack._lexemes(config, input) AS l
        JOIN ml_stack.vectorizer_terms AS v ON v.vectorizer_id = _vocabulary_terms.vectorizer_id
                                          AND v.term = l.term COLLATE "C"
    )
    SELECT w.idx, CASE WHEN tfidf THEN w.w / sqrt(sum(w.w * w.w) OVER ()) ELSE w.w END FROM weighted AS w
$$;

-- The sparse vector of a text under a resolved transformer (see _resolve_transformer).
CREATE OR REPLACE FUNCTION ml_stack._sparse_terms(spec jsonb, input text)
RETURNS TABLE (idx integer, val float8)
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF input IS NULL THEN
        RETURN;
    END IF;
    CASE spec ->> 'kind'
        WHEN 'hashing' THEN
            RETURN QUERY SELECT t.idx, t.val FROM ml_stack._hashing_terms(input, (spec ->> 'dims')::integer,
                (spec ->> 'config')::regconfig, (spec ->> 'signed')::boolean) AS t;
        WHEN 'counts', 'tfidf' THEN
            RETURN QUERY SELECT t.idx, t.val FROM ml_stack._vocabulary_terms(input, (spec ->> 'vectorizer_id')::bigint,
                (spec ->> 'config')::regconfig, spec ->> 'kind' = 'tfidf') AS t;
        ELSE
            RAISE EXCEPTION 'transformer "%" has no sparse form', spec ->> 'name'
                USING ERRCODE = 'feature_not_supported';
    END CASE;
END
$$;

-- Dense real[] of a sparse vector; NULL for a NULL text, zeros for a text without lexemes.
CREATE OR REPLACE FUNCTION ml_stack._dense_vector(spec jsonb, input text)
RETURNS real[]
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v real[];
    t record;
BEGIN
    IF input IS NULL THEN
        RETURN NULL;
    END IF;
    v := array_fill(0::real, ARRAY[(spec ->> 'dims')::integer]);
    FOR t IN SELECT s.idx, s.val FROM ml_stack._sparse_terms(spec, input) AS s LOOP
        v[t.idx] := t.val;
    END LOOP;
    RETURN v;
END
$$;

-- The SQL call of a transformer's sparse form over a text expression, for queries
-- over many rows: calling the inner function directly keeps its plan for the
-- whole query (through _sparse_terms, a PL/pgSQL wrapper, it is planned per row).
CREATE OR REPLACE FUNCTION ml_stack._sparse_terms_sql(spec jsonb, input_sql text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    CASE spec ->> 'kind'
        WHEN 'hashing' THEN
            RETURN format('ml_stack._hashing_terms(%s, %s, %L::regconfig, %L::boolean)', input_sql,
                          (spec ->> 'dims')::integer, spec ->> 'config', (spec ->> 'signed')::boolean);
        WHEN 'counts', 'tfidf' THEN
            RETURN format('ml_stack._vocabulary_terms(%s, %s, %L::regconfig, %L::boolean)', input_sql,
                          (spec ->> 'vectorizer_id')::bigint, spec ->> 'config', spec ->> 'kind' = 'tfidf');
        ELSE
            RAISE EXCEPTION 'transformer "%" has no sparse form', spec ->> 'name' USING ERRCODE = 'feature_not_supported';
    END CASE;
END
$$;

-- source: sql/vectors/transformers.sql
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

-- source: sql/vectors/embed.sql
-- embed(): a text (or a batch of texts) to real[] with a named transformer.

-- One resolved transformer, many texts, in input order. Model transformers
-- (ml_stack_python) get the whole batch: batching is where their throughput is.
CREATE OR REPLACE FUNCTION ml_stack._embed_batch(spec jsonb, inputs text[])
RETURNS SETOF real[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF spec ->> 'kind' = 'python' THEN
        RETURN QUERY EXECUTE 'SELECT v FROM ml_stack._python_embed($1, $2, $3) AS v'
            USING spec ->> 'name', inputs, spec -> 'options';
    ELSE
        RETURN QUERY SELECT ml_stack._dense_vector(spec, t.input)
                     FROM unnest(inputs) WITH ORDINALITY AS t(input, i) ORDER BY t.i;
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION ml_stack.embed(transformer text, input text, options jsonb DEFAULT '{}')
RETURNS real[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    spec jsonb := ml_stack._resolve_transformer(transformer, options);
    v real[];
BEGIN
    IF spec ->> 'kind' = 'python' THEN
        SELECT e INTO v FROM ml_stack._embed_batch(spec, ARRAY[input]) AS e;
        RETURN v;
    END IF;
    RETURN ml_stack._dense_vector(spec, input);
END
$$;
COMMENT ON FUNCTION ml_stack.embed(text, text, jsonb) IS
    'ml_stack: the vector (real[]) of a text under a transformer (''hashing'', a fitted vectorizer''s name, or a model of ml_stack_python); NULL for NULL, zeros for a text without words.';

CREATE OR REPLACE FUNCTION ml_stack.embed(transformer text, inputs text[], options jsonb DEFAULT '{}')
RETURNS SETOF real[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY SELECT e FROM ml_stack._embed_batch(ml_stack._resolve_transformer(transformer, options), inputs) AS e;
END
$$;
COMMENT ON FUNCTION ml_stack.embed(text, text[], jsonb) IS
    'ml_stack: the vectors of a batch of texts, one row each, in input order (a model transformer embeds them in batches).';

CREATE OR REPLACE FUNCTION ml_stack._df_bound(v jsonb, n bigint)
RETURNS float8
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN v IS NULL THEN NULL
                WHEN v::text LIKE '%.%' AND v::text::float8 <= 1 THEN v::text::float8 * n
                ELSE v::text::float8 END
$$;

-- Fit a vocabulary on the texts that `source` (a query of one text column)
-- returns. Terms: the lexemes of to_tsvector(config, text); kept when their
-- document frequency is within [min_df, max_df] (a whole number is a count, a
-- fraction a share of the documents, as scikit-learn), then the max_features most
-- frequent (by total count; ties by term). Positions follow the terms' byte order.
CREATE OR REPLACE FUNCTION ml_stack._fit_vocabulary(name text, method text, options jsonb, source text, fitted_on jsonb)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
DECLARE
    cfg regconfig;
    n bigint;
    min_df float8;
    max_df float8;
    max_features integer;
    next_version integer;
    vid bigint;
    terms bigint;
    started timestamptz := clock_timestamp();

BEGIN
    IF method IS NULL OR method NOT IN ('counts', 'tfidf') THEN
        RAISE EXCEPTION 'unknown vectorizer method "%"', method
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Use ''tfidf'' or ''counts''; ''hashing'' needs no fitting.';
    END IF;
    options := ml_stack._check_options(options, ARRAY['config', 'min_df', 'max_df', 'max_features'], format('a %s vectorizer', method));
    cfg := ml_stack._text_config(coalesce(options ->> 'config', 'english'));
    FOR n IN SELECT 1 FROM jsonb_each(options) AS o WHERE o.key IN ('min_df', 'max_df')
                          AND (jsonb_typeof(o.value) <> 'number' OR o.value::text::float8 < 0) LOOP
        RAISE EXCEPTION 'min_df and max_df must be numbers >= 0 (a whole number: documents; a fraction: share of the documents)'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'e.g. options => ''{"min_df": 2, "max_df": 0.95}''';
    END LOOP;
    max_features := ml_stack._integer_option(options, 'max_features', NULL, 1, 65536);

    CREATE TEMPORARY TABLE _ml_stack_documents ON COMMIT DROP AS
        SELECT 0::bigint AS d, NULL::tsvector AS tv WITH NO DATA;
    EXECUTE format('INSERT INTO pg_temp._ml_stack_documents SELECT row_number() OVER (), to_tsvector(%L::regconfig, left(doc, ml_stack._max_text_length())) '
                   'FROM (%s) AS s(doc) WHERE doc IS NOT NULL', cfg, source);
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n = 0 THEN
        DROP TABLE pg_temp._ml_stack_documents;
        RAISE EXCEPTION 'no text to fit the vocabulary on: every value is NULL, or there are no rows'
            USING ERRCODE = 'no_data_found', HINT = 'Fit on a column with some non-NULL text.';
    END IF;
    -- as scikit-learn: a number written with a fraction (0.5, 1.0) is a share of the documents, else a count
    min_df := coalesce(ml_stack._df_bound(options -> 'min_df', n), 1);
    max_df := coalesce(ml_stack._df_bound(options -> 'max_df', n), n);

    PERFORM pg_advisory_xact_lock(hashtext('ml_stack.vectorizer:' || name));
    next_version := coalesce((SELECT max(v.version) FROM ml_stack.vectorizers AS v WHERE v.name = _fit_vocabulary.name), 0) + 1;
    INSERT INTO ml_stack.vectorizers (name, version, method, config, options, dims, documents, fitted_on)
    VALUES (name, next_version, method, cfg::text, options, 1, n, fitted_on)
    RETURNING id INTO vid;
    INSERT INTO ml_stack.vectorizer_terms (vectorizer_id, term, idx, df, idf)
    SELECT vid, k.term, row_number() OVER (ORDER BY k.term), k.df, ln((1 + n)::float8 / (1 + k.df)) + 1
    FROM (SELECT c.term, c.df FROM (
              SELECT u.lexeme COLLATE "C" AS term, count(*) AS df, sum(cardinality(u.positions)) AS tf
              FROM pg_temp._ml_stack_documents AS d, unnest(d.tv) AS u
              GROUP BY 1) AS c
          WHERE c.df >= min_df AND c.df <= max_df
          ORDER BY c.tf DESC, c.term
          LIMIT max_features) AS k;
    GET DIAGNOSTICS terms = ROW_COUNT;
    DROP TABLE pg_temp._ml_stack_documents;
    IF terms = 0 THEN
        RAISE EXCEPTION 'the vocabulary is empty: no term of % documents is within min_df and max_df', n
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Lower min_df or raise max_df; texts of stop words only have no terms (config ''simple'' keeps every word).';
    END IF;
    UPDATE ml_stack.vectorizers AS v SET dims = terms WHERE v.id = vid;
    IF clock_timestamp() - started > interval '2 seconds' THEN
        RAISE NOTICE 'ml_stack: fitted % vocabulary "%" (% terms, % documents) in % s', method, name, terms, n,
            round(extract(epoch FROM clock_timestamp() - started)::numeric, 1);
    END IF;
    RETURN vid;
END
$$;

CREATE OR REPLACE FUNCTION ml_stack._fit_vectorizer(name text, relation_name text, column_name text, method text,
                                                    options jsonb, caller_search_path text)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rel regclass;
BEGIN
    IF name IS NULL OR btrim(name) = '' OR name IN ('hashing', 'counts', 'tfidf') OR name LIKE '%/%' THEN
        RAISE EXCEPTION 'invalid vectorizer name "%"', name
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give it a name of its own, without ''/'' (reserved for models), other than hashing, counts or tfidf.';
    END IF;
    rel := ml_stack._resolve_relation(relation_name, caller_search_path);
    PERFORM ml_stack._text_column(rel, column_name);
    RETURN ml_stack._fit_vocabulary(name, method, options, format('SELECT %I::text FROM %s', column_name, rel),
                                    jsonb_build_object('relation', rel::text, 'column', column_name));
END
$$;

-- No SET clause: relation_name resolves with the caller's search_path (as train's).
CREATE OR REPLACE FUNCTION ml_stack.fit_vectorizer(name text, relation_name text, column_name text, method text DEFAULT 'tfidf',
                                                   options jsonb DEFAULT '{}')
RETURNS bigint
LANGUAGE sql VOLATILE
AS $$
    SELECT ml_stack._fit_vectorizer(fit_vectorizer.name, fit_vectorizer.relation_name, fit_vectorizer.column_name,
                                    fit_vectorizer.method, fit_vectorizer.options, pg_catalog.current_setting('search_path'))
$$;
COMMENT ON FUNCTION ml_stack.fit_vectorizer(text, text, text, text, jsonb) IS
    'ml_stack: fit a counts or tfidf vocabulary on a text column (options: config, min_df, max_df, max_features); embed(name, ...) then uses its newest version. Returns the vectorizer id.';

-- source: sql/vectors/vector_jobs_tables.sql
-- 0.3.0: vector jobs (docs/vectors-jobs-search.md). A job keeps the embeddings of
-- a table's text columns in sync in a table of its own, ml_stack._vectors_<id>,
-- made at run time (not an extension member, so pg_dump dumps it with its rows).
-- These two tables hold the jobs and their work queue: extension configuration,
-- so pg_dump dumps their rows too, and a restored database keeps its jobs.
CREATE TABLE ml_stack.vector_job_definitions (
    id                  bigserial PRIMARY KEY,
    job_name            text NOT NULL UNIQUE CHECK (job_name <> ''),
    -- regclass: follows renames; pg_dump writes it schema-qualified, a restore resolves it again
    -- (pg_upgrade keeps relation OIDs, so regclass columns are allowed there)
    relation            regclass NOT NULL,
    primary_key         name NOT NULL,
    columns             name[] NOT NULL CHECK (cardinality(columns) > 0),
    transformer         text NOT NULL,
    spec                jsonb NOT NULL,       -- _resolve_transformer's answer at creation (a vectorizer's version is kept)
    schedule            text NOT NULL,        -- 'realtime' or a cron schedule
    options             jsonb NOT NULL DEFAULT '{}',   -- as given, job keys and transformer options together
    text_config         text NOT NULL,        -- text search configuration of the lexemes (keyword search)
    batch_size          integer NOT NULL CHECK (batch_size > 0),
    vectors_table       name NOT NULL UNIQUE, -- in schema ml_stack
    created_by          name NOT NULL DEFAULT current_user,
    created_at          timestamptz NOT NULL DEFAULT now(),
    last_processed_at   timestamptz           -- the last process_vector_jobs run over this job
);
COMMENT ON TABLE ml_stack.vector_job_definitions IS
    'ml_stack: vector jobs (ml_stack.create_vector_job): source relation, primary key, text columns, transformer, schedule, and the table ml_stack.<vectors_table> that holds the embeddings. See the view ml_stack.vector_jobs.';

-- Rows waiting to be embedded (model transformers, cron schedules) or whose
-- embedding failed (retried by the next process_vector_jobs run). key: the primary
-- key's value as text (its type's output), cast back to the key type when read.
CREATE TABLE ml_stack.vector_job_queue (
    job_id       bigint NOT NULL REFERENCES ml_stack.vector_job_definitions (id) ON DELETE CASCADE,
    key          text NOT NULL,
    enqueued_at  timestamptz NOT NULL DEFAULT now(),
    attempts     integer NOT NULL DEFAULT 0,   -- failed attempts so far
    last_error   text,
    failed_at    timestamptz,
    PRIMARY KEY (job_id, key)
);
COMMENT ON TABLE ml_stack.vector_job_queue IS
    'ml_stack: the rows of vector jobs waiting to be embedded (key = primary key as text), with the failed attempts, the last error and when it happened; ml_stack.process_vector_jobs() drains it.';

SELECT pg_catalog.pg_extension_config_dump('ml_stack.vector_job_definitions', '');
SELECT pg_catalog.pg_extension_config_dump('ml_stack.vector_job_definitions_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('ml_stack.vector_job_queue', '');

-- source: sql/vectors/vector_jobs.sql
-- Vector jobs (DESIGN §3b; docs/vectors-jobs-search.md): the embeddings of a
-- table's text columns, kept in sync by triggers.
--
--   create_vector_job ─► vector_job_definitions row, ml_stack._vectors_<id> (not a member: pg_dump dumps it),
--                        four triggers on the source table, the pg_cron job (cron schedules, model transformers)
--   INSERT / COPY       ─► statement trigger (transition table new_rows)   ┐ SQL transformer + realtime: embedded
--   UPDATE OF pk, cols  ─► row trigger, WHEN any of them IS DISTINCT FROM  ┘ in the trigger; else queued
--   DELETE              ─► statement trigger (old_rows): embeddings and queue rows deleted
--   TRUNCATE            ─► statement trigger: the job's table truncated, its queue emptied
--   process_vector_jobs ─► the queue in batches (_embed_batch: one call per batch), failures recorded per row
--
-- The triggers reference ml_stack._vector_job_sync(<job id>) by qualified name, so
-- the CREATE TRIGGER that pg_dump writes works after CREATE EXTENSION in the
-- restored database; the job ids come back with vector_job_definitions' rows.

-- Job-level option keys; every other key of create_vector_job's options goes to the transformer.
CREATE OR REPLACE FUNCTION ml_stack._vector_job_option_keys()
RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT ARRAY['batch_size', 'keyword_config'] $$;

CREATE OR REPLACE FUNCTION ml_stack._vector_job_trigger_name(job_id bigint, event text)
RETURNS name
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT format('ml_stack_vector_job_%s_%s', job_id, event)::name $$;

CREATE OR REPLACE FUNCTION ml_stack._vector_job_cron_name(job_id bigint)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT format('ml_stack_vector_job_%s', job_id) $$;

-- The job of a name, or an error listing the jobs there are.
CREATE OR REPLACE FUNCTION ml_stack._vector_job_by_name(job_name text)
RETURNS ml_stack.vector_job_definitions
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    job ml_stack.vector_job_definitions;
BEGIN
    SELECT d.* INTO job FROM ml_stack.vector_job_definitions AS d WHERE d.job_name = _vector_job_by_name.job_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no vector job named "%"', job_name
            USING ERRCODE = 'undefined_object',
                  HINT = coalesce('Vector jobs: ' || (SELECT string_agg(d.job_name, ', ' ORDER BY d.job_name)
                                                     FROM ml_stack.vector_job_definitions AS d) || '.',
                                  'There are no vector jobs: make one with ml_stack.create_vector_job(...).');
    END IF;
    RETURN job;
END
$$;

-- SQL of the key type (the primary key column's type, as the job's table declares it).
CREATE OR REPLACE FUNCTION ml_stack._vector_job_key_type(job ml_stack.vector_job_definitions)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format_type(a.atttypid, a.atttypmod) FROM pg_catalog.pg_attribute AS a
    WHERE a.attrelid = format('ml_stack.%I', job.vectors_table)::regclass AND a.attname = 'id'
$$;

-- The text a job embeds for a source row (alias): its columns joined by ' ', NULLs skipped ('' when all are NULL).
CREATE OR REPLACE FUNCTION ml_stack._vector_job_document_sql(job ml_stack.vector_job_definitions, alias text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format('concat_ws('' '', %s)', string_agg(format('%I.%I::text', alias, c), ', ' ORDER BY i))
    FROM unnest(job.columns) WITH ORDINALITY AS u(c, i)
$$;

-- Queue keys (error NULL: to embed; else a failed attempt, recorded with its error).
CREATE OR REPLACE FUNCTION ml_stack._vector_job_enqueue(job_id bigint, keys text[], error text)
RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO ml_stack.vector_job_queue AS q (job_id, key, enqueued_at, attempts, last_error, failed_at)
    SELECT DISTINCT job_id, k, now(), CASE WHEN error IS NULL THEN 0 ELSE 1 END, error,
           CASE WHEN error IS NOT NULL THEN now() END
    FROM unnest(keys) AS k WHERE k IS NOT NULL
    ON CONFLICT ON CONSTRAINT vector_job_queue_pkey DO UPDATE
        SET enqueued_at = excluded.enqueued_at,
            attempts = q.attempts + excluded.attempts,
            last_error = coalesce(excluded.last_error, q.last_error),
            failed_at = coalesce(excluded.failed_at, q.failed_at)
$$;

-- Embed the rows of these keys (NULL: every row of the source) in one batch and
-- store them; keys whose row no longer exists lose their embedding; their queue
-- rows are done. Raises on any failure (the caller decides what to record).
-- Returns the number of rows embedded.
CREATE OR REPLACE FUNCTION ml_stack._vector_job_embed(job ml_stack.vector_job_definitions, keys text[])
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    key_type text := ml_stack._vector_job_key_type(job);
    found_rows bigint;
    embedded bigint;
BEGIN
    IF keys IS NOT NULL AND cardinality(keys) = 0 THEN
        RETURN 0;
    END IF;
    EXECUTE format($q$
        WITH src AS MATERIALIZED (
            SELECT s.%1$I AS id, %2$s AS doc FROM %3$s AS s
            WHERE $1::text[] IS NULL OR s.%1$I = ANY ($1::text[]::%4$s[])
        ), batch AS (
            SELECT array_agg(src.id ORDER BY src.id) AS ids, array_agg(src.doc ORDER BY src.id) AS docs
            FROM src HAVING count(*) > 0
        ), emb AS (
            SELECT b.ids[e.i] AS id, b.docs[e.i] AS doc, e.embedding
            FROM batch AS b, ml_stack._embed_batch($2, b.docs) WITH ORDINALITY AS e(embedding, i)
        ), ins AS (
            INSERT INTO ml_stack.%5$I AS v (id, embedding, norm, lexemes, doc_length, updated_at)
            SELECT e.id, e.embedding, n.norm, t.tsv, l.len, now()
            FROM emb AS e,
                 LATERAL (SELECT sqrt(coalesce(sum(x::float8 * x::float8), 0)) AS norm FROM unnest(e.embedding) AS x) AS n,
                 LATERAL (SELECT to_tsvector($3::regconfig, left(e.doc, ml_stack._max_text_length())) AS tsv) AS t,
                 LATERAL (SELECT coalesce(sum(cardinality(u.positions)), 0)::integer AS len FROM unnest(t.tsv) AS u) AS l
            WHERE e.embedding IS NOT NULL
            ON CONFLICT (id) DO UPDATE
                SET embedding = excluded.embedding, norm = excluded.norm, lexemes = excluded.lexemes,
                    doc_length = excluded.doc_length, updated_at = excluded.updated_at
            RETURNING 1
        ), gone AS (
            DELETE FROM ml_stack.%5$I AS v
            WHERE $1::text[] IS NOT NULL AND v.id = ANY ($1::text[]::%4$s[])
              AND NOT EXISTS (SELECT FROM src WHERE src.id = v.id)
        )
        SELECT (SELECT count(*) FROM src), (SELECT count(*) FROM ins)
        $q$, job.primary_key, ml_stack._vector_job_document_sql(job, 's'), job.relation, key_type, job.vectors_table)
        INTO found_rows, embedded USING keys, job.spec, job.text_config;
    IF embedded <> found_rows THEN
        -- a model that returns fewer vectors than texts (or NULLs): nothing of this batch is taken as done
        RAISE EXCEPTION 'transformer "%" returned % vectors for % texts', job.transformer, embedded, found_rows
            USING ERRCODE = 'data_exception';
    END IF;
    IF keys IS NOT NULL AND EXISTS (SELECT FROM ml_stack.vector_job_queue AS q WHERE q.job_id = job.id) THEN
        DELETE FROM ml_stack.vector_job_queue AS q WHERE q.job_id = job.id AND q.key = ANY (keys);
    END IF;
    RETURN embedded;
END
$$;

-- Does this job embed inside its triggers? (SQL transformers on a realtime schedule)
CREATE OR REPLACE FUNCTION ml_stack._vector_job_inline(job ml_stack.vector_job_definitions)
RETURNS boolean
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT job.schedule = 'realtime' AND job.spec ->> 'kind' <> 'python' $$;

-- The trigger function of every job (argument: the job id). It never makes the
-- user's statement fail for an embedding: an error is caught, and the rows go to
-- the queue with it, for process_vector_jobs to retry.
CREATE OR REPLACE FUNCTION ml_stack._vector_job_sync()
RETURNS trigger
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    job ml_stack.vector_job_definitions;
    keys text[];
    new_key text;
    old_key text;
BEGIN
    SELECT d.* INTO job FROM ml_stack.vector_job_definitions AS d WHERE d.id = TG_ARGV[0]::bigint;
    IF NOT FOUND OR job.relation::oid <> TG_RELID THEN
        RETURN NULL;  -- left from a dropped job, or set on another table: nothing to keep in sync
    END IF;
    IF TG_OP = 'TRUNCATE' THEN
        EXECUTE format('TRUNCATE ml_stack.%I', job.vectors_table);
        DELETE FROM ml_stack.vector_job_queue AS q WHERE q.job_id = job.id;
        RETURN NULL;
    ELSIF TG_OP = 'DELETE' THEN
        EXECUTE format('DELETE FROM ml_stack.%I AS v USING old_rows AS o WHERE v.id = o.%I',
                       job.vectors_table, job.primary_key);
        IF EXISTS (SELECT FROM ml_stack.vector_job_queue AS q WHERE q.job_id = job.id) THEN
            EXECUTE format('DELETE FROM ml_stack.vector_job_queue AS q USING old_rows AS o '
                           'WHERE q.job_id = $1 AND q.key = o.%I::text', job.primary_key) USING job.id;
        END IF;
        RETURN NULL;
    ELSIF TG_OP = 'INSERT' THEN
        EXECUTE format('SELECT array_agg(n.%I::text) FROM new_rows AS n', job.primary_key) INTO keys;
    ELSE
        -- UPDATE OF the key or an embedded column (row level, WHEN one of them changed)
        EXECUTE format('SELECT $1.%1$I::text, $2.%1$I::text', job.primary_key) INTO new_key, old_key USING NEW, OLD;
        keys := ARRAY[new_key];
        IF old_key IS DISTINCT FROM new_key THEN
            -- AFTER ROW triggers run at the end of the statement: another row may hold the old key by now
            EXECUTE format('DELETE FROM ml_stack.%1$I AS v WHERE v.id = $1::%2$s '
                           'AND NOT EXISTS (SELECT FROM %3$s AS s WHERE s.%4$I = $1::%2$s)',
                           job.vectors_table, ml_stack._vector_job_key_type(job), job.relation, job.primary_key)
                USING old_key;
            DELETE FROM ml_stack.vector_job_queue AS q WHERE q.job_id = job.id AND q.key = old_key;
        END IF;
    END IF;
    IF keys IS NULL THEN
        RETURN NULL;
    END IF;
    IF ml_stack._vector_job_inline(job) THEN
        BEGIN
            PERFORM ml_stack._vector_job_embed(job, keys);
        EXCEPTION WHEN OTHERS THEN
            PERFORM ml_stack._vector_job_enqueue(job.id, keys, SQLERRM);
        END;
    ELSE
        PERFORM ml_stack._vector_job_enqueue(job.id, keys, NULL);
    END IF;
    RETURN NULL;
END
$$;

-- Can this role use pg_cron here? (quietly: for the optional drain job of a realtime model transformer)
CREATE OR REPLACE FUNCTION ml_stack._cron_usable()
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_extension AS e WHERE e.extname = 'pg_cron') THEN
        RETURN false;
    END IF;
    IF NOT has_function_privilege('ml_stack._cron_problem()', 'EXECUTE') THEN
        RETURN false;
    END IF;
    IF ml_stack._cron_problem() IS NOT NULL THEN
        RETURN false;
    END IF;
    RETURN has_schema_privilege('cron', 'USAGE')
       AND has_function_privilege('cron.schedule(text, text, text)', 'EXECUTE')
       AND has_function_privilege('cron.unschedule(bigint)', 'EXECUTE');
END
$$;

-- Remove the pg_cron job of a vector job, when there is one this role can see.
CREATE OR REPLACE FUNCTION ml_stack._vector_job_unschedule(job_id bigint)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cron_id bigint;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_extension AS e WHERE e.extname = 'pg_cron')
       OR NOT has_schema_privilege('cron', 'USAGE') THEN
        RETURN;
    END IF;
    FOR cron_id IN EXECUTE 'SELECT j.jobid FROM cron.job AS j WHERE j.jobname = $1 AND j.username = current_user'
                   USING ml_stack._vector_job_cron_name(job_id) LOOP
        EXECUTE 'SELECT cron.unschedule($1)' USING cron_id;
    END LOOP;
END
$$;

-- Everything a job made: triggers (when its table still exists), its table, its cron job, its rows.
CREATE OR REPLACE FUNCTION ml_stack._vector_job_remove(job ml_stack.vector_job_definitions)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    event text;
    view_name text;
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_class AS c WHERE c.oid = job.relation) THEN
        FOREACH event IN ARRAY ARRAY['insert', 'update', 'delete', 'truncate'] LOOP
            EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', ml_stack._vector_job_trigger_name(job.id, event), job.relation);
        END LOOP;
    END IF;
    -- the views ml_stack_vectorize made of the job's embeddings go with it; a view of the user's own over them
    -- makes the DROP fail (nothing of the user's is dropped silently)
    FOREACH view_name IN ARRAY ARRAY[job.job_name || '_view', '_embeddings_' || job.job_name] LOOP
        IF to_regnamespace('vectorize') IS NOT NULL AND to_regclass(format('vectorize.%I', view_name)) IS NOT NULL THEN
            EXECUTE format('DROP VIEW vectorize.%I', view_name);
        END IF;
    END LOOP;
    EXECUTE format('DROP TABLE IF EXISTS ml_stack.%I', job.vectors_table);
    PERFORM ml_stack._vector_job_unschedule(job.id);
    DELETE FROM ml_stack.vector_job_definitions AS d WHERE d.id = job.id;  -- its queue rows cascade
END
$$;

-- Jobs whose relation was dropped (without the event trigger, or when it could not
-- clean up): removed. Called by create_vector_job, process_vector_jobs, search and
-- the vector_jobs view; does nothing in a read-only transaction.
CREATE OR REPLACE FUNCTION ml_stack._vector_jobs_cleanup()
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    job ml_stack.vector_job_definitions;
    removed integer := 0;
BEGIN
    IF current_setting('transaction_read_only')::boolean THEN
        RETURN 0;
    END IF;
    FOR job IN SELECT d.* FROM ml_stack.vector_job_definitions AS d
               WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_class AS c WHERE c.oid = d.relation)
               ORDER BY d.id LOOP
        BEGIN
            PERFORM ml_stack._vector_job_remove(job);
            removed := removed + 1;
            RAISE NOTICE 'ml_stack: removed vector job "%": its table was dropped', job.job_name;
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'ml_stack: could not remove vector job "%" of a dropped table: %', job.job_name, SQLERRM
                USING HINT = format('The owner of ml_stack.%I can remove it with ml_stack.drop_vector_job(%L).',
                                    job.vectors_table, job.job_name);
        END;
    END LOOP;
    RETURN removed;
END
$$;

-- sql_drop event trigger (made only when a superuser installs ml_stack): a dropped
-- source table takes its jobs along. It never makes the DROP fail.
CREATE OR REPLACE FUNCTION ml_stack._vector_jobs_on_drop()
RETURNS event_trigger
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    job ml_stack.vector_job_definitions;
BEGIN
    FOR job IN SELECT d.* FROM ml_stack.vector_job_definitions AS d
               WHERE d.relation::oid IN (SELECT o.objid FROM pg_catalog.pg_event_trigger_dropped_objects() AS o
                                         WHERE o.classid = 'pg_catalog.pg_class'::regclass AND o.objsubid = 0)
               ORDER BY d.id LOOP
        BEGIN
            PERFORM ml_stack._vector_job_remove(job);
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'ml_stack: could not remove vector job "%" of the dropped table: %', job.job_name, SQLERRM
                USING HINT = 'It is removed the next time ml_stack.vector_jobs, process_vector_jobs, create_vector_job or search runs.';
        END;
    END LOOP;
END
$$;

DO $$
BEGIN
    IF (SELECT r.rolsuper FROM pg_catalog.pg_roles AS r WHERE r.rolname = current_user)
       AND NOT EXISTS (SELECT FROM pg_catalog.pg_event_trigger AS t WHERE t.evtname = 'ml_stack_vector_jobs_drop') THEN
        -- DROP EXTENSION is not in the list: the definitions table goes with it
        CREATE EVENT TRIGGER ml_stack_vector_jobs_drop ON sql_drop
            WHEN TAG IN ('DROP TABLE', 'DROP SCHEMA', 'DROP OWNED')
            EXECUTE FUNCTION ml_stack._vector_jobs_on_drop();
        COMMENT ON EVENT TRIGGER ml_stack_vector_jobs_drop IS
            'ml_stack: dropping the source table of a vector job removes the job (its embeddings table, queue rows and cron job).';
    END IF;
END
$$;

-- A schedule: 'realtime', or what pg_cron takes (five fields, or @hourly ...).
CREATE OR REPLACE FUNCTION ml_stack._check_vector_schedule(schedule text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF schedule = 'realtime'
       OR schedule ~ '^\s*@(yearly|annually|monthly|weekly|daily|hourly|midnight)\s*$'
       OR schedule ~ '^\s*([0-9A-Za-z*,/-]+\s+){4}[0-9A-Za-z*,/-]+\s*$' THEN
        RETURN btrim(schedule);
    END IF;
    RAISE EXCEPTION 'unknown schedule "%"', schedule
        USING ERRCODE = 'invalid_parameter_value',
              HINT = 'Use ''realtime'' (embedded as rows are written), or a pg_cron schedule such as ''*/5 * * * *'' '
                     'or ''@hourly'' (the rows are queued and embedded by that job; needs pg_cron).';
END
$$;

CREATE OR REPLACE FUNCTION ml_stack._create_vector_job(job_name text, relation_name text, primary_key text, columns text[],
                                                       transformer text, schedule text, options jsonb,
                                                       caller_search_path text)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    rel regclass;
    pk_columns text[];
    col text;
    transformer_options jsonb;
    spec jsonb;
    job_options jsonb;
    batch_size integer;
    text_config text;
    job ml_stack.vector_job_definitions;
    key_type text;
    ext name;
    when_changed text;
    update_columns text;
    hint text;
    new_id bigint;
BEGIN
    PERFORM ml_stack._vector_jobs_cleanup();
    IF job_name IS NULL OR btrim(job_name) = '' THEN
        RAISE EXCEPTION 'job_name is required' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'e.g. ml_stack.create_vector_job(''docs'', ''documents'', ''id'', ARRAY[''title'', ''body''])';
    END IF;
    IF EXISTS (SELECT FROM ml_stack.vector_job_definitions AS d WHERE d.job_name = job_name) THEN
        RAISE EXCEPTION 'vector job "%" exists', job_name USING ERRCODE = 'duplicate_object',
            HINT = format('Choose another name, or drop it first: SELECT ml_stack.drop_vector_job(%L).', job_name);
    END IF;
    rel := ml_stack._resolve_relation(relation_name, caller_search_path);
    IF (SELECT c.relkind FROM pg_catalog.pg_class AS c WHERE c.oid = rel) = 'p' THEN
        -- statement triggers with transition tables on the parent miss writes made to a partition directly
        RAISE EXCEPTION 'vector jobs over partitioned tables are not supported yet (%)', rel
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Create one job per partition, or keep the text in a plain table.';
    END IF;
    IF (SELECT c.relkind FROM pg_catalog.pg_class AS c WHERE c.oid = rel) <> 'r' THEN
        RAISE EXCEPTION '"%" is not a table', relation_name USING ERRCODE = 'wrong_object_type',
            HINT = 'A vector job follows a table (its triggers keep the embeddings in sync); views cannot carry them.';
    END IF;

    SELECT array_agg(a.attname::text ORDER BY k.i) INTO pk_columns
    FROM pg_catalog.pg_constraint AS c, unnest(c.conkey) WITH ORDINALITY AS k(attnum, i), pg_catalog.pg_attribute AS a
    WHERE c.conrelid = rel AND c.contype = 'p' AND a.attrelid = rel AND a.attnum = k.attnum;
    IF pk_columns IS NULL THEN
        RAISE EXCEPTION 'table % has no primary key', rel USING ERRCODE = 'invalid_table_definition',
            HINT = format('A vector job needs a single-column primary key to find rows again: ALTER TABLE %s ADD PRIMARY KEY (...).', rel);
    END IF;
    IF cardinality(pk_columns) > 1 THEN
        RAISE EXCEPTION 'the primary key of % has % columns (%); a vector job needs a single-column key',
                        rel, cardinality(pk_columns), array_to_string(pk_columns, ', ')
            USING ERRCODE = 'invalid_table_definition',
                  HINT = 'Add a single-column key (e.g. a bigint identity column made the primary key), or create the job over a table that has one.';
    END IF;
    IF primary_key IS DISTINCT FROM pk_columns[1] THEN
        RAISE EXCEPTION 'column "%" is not the primary key of %: its primary key is "%"', primary_key, rel, pk_columns[1]
            USING ERRCODE = 'invalid_parameter_value', HINT = format('Pass primary_key => %L.', pk_columns[1]);
    END IF;

    IF columns IS NULL OR cardinality(columns) = 0 OR array_position(columns, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'columns must name one or more text columns' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'e.g. columns => ARRAY[''title'', ''body''] (embedded as their texts joined by a space).';
    END IF;
    IF (SELECT count(DISTINCT c) FROM unnest(columns) AS c) <> cardinality(columns) THEN
        RAISE EXCEPTION 'columns % name a column twice', columns USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Name each column once.';
    END IF;
    FOREACH col IN ARRAY columns LOOP
        PERFORM ml_stack._text_column(rel, col);
    END LOOP;

    schedule := ml_stack._check_vector_schedule(coalesce(schedule, 'realtime'));
    options := ml_stack._check_options(options, ARRAY(SELECT jsonb_object_keys(coalesce(options, '{}'))), 'create_vector_job');
    job_options := (SELECT coalesce(jsonb_object_agg(o.key, o.value), '{}') FROM jsonb_each(options) AS o
                    WHERE o.key = ANY (ml_stack._vector_job_option_keys()));
    transformer_options := options - ml_stack._vector_job_option_keys();
    batch_size := ml_stack._integer_option(job_options, 'batch_size', 100, 1, 10000);
    spec := ml_stack._resolve_transformer(transformer, transformer_options);
    text_config := ml_stack._text_config(coalesce(job_options ->> 'keyword_config', spec ->> 'config', 'english'))::text;

    IF schedule <> 'realtime' THEN
        BEGIN
            PERFORM ml_stack._require_cron();
        EXCEPTION WHEN object_not_in_prerequisite_state OR insufficient_privilege THEN
            GET STACKED DIAGNOSTICS hint = PG_EXCEPTION_HINT;
            RAISE EXCEPTION 'vector job "%" on schedule "%" needs pg_cron: %', job_name, schedule, SQLERRM
                USING ERRCODE = SQLSTATE,
                      HINT = replace(hint, 'Scheduled training needs', 'A vector job on a cron schedule needs')
                             || ' Or use schedule => ''realtime''.';
        END;
    END IF;

    new_id := nextval(pg_get_serial_sequence('ml_stack.vector_job_definitions', 'id'));
    INSERT INTO ml_stack.vector_job_definitions AS d
        (id, job_name, relation, primary_key, columns, transformer, spec, schedule, options, text_config, batch_size, vectors_table)
    VALUES (new_id, job_name, rel, primary_key, columns, transformer, spec, schedule, options, text_config, batch_size,
            format('_vectors_%s', new_id))
    RETURNING d.* INTO job;

    SELECT format_type(a.atttypid, a.atttypmod) INTO key_type FROM pg_catalog.pg_attribute AS a
    WHERE a.attrelid = rel AND a.attname = primary_key;
    EXECUTE format('CREATE TABLE ml_stack.%I (id %s PRIMARY KEY, embedding real[] NOT NULL, norm float8 NOT NULL, '
                   'lexemes tsvector NOT NULL, doc_length integer NOT NULL, updated_at timestamptz NOT NULL DEFAULT now())',
                   job.vectors_table, key_type);
    EXECUTE format('CREATE INDEX ON ml_stack.%I USING gin (lexemes)', job.vectors_table);
    EXECUTE format('COMMENT ON TABLE ml_stack.%I IS %L', job.vectors_table,
                   format('ml_stack: embeddings of vector job "%s" (%s, columns %s, transformer %s): id = the primary key, '
                          'norm = L2 norm of embedding, lexemes and doc_length for keyword search.',
                          job.job_name, rel, array_to_string(columns, ', '), transformer));
    -- made at run time, so not a member: inside an extension script it would be, and pg_dump would skip it
    SELECT e.extname INTO ext FROM pg_catalog.pg_depend AS d JOIN pg_catalog.pg_extension AS e ON e.oid = d.refobjid
    WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = format('ml_stack.%I', job.vectors_table)::regclass
      AND d.deptype = 'e';
    IF FOUND THEN
        EXECUTE format('ALTER EXTENSION %I DROP TABLE ml_stack.%I', ext, job.vectors_table);
    END IF;

    SELECT string_agg(format('%I', c), ', '), string_agg(format('OLD.%1$I IS DISTINCT FROM NEW.%1$I', c), ' OR ')
    INTO update_columns, when_changed
    FROM (SELECT DISTINCT c FROM unnest(array_prepend(primary_key, columns)) AS c) AS u;
    EXECUTE format('CREATE TRIGGER %I AFTER INSERT ON %s REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT '
                   'EXECUTE FUNCTION ml_stack._vector_job_sync(%L)', ml_stack._vector_job_trigger_name(job.id, 'insert'), rel, job.id);
    EXECUTE format('CREATE TRIGGER %I AFTER UPDATE OF %s ON %s FOR EACH ROW WHEN (%s) '
                   'EXECUTE FUNCTION ml_stack._vector_job_sync(%L)', ml_stack._vector_job_trigger_name(job.id, 'update'),
                   update_columns, rel, when_changed, job.id);
    EXECUTE format('CREATE TRIGGER %I AFTER DELETE ON %s REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT '
                   'EXECUTE FUNCTION ml_stack._vector_job_sync(%L)', ml_stack._vector_job_trigger_name(job.id, 'delete'), rel, job.id);
    EXECUTE format('CREATE TRIGGER %I AFTER TRUNCATE ON %s FOR EACH STATEMENT '
                   'EXECUTE FUNCTION ml_stack._vector_job_sync(%L)', ml_stack._vector_job_trigger_name(job.id, 'truncate'), rel, job.id);

    -- the rows already there
    IF ml_stack._vector_job_inline(job) THEN
        PERFORM ml_stack._vector_job_embed(job, NULL);
    ELSE
        EXECUTE format('INSERT INTO ml_stack.vector_job_queue (job_id, key) SELECT $1, s.%I::text FROM %s AS s',
                       primary_key, rel) USING job.id;
    END IF;

    IF schedule <> 'realtime' OR ml_stack._cron_usable() THEN
        IF schedule <> 'realtime' OR spec ->> 'kind' = 'python' THEN
            BEGIN
                EXECUTE 'SELECT cron.schedule($1, $2, $3)'
                    USING ml_stack._vector_job_cron_name(job.id), CASE WHEN schedule = 'realtime' THEN '* * * * *' ELSE schedule END,
                          format('SELECT ml_stack.process_vector_jobs(%L)', job_name);
            EXCEPTION WHEN invalid_parameter_value THEN
                RAISE EXCEPTION 'unknown schedule "%": %', schedule, SQLERRM USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'pg_cron takes five fields (minute hour day-of-month month day-of-week), e.g. ''*/5 * * * *'', '
                           'or @hourly, @daily, ...; the finest is one minute.';
            END;
        END IF;
    ELSIF spec ->> 'kind' = 'python' THEN
        RAISE NOTICE 'ml_stack: vector job "%" queues its rows (a model transformer embeds in batches); without pg_cron here, run SELECT ml_stack.process_vector_jobs(%) to embed them',
                     job_name, quote_literal(job_name);
    END IF;
    RETURN job.id;
END
$$;

-- No SET clause: relation_name resolves with the caller's search_path (as fit_vectorizer's).
CREATE OR REPLACE FUNCTION ml_stack.create_vector_job(job_name text, relation_name text, primary_key text, columns text[],
                                                      transformer text DEFAULT 'hashing', schedule text DEFAULT 'realtime',
                                                      options jsonb DEFAULT '{}')
RETURNS bigint
LANGUAGE sql VOLATILE
AS $$
    SELECT ml_stack._create_vector_job(create_vector_job.job_name, create_vector_job.relation_name,
                                       create_vector_job.primary_key, create_vector_job.columns,
                                       create_vector_job.transformer, create_vector_job.schedule,
                                       create_vector_job.options, pg_catalog.current_setting('search_path'))
$$;
COMMENT ON FUNCTION ml_stack.create_vector_job(text, text, text, text[], text, text, jsonb) IS
    'ml_stack: keep the embeddings of a table''s text columns (joined by a space, NULLs skipped) in sync, for ml_stack.search. schedule ''realtime'' (triggers; a model transformer queues and embeds in batches) or a pg_cron schedule; options: the transformer''s, plus batch_size and keyword_config. Existing rows are embedded (or queued) at once. Returns the job id.';

CREATE OR REPLACE FUNCTION ml_stack.drop_vector_job(job_name text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM ml_stack._vector_job_remove(ml_stack._vector_job_by_name(job_name));
    RETURN true;
END
$$;
COMMENT ON FUNCTION ml_stack.drop_vector_job(text) IS
    'ml_stack: remove a vector job and everything it made: its triggers, its embeddings table, its queued rows and its pg_cron job. Returns true.';

-- One job's queue: every key queued when the run starts (locked: concurrent runs
-- skip them), in batches of batch_size; a batch that fails is retried key by key,
-- and a key that fails is recorded (attempts, last_error, failed_at) and stays.
CREATE OR REPLACE FUNCTION ml_stack._vector_job_process(job ml_stack.vector_job_definitions)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    keys text[];
    batch text[];
    k text;
    i integer;
    embedded bigint := 0;
    started timestamptz := clock_timestamp();
BEGIN
    keys := ARRAY(SELECT q.key FROM ml_stack.vector_job_queue AS q WHERE q.job_id = job.id
                  ORDER BY q.enqueued_at, q.key FOR UPDATE SKIP LOCKED);
    FOR i IN 1 .. coalesce(cardinality(keys), 0) BY job.batch_size LOOP
        batch := keys[i : i + job.batch_size - 1];
        BEGIN
            embedded := embedded + ml_stack._vector_job_embed(job, batch);
        EXCEPTION WHEN OTHERS THEN
            FOREACH k IN ARRAY batch LOOP
                BEGIN
                    embedded := embedded + ml_stack._vector_job_embed(job, ARRAY[k]);
                EXCEPTION WHEN OTHERS THEN
                    UPDATE ml_stack.vector_job_queue AS q
                    SET attempts = q.attempts + 1, last_error = SQLERRM, failed_at = now()
                    WHERE q.job_id = job.id AND q.key = k;
                END;
            END LOOP;
        END;
        IF clock_timestamp() - started > interval '5 seconds' THEN
            RAISE NOTICE 'ml_stack: vector job "%": % of % queued rows done, % embedded', job.job_name,
                least(i + job.batch_size - 1, cardinality(keys)), cardinality(keys), embedded;
            started := clock_timestamp();
        END IF;
    END LOOP;
    UPDATE ml_stack.vector_job_definitions AS d SET last_processed_at = now() WHERE d.id = job.id;
    RETURN embedded;
END
$$;

CREATE OR REPLACE FUNCTION ml_stack.process_vector_jobs(job_name text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    job ml_stack.vector_job_definitions;
    total bigint := 0;
BEGIN
    PERFORM ml_stack._vector_jobs_cleanup();
    IF job_name IS NOT NULL THEN
        PERFORM ml_stack._vector_job_by_name(job_name);
    END IF;
    FOR job IN SELECT d.* FROM ml_stack.vector_job_definitions AS d
               WHERE job_name IS NULL OR d.job_name = job_name ORDER BY d.id LOOP
        total := total + ml_stack._vector_job_process(job);
    END LOOP;
    RETURN total;
END
$$;
COMMENT ON FUNCTION ml_stack.process_vector_jobs(text) IS
    'ml_stack: embed the queued rows of one vector job (or of all, for NULL) in batches: rows of model transformers and cron schedules, and rows whose embedding failed before (a row that fails again keeps its error in ml_stack.vector_job_queue). Returns the number of rows embedded.';

-- The rows of view ml_stack.vector_jobs (a function: it counts per job and cleans up dropped tables' jobs).
CREATE OR REPLACE FUNCTION ml_stack._vector_job_list()
RETURNS TABLE (job_name text, relation_name text, transformer text, schedule text, source_rows bigint,
               embedded_rows bigint, pending bigint, failed bigint, last_processed_at timestamptz,
               last_embedded_at timestamptz, primary_key name, columns name[], dims integer, text_config text,
               vectors_table text, job_id bigint, created_by name, created_at timestamptz)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    job ml_stack.vector_job_definitions;
    n_source bigint;
    n_embedded bigint;
    last_embedded timestamptz;
    n_dims integer;
BEGIN
    PERFORM ml_stack._vector_jobs_cleanup();
    FOR job IN SELECT d.* FROM ml_stack.vector_job_definitions AS d
               WHERE EXISTS (SELECT FROM pg_catalog.pg_class AS c WHERE c.oid = d.relation) ORDER BY d.job_name LOOP
        n_source := NULL; n_embedded := NULL; last_embedded := NULL; n_dims := (job.spec ->> 'dims')::integer;
        IF has_table_privilege(job.relation, 'SELECT') THEN
            EXECUTE format('SELECT count(*) FROM %s', job.relation) INTO n_source;
        END IF;
        IF to_regclass(format('ml_stack.%I', job.vectors_table)) IS NOT NULL
           AND has_table_privilege(format('ml_stack.%I', job.vectors_table), 'SELECT') THEN
            EXECUTE format('SELECT count(*), max(v.updated_at), (SELECT cardinality(w.embedding) FROM ml_stack.%1$I AS w LIMIT 1) '
                           'FROM ml_stack.%1$I AS v', job.vectors_table)
                INTO n_embedded, last_embedded, n_dims;
            n_dims := coalesce((job.spec ->> 'dims')::integer, n_dims);
        END IF;
        RETURN QUERY SELECT job.job_name, job.relation::text, job.transformer, job.schedule, n_source, n_embedded,
               (SELECT count(*) FROM ml_stack.vector_job_queue AS q WHERE q.job_id = job.id AND q.failed_at IS NULL),
               (SELECT count(*) FROM ml_stack.vector_job_queue AS q WHERE q.job_id = job.id AND q.failed_at IS NOT NULL),
               job.last_processed_at, last_embedded, job.primary_key, job.columns, n_dims, job.text_config,
               format('ml_stack.%I', job.vectors_table), job.id, job.created_by, job.created_at;
    END LOOP;
END
$$;

CREATE OR REPLACE VIEW ml_stack.vector_jobs AS
    SELECT * FROM ml_stack._vector_job_list();
COMMENT ON VIEW ml_stack.vector_jobs IS
    'ml_stack: the vector jobs: source relation, transformer, schedule, source_rows (a live count(*)), embedded_rows, pending (queued, never failed), failed (queued, last attempt failed: see ml_stack.vector_job_queue), last_processed_at (last process_vector_jobs run), last_embedded_at, dims, and the embeddings table.';

-- source: sql/vectors/search.sql
-- ml_stack.search (DESIGN §3b; docs/vectors-jobs-search.md): top-k over a vector
-- job's embeddings. One dynamic query per call, built from parts:
--   semantic  _semantic_ranking_sql: exact cosine, brute force over ml_stack._vectors_<id>
--   keyword   _keyword_ranking_sql: BM25 over the stored lexemes (GIN index finds the candidates)
--   hybrid    reciprocal rank fusion of the two
-- then joined to the source rows (record) and filtered by _search_filter_sql.
-- Ties are broken by the primary key in its own type's order.

-- The WHERE clause of a filters object, over the source row alias s. Column
-- names are checked against the catalog and written with %I; values never enter
-- the SQL text: the clause reads them from the jsonb array `values` (bound as
-- $1 by search), cast to the column's type.
CREATE OR REPLACE FUNCTION ml_stack._search_filter_sql(rel regclass, filters jsonb, OUT clause text, OUT "values" jsonb)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    f record;
    c record;
    typ text;
    conditions text[] := '{}';
    op text;
    v jsonb;
    i integer;
    ops constant text[] := ARRAY['=', '<>', '<', '<=', '>', '>=', 'in', 'like'];
    filter_hint constant text := 'filters => ''{"col": value}'' (equality; null: IS NULL) or ''{"col": {"op": value}}'' with op one of =, <>, <, <=, >, >=, in (a JSON array), like.';
BEGIN
    "values" := '[]';
    IF filters IS NULL OR filters = '{}'::jsonb THEN
        clause := 'true';
        RETURN;
    END IF;
    IF jsonb_typeof(filters) <> 'object' THEN
        RAISE EXCEPTION 'filters must be a JSON object, got %', left(filters::text, 100)
            USING ERRCODE = 'invalid_parameter_value', HINT = filter_hint;
    END IF;
    FOR f IN SELECT e.key, e.value FROM jsonb_each(filters) AS e ORDER BY e.key LOOP
        SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS typ, a.atttypid INTO c
        FROM pg_catalog.pg_attribute AS a
        WHERE a.attrelid = rel AND a.attname = f.key AND a.attnum > 0 AND NOT a.attisdropped;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'filter on unknown column "%" of %', left(f.key, 100), rel
                USING ERRCODE = 'undefined_column',
                      HINT = format('Its columns: %s.', (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum)
                                                         FROM pg_catalog.pg_attribute AS a
                                                         WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped));
        END IF;
        typ := c.typ;
        FOR op, v IN SELECT '=', f.value WHERE jsonb_typeof(f.value) <> 'object'
                     UNION ALL
                     SELECT o.key, o.value FROM jsonb_each(CASE WHEN jsonb_typeof(f.value) = 'object' THEN f.value END) AS o
        LOOP
            IF NOT op = ANY (ops) THEN
                RAISE EXCEPTION 'unknown filter operator "%" for column "%"', left(op, 100), f.key
                    USING ERRCODE = 'invalid_parameter_value', HINT = filter_hint;
            END IF;
            i := jsonb_array_length("values");
            IF jsonb_typeof(v) = 'null' THEN
                IF op NOT IN ('=', '<>') THEN
                    RAISE EXCEPTION 'filter "%" on column "%" cannot take null', op, f.key
                        USING ERRCODE = 'invalid_parameter_value', HINT = 'null goes with = (IS NULL) or <> (IS NOT NULL).';
                END IF;
                conditions := conditions || format('s.%I IS %sNULL', c.attname, CASE WHEN op = '<>' THEN 'NOT ' ELSE '' END);
                CONTINUE;
            END IF;
            IF op = 'in' THEN
                IF jsonb_typeof(v) <> 'array' THEN
                    RAISE EXCEPTION 'filter "in" on column "%" needs a JSON array, got %', f.key, left(v::text, 100)
                        USING ERRCODE = 'invalid_parameter_value', HINT = 'e.g. {"section": {"in": ["games", "science"]}}';
                END IF;
            ELSIF op = 'like' AND jsonb_typeof(v) <> 'string' THEN
                RAISE EXCEPTION 'filter "like" on column "%" needs a string pattern, got %', f.key, left(v::text, 100)
                    USING ERRCODE = 'invalid_parameter_value', HINT = 'e.g. {"title": {"like": "%game%"}}';
            ELSIF jsonb_typeof(v) IN ('object', 'array') AND c.atttypid NOT IN ('jsonb'::regtype, 'json'::regtype) THEN
                RAISE EXCEPTION 'filter "%" on column "%" needs a scalar value, got %', op, f.key, left(v::text, 100)
                    USING ERRCODE = 'invalid_parameter_value', HINT = filter_hint;
            END IF;
            -- the value must read as the column's type: say so here rather than from inside the search query
            IF op <> 'like' THEN
                BEGIN
                    EXECUTE format('SELECT x::%s FROM (SELECT CASE WHEN jsonb_typeof(e) = ''string'' THEN e #>> ''{}'' ELSE e::text END AS x '
                                   'FROM jsonb_array_elements(CASE WHEN jsonb_typeof($1) = ''array'' AND $2 THEN $1 ELSE jsonb_build_array($1) END) AS e) AS t',
                                   typ) USING v, op = 'in';
                EXCEPTION WHEN OTHERS THEN
                    RAISE EXCEPTION 'filter value % for column "%" is not a valid %', left(v::text, 100), f.key, typ
                        USING ERRCODE = 'invalid_parameter_value', DETAIL = SQLERRM, HINT = filter_hint;
                END;
            END IF;
            "values" := "values" || jsonb_build_array(v);
            conditions := conditions || CASE
                WHEN op = 'in' THEN format('s.%I = ANY (ARRAY(SELECT e #>> ''{}'' FROM jsonb_array_elements($1 -> %s) AS e)::%s[])',
                                           c.attname, i, typ)
                WHEN op = 'like' THEN format('s.%I::text LIKE ($1 ->> %s)', c.attname, i)
                WHEN c.atttypid IN ('jsonb'::regtype, 'json'::regtype) THEN format('s.%I::jsonb %s ($1 -> %s)', c.attname, op, i)
                ELSE format('s.%I %s ($1 -> %s #>> ''{}'')::%s', c.attname, op, i, typ) END;
        END LOOP;
    END LOOP;
    clause := CASE WHEN cardinality(conditions) = 0 THEN 'true' ELSE array_to_string(conditions, ' AND ') END;
END
$$;

-- The semantic ranking: exact cosine similarity of every embedding with the query
-- vector, best `lim` (ties by key). The one place that computes it: a faster path
-- (a cached numpy matrix in ml_stack_python) replaces this function's SQL.
-- The dot product is written out over the query's non-zero components as
-- e[i] * <constant>: subscripting a flat real[] is O(1), and this ran 4-10x faster
-- than sum() over unnest(e, q) (10k x 384: 73-115 ms against 512-816 ms); a sparse
-- query (hashing) touches only its few buckets.
CREATE OR REPLACE FUNCTION ml_stack._semantic_ranking_sql(job ml_stack.vector_job_definitions, query_vector real[],
                                                          filter_clause text, lim integer)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET extra_float_digits = 1  -- shortest exact text of each float8 constant
AS $$
DECLARE
    qnorm float8;
    dot text;
    score text;
    ranking text;
BEGIN
    SELECT sqrt(coalesce(sum(x::float8 * x::float8), 0)) INTO qnorm FROM unnest(query_vector) AS x;
    -- groups of 32 terms keep the expression tree shallow
    SELECT string_agg('(' || g.terms || ')', ' + ') INTO dot
    FROM (SELECT string_agg(format('v.embedding[%s] * %L::float8', t.i, t.x::float8), ' + ' ORDER BY t.i) AS terms
          FROM unnest(query_vector) WITH ORDINALITY AS t(x, i)
          WHERE t.x <> 0
          GROUP BY (t.i - 1) / 32) AS g;
    score := format('CASE WHEN v.norm = 0 THEN 0::float8 ELSE (%s) / (v.norm * %L::float8) END',
                    CASE WHEN dot IS NULL OR qnorm = 0 THEN '0::float8' ELSE dot END, CASE WHEN qnorm = 0 THEN 1 ELSE qnorm END);
    -- ml_stack_python, when installed: a numpy matrix cached per backend picks the candidate rows, this same
    -- expression scores them (docs/vectors-jobs-search.md, "Semantic search in numpy"); NULL: not this time
    IF to_regprocedure('ml_stack._python_semantic_ranking_sql(ml_stack.vector_job_definitions, real[], text, integer, text)') IS NOT NULL THEN
        EXECUTE 'SELECT ml_stack._python_semantic_ranking_sql($1, $2, $3, $4, $5)' INTO ranking
            USING job, query_vector, filter_clause, lim, score;
        IF ranking IS NOT NULL THEN
            RETURN ranking;
        END IF;
    END IF;
    RETURN format($q$
        SELECT v.id, %1$s AS score
        FROM ml_stack.%2$I AS v %3$s
        ORDER BY 2 DESC NULLS LAST, 1 LIMIT %4$s$q$,
        score,
        job.vectors_table,
        CASE WHEN filter_clause = 'true' THEN ''
             ELSE format('JOIN %s AS s ON s.%I = v.id WHERE %s', job.relation, job.primary_key, filter_clause) END,
        lim);
END
$$;

-- The keyword ranking: BM25 (k1 = 1.2, b = 0.75, idf = ln(1 + (N - df + 0.5) / (df + 0.5)))
-- over the query's distinct lexemes $2 (text[]), matched through $3 (tsquery: any
-- of them) and the GIN index. N = $4 embedded rows, avgdl = $5 their mean length;
-- df counts every embedded row, filters only restrict the rows ranked.
CREATE OR REPLACE FUNCTION ml_stack._keyword_ranking_sql(job ml_stack.vector_job_definitions, filter_clause text, lim integer)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format($q$
        SELECT b.id, b.score FROM (
            SELECT t.id, sum(ln(1 + ($4 - t.df + 0.5) / (t.df + 0.5))
                             * t.tf * (1.2 + 1) / (t.tf + 1.2 * (1 - 0.75 + 0.75 * t.doc_length / $5))) AS score
            FROM (SELECT m.*, count(*) OVER (PARTITION BY m.lexeme)::float8 AS df
                  FROM (SELECT v.id, v.doc_length, u.lexeme, cardinality(u.positions)::float8 AS tf
                        FROM ml_stack.%1$I AS v, unnest(v.lexemes) AS u
                        WHERE v.lexemes @@ $3 AND u.lexeme = ANY ($2)) AS m) AS t
            GROUP BY t.id) AS b %2$s
        ORDER BY 2 DESC, 1 LIMIT %3$s$q$,
        job.vectors_table,
        CASE WHEN filter_clause = 'true' THEN ''
             ELSE format('JOIN %s AS s ON s.%I = b.id WHERE %s', job.relation, job.primary_key, filter_clause) END,
        lim)
$$;

-- A tsquery matching any of the lexemes (each quoted as tsquery input wants).
CREATE OR REPLACE FUNCTION ml_stack._any_lexeme_query(terms text[])
RETURNS tsquery
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT string_agg('''' || replace(replace(t, '\', '\\'), '''', '''''') || '''', ' | ')::tsquery
    FROM unnest(terms) AS t
$$;

CREATE OR REPLACE FUNCTION ml_stack._search(job_name text, query text, num_results integer, filters jsonb, mode text)
RETURNS TABLE (id text, score float8, rank integer, record jsonb)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET jit = off  -- LLVM compile time of the long dot-product expression exceeds the whole query's run time
AS $$
#variable_conflict use_variable
DECLARE
    job ml_stack.vector_job_definitions;
    f record;
    qvec real[];
    terms text[];
    n_docs bigint;
    avgdl float8;
    lim integer;
    ranking text;
BEGIN
    IF mode IS NULL OR mode NOT IN ('semantic', 'keyword', 'hybrid') THEN
        RAISE EXCEPTION 'unknown search mode "%"', mode USING ERRCODE = 'invalid_parameter_value',
            HINT = 'mode => ''semantic'' (cosine similarity of the embeddings), ''keyword'' (BM25 over the words) or ''hybrid'' (both, fused by reciprocal rank).';
    END IF;
    IF query IS NULL OR btrim(query) = '' THEN
        RAISE EXCEPTION 'query text is required' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Pass the text to search for, e.g. ml_stack.search(''docs'', ''fast json parser'').';
    END IF;
    IF num_results IS NULL OR num_results NOT BETWEEN 1 AND 10000 THEN
        RAISE EXCEPTION 'num_results must be from 1 to 10000, got %', coalesce(num_results::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'The default is 10.';
    END IF;
    PERFORM ml_stack._vector_jobs_cleanup();
    job := ml_stack._vector_job_by_name(job_name);
    f := ml_stack._search_filter_sql(job.relation, filters);
    -- hybrid: each ranking contributes its best max(num_results, 100)
    lim := CASE WHEN mode = 'hybrid' THEN greatest(num_results, 100) ELSE num_results END;

    IF mode IN ('semantic', 'hybrid') THEN
        IF job.spec ->> 'kind' = 'python' THEN
            SELECT e INTO qvec FROM ml_stack._embed_batch(job.spec, ARRAY[query]) AS e;
        ELSE
            qvec := ml_stack._dense_vector(job.spec, query);
        END IF;
    END IF;
    IF mode IN ('keyword', 'hybrid') THEN
        terms := ARRAY(SELECT DISTINCT l.term FROM ml_stack._lexemes(job.text_config::regconfig, query) AS l ORDER BY 1);
        EXECUTE format('SELECT count(*), avg(v.doc_length)::float8 FROM ml_stack.%I AS v', job.vectors_table)
            INTO n_docs, avgdl;
    END IF;

    ranking := CASE mode
        WHEN 'semantic' THEN ml_stack._semantic_ranking_sql(job, qvec, f.clause, lim)
        WHEN 'keyword' THEN CASE WHEN cardinality(terms) = 0 THEN 'SELECT NULL AS id, NULL::float8 AS score LIMIT 0'
                                 ELSE ml_stack._keyword_ranking_sql(job, f.clause, lim) END
        ELSE format($q$
            SELECT coalesce(sr.id, kr.id) AS id,
                   coalesce(1 / (60 + sr.r)::float8, 0) + coalesce(1 / (60 + kr.r)::float8, 0) AS score
            FROM (SELECT sem.id, row_number() OVER (ORDER BY sem.score DESC NULLS LAST, sem.id) AS r FROM (%s) AS sem) AS sr
            FULL JOIN (SELECT kw.id, row_number() OVER (ORDER BY kw.score DESC, kw.id) AS r FROM (%s) AS kw) AS kr
              ON kr.id = sr.id$q$,
            ml_stack._semantic_ranking_sql(job, qvec, f.clause, lim),
            CASE WHEN cardinality(terms) = 0 THEN format('SELECT v.id, NULL::float8 AS score FROM ml_stack.%I AS v LIMIT 0', job.vectors_table)
                 ELSE ml_stack._keyword_ranking_sql(job, f.clause, lim) END) END;
    IF mode = 'keyword' AND cardinality(terms) = 0 THEN
        RETURN;  -- no word of the query is a lexeme (stop words only, say): nothing matches
    END IF;
    RETURN QUERY EXECUTE format($q$
        SELECT r.id::text, r.score, (row_number() OVER (ORDER BY r.score DESC NULLS LAST, r.id))::integer, to_jsonb(s.*)
        FROM (%s) AS r JOIN %s AS s ON s.%I = r.id
        ORDER BY r.score DESC NULLS LAST, r.id
        LIMIT %s$q$, ranking, job.relation, job.primary_key, num_results)
        USING f."values", terms, ml_stack._any_lexeme_query(terms), n_docs, nullif(avgdl, 0);
END
$$;

-- A LANGUAGE sql wrapper: PL/pgSQL would see the result columns (id, score, rank,
-- record) as variables inside every query of the body.
CREATE OR REPLACE FUNCTION ml_stack.search(job_name text, query text, num_results integer DEFAULT 10,
                                           filters jsonb DEFAULT NULL, mode text DEFAULT 'semantic')
RETURNS TABLE (id text, score float8, rank integer, record jsonb)
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT s.id, s.score, s.rank, s.record
    FROM ml_stack._search(search.job_name, search.query, search.num_results, search.filters, search.mode) AS s
$$;
COMMENT ON FUNCTION ml_stack.search(text, text, integer, jsonb, text) IS
    'ml_stack: the rows of a vector job''s table that best match a text: mode ''semantic'' (exact cosine similarity), ''keyword'' (BM25) or ''hybrid'' (reciprocal rank fusion, k = 60); filters on the table''s columns ({"col": value} or {"col": {"op": value}}). Returns id (the primary key as text), score, rank (1..n) and record (the row as jsonb). Rows still queued are not searched.';

-- source: sql/training/categories.sql
-- Categorical features (0.5.0): text, varchar, char and enum columns, and integer or
-- boolean columns with an "encode" rule, encoded as PostgresML's preprocess names them:
--   {"encode": "one_hot"}   one 0/1 feature per category seen in the training rows; "drop":
--                           "first" leaves out the first (dummy coding: the default for least
--                           squares, whose coefficients are otherwise not unique);
--   {"encode": "target"}    the label's mean per category (scikit-learn's TargetEncoder,
--                           fit then transform: "smooth" "auto" (default) or a number;
--                           a multiclass label gives one feature per class);
--   {"encode": "ordinal"} or {"encode": {"ordinal": [...]}}  the category's position
--                           (1, 2, ...) in the sorted categories or in the given list.
-- NULL is a category of its own when the training rows hold it (ordinal: always 0).
-- A category unseen at training is all zeros (one_hot: as the dropped first category), the training mean of the label
-- (target), NULL (ordinal, then its impute rule, if any). Categories sort as text in
-- the C collation (enums: in their own order; integers: as numbers).
--
-- An encoding is stored in the model's column layout as
--   {"method", "categories": [non-NULL categories in order], "values": [[..] per category]
--    (target, ordinal), "null": [..] or null, "unknown": [..], "drop": "first" (one_hot)}
-- and the same SQL (_category_feature_sql) encodes the training rows and every served row.

-- Types read as numbers: date and time types as seconds (date_part('epoch', ...): since
-- 1970-01-01 00:00 UTC for timestamptz, of the written wall-clock time for timestamp and
-- date, of the duration for interval, since midnight for time).
CREATE OR REPLACE FUNCTION ml_stack._is_temporal_type(typ regtype)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT typ IN ('date'::regtype, 'timestamp without time zone'::regtype, 'timestamp with time zone'::regtype,
                   'interval'::regtype, 'time without time zone'::regtype)
$$;

-- One output feature (q, from 1) of an encoded category, as SQL over the text expression
-- arg. Schema-qualified throughout: it is inlined into serving functions.
CREATE OR REPLACE FUNCTION ml_stack._category_feature_sql(encoding jsonb, arg text, q integer)
RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
SET extra_float_digits = 3
AS $$
DECLARE
    k integer := jsonb_array_length(encoding -> 'categories');
    dropped integer := CASE WHEN encoding ->> 'drop' = 'first' THEN 1 ELSE 0 END;
    num text;
    arms text;
BEGIN
    IF encoding ->> 'method' = 'one_hot' THEN
        IF q > k - dropped THEN   -- the NULL category's feature
            RETURN format('(%s IS NULL)::pg_catalog.int4::pg_catalog.float8', arg);
        END IF;
        RETURN format('COALESCE(%s OPERATOR(pg_catalog.=) %L::pg_catalog.text, false)::pg_catalog.int4::pg_catalog.float8',
                      arg, encoding -> 'categories' ->> (q - 1 + dropped));
    END IF;
    -- the numbers go through float8 (the layout is a registry row: only numbers reach the SQL)
    SELECT string_agg(format(' WHEN %s OPERATOR(pg_catalog.=) %L::pg_catalog.text THEN (%s)::pg_catalog.float8', arg, c.value,
                             coalesce(((encoding -> 'values' -> (c.ordinality::integer - 1) ->> (q - 1))::float8)::text, 'NULL')),
                      '' ORDER BY c.ordinality)
    INTO arms FROM jsonb_array_elements_text(encoding -> 'categories') WITH ORDINALITY AS c;
    num := coalesce(((encoding -> 'unknown' ->> (q - 1))::float8)::text, 'NULL');
    RETURN format('(CASE WHEN %s IS NULL THEN (%s)::pg_catalog.float8%s ELSE (%s)::pg_catalog.float8 END)', arg,
                  coalesce(((encoding -> 'null' ->> (q - 1))::float8)::text, num), coalesce(arms, ''), num);
END
$$;

-- Whether serving should look a category up by a call rather than inline its SQL: an
-- inlined CASE of hundreds of arms per feature makes huge serving functions (planned per
-- query, and compiled by JIT: 136 s for 8k rows of a 1064-category, 6-class target encoding).
CREATE OR REPLACE FUNCTION ml_stack._category_is_large(encoding jsonb)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_array_length(encoding -> 'categories')
           * CASE WHEN encoding ->> 'method' = 'one_hot' THEN 1 ELSE jsonb_array_length(encoding -> 'unknown') END > 100
$$;

-- Every output feature of an encoded category, as an SQL float8[] over arg: its CASEs, or
-- for a large encoding a call that looks the category up.
CREATE OR REPLACE FUNCTION ml_stack._category_features_sql(encoding jsonb, arg text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN ml_stack._category_is_large(encoding)
                THEN format('ml_stack._category_features(%L::pg_catalog.jsonb, %s)', encoding, arg)
                ELSE (SELECT format('ARRAY[%s]', string_agg(ml_stack._category_feature_sql(encoding, arg, q), ', ' ORDER BY q))
                      FROM generate_series(1, jsonb_array_length(encoding -> 'unknown')) AS q) END
$$;

-- The same, computed for one value (predict_row).
CREATE OR REPLACE FUNCTION ml_stack._category_features(encoding jsonb, value text)
RETURNS float8[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    i integer;
    w integer := jsonb_array_length(encoding -> 'unknown');
    features float8[];
BEGIN
    IF value IS NOT NULL THEN
        i := array_position(ARRAY(SELECT jsonb_array_elements_text(encoding -> 'categories')), value);
    END IF;
    IF encoding ->> 'method' = 'one_hot' THEN
        features := array_fill(0::float8, ARRAY[w]);
        i := i - CASE WHEN encoding ->> 'drop' IS NOT DISTINCT FROM 'first' THEN 1 ELSE 0 END;   -- 0: the dropped one
        IF value IS NULL AND jsonb_typeof(encoding -> 'null') = 'array' THEN
            features[w] := 1;
        ELSIF i > 0 THEN
            features[i] := 1;
        END IF;
        RETURN features;
    END IF;
    RETURN ARRAY(SELECT e::float8 FROM jsonb_array_elements_text(
        CASE WHEN value IS NULL AND jsonb_typeof(encoding -> 'null') = 'array' THEN encoding -> 'null'
             WHEN i IS NOT NULL THEN encoding -> 'values' -> (i - 1)
             ELSE encoding -> 'unknown' END) WITH ORDINALITY AS v(e, o) ORDER BY o);
END
$$;

-- Fit the encoding of category column g<gi> of pg_temp._ml_stack_rows on the training rows.
-- Its categories sort as text in the C collation, as numbers (integer columns), or in the
-- order of enum_labels (an enum). Returns
-- {"encoding", "names": [feature names], "rules": [{"impute", "scale"} per feature]}.
-- defaults: {"encode", "drop"} where the rule has none.
CREATE OR REPLACE FUNCTION ml_stack._fit_category_encoding(column_name text, gi integer, numeric_order boolean,
                                                           enum_labels text[], rule jsonb, defaults jsonb,
                                                           task text, classes float8[], class_labels text[],
                                                           train_filter text)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET extra_float_digits = 3
AS $$
#variable_conflict use_column  -- the generated aliases (c, i, o) of the queries below
DECLARE
    encode jsonb := rule -> 'encode';
    method text;
    given text[];
    key text;
    cats text[];
    counts float8[];
    means float8[];
    variances float8[];
    shares float8[];   -- multiclass target: per category, the share of each class
    order_by text := CASE WHEN enum_labels IS NOT NULL THEN format('pg_catalog.array_position(%L::text[], v)', enum_labels)
                          WHEN numeric_order THEN 'v::numeric' ELSE 'v COLLATE "C"' END;
    null_count float8 := 0;
    null_at integer;
    nclass integer := CASE WHEN task = 'classification' AND cardinality(classes) > 2 THEN cardinality(classes) ELSE 1 END;
    w integer;
    total float8;
    mu float8[] := '{}';
    tau2 float8[] := '{}';
    smooth jsonb := coalesce(rule -> 'smooth', '"auto"');
    vals jsonb := '[]';
    row_vals jsonb;
    null_vals jsonb;
    names text[] := '{}';
    unknown text;
    i integer; c integer;
    n_i float8; m_i float8; v_i float8; lam float8;
    dropped integer;
    encoding jsonb;
    rules jsonb := '[]';
BEGIN
    -- the rule
    IF encode IS NULL THEN
        method := defaults ->> 'encode';
    ELSIF jsonb_typeof(encode) = 'string' AND encode #>> '{}' IN ('one_hot', 'target', 'ordinal') THEN
        method := encode #>> '{}';
    ELSIF jsonb_typeof(encode) = 'object' AND (SELECT array_agg(k) FROM jsonb_object_keys(encode) AS k) = ARRAY['ordinal']
          AND jsonb_typeof(encode -> 'ordinal') = 'array' AND jsonb_array_length(encode -> 'ordinal') > 0
          AND NOT EXISTS (SELECT FROM jsonb_array_elements(encode -> 'ordinal') AS e WHERE jsonb_typeof(e) NOT IN ('string', 'number')) THEN
        method := 'ordinal';
        given := ARRAY(SELECT e FROM jsonb_array_elements_text(encode -> 'ordinal') WITH ORDINALITY AS o(e, i) ORDER BY i);
        IF cardinality(given) <> (SELECT count(DISTINCT e) FROM unnest(given) AS e) THEN
            RAISE EXCEPTION 'the ordinal list of column "%" names a category twice', column_name
                USING ERRCODE = 'invalid_parameter_value', HINT = 'List every category once, in its order.';
        END IF;
    ELSE
        RAISE EXCEPTION 'unknown encode rule % for column "%"', encode, column_name
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use "one_hot", "target", "ordinal", or {"ordinal": ["low", "medium", "high"]} (every category, in order).';
    END IF;
    FOR key IN SELECT jsonb_object_keys(rule) LOOP
        IF NOT (key = 'encode' OR (key = 'scale' AND method IN ('target', 'ordinal')) OR (key = 'impute' AND method = 'ordinal')
                OR (key = 'smooth' AND method = 'target') OR (key = 'drop' AND method = 'one_hot')) THEN
            RAISE EXCEPTION 'preprocess rule "%" does not apply to % column "%"', key, replace(method, '_', '-') || ' encoded', column_name
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = CASE method
                          WHEN 'one_hot' THEN 'One-hot features are 0 or 1: they are not scaled, and an unseen category (or NULL, when the training rows had none) is all zeros.'
                          WHEN 'target' THEN 'A target-encoded column takes "scale" and "smooth" ("auto" or a number >= 0); an unseen category is the training mean.'
                          ELSE 'An ordinal column takes "scale", and "impute" for categories unseen at training (NULL is 0).' END;
        END IF;
    END LOOP;
    IF method = 'one_hot' AND rule ? 'drop' AND rule ->> 'drop' IS DISTINCT FROM 'first' AND rule ->> 'drop' IS DISTINCT FROM 'none' THEN
        RAISE EXCEPTION 'drop must be "first" or "none" for column "%", got %', column_name, rule -> 'drop'
            USING ERRCODE = 'invalid_parameter_value', HINT = '"first" leaves out the first category (dummy coding).';
    END IF;
    IF method = 'target' AND NOT (smooth = '"auto"' OR (jsonb_typeof(smooth) = 'number' AND (smooth #>> '{}')::float8 >= 0)) THEN
        RAISE EXCEPTION 'smooth must be "auto" or a number >= 0 for column "%", got %', column_name, smooth
            USING ERRCODE = 'invalid_parameter_value', HINT = 'e.g. {"encode": "target", "smooth": 10}; "auto" is scikit-learn''s empirical Bayes shrinkage.';
    END IF;

    -- the categories of the training rows, in order, with their label statistics
    EXECUTE format('SELECT array_agg(v ORDER BY %1$s NULLS LAST), array_agg(n ORDER BY %1$s NULLS LAST), '
                   'array_agg(m ORDER BY %1$s NULLS LAST), array_agg(s ORDER BY %1$s NULLS LAST), '
                   'array_agg(sh ORDER BY %1$s NULLS LAST) '
                   'FROM (SELECT g%2$s AS v, count(*)::float8 AS n, avg(y) AS m, var_pop(y) AS s, %4$s AS sh '
                   'FROM pg_temp._ml_stack_rows WHERE %3$s GROUP BY g%2$s) AS t', order_by, gi, train_filter,
                   CASE WHEN nclass > 1 AND method = 'target'
                        THEN format('ARRAY[%s]', (SELECT string_agg(format('avg((y = %s::float8)::integer::float8)', c), ', ' ORDER BY o)
                                                  FROM unnest(classes) WITH ORDINALITY AS u(c, o)))
                        ELSE 'ARRAY[0::float8]' END)
        INTO cats, counts, means, variances, shares;
    null_at := array_position(cats, NULL);
    IF null_at IS NOT NULL THEN
        null_count := counts[null_at];
        cats := cats[1 : null_at - 1];   -- NULLS LAST: the NULL category is the last
    END IF;

    IF method = 'ordinal' THEN
        IF given IS NOT NULL THEN
            SELECT array_agg(c ORDER BY c) INTO names FROM unnest(cats) AS c WHERE NOT c = ANY (given);
            IF cardinality(names) > 0 THEN
                RAISE EXCEPTION 'column "%" holds categories that its ordinal list leaves out: %', column_name,
                                (SELECT string_agg(quote_literal(c), ', ') FROM unnest(names[1:5]) AS c)
                                || CASE WHEN cardinality(names) > 5 THEN format(' and %s more', cardinality(names) - 5) ELSE '' END
                    USING ERRCODE = 'invalid_parameter_value', HINT = 'The list must hold every category, in order.';
            END IF;
            cats := given;
        ELSIF enum_labels IS NOT NULL THEN
            cats := enum_labels;   -- an enum: its declared labels, in order, seen in training or not
        END IF;
        vals := (SELECT coalesce(jsonb_agg(jsonb_build_array(o) ORDER BY o), '[]') FROM generate_series(1, cardinality(cats)) AS o);
        encoding := jsonb_build_object('method', 'ordinal', 'categories', to_jsonb(cats), 'values', vals,
                                       'null', '[0]'::jsonb, 'unknown', '[null]'::jsonb);
        names := ARRAY[column_name];
        rules := jsonb_build_array(jsonb_strip_nulls(jsonb_build_object('impute', rule -> 'impute', 'scale', rule -> 'scale')));
    ELSIF method = 'one_hot' THEN
        dropped := CASE WHEN coalesce(rule ->> 'drop', defaults ->> 'drop') = 'first' AND cardinality(cats) > 0 THEN 1 ELSE 0 END;
        encoding := jsonb_build_object('method', 'one_hot', 'categories', coalesce(to_jsonb(cats), '[]'),
                                       'null', CASE WHEN null_at IS NOT NULL THEN '[1]'::jsonb END,
                                       'unknown', to_jsonb(array_fill(0, ARRAY[coalesce(cardinality(cats), 0) - dropped
                                                                              + CASE WHEN null_at IS NOT NULL THEN 1 ELSE 0 END])))
                    || CASE WHEN dropped = 1 THEN '{"drop": "first"}'::jsonb ELSE '{}' END;
        names := ARRAY(SELECT format('%s=%s', column_name, c) FROM unnest(cats) WITH ORDINALITY AS u(c, o) WHERE o > dropped ORDER BY o);
        IF null_at IS NOT NULL THEN
            names := names || format('%s IS NULL', column_name);
        END IF;
        rules := (SELECT jsonb_agg('{}'::jsonb) FROM unnest(names));
    ELSE
        -- target: per output (the label, or each class of a multiclass label), the shrunk mean
        -- of each category: lambda * category mean + (1 - lambda) * overall mean, lambda =
        -- n / (n + smooth); "auto": smooth = the category's label variance / the overall one
        total := (SELECT sum(x) FROM unnest(counts) AS x);
        FOR c IN 1 .. nclass LOOP
            IF nclass = 1 THEN
                mu := mu || (SELECT sum(counts[i] * means[i]) / total FROM generate_subscripts(counts, 1) AS i);
                tau2 := tau2 || (SELECT sum(counts[i] * (variances[i] + (means[i] - mu[1]) ^ 2)) / total
                                 FROM generate_subscripts(counts, 1) AS i);
            ELSE
                mu := mu || (SELECT sum(counts[i] * shares[i][c]) / total FROM generate_subscripts(counts, 1) AS i);
                tau2 := tau2 || (mu[c] * (1 - mu[c]));
            END IF;
        END LOOP;
        FOR i IN 1 .. cardinality(counts) LOOP
            row_vals := '[]';
            FOR c IN 1 .. nclass LOOP
                n_i := counts[i];
                m_i := CASE WHEN nclass = 1 THEN means[i] ELSE shares[i][c] END;
                v_i := CASE WHEN nclass = 1 THEN variances[i] ELSE m_i * (1 - m_i) END;
                lam := CASE WHEN smooth = '"auto"' THEN CASE WHEN tau2[c] > 0 AND v_i > 0 THEN n_i / (n_i + v_i / tau2[c]) ELSE 1 END
                            ELSE n_i / (n_i + (smooth #>> '{}')::float8) END;
                row_vals := row_vals || to_jsonb(lam * m_i + (1 - lam) * mu[c]);
            END LOOP;
            IF i = null_at THEN
                null_vals := row_vals;
            ELSE
                vals := vals || jsonb_build_array(row_vals);
            END IF;
        END LOOP;
        encoding := jsonb_build_object('method', 'target', 'categories', coalesce(to_jsonb(cats), '[]'), 'values', vals,
                                       'null', null_vals, 'unknown', to_jsonb(mu));
        names := CASE WHEN nclass = 1 THEN ARRAY[column_name]
                      ELSE ARRAY(SELECT format('%s[%s]', column_name, coalesce(class_labels[o], classes[o]::text))
                                 FROM generate_series(1, nclass) AS o ORDER BY o) END;
        rules := (SELECT jsonb_agg(jsonb_strip_nulls(jsonb_build_object('scale', rule -> 'scale'))) FROM unnest(names));
    END IF;
    RETURN jsonb_build_object('encoding', encoding, 'names', to_jsonb(names), 'rules', rules);
END
$$;

-- The columns of a read (expressions over from_sql) that look like free text rather than
-- categories: more than 1000 distinct values, or more than 50 and more than half the rows.
-- Returns their descriptions for the error that lists every unusable column.
CREATE OR REPLACE FUNCTION ml_stack._free_text_columns(from_sql text, exprs text[], names text[], types text[])
RETURNS text[]
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    counts bigint[];
    n bigint;
BEGIN
    IF cardinality(exprs) = 0 THEN
        RETURN '{}';
    END IF;
    EXECUTE format('SELECT count(*), ARRAY[%s] FROM %s',
                   (SELECT string_agg(format('count(DISTINCT %s)', e), ', ') FROM unnest(exprs) AS e), from_sql)
        INTO n, counts;
    RETURN ARRAY(SELECT format('"%s" (%s with %s distinct values in %s rows: free text?)', names[i], types[i], counts[i], n)
                 FROM generate_subscripts(exprs, 1) AS i
                 WHERE counts[i] > 1000 OR (counts[i] > 50 AND counts[i] * 2 > n)
                 ORDER BY i);
END
$$;

-- The encoding of the training rows by a join (a CASE of k arms per row and feature would cost
-- k comparisons; the join looks each row's category up once): the LEFT JOIN clause of category
-- column g<gi> of the rows t, and output feature q over it. NULL reads the NULL category.
CREATE OR REPLACE FUNCTION ml_stack._category_join_sql(encoding jsonb, gi integer)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
SET extra_float_digits = 3
AS $$
    SELECT CASE WHEN jsonb_array_length(encoding -> 'categories') = 0 THEN ''
                ELSE format(' LEFT JOIN (VALUES %s) AS e%s(c, i, v) ON e%s.c = t.g%s',
                            (SELECT string_agg(format('(%L::text, %s, %L::float8[])', c.value, c.ordinality,
                                                      ARRAY(SELECT x::float8 FROM jsonb_array_elements_text(
                                                                coalesce(encoding -> 'values' -> (c.ordinality::integer - 1), '[]'))
                                                                WITH ORDINALITY AS u(x, o) ORDER BY o)::text),
                                               ', ' ORDER BY c.ordinality)
                             FROM jsonb_array_elements_text(encoding -> 'categories') WITH ORDINALITY AS c),
                            gi, gi, gi) END
$$;

CREATE OR REPLACE FUNCTION ml_stack._category_joined_feature_sql(encoding jsonb, gi integer, q integer)
RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
SET extra_float_digits = 3
AS $$
DECLARE
    k integer := jsonb_array_length(encoding -> 'categories');
    dropped integer := CASE WHEN encoding ->> 'drop' = 'first' THEN 1 ELSE 0 END;
BEGIN
    IF encoding ->> 'method' = 'one_hot' THEN
        IF q > k - dropped THEN
            RETURN format('(t.g%s IS NULL)::integer::float8', gi);
        END IF;
        RETURN format('coalesce(e%s.i = %s, false)::integer::float8', gi, q + dropped);
    END IF;
    RETURN format('CASE WHEN t.g%1$s IS NULL THEN %2$s::float8 ELSE %3$s END', gi,
                  coalesce(((encoding -> 'null' ->> (q - 1))::float8)::text, ((encoding -> 'unknown' ->> (q - 1))::float8)::text, 'NULL'),
                  CASE WHEN k = 0 THEN coalesce(((encoding -> 'unknown' ->> (q - 1))::float8)::text || '::float8', 'NULL::float8')
                       ELSE format('coalesce(e%s.v[%s], %s::float8)', gi, q,
                                   coalesce(((encoding -> 'unknown' ->> (q - 1))::float8)::text, 'NULL')) END);
END
$$;

-- source: sql/training/dataset.sql
-- Read the training relation once into a temporary table, check it, split it and
-- describe it. Everything after this works on that one consistent read.
--
-- pg_temp._ml_stack_rows(r, y, k, x1 .. xp, g1 .. gc, t1 .. tq): r is the row's
-- position in the relation's own order, k a seeded hash of r that orders the random
-- split; x are the numeric features (booleans 0/1, dates and times as seconds, an
-- array column of fixed length L gives L of them, its elements in order), g the
-- categorical columns as text (encoded by SQL expressions fitted on the training rows:
-- training/categories.sql), t the text columns that a "vectorize" rule turns into a
-- block of features (a "block": sparse, never stored dense). A text label of a
-- classification is y = its position among the sorted labels, from 0.
-- The features a model takes, in table order, are x and the blocks' dimensions
-- interleaved as their columns are; "columns" describes that layout, which
-- predict_row() follows to build the feature array from a row.
-- Returns a jsonb description (the "dataset") that engines and metrics use:
--   n, skipped, train_rows, test_rows, test_size, test_sampling, seed,
--   train_filter / test_filter  (SQL predicates over the temporary table),
--   features [{name, type, count, nulls, mean, std, min, max}]  (train rows),
--   label {name, type, mean, std, min, max}, classes [..] (classification),
--   label.class_labels (classification: each class as text, as the label column holds it),
--   x [SQL expression of each preprocessed feature], x_mean, x_std (train rows),
--   transform [{impute, shift, scale}]  (what preprocessing does to raw feature j),
--   blocks [{column, t, spec, dims, offset}], columns [{name, type, kind, width, offset, ..}],
--   x_positions [position of x_j among the model's features], num_features.
-- The splits train() knows (PostgresML's names): 'first' / 'last' take the test rows from the start / end of
-- the relation in its own order, 'random' by a seeded hash, 'stratified' by class.
CREATE OR REPLACE FUNCTION ml_stack._check_test_sampling(test_sampling text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF test_sampling IS NULL OR test_sampling NOT IN ('random', 'first', 'last', 'stratified') THEN
        RAISE EXCEPTION 'unknown test_sampling "%"', test_sampling
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Use ''random'', ''first'', ''last'' or ''stratified''.';
    END IF;
END
$$;

-- The error for the feature columns a model cannot use (each described as '"name" (why)'),
-- all of them in one message.
CREATE OR REPLACE FUNCTION ml_stack._unusable_columns(descriptions text[])
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    names text[] := ARRAY(SELECT substring(d FROM '^"(.*)" \(') FROM unnest(descriptions) AS d);
    free_text text := (SELECT substring(d FROM '^"(.*)" \(') FROM unnest(descriptions) AS d WHERE d LIKE '%free text?)' LIMIT 1);
BEGIN
    RAISE EXCEPTION '%', CASE WHEN cardinality(descriptions) = 1 THEN format('feature column %s cannot be used', descriptions[1])
                              ELSE format('feature columns the model cannot use: %s', array_to_string(descriptions, ', ')) END
        USING ERRCODE = 'datatype_mismatch',
              HINT = format('Leave them out with exclude => ARRAY[%s]%s; or cast or encode them in a view.',
                            (SELECT string_agg(quote_literal(n), ', ') FROM unnest(names) AS n),
                            CASE WHEN free_text IS NOT NULL
                                 THEN format('; vectorize free text with preprocess => ''{"%s": {"vectorize": "hashing"}}'' (or "tfidf", "counts"), '
                                             'or encode it by the label''s mean with {"encode": "target"}', free_text) ELSE '' END);
END
$$;

-- exclude: columns left out; category_defaults: {"encode", "drop"} of categorical columns whose rule has none.
CREATE OR REPLACE FUNCTION ml_stack._prepare_dataset(
    rel regclass, y_column_name text, task text, test_size real, test_sampling text,
    seed bigint, preprocess jsonb, project_name text, exclude text[], category_defaults jsonb)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET jit = off   -- wide aggregate queries: LLVM compile time dominates (DESIGN §5)
SET extra_float_digits = 3  -- numbers written into SQL text must round-trip exactly
AS $$
DECLARE
    numeric_types CONSTANT regtype[] := ARRAY['smallint', 'integer', 'bigint', 'real', 'double precision',
                                              'numeric', 'boolean']::regtype[];
    y_att   record;
    cols    record;
    names   text[] := '{}';
    types   text[] := '{}';
    p       integer;
    n       bigint;
    total   bigint;
    counts  float8[];
    stats   float8[];
    classes float8[];
    ntest   bigint;
    ts      numeric := round(test_size::numeric, 6);
    test_filter text;
    features jsonb := '[]';
    transform jsonb := '[]';
    x_expr  text[] := '{}';
    x_mean  float8[] := '{}';
    x_std   float8[] := '{}';
    rule    jsonb;
    impute  text; scale text;
    iv float8; shift float8; spread float8;
    m float8; sd float8; mn float8; mx float8; nn float8; nnull float8; mm float8;
    missing text[] := '{}';
    sql     text;
    j integer;
    started timestamptz := clock_timestamp();
    class_counts jsonb;
    key text;
    colnames text[] := '{}';    -- every feature column
    src     text[] := '{}';     -- the column of each x
    layout  jsonb := '[]';      -- per feature column: {name, type, kind, ci, ...}
    raw_cols text[] := '{}';
    unusable text[] := '{}';
    ci integer := 0;
    col jsonb;
    width bigint; width_max bigint; shapes bigint; shape text; nonnull bigint;
    bounds integer[]; lo integer[]; strides integer[];
    x_sel text[] := '{}';
    t_sel text[] := '{}';
    blocks jsonb := '[]';
    spec jsonb;
    vid bigint;
    pos integer := 0;
    x_positions integer[] := '{}';
    columns jsonb := '[]';
    b integer;
    text_label boolean := false;
    class_labels text[];
    label_order text;
    g_sel  text[] := '{}';      -- the category columns' reads
    auto_g text[] := '{}';      -- category columns without an encode rule: checked for free text
    auto_names text[] := '{}';
    auto_gi integer[] := '{}';
    auto_types text[] := '{}';
    free_text text[];
    fitted jsonb;
    p_num  integer;             -- the numeric x columns (the raw features before the categories')
    raw    text[] := '{}';      -- each feature before preprocessing, as SQL over the rows (final order)
    rules  jsonb := '[]';       -- each feature's preprocess rule
    f_names text[] := '{}'; f_types text[] := '{}';
    xi integer; gi integer := 0;
    joins  text := '';          -- the lookups of the encoded categories (training/categories.sql)
    unseen jsonb := '[]';       -- ordinal features without impute: {x, name}
BEGIN
    -- label column: must exist and be numeric
    SELECT a.attname, a.atttypid::regtype AS typ, t.typtype = 'e' AS is_enum, ml_stack._is_text_type(a.atttypid) AS is_text
    INTO y_att
    FROM pg_catalog.pg_attribute AS a JOIN pg_catalog.pg_type AS t ON t.oid = a.atttypid
    WHERE a.attrelid = rel AND a.attname = y_column_name AND a.attnum > 0 AND NOT a.attisdropped;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'column "%" does not exist in relation %', y_column_name, rel
            USING ERRCODE = 'undefined_column',
                  HINT = format('The columns are: %s.', (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum)
                      FROM pg_catalog.pg_attribute AS a WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped));
    END IF;
    IF (y_att.is_text OR y_att.is_enum) AND task = 'classification' THEN
        text_label := true;   -- classes by name: y is the class's position among the sorted labels
    ELSIF NOT y_att.typ = ANY (numeric_types) THEN
        RAISE EXCEPTION 'label column "%" has type %, which is not %', y_column_name, y_att.typ,
                        CASE WHEN task = 'classification' THEN 'numeric, boolean, text or an enum' ELSE 'numeric' END
            USING ERRCODE = 'datatype_mismatch',
                  HINT = CASE WHEN y_att.is_text OR y_att.is_enum
                              THEN 'A regression needs a numeric label; for classes by name use task => ''classification''.'
                              ELSE 'Cast the label to a number or to text in a view, and train on the view.' END;
    END IF;
    IF exclude IS NOT NULL THEN
        SELECT array_agg(e ORDER BY o) INTO missing FROM unnest(exclude) WITH ORDINALITY AS u(e, o)
        WHERE e IS NULL OR e = y_column_name
           OR NOT EXISTS (SELECT FROM pg_catalog.pg_attribute AS a
                          WHERE a.attrelid = rel AND a.attname = e AND a.attnum > 0 AND NOT a.attisdropped);
        IF cardinality(missing) > 0 THEN
            RAISE EXCEPTION 'exclude names %, which is not a feature column of %',
                            CASE WHEN missing[1] IS NULL THEN 'NULL' ELSE format('"%s"', missing[1]) END, rel
                USING ERRCODE = 'undefined_column',
                      HINT = CASE WHEN missing[1] = y_column_name THEN 'The label is never a feature: leave it out of exclude.'
                                  ELSE format('The columns are: %s.', (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum)
                                      FROM pg_catalog.pg_attribute AS a WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped)) END;
        END IF;
        missing := '{}';
    END IF;

    IF preprocess IS NULL OR jsonb_typeof(preprocess) <> 'object' THEN
        RAISE EXCEPTION 'preprocess must be a JSON object'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'e.g. preprocess => ''{"age": {"impute": "mean", "scale": "standard"}}''';
    END IF;

    -- features: every other column (but those excluded), in table order: numbers (booleans
    -- as 0/1, dates and times as seconds), arrays of numbers (of one length), text with a
    -- vectorize rule, categories (text and enums; integers and booleans with an encode rule);
    -- all the others in one error
    FOR cols IN
        SELECT a.attname, a.atttypid::regtype AS typ, t.typelem::regtype AS elem,
               t.typcategory = 'A' AND t.typelem <> 0 AS is_array, ml_stack._is_text_type(a.atttypid) AS is_text,
               t.typtype = 'e' AS is_enum,
               CASE WHEN t.typtype = 'e' THEN ARRAY(SELECT e.enumlabel::text FROM pg_catalog.pg_enum AS e
                                                    WHERE e.enumtypid = a.atttypid ORDER BY e.enumsortorder) END AS enum_labels
        FROM pg_catalog.pg_attribute AS a JOIN pg_catalog.pg_type AS t ON t.oid = a.atttypid
        WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped AND a.attname <> y_column_name
          AND NOT a.attname = ANY (coalesce(exclude, '{}'))
        ORDER BY a.attnum
    LOOP
        ci := ci + 1;
        colnames := colnames || cols.attname::text;
        rule := preprocess -> cols.attname::text;
        IF (cols.is_text OR cols.is_enum) AND NOT coalesce(rule ? 'vectorize', false)
           OR (rule ? 'encode' AND cols.typ IN ('smallint'::regtype, 'integer'::regtype, 'bigint'::regtype, 'boolean'::regtype)) THEN
            gi := gi + 1;
            layout := layout || jsonb_build_object('name', cols.attname, 'type', cols.typ::text, 'kind', 'category', 'ci', ci,
                                                   'enum_labels', to_jsonb(cols.enum_labels),
                                                   'numeric_order', cols.typ <> 'boolean'::regtype AND NOT (cols.is_text OR cols.is_enum));
            raw_cols := raw_cols || format('%I::text AS c%s', cols.attname, ci);
            IF NOT coalesce(rule ? 'encode', false) THEN
                auto_g := auto_g || format('%I::text', cols.attname);
                auto_gi := auto_gi || gi;
                auto_names := auto_names || cols.attname::text;
                auto_types := auto_types || cols.typ::text;
            END IF;
        ELSIF rule ? 'encode' AND NOT cols.is_text THEN
            unusable := unusable || format('"%s" (%s: "encode" takes text, enum, integer and boolean columns)', cols.attname, cols.typ);
        ELSIF cols.typ = ANY (numeric_types) OR ml_stack._is_temporal_type(cols.typ) THEN
            layout := layout || jsonb_build_object('name', cols.attname, 'type', cols.typ::text, 'kind',
                                                   CASE WHEN cols.typ = 'boolean'::regtype THEN 'boolean'
                                                        WHEN ml_stack._is_temporal_type(cols.typ) THEN 'temporal' ELSE 'number' END, 'ci', ci);
            raw_cols := raw_cols || format('%s AS c%s', CASE WHEN cols.typ = 'boolean'::regtype THEN format('%I::integer::float8', cols.attname)
                                                             WHEN ml_stack._is_temporal_type(cols.typ) THEN format('date_part(''epoch'', %I)', cols.attname)
                                                             ELSE format('%I::float8', cols.attname) END, ci);
        ELSIF cols.is_array AND cols.elem = ANY (numeric_types) AND cols.elem <> 'boolean'::regtype THEN
            layout := layout || jsonb_build_object('name', cols.attname, 'type', cols.typ::text, 'kind', 'array', 'ci', ci);
            raw_cols := raw_cols || format('%I::float8[] AS c%s', cols.attname, ci);
        ELSIF cols.is_text AND rule ? 'vectorize' THEN
            layout := layout || jsonb_build_object('name', cols.attname, 'type', cols.typ::text, 'kind', 'text', 'ci', ci);
            raw_cols := raw_cols || format('%I::text AS c%s', cols.attname, ci);
        ELSE
            unusable := unusable || format('"%s" (%s)', cols.attname, cols.typ);
        END IF;
    END LOOP;
    IF cardinality(unusable) > 0 THEN
        -- one error for every column: free text among the categories too (one scan of the relation)
        unusable := unusable || ml_stack._free_text_columns(rel::text, auto_g, auto_names, auto_types);
        PERFORM ml_stack._unusable_columns(unusable);
    END IF;
    -- the rules of numeric and categorical columns, checked before the read (a misspelled impute
    -- must not read as none, nor fail after minutes of reading)
    FOR col IN SELECT value FROM jsonb_array_elements(layout) WHERE value ->> 'kind' <> 'text' LOOP
        rule := preprocess -> (col ->> 'name');
        IF rule IS NOT NULL AND jsonb_typeof(rule) <> 'object' THEN
            RAISE EXCEPTION 'preprocess rule for "%" must be an object, got %', col ->> 'name', rule
                USING ERRCODE = 'invalid_parameter_value', HINT = '{"impute": "mean", "scale": "standard"}';
        END IF;
        SELECT k INTO key FROM jsonb_object_keys(coalesce(rule, '{}')) AS k
        WHERE NOT k = ANY (CASE WHEN col ->> 'kind' = 'category' THEN ARRAY['encode', 'scale', 'impute', 'smooth', 'drop']
                                ELSE ARRAY['impute', 'scale'] END) LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'unknown preprocess rule "%" for column "%"', key, col ->> 'name'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = CASE WHEN col ->> 'kind' = 'category'
                                  THEN 'A categorical column takes "encode" ("one_hot", "target", "ordinal"), with "drop" (one_hot), '
                                       '"smooth" (target), "scale" (target, ordinal), "impute" (ordinal); text takes "vectorize" instead.'
                                  ELSE format('A %s column takes "impute" and "scale"%s.', col ->> 'type',
                                              CASE WHEN col ->> 'type' IN ('smallint', 'integer', 'bigint', 'boolean')
                                                   THEN ', or "encode" to be a category' ELSE '' END) END;
        END IF;
    END LOOP;
    IF ci = 0 THEN
        RAISE EXCEPTION 'relation % has no feature columns besides the label "%"', rel, y_column_name
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A model needs at least one numeric feature column.';
    END IF;
    FOR key IN SELECT jsonb_object_keys(preprocess) LOOP
        IF NOT key = ANY (colnames) THEN
            RAISE EXCEPTION 'preprocess names column "%", which is not a feature of %', key, rel
                USING ERRCODE = 'undefined_column',
                      HINT = format('The features are: %s.', array_to_string(colnames, ', '));
        END IF;
    END LOOP;

    -- the one read of the relation. k is in the C collation: hex digits sort alike in every
    -- collation, and C compares bytes (the split's sort of 200k keys took 0.26 s under en_US)
    IF to_regclass('pg_temp._ml_stack_rows') IS NOT NULL THEN
        DROP TABLE pg_temp._ml_stack_rows;  -- an earlier train in this transaction
    END IF;
    -- the read, into c1 .. cm (one per feature column); then the numeric features x in
    -- table order (arrays: one x per element, so their length must be known first)
    -- the random split hashes the primary key when the relation has one: a row keeps its side
    -- of the split however the table changes (an UPDATE moves rows, and so their positions)
    SELECT string_agg(format('%I', a.attname), ', ' ORDER BY k.o) INTO key
    FROM pg_catalog.pg_index AS i, unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, o)
         JOIN pg_catalog.pg_attribute AS a ON a.attrelid = rel AND a.attnum = k.attnum
    WHERE i.indrelid = rel AND i.indisprimary;
    EXECUTE format('CREATE TEMPORARY TABLE _ml_stack_raw ON COMMIT DROP AS '
                   'SELECT row_number() OVER () AS r, %s AS split_key, %s AS y%s FROM %s',
                   CASE WHEN key IS NULL THEN 'NULL::text' WHEN key LIKE '%,%' THEN format('ROW(%s)::text', key)
                        ELSE format('%s::text', key) END,
                   CASE WHEN text_label THEN format('%I', y_column_name)
                        WHEN y_att.typ = 'boolean'::regtype THEN format('%I::integer::float8', y_column_name)
                        ELSE format('%I::float8', y_column_name) END,
                   (SELECT string_agg(', ' || e, '') FROM unnest(raw_cols) AS e), rel);
    GET DIAGNOSTICS total = ROW_COUNT;
    IF text_label THEN
        -- the classes by name, sorted as text in the C collation (an enum: in its own order);
        -- y becomes the position among them, from 0
        EXECUTE format('SELECT array_agg(v::text ORDER BY v%s) FROM (SELECT DISTINCT y AS v FROM pg_temp._ml_stack_raw '
                       'WHERE y IS NOT NULL) AS d', CASE WHEN y_att.is_enum THEN '' ELSE ' COLLATE "C"' END)
            INTO class_labels;
        label_order := format('(pg_catalog.array_position(%L::text[], y::text) - 1)::float8', class_labels);
    END IF;
    b := 0;
    FOR col IN SELECT value FROM jsonb_array_elements(layout) LOOP
        ci := (col ->> 'ci')::integer;
        CASE col ->> 'kind'
        WHEN 'array' THEN
            -- one shape in every row; an array of several dimensions (an image) gives its elements in
            -- row-major order, as unnest() reads them
            EXECUTE format('SELECT min(cardinality(c%1$s)), max(cardinality(c%1$s)), count(DISTINCT array_dims(c%1$s)), '
                           'min(array_dims(c%1$s)), count(c%1$s) FROM pg_temp._ml_stack_raw', ci)
                INTO width, width_max, shapes, shape, nonnull;
            IF nonnull = 0 THEN
                RAISE EXCEPTION 'array column "%" is NULL in every row', col ->> 'name'
                    USING ERRCODE = 'null_value_not_allowed', HINT = 'Leave the column out in a view.';
            ELSIF width <> width_max OR shapes > 1 OR width = 0 THEN
                RAISE EXCEPTION 'array column "%" holds arrays of varying length (% to % elements%)', col ->> 'name',
                                width, width_max, CASE WHEN width = width_max THEN ', of different shapes' ELSE '' END
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'Array features need one length in every row (e.g. an embedding); pad or cut them in a view.';
            END IF;
            -- '[1:8][0:7]' -> lower bounds {1,0}, lengths {8,8}
            lo := ARRAY(SELECT bd[1]::integer FROM regexp_matches(shape, '\[(-?\d+):(-?\d+)\]', 'g') AS bd);
            bounds := ARRAY(SELECT bd[2]::integer - bd[1]::integer + 1 FROM regexp_matches(shape, '\[(-?\d+):(-?\d+)\]', 'g') AS bd);
            strides := array_fill(1, ARRAY[cardinality(bounds)]);
            FOR d IN REVERSE cardinality(bounds) - 1 .. 1 LOOP
                strides[d] := strides[d + 1] * bounds[d + 1];
            END LOOP;
            FOR j IN 1 .. width LOOP
                names := names || format('%s[%s]', col ->> 'name', j);
                types := types || (col ->> 'type');
                src := src || (col ->> 'name');
                x_sel := x_sel || format('c%s%s AS x%s', ci,
                                         (SELECT string_agg(format('[%s]', lo[d] + ((j - 1) / strides[d]) % bounds[d]), '' ORDER BY d)
                                          FROM generate_subscripts(bounds, 1) AS d),
                                         cardinality(names));
            END LOOP;
            layout := jsonb_set(layout, ARRAY[b::text], col || jsonb_build_object('width', width));
        WHEN 'text' THEN
            t_sel := t_sel || format('c%s AS t%s', ci, cardinality(t_sel) + 1);
        WHEN 'category' THEN
            g_sel := g_sel || format('c%s AS g%s', ci, cardinality(g_sel) + 1);
        ELSE
            names := names || (col ->> 'name');
            types := types || (col ->> 'type');
            src := src || (col ->> 'name');
            x_sel := x_sel || format('c%s AS x%s', ci, cardinality(names));
        END CASE;
        b := b + 1;
    END LOOP;
    p_num := cardinality(names);
    EXECUTE format('CREATE TEMPORARY TABLE _ml_stack_rows ON COMMIT DROP AS '
                   'SELECT r, %s AS y, md5(%L || '':'' || coalesce(split_key, r::text)) COLLATE "C" AS k%s FROM pg_temp._ml_stack_raw',
                   coalesce(label_order, 'y'), seed, (SELECT string_agg(', ' || e, '') FROM unnest(x_sel || g_sel || t_sel) AS e));
    DROP TABLE pg_temp._ml_stack_raw;
    DELETE FROM pg_temp._ml_stack_rows WHERE y IS NULL;
    GET DIAGNOSTICS n = ROW_COUNT;
    n := total - n;
    -- categories without an encode rule that look like free text: refused, with what to do
    free_text := ml_stack._free_text_columns('pg_temp._ml_stack_rows', ARRAY(SELECT format('g%s', i) FROM unnest(auto_gi) AS i),
        auto_names, auto_types);
    IF cardinality(free_text) > 0 THEN
        PERFORM ml_stack._unusable_columns(free_text);
    END IF;
    RAISE NOTICE 'ml_stack: read % rows from % in % s', total, rel,
        round(extract(epoch FROM clock_timestamp() - started)::numeric, 3);
    IF total > n THEN
        RAISE NOTICE 'ml_stack: % rows with a NULL label "%" are left out', total - n, y_column_name;
    END IF;
    IF n = 0 THEN
        RAISE EXCEPTION 'relation % has no rows with a label to train on', rel
            USING ERRCODE = 'no_data_found',
                  HINT = CASE WHEN total > 0 THEN format('All %s rows have a NULL "%s".', total, y_column_name)
                              ELSE 'Load data into the relation first.' END;
    END IF;

    -- NULL features need an impute rule
    IF p_num > 0 THEN
        EXECUTE format('SELECT ARRAY[%s] FROM pg_temp._ml_stack_rows',
                       (SELECT string_agg(format('count(x%s)::float8', i), ', ') FROM generate_series(1, p_num) AS i))
            INTO counts;
    END IF;
    FOR j IN 1 .. p_num LOOP
        IF counts[j] < n AND (preprocess -> src[j] ->> 'impute') IS NULL THEN
            missing := missing || format('%s (%s NULLs)', names[j], n - counts[j]::bigint);
        END IF;
    END LOOP;
    IF cardinality(missing) > 0 THEN
        RAISE EXCEPTION 'feature columns have NULL values and no impute rule: %', array_to_string(missing, ', ')
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = format('Add an impute rule, e.g. preprocess => ''{"%s": {"impute": "mean"}}'', or filter the rows in a view.',
                                split_part(split_part(missing[1], ' ', 1), '[', 1));
    END IF;

    -- classes
    IF task = 'classification' THEN
        SELECT array_agg(y ORDER BY y), jsonb_object_agg(y::text, c)
        INTO classes, class_counts
        FROM (SELECT y, count(*) AS c FROM pg_temp._ml_stack_rows GROUP BY y) AS g;
        IF cardinality(classes) < 2 THEN
            RAISE EXCEPTION 'label "%" has a single class (%): classification needs at least two', y_column_name,
                            coalesce(class_labels[1], classes[1]::text)
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Check the data or the label column; for a continuous target use task => ''regression''.';
        END IF;
        IF NOT text_label AND cardinality(classes) > 10 AND (EXISTS (SELECT FROM unnest(classes) AS c WHERE c <> trunc(c))
                                                             OR (cardinality(classes) > 100 AND cardinality(classes) * 20 > n)) THEN
            RAISE EXCEPTION 'label "%" has % distinct values (e.g. %) in % rows: is this a regression?', y_column_name,
                            cardinality(classes), coalesce((SELECT c FROM unnest(classes) AS c WHERE c <> trunc(c) LIMIT 1), classes[cardinality(classes)]), n
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'For a continuous target use task => ''regression''; for classes, label them with whole numbers or names.';
        END IF;
        class_labels := coalesce(class_labels, ARRAY(SELECT CASE WHEN y_att.typ = 'boolean'::regtype THEN (c = 1)::text ELSE c::text END
                                                     FROM unnest(classes) AS c));
    END IF;

    -- split
    IF test_size IS NULL OR test_size <= 0 OR test_size = 'Infinity'::real OR test_size = 'NaN'::real THEN
        RAISE EXCEPTION 'test_size must be a fraction in (0, 1) or a row count >= 1, got %', test_size
            USING ERRCODE = 'invalid_parameter_value', HINT = 'The default is 0.25.';
    END IF;
    IF test_size < 1 AND (ts <= 0 OR ts >= 1) THEN
        RAISE EXCEPTION 'test_size % rounds to % at 6 decimals: not a usable fraction', test_size, ts
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Use a fraction between 0.000001 and 0.999999, or a row count.';
    ELSIF ts < 1 THEN
        ntest := ceil(n * ts);
    ELSIF ts = trunc(ts) THEN
        ntest := ts;
    ELSE
        RAISE EXCEPTION 'test_size % is neither a fraction below 1 nor a whole row count', test_size
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Use e.g. 0.25 or 100.';
    END IF;
    IF ntest >= n THEN
        RAISE EXCEPTION 'test_size % leaves no training rows: % of % rows would be test rows', test_size, ntest, n
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use a smaller test_size (a fraction like 0.25, or fewer rows than the relation has).';
    END IF;
    CASE test_sampling   -- its name was checked by train and run_training (_check_test_sampling)
        WHEN 'first' THEN
            EXECUTE 'SELECT r FROM pg_temp._ml_stack_rows ORDER BY r OFFSET $1 LIMIT 1' INTO m USING ntest - 1;
            test_filter := format('r <= %s', m::bigint);
        WHEN 'last' THEN
            -- r numbers every row read; rows with a NULL label are gone, so count from the end
            EXECUTE 'SELECT r FROM pg_temp._ml_stack_rows ORDER BY r DESC OFFSET $1 LIMIT 1' INTO m USING ntest - 1;
            test_filter := format('r >= %s', m::bigint);
        WHEN 'random' THEN
            EXECUTE 'SELECT k FROM pg_temp._ml_stack_rows ORDER BY k OFFSET $1 LIMIT 1' INTO key USING ntest - 1;
            test_filter := format('k <= %L', key);
        WHEN 'stratified' THEN
            IF task <> 'classification' THEN
                RAISE EXCEPTION 'test_sampling ''stratified'' needs a classification task'
                    USING ERRCODE = 'invalid_parameter_value', HINT = 'Use ''random'' or ''last'' for regression.';
            END IF;
            -- each class gets its share of the test rows (largest remainder), then its lowest keys
            WITH shares AS (
                SELECT c.key::float8 AS y, c.value::bigint AS cnt,
                       ntest * c.value::numeric / n AS exact
                FROM jsonb_each_text(class_counts) AS c
            ), alloc AS (
                SELECT y, cnt, floor(exact)::bigint
                       + CASE WHEN row_number() OVER (ORDER BY exact - floor(exact) DESC, y)
                                   <= ntest - sum(floor(exact)) OVER () THEN 1 ELSE 0 END AS t
                FROM shares
            ), thresholds AS (
                SELECT a.y, a.t, (SELECT s.k FROM pg_temp._ml_stack_rows AS s WHERE s.y = a.y
                                  ORDER BY s.k OFFSET a.t - 1 LIMIT 1) AS k
                FROM alloc AS a WHERE a.t > 0
            )
            SELECT coalesce(format('CASE y %s ELSE false END',
                                   string_agg(format('WHEN %s THEN k <= %L', y, k), ' ' ORDER BY y)), 'false')
            INTO test_filter FROM thresholds;
    END CASE;

    IF task = 'classification' THEN
        EXECUTE format('SELECT count(DISTINCT y) FROM pg_temp._ml_stack_rows WHERE NOT (%s)', test_filter) INTO m;
        IF m < 2 THEN
            RAISE EXCEPTION 'the training split has a single class: every other class fell into the test split'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Use test_sampling => ''stratified'' or a smaller test_size.';
        END IF;
    END IF;

    -- the features before preprocessing, in table order: the numeric x, and each category's
    -- encoding fitted on the training rows (as SQL over its g column)
    xi := 0; gi := 0; b := 0;
    FOR col IN SELECT value FROM jsonb_array_elements(layout) LOOP
        IF col ->> 'kind' = 'category' THEN
            gi := gi + 1;
            fitted := ml_stack._fit_category_encoding(col ->> 'name', gi, (col ->> 'numeric_order')::boolean,
                CASE WHEN jsonb_typeof(col -> 'enum_labels') = 'array' THEN ARRAY(SELECT jsonb_array_elements_text(col -> 'enum_labels')) END,
                coalesce(preprocess -> (col ->> 'name'), '{}'), category_defaults, task, classes, class_labels,
                format('NOT (%s)', test_filter));
            width := jsonb_array_length(fitted -> 'names');
            IF width = 0 THEN
                RAISE EXCEPTION 'column "%" has a single value in the training rows: one-hot, it is no feature', col ->> 'name'
                    USING ERRCODE = 'invalid_parameter_value', HINT = format('Leave it out with exclude => ARRAY[%L].', col ->> 'name');
            END IF;
            FOR j IN 1 .. width LOOP
                raw := raw || ml_stack._category_joined_feature_sql(fitted -> 'encoding', gi, j);
            END LOOP;
            IF fitted -> 'encoding' ->> 'method' = 'ordinal' AND (fitted -> 'rules' -> 0 ->> 'impute') IS NULL THEN
                unseen := unseen || jsonb_build_object('x', cardinality(raw), 'name', col ->> 'name');
            END IF;
            joins := joins || ml_stack._category_join_sql(fitted -> 'encoding', gi);
            f_names := f_names || ARRAY(SELECT jsonb_array_elements_text(fitted -> 'names'));
            f_types := f_types || array_fill(col ->> 'type', ARRAY[width::integer]);
            rules := rules || (fitted -> 'rules');
            layout := jsonb_set(layout, ARRAY[b::text], (col - 'enum_labels' - 'numeric_order')
                                || jsonb_build_object('width', width, 'encoding', fitted -> 'encoding'));
        ELSIF col ->> 'kind' <> 'text' THEN
            FOR j IN 1 .. coalesce((col ->> 'width')::integer, 1) LOOP
                xi := xi + 1;
                raw := raw || format('x%s', xi);
                f_names := f_names || names[xi];
                f_types := f_types || types[xi];
                rules := rules || jsonb_build_array(coalesce(preprocess -> src[xi], '{}'));
            END LOOP;
        END IF;
        b := b + 1;
    END LOOP;
    names := f_names; types := f_types;
    p := cardinality(raw);
    IF gi > 0 THEN
        -- the rows again, with x1 .. xp the features in table order, the encoded ones computed:
        -- the engines, the metrics and the comparison read raw feature j as column xj
        IF p + cardinality(g_sel) + cardinality(t_sel) > 1500 THEN
            RAISE EXCEPTION 'the encoded categories make % features, more than a table of the training rows holds', p
                USING ERRCODE = 'program_limit_exceeded',
                      HINT = 'Encode the widest categorical columns with {"encode": "target"} (one feature each) instead of one-hot.';
        END IF;
        EXECUTE format('CREATE TEMPORARY TABLE _ml_stack_encoded ON COMMIT DROP AS SELECT t.r, t.y, t.k%s%s%s '
                       'FROM pg_temp._ml_stack_rows AS t%s',
                       (SELECT string_agg(format(', %s AS x%s', CASE WHEN raw[e.q] ~ '^x\d+$' THEN 't.' || raw[e.q] ELSE raw[e.q] END, e.q),
                                          '' ORDER BY e.q) FROM generate_series(1, p) AS e(q)),
                       (SELECT string_agg(format(', t.g%s', e.q), '' ORDER BY e.q) FROM generate_series(1, cardinality(g_sel)) AS e(q)),
                       (SELECT string_agg(format(', t.t%s', e.q), '' ORDER BY e.q) FROM generate_series(1, cardinality(t_sel)) AS e(q)),
                       joins);
        DROP TABLE pg_temp._ml_stack_rows;
        ALTER TABLE pg_temp._ml_stack_encoded RENAME TO _ml_stack_rows;
        raw := ARRAY(SELECT format('x%s', e.q) FROM generate_series(1, p) AS e(q));
        -- an ordinal category of the test rows that the training rows lack has no value: no
        -- prediction, so a test row the metrics would silently leave out
        FOR col IN SELECT value FROM jsonb_array_elements(unseen) LOOP
            EXECUTE format('SELECT count(*) FROM pg_temp._ml_stack_rows WHERE (%s) AND x%s IS NULL', test_filter, col ->> 'x') INTO nonnull;
            IF nonnull > 0 THEN
                RAISE EXCEPTION 'ordinal column "%" has % test rows whose category the training rows lack: they would have no value',
                                col ->> 'name', nonnull
                    USING ERRCODE = 'null_value_not_allowed',
                          HINT = format('Add an impute rule for unseen categories, e.g. {"%s": {"encode": "ordinal", "impute": "median"}}, '
                                        'or give the whole order: {"encode": {"ordinal": [...]}}.', col ->> 'name');
            END IF;
        END LOOP;
    END IF;

    -- statistics of the raw features and the label on the training rows
    EXECUTE format(
        'SELECT ARRAY[count(*)::float8, avg(y), stddev_pop(y), min(y), max(y)%s] FROM pg_temp._ml_stack_rows WHERE NOT (%s)',
        (SELECT string_agg(format(', count(%1$s), avg(%1$s), stddev_pop(%1$s), min(%1$s), max(%1$s)', raw[i]), '')
         FROM generate_series(1, p) AS i),
        test_filter)
    INTO stats;

    -- preprocessing of each feature: x' = (coalesce(x, impute) - shift) / scale
    FOR j IN 1 .. p LOOP
        nn := stats[6 + (j - 1) * 5]; m := stats[7 + (j - 1) * 5]; sd := stats[8 + (j - 1) * 5];
        mn := stats[9 + (j - 1) * 5]; mx := stats[10 + (j - 1) * 5];
        nnull := stats[1] - nn;
        rule := rules -> (j - 1);
        IF jsonb_typeof(rule) <> 'object' THEN
            RAISE EXCEPTION 'preprocess rule for "%" must be an object', names[j]
                USING ERRCODE = 'invalid_parameter_value', HINT = '{"impute": "mean", "scale": "standard"}';
        END IF;
        FOR key IN SELECT jsonb_object_keys(rule) LOOP
            IF key NOT IN ('impute', 'scale') THEN
                RAISE EXCEPTION 'unknown preprocess rule "%" for column "%"', key, names[j]
                    USING ERRCODE = 'invalid_parameter_value', HINT = 'The rules are "impute" and "scale".';
            END IF;
        END LOOP;
        impute := rule ->> 'impute';
        scale := coalesce(rule ->> 'scale', 'preserve');
        IF nn = 0 AND impute IS DISTINCT FROM 'zero' THEN
            RAISE EXCEPTION 'feature "%" is NULL in every training row', names[j]
                USING ERRCODE = 'null_value_not_allowed', HINT = 'Leave the column out in a view.';
        END IF;
        iv := CASE impute
                  WHEN 'mean' THEN m
                  WHEN 'min' THEN mn
                  WHEN 'max' THEN mx
                  WHEN 'zero' THEN 0
                  WHEN 'median' THEN NULL
                  ELSE NULL END;
        IF impute = 'median' THEN
            EXECUTE format('SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY %s) FROM pg_temp._ml_stack_rows WHERE NOT (%s)',
                           raw[j], test_filter) INTO iv;
        ELSIF impute = 'mode' THEN
            -- the most frequent training value; of tied values, the smallest (scikit-learn's SimpleImputer)
            EXECUTE format('SELECT mode() WITHIN GROUP (ORDER BY %s) FROM pg_temp._ml_stack_rows WHERE NOT (%s)',
                           raw[j], test_filter) INTO iv;
        ELSIF impute IS NOT NULL AND impute NOT IN ('mean', 'min', 'max', 'zero') THEN
            RAISE EXCEPTION 'unknown impute rule "%" for column "%"', impute, names[j]
                USING ERRCODE = 'invalid_parameter_value', HINT = 'Use "mean", "median", "mode", "min", "max" or "zero".';
        END IF;
        -- statistics after imputation (what a scaler after an imputer would see)
        IF nnull > 0 AND iv IS NOT NULL THEN
            mm := (nn * coalesce(m, 0) + nnull * iv) / stats[1];
            sd := sqrt(greatest((nn * (coalesce(sd, 0) ^ 2 + (coalesce(m, 0) - mm) ^ 2) + nnull * (iv - mm) ^ 2) / stats[1], 0));
            m := mm;
            mn := least(mn, iv); mx := greatest(mx, iv);
        END IF;
        CASE scale
            WHEN 'preserve' THEN shift := 0; spread := 1;
            WHEN 'none' THEN shift := 0; spread := 1;
            WHEN 'standard' THEN shift := m; spread := CASE WHEN sd > 0 THEN sd ELSE 1 END;
            WHEN 'min_max' THEN shift := mn; spread := CASE WHEN mx > mn THEN mx - mn ELSE 1 END;
            WHEN 'max_abs' THEN shift := 0;
                               spread := CASE WHEN greatest(abs(mn), abs(mx)) > 0 THEN greatest(abs(mn), abs(mx)) ELSE 1 END;
            WHEN 'robust' THEN
                -- scikit-learn's RobustScaler: the median and the interquartile range of the training
                -- values (after imputation, as a scaler after an imputer sees them)
                EXECUTE format('SELECT q[2], q[3] - q[1] FROM (SELECT percentile_cont(ARRAY[0.25, 0.5, 0.75]) '
                               'WITHIN GROUP (ORDER BY %s) AS q FROM pg_temp._ml_stack_rows WHERE NOT (%s)) AS s',
                               CASE WHEN iv IS NULL THEN raw[j] ELSE format('coalesce(%s, %s::float8)', raw[j], iv) END,
                               test_filter) INTO shift, spread;
                spread := CASE WHEN spread > 0 THEN spread ELSE 1 END;
            ELSE
                RAISE EXCEPTION 'unknown scale rule "%" for column "%"', scale, names[j]
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'Use "standard", "min_max", "max_abs", "robust" or "preserve".';
        END CASE;
        transform := transform || jsonb_build_object('impute', iv, 'shift', shift, 'scale', spread);
        x_expr := x_expr || format('((%s - %s::float8) / %s::float8)',
                                   CASE WHEN iv IS NULL THEN raw[j]
                                        ELSE format('coalesce(%s, %s::float8)', raw[j], iv) END,
                                   shift, spread);
        x_mean := x_mean || ((m - shift) / spread);
        x_std := x_std || (coalesce(sd, 0) / spread);
        features := features || jsonb_build_object(
            'name', names[j], 'type', types[j], 'count', nn, 'nulls', (stats[1] - nn)::bigint,  -- train rows, like the other statistics
            'mean', stats[7 + (j - 1) * 5], 'std', stats[8 + (j - 1) * 5],
            'min', stats[9 + (j - 1) * 5], 'max', stats[10 + (j - 1) * 5]);
    END LOOP;

    -- text blocks: the transformer of each vectorize rule; counts and tfidf fit their
    -- vocabulary on the training rows (a vectorizer named <project>.<column>, one version per model)
    b := 0;
    FOR col IN SELECT value FROM jsonb_array_elements(layout) WHERE value ->> 'kind' = 'text' LOOP
        b := b + 1;
        rule := preprocess -> (col ->> 'name');
        FOR key IN SELECT jsonb_object_keys(rule) LOOP
            IF key NOT IN ('vectorize', 'options') THEN
                RAISE EXCEPTION 'unknown preprocess rule "%" for text column "%"', key, col ->> 'name'
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'A text column takes "vectorize" and its "options", e.g. {"vectorize": "hashing", "options": {"dims": 256}}.';
            END IF;
        END LOOP;
        IF jsonb_typeof(rule -> 'vectorize') IS DISTINCT FROM 'string' THEN
            RAISE EXCEPTION 'the vectorize rule of column "%" must name a transformer', col ->> 'name'
                USING ERRCODE = 'invalid_parameter_value', HINT = 'e.g. {"vectorize": "hashing"}, "tfidf" or "counts".';
        END IF;
        IF rule ->> 'vectorize' IN ('counts', 'tfidf') THEN
            vid := ml_stack._fit_vocabulary(
                format('%s.%s', project_name, col ->> 'name'), rule ->> 'vectorize', rule -> 'options',
                format('SELECT t%s FROM pg_temp._ml_stack_rows WHERE NOT (%s)', b, test_filter),
                jsonb_build_object('project', project_name, 'relation', rel::text, 'column', col ->> 'name',
                                   'training_rows', n - ntest));
            spec := ml_stack._vectorizer_spec(vid);  -- a statement of its own: it must see the new vocabulary
        ELSE
            spec := ml_stack._resolve_transformer(rule ->> 'vectorize', rule -> 'options');
            IF spec ->> 'kind' = 'python' THEN
                -- a model of ml_stack_python: its dimensions from its listing (the engines embed the rows)
                EXECUTE 'SELECT t.dims FROM ml_stack._python_transformers() AS t WHERE t.name = $1'
                    INTO width USING spec ->> 'name';
                spec := spec || jsonb_build_object('dims', width);
            END IF;
        END IF;
        blocks := blocks || jsonb_build_array(jsonb_build_object('column', col ->> 'name', 't', b, 'spec', spec,
                                                                 'dims', (spec ->> 'dims')::integer));
    END LOOP;
    -- where x and the blocks sit among the model's features (table order)
    b := 0;
    FOR col IN SELECT value FROM jsonb_array_elements(layout) LOOP
        IF col ->> 'kind' = 'text' THEN
            blocks := jsonb_set(blocks, ARRAY[b::text, 'offset'], to_jsonb(pos));
            columns := columns || jsonb_build_array((col - 'ci') || jsonb_build_object(
                'offset', pos, 'width', blocks -> b -> 'dims', 'transformer', blocks -> b -> 'spec'));
            pos := pos + (blocks -> b ->> 'dims')::integer;
            b := b + 1;
        ELSE
            columns := columns || jsonb_build_array((col - 'ci') || jsonb_build_object(
                'offset', pos, 'width', coalesce((col ->> 'width')::integer, 1)));
            FOR j IN 1 .. coalesce((col ->> 'width')::integer, 1) LOOP
                pos := pos + 1;
                x_positions := x_positions || pos;
            END LOOP;
        END IF;
    END LOOP;

    RETURN jsonb_build_object(
        'n', n, 'skipped', total - n, 'train_rows', n - ntest, 'test_rows', ntest,
        'test_size', test_size, 'test_sampling', test_sampling, 'seed', seed,
        'test_filter', test_filter, 'train_filter', format('NOT (%s)', test_filter),
        'features', features,
        'label', jsonb_build_object('name', y_column_name, 'type', y_att.typ::text, 'class_labels', to_jsonb(class_labels),
                                    'mean', stats[2], 'std', stats[3], 'min', stats[4], 'max', stats[5],
                                    'class_counts', class_counts),
        'classes', to_jsonb(classes),
        'x', to_jsonb(x_expr), 'x_mean', to_jsonb(x_mean), 'x_std', to_jsonb(x_std),
        'transform', transform,
        'blocks', blocks, 'columns', columns, 'x_positions', to_jsonb(x_positions), 'num_features', pos);
END
$$;

-- source: sql/serving/expressions.sql
-- A model artifact turned into SQL expressions: the compiled predictors and the
-- test-split metrics are built from the same text, so what is scored is what is served.
-- `accessor` is a format() string naming raw feature j, e.g. 'features[%s]' or 'x%s'.
-- Operators and types are written schema-qualified (OPERATOR(pg_catalog.+), pg_catalog.float8):
-- an inlined serving function is parsed with the caller's search_path, and one that puts
-- another schema before pg_catalog (search_path = public, pg_catalog) would otherwise bind an
-- operator of that schema. OPERATOR() has the precedence of any operator, hence the parentheses.
-- A number is written (-0.5)::pg_catalog.float8: the parser folds a parenthesised negative
-- constant, where -0.5::float8 would apply the operator - that the search_path finds.

-- Probabilities of the two classes from a logistic score; the clamp keeps exp() finite.
CREATE OR REPLACE FUNCTION ml_stack._binary_proba(score float8)
RETURNS float8[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p1 float8;
BEGIN
    IF score IS NULL THEN
        RETURN NULL;
    END IF;
    p1 := 1 / (1 + exp(-least(greatest(score, -700), 700)));
    RETURN ARRAY[1 - p1, p1];
END
$$;

CREATE OR REPLACE FUNCTION ml_stack._softmax(scores float8[])
RETURNS float8[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    top float8;
    total float8 := 0;
    e float8[] := '{}';
    i integer;
BEGIN
    IF scores IS NULL OR array_position(scores, NULL) IS NOT NULL THEN
        RETURN NULL;
    END IF;
    SELECT max(s) INTO top FROM unnest(scores) AS s;
    FOR i IN 1 .. cardinality(scores) LOOP
        -- exp() raises an underflow error where a float would round to 0
        e := e || CASE WHEN scores[i] - top < -700 THEN 0 ELSE exp(scores[i] - top) END;
        total := total + e[i];
    END LOOP;
    FOR i IN 1 .. cardinality(scores) LOOP
        e[i] := e[i] / total;
    END LOOP;
    RETURN e;
END
$$;

-- Position of the largest score (the first on ties, as numpy's argmax); NULL if any is NULL.
CREATE OR REPLACE FUNCTION ml_stack._argmax(scores float8[])
RETURNS integer
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    best integer := 1;
    i integer;
BEGIN
    IF scores IS NULL OR array_position(scores, NULL) IS NOT NULL THEN
        RETURN NULL;
    END IF;
    FOR i IN 2 .. cardinality(scores) LOOP
        IF scores[i] > scores[best] THEN best := i; END IF;
    END LOOP;
    RETURN best;
END
$$;

-- The linear scores of a 'linear'-format artifact.
CREATE OR REPLACE FUNCTION ml_stack._score_sql(artifact jsonb, accessor text)
RETURNS text[]
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
SET extra_float_digits = 3
AS $$
DECLARE
    scores text[] := '{}';
    term text;
    wk jsonb;
    k integer := 0;
    j integer;
    iv float8;
    expr text;
BEGIN
    FOR wk IN SELECT value FROM jsonb_array_elements(artifact -> 'coefficients') LOOP
        expr := format('(%s)::pg_catalog.float8', (artifact -> 'intercepts' ->> k)::float8);
        FOR j IN 1 .. jsonb_array_length(wk) LOOP
            iv := (artifact -> 'impute' ->> (j - 1))::float8;
            term := format(accessor, j);
            IF iv IS NOT NULL THEN
                term := format('coalesce(%s, (%s)::pg_catalog.float8)', term, iv);
            END IF;
            -- every number goes through float8, so nothing but a number reaches the SQL text
            expr := expr || format(' OPERATOR(pg_catalog.+) (%s OPERATOR(pg_catalog.*) (%s)::pg_catalog.float8)', term, (wk ->> (j - 1))::float8);
        END LOOP;
        scores := scores || format('(%s)', expr);
        k := k + 1;
    END LOOP;
    RETURN scores;
END
$$;

-- A wide linear model's scores (more than _wide_model_features() features, served with the
-- features[%s] accessor): one _linear_scores call giving every score as a float8[]; NULL for
-- the others, whose scores _score_sql unrolls. A confidential model's predictors (marked by
-- the compiler with "confidential_model") read its weights instead (serving/confidential.sql).
CREATE OR REPLACE FUNCTION ml_stack._wide_scores_sql(artifact jsonb, accessor text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
SET extra_float_digits = 3
AS $$
BEGIN
    IF artifact ? 'confidential_model' AND accessor = 'features[%s]' THEN
        RETURN format('ml_stack._confidential_scores(%s::pg_catalog.int8, features)', (artifact ->> 'confidential_model')::bigint);
    ELSIF jsonb_array_length(artifact -> 'coefficients' -> 0) <= ml_stack._wide_model_features() OR accessor <> 'features[%s]' THEN
        RETURN NULL;
    END IF;
    RETURN format('ml_stack._linear_scores(features, %L::pg_catalog.float8[], %L::pg_catalog.float8[], %L::pg_catalog.float8[])',
                  (SELECT array_agg(w::float8 ORDER BY k, j) FROM jsonb_array_elements(artifact -> 'coefficients') WITH ORDINALITY AS c(v, k),
                                                            jsonb_array_elements_text(c.v) WITH ORDINALITY AS e(w, j)),
                  (SELECT array_agg(b::float8 ORDER BY i) FROM jsonb_array_elements_text(artifact -> 'intercepts') WITH ORDINALITY AS t(b, i)),
                  (SELECT array_agg(CASE WHEN v = 'null' THEN NULL ELSE v::text::float8 END ORDER BY i)
                   FROM jsonb_array_elements(artifact -> 'impute') WITH ORDINALITY AS t(v, i)));
END
$$;

-- SQL expression of the prediction (regression value or class label).
CREATE OR REPLACE FUNCTION ml_stack._predict_sql(artifact jsonb, classes float8[], accessor text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
SET extra_float_digits = 3
AS $$
DECLARE
    wide text := ml_stack._wide_scores_sql(artifact, accessor);
    scores text[] := CASE WHEN wide IS NULL THEN ml_stack._score_sql(artifact, accessor) END;
    first_score text := coalesce(scores[1], format('(%s)[1]', wide));
    class_array text := format('%L::pg_catalog.float8[]', classes);
BEGIN
    CASE artifact ->> 'link'
        WHEN 'identity' THEN
            RETURN first_score;
        WHEN 'logistic' THEN
            -- class 1 when the score is > 0 (scikit-learn's rule); a NULL score indexes to NULL
            RETURN format('(%s)[(%s OPERATOR(pg_catalog.>) 0::pg_catalog.float8)::pg_catalog.int4 OPERATOR(pg_catalog.+) 1]', class_array, first_score);
        WHEN 'softmax' THEN
            RETURN format('(%s)[ml_stack._argmax(%s)]', class_array,
                          coalesce(wide, format('ARRAY[%s]', array_to_string(scores, ', '))));
        ELSE
            RAISE EXCEPTION 'unknown model link "%"', artifact ->> 'link';
    END CASE;
END
$$;

-- SQL expression of the class probabilities (float8[], classes ascending); NULL for regression.
CREATE OR REPLACE FUNCTION ml_stack._proba_sql(artifact jsonb, accessor text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    wide text := ml_stack._wide_scores_sql(artifact, accessor);
    scores text[] := CASE WHEN wide IS NULL THEN ml_stack._score_sql(artifact, accessor) END;
BEGIN
    RETURN CASE artifact ->> 'link'
        WHEN 'logistic' THEN format('ml_stack._binary_proba(%s)', coalesce(scores[1], format('(%s)[1]', wide)))
        WHEN 'softmax' THEN format('ml_stack._softmax(%s)', coalesce(wide, format('ARRAY[%s]', array_to_string(scores, ', '))))
    END;
END
$$;

-- Wide linear models (text vocabularies: thousands of features) are not unrolled
-- into one expression (11k terms x 8 classes exceeded the stack depth): their
-- scores come from this loop over a constant weight array (class-major), which
-- skips zero features. A leaf of the predictors, like _softmax: not inlinable
-- anyway (a loop), so it is pinned.
CREATE OR REPLACE FUNCTION ml_stack._linear_scores(features float8[], weights float8[], intercepts float8[], impute float8[])
RETURNS float8[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p integer := cardinality(features);
    s float8[] := intercepts;
    x float8;
BEGIN
    IF features IS NULL THEN
        RETURN NULL;
    END IF;
    FOR j IN 1 .. p LOOP
        x := coalesce(features[j], impute[j]);
        IF x IS NULL THEN
            RETURN NULL;
        END IF;
        IF x <> 0 THEN
            FOR c IN 1 .. cardinality(s) LOOP
                s[c] := s[c] + x * weights[(c - 1) * p + j];
            END LOOP;
        END IF;
    END LOOP;
    RETURN s;
END
$$;

-- Above this many features a linear model is served through _linear_scores.
CREATE OR REPLACE FUNCTION ml_stack._wide_model_features()
RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT 256 $$;

-- source: sql/training/metrics.sql
-- Metrics of a model on the test split, computed in SQL from the same expressions
-- that serve it. Definitions follow scikit-learn: r2 (0 when the test labels are
-- constant and the fit is not exact), macro precision/recall/f1 over the labels
-- present in truth or prediction (0 where undefined), roc_auc from probabilities
-- with ties counted half (NULL when the test split has one class), log_loss with
-- probabilities clipped to [eps, 1 - eps].
-- An engine that predicts the test rows itself (the python engine, with the
-- library's own predict) leaves them in pg_temp._ml_stack_predictions(r, yhat,
-- proba) and sets dataset.engine_predictions; the metrics are then of those.
CREATE OR REPLACE FUNCTION ml_stack._test_metrics(task text, artifact jsonb, classes float8[], dataset jsonb)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
DECLARE
    engine_predictions boolean := coalesce((dataset ->> 'engine_predictions')::boolean, false);
    pred   text := CASE WHEN engine_predictions THEN 'p.yhat' ELSE ml_stack._predict_sql(artifact, classes, 'x%s') END;
    proba  text := CASE WHEN engine_predictions THEN 'p.proba' ELSE ml_stack._proba_sql(artifact, 'x%s') END;
    -- "predictions": "deployed": the deployed model's, on this split (training/compare.sql)
    source text := CASE WHEN engine_predictions AND dataset ->> 'predictions' = 'deployed'
                        THEN 'pg_temp._ml_stack_rows JOIN pg_temp._ml_stack_deployed_predictions AS p USING (r)'
                        WHEN engine_predictions
                        THEN 'pg_temp._ml_stack_rows JOIN pg_temp._ml_stack_predictions AS p USING (r)'
                        ELSE 'pg_temp._ml_stack_rows' END;
    result jsonb;
BEGIN
    IF task = 'regression' THEN
        EXECUTE format($q$
            SELECT jsonb_build_object(
                'r2', CASE WHEN sum((y - ybar) ^ 2) > 0 THEN 1 - sum((y - yhat) ^ 2) / sum((y - ybar) ^ 2)
                           WHEN sum((y - yhat) ^ 2) = 0 THEN 1 ELSE 0 END,
                'mean_squared_error', avg((y - yhat) ^ 2),
                'mean_absolute_error', avg(abs(y - yhat)))
            FROM (SELECT y, avg(y) OVER () AS ybar, %s AS yhat FROM %s WHERE %s OFFSET 0) AS t
            $q$, pred, source, dataset ->> 'test_filter')
        INTO result;
        RETURN result;
    END IF;

    EXECUTE format($q$
        WITH scored AS MATERIALIZED (
            SELECT y, %1$s AS yhat, %2$s AS proba FROM %5$s WHERE %3$s
        ), labels AS (
            SELECT y AS c FROM scored UNION SELECT yhat FROM scored
        ), per_class AS (
            SELECT l.c,
                   count(*) FILTER (WHERE s.y = l.c AND s.yhat = l.c) AS tp,
                   count(*) FILTER (WHERE s.y <> l.c AND s.yhat = l.c) AS fp,
                   count(*) FILTER (WHERE s.y = l.c AND s.yhat <> l.c) AS fn
            FROM labels AS l CROSS JOIN scored AS s
            GROUP BY l.c
        ), prf AS (
            SELECT CASE WHEN tp + fp > 0 THEN tp::float8 / (tp + fp) ELSE 0 END AS precision,
                   CASE WHEN tp + fn > 0 THEN tp::float8 / (tp + fn) ELSE 0 END AS recall,
                   CASE WHEN 2 * tp + fp + fn > 0 THEN 2 * tp::float8 / (2 * tp + fp + fn) ELSE 0 END AS f1
            FROM per_class
        ), ranked AS (
            -- binary: average rank of each positive's probability (Mann-Whitney U)
            SELECT y, rank() OVER (ORDER BY proba[2]) + (count(*) OVER (PARTITION BY proba[2]) - 1) / 2.0 AS r
            FROM scored
        )
        SELECT jsonb_build_object(
            'accuracy', (SELECT avg((y = yhat)::integer::float8) FROM scored),
            'precision', (SELECT avg(precision) FROM prf),
            'recall', (SELECT avg(recall) FROM prf),
            'f1', (SELECT avg(f1) FROM prf),
            'roc_auc', CASE WHEN cardinality(%4$L::float8[]) = 2 AND NOT EXISTS (SELECT FROM scored WHERE proba IS NULL) THEN (
                SELECT (sum(r) FILTER (WHERE y = (%4$L::float8[])[2])
                        - count(*) FILTER (WHERE y = (%4$L::float8[])[2]) * (count(*) FILTER (WHERE y = (%4$L::float8[])[2]) + 1) / 2.0)
                       / nullif(count(*) FILTER (WHERE y = (%4$L::float8[])[2]) * count(*) FILTER (WHERE y <> (%4$L::float8[])[2]), 0)
                FROM ranked)::float8 END,
            -- NULL when the model gives no probabilities (greatest() would turn NULL into eps)
            'log_loss', (SELECT CASE WHEN count(proba) = count(*) THEN
                                    avg(-ln(least(greatest(proba[array_position(%4$L::float8[], y)], 2.220446049250313e-16),
                                                  1 - 2.220446049250313e-16))) END
                         FROM scored))
        $q$, pred, proba, dataset ->> 'test_filter', classes, source)
    INTO result;
    RETURN result;
END
$$;

-- source: sql/serving/trees.sql
-- Tree ensembles ('trees' artifact format, docs/python-engine.md) compiled to SQL,
-- so XGBoost and scikit-learn ensembles serve without Python, in any database
-- that has ml_stack. Per model:
--   ml_stack._model_<id>_margins(features float8[]) -> float8[]
--       PL/pgSQL: the features into local variables once (NaN as missing, then the
--       training transform), then one nested CASE per tree, summed per output in
--       tree order in the artifact's arithmetic (float4 for XGBoost, as the library);
--   ml_stack._model_<id>_predict / _proba(features float8[])
--       inlinable LANGUAGE sql wrappers that apply the link to the margins.
-- PL/pgSQL rather than one inlined expression: a 100-tree expression inlined
-- into a query costs 40-70 ms of planning per query, trips JIT (30-80 s), and
-- ran 2.3x slower than this form (docs/design-notes/xgboost-to-sql.md). The
-- wrappers mention `features` once: an inlined ARRAY[...] argument is rebuilt for
-- every mention, which made 200k predictions 1.5x slower with 41 of them.

-- The artifact's trees, checked: every number a JSON number, every index in
-- range, children after their parent (so every walk ends). Raises on the first
-- problem. Run before every compile, so also for what import_model brings in.
CREATE OR REPLACE FUNCTION ml_stack._check_trees_artifact(artifact jsonb, num_features integer, classes float8[])
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    outputs integer;
    tree jsonb;
    t integer := 0;
    n integer;
    key text;
    bad text;
BEGIN
    IF jsonb_typeof(artifact -> 'outputs') IS DISTINCT FROM 'number' OR jsonb_typeof(artifact -> 'trees') IS DISTINCT FROM 'array'
       OR jsonb_typeof(artifact -> 'base') IS DISTINCT FROM 'array' THEN
        bad := 'it needs "outputs" (a number), "base" and "trees" (arrays)';
    ELSE
        outputs := (artifact ->> 'outputs')::integer;
        IF outputs < 1 OR outputs > 1000 OR jsonb_array_length(artifact -> 'base') <> outputs
           OR EXISTS (SELECT FROM jsonb_array_elements(artifact -> 'base') AS b WHERE jsonb_typeof(b) <> 'number') THEN
            bad := '"base" must hold one number per output';
        ELSIF coalesce(artifact ->> 'sum', '') NOT IN ('float4', 'float8') THEN
            bad := '"sum" must be "float4" or "float8"';
        ELSIF coalesce(artifact ->> 'missing', '') NOT IN ('default', 'null') THEN
            bad := '"missing" must be "default" or "null"';
        ELSIF artifact ? 'divisor' AND (jsonb_typeof(artifact -> 'divisor') <> 'number' OR (artifact ->> 'divisor')::float8 <= 0) THEN
            bad := '"divisor" must be a positive number';
        ELSIF NOT coalesce(CASE artifact ->> 'link'
                    WHEN 'identity' THEN outputs = 1 AND classes IS NULL
                    WHEN 'exp' THEN outputs = 1 AND classes IS NULL
                    WHEN 'logistic' THEN outputs = 1 AND cardinality(classes) = 2
                    WHEN 'softmax' THEN outputs = cardinality(classes)
                    WHEN 'probability' THEN outputs = cardinality(classes) END, false) THEN
            bad := format('link "%s" does not fit %s output(s) and %s class(es)', artifact ->> 'link', outputs,
                          coalesce(cardinality(classes), 0));
        ELSIF jsonb_typeof(artifact -> 'transform') = 'array' AND (
                jsonb_array_length(artifact -> 'transform') <> num_features
                OR EXISTS (SELECT FROM jsonb_array_elements(artifact -> 'transform') AS tr,
                                       LATERAL (VALUES (tr -> 'impute'), (tr -> 'shift'), (tr -> 'scale')) AS v(x)
                           WHERE jsonb_typeof(tr) <> 'object'
                              OR coalesce(jsonb_typeof(v.x), 'null') NOT IN ('number', 'null'))
                OR EXISTS (SELECT FROM jsonb_array_elements(artifact -> 'transform') AS tr
                           WHERE (tr ->> 'scale')::float8 = 0)) THEN
            bad := format('"transform" must hold one {"impute", "shift", "scale"} object of numbers per feature (%s), scale not 0',
                          num_features);
        END IF;
    END IF;
    IF bad IS NULL THEN
        FOR tree IN SELECT value FROM jsonb_array_elements(artifact -> 'trees') LOOP
            IF jsonb_typeof(tree) <> 'object' OR jsonb_typeof(tree -> 'left') IS DISTINCT FROM 'array' THEN
                bad := format('tree %s is not an object with node arrays', t);
                EXIT;
            END IF;
            n := jsonb_array_length(tree -> 'left');
            FOREACH key IN ARRAY ARRAY['feature', 'threshold', 'inclusive', 'default_left', 'right', 'value'] LOOP
                IF jsonb_typeof(tree -> key) IS DISTINCT FROM 'array' OR jsonb_array_length(tree -> key) <> n THEN
                    bad := format('tree %s: "%s" must be an array of %s entries, like "left"', t, key, n);
                END IF;
            END LOOP;
            EXIT WHEN bad IS NOT NULL;
            IF n = 0 OR jsonb_typeof(tree -> 'output') IS DISTINCT FROM 'number'
               OR (tree ->> 'output')::numeric NOT BETWEEN 0 AND outputs - 1 THEN
                bad := format('tree %s: needs nodes and an "output" in [0, %s]', t, outputs - 1);
            ELSE
                SELECT format('tree %s, node %s: %s', t, a.i - 1, c.problem) INTO bad
                FROM jsonb_array_elements(tree -> 'left') WITH ORDINALITY AS a(l, i)
                CROSS JOIN LATERAL (SELECT tree -> 'right' -> (a.i::integer - 1) AS r, tree -> 'value' -> (a.i::integer - 1) AS v,
                                           tree -> 'feature' -> (a.i::integer - 1) AS f, tree -> 'threshold' -> (a.i::integer - 1) AS th,
                                           tree -> 'inclusive' -> (a.i::integer - 1) AS inc,
                                           tree -> 'default_left' -> (a.i::integer - 1) AS dl) AS node
                CROSS JOIN LATERAL (SELECT CASE
                    WHEN jsonb_typeof(a.l) <> 'number' OR jsonb_typeof(node.r) <> 'number' THEN 'children must be numbers'
                    WHEN a.l::text::numeric = -1 THEN
                        CASE WHEN jsonb_typeof(node.v) <> 'number' THEN 'a leaf needs a numeric value' END
                    WHEN a.l::text::numeric <= a.i - 1 OR node.r::text::numeric <= a.i - 1
                         OR a.l::text::numeric >= n OR node.r::text::numeric >= n
                         OR a.l::text::numeric % 1 <> 0 OR node.r::text::numeric % 1 <> 0
                        THEN 'children must be later nodes of the same tree'
                    WHEN jsonb_typeof(node.f) <> 'number' OR node.f::text::numeric NOT BETWEEN 0 AND num_features - 1
                         OR node.f::text::numeric % 1 <> 0
                        THEN format('feature must be an index in [0, %s]', num_features - 1)
                    WHEN jsonb_typeof(node.th) <> 'number' THEN 'threshold must be a number'
                    WHEN jsonb_typeof(node.inc) <> 'boolean' OR jsonb_typeof(node.dl) <> 'boolean'
                        THEN 'inclusive and default_left must be booleans'
                    END AS problem) AS c
                WHERE c.problem IS NOT NULL
                ORDER BY a.i LIMIT 1;
            END IF;
            EXIT WHEN bad IS NOT NULL;
            t := t + 1;
        END LOOP;
        IF bad IS NULL AND t = 0 THEN
            bad := 'it has no trees';
        END IF;
    END IF;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'invalid trees artifact: %', bad
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The ''trees'' format is described in ml_stack''s docs/python-engine.md; export the model again with ml_stack.export_model().';
    END IF;
END
$$;

-- One tree as a nested CASE over the feature references (format() strings, e.g.
-- 'f%s' for argument j). Nodes are built from the last to the first: children
-- come after their parent, so each node's subtrees are ready when it is built.
-- A NULL feature takes the node's default branch: the test is written so that
-- NULL falls to ELSE, and ELSE is the default side.
CREATE OR REPLACE FUNCTION ml_stack._tree_sql(tree jsonb, leaf_type text, feature_ref text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
SET extra_float_digits = 3  -- thresholds and leaves written back exactly
AS $$
DECLARE
    feature      integer[] := ARRAY(SELECT jsonb_array_elements_text(tree -> 'feature')::integer);
    threshold    float8[]  := ARRAY(SELECT jsonb_array_elements_text(tree -> 'threshold')::float8);
    inclusive    boolean[] := ARRAY(SELECT jsonb_array_elements_text(tree -> 'inclusive')::boolean);
    default_left boolean[] := ARRAY(SELECT jsonb_array_elements_text(tree -> 'default_left')::boolean);
    lefts        integer[] := ARRAY(SELECT jsonb_array_elements_text(tree -> 'left')::integer);
    rights       integer[] := ARRAY(SELECT jsonb_array_elements_text(tree -> 'right')::integer);
    leaf_values  text[]    := ARRAY(SELECT jsonb_array_elements_text(tree -> 'value'));
    n            integer   := cardinality(lefts);
    expr         text[]    := array_fill(NULL::text, ARRAY[n]);
    i            integer;
    f            text;
BEGIN
    FOR i IN REVERSE n .. 1 LOOP
        IF lefts[i] = -1 THEN
            -- float4 leaves are cast from their text: XGBoost writes the shortest float32 text
            expr[i] := CASE leaf_type WHEN 'float4' THEN format('%L::float4', leaf_values[i]::float4)
                                      ELSE format('%L::float8', leaf_values[i]::float8) END;
        ELSE
            f := format(feature_ref, feature[i] + 1);
            IF default_left[i] THEN
                expr[i] := format('CASE WHEN %s %s %L::float8 THEN %s ELSE %s END', f,
                                  CASE WHEN inclusive[i] THEN '>' ELSE '>=' END, threshold[i],
                                  expr[rights[i] + 1], expr[lefts[i] + 1]);
            ELSE
                expr[i] := format('CASE WHEN %s %s %L::float8 THEN %s ELSE %s END', f,
                                  CASE WHEN inclusive[i] THEN '<=' ELSE '<' END, threshold[i],
                                  expr[lefts[i] + 1], expr[rights[i] + 1]);
            END IF;
            expr[lefts[i] + 1] := NULL;   -- only the root's text is kept
            expr[rights[i] + 1] := NULL;
        END IF;
    END LOOP;
    RETURN expr[1];
END
$$;

-- Body of the PL/pgSQL margins function: the features into locals f1 .. fp, then per
-- output, base + tree + tree ... in tree order and in the artifact's arithmetic, a
-- statement per 100 trees (a single chain of thousands of '+' exhausts the parser's stack).
CREATE OR REPLACE FUNCTION ml_stack._trees_margins_body(model_id bigint, num_features integer, artifact jsonb)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
SET extra_float_digits = 3
AS $$
DECLARE
    sum_type text := artifact ->> 'sum';
    outputs  integer := (artifact ->> 'outputs')::integer;
    declares text := '';
    body     text := '';
    result   text[] := '{}';
    unimputed text[] := '{}';
    k        integer;
    j        integer;
    arg      text;
    tr       jsonb;
    chunk    text[];
    tree     jsonb;
BEGIN
    FOR j IN 1 .. num_features LOOP
        arg := format('NULLIF(features[%s], ''NaN'')', j);   -- NaN is missing, as in XGBoost
        tr := artifact -> 'transform' -> (j - 1);
        IF jsonb_typeof(tr) = 'object' AND tr ->> 'impute' IS NOT NULL THEN
            arg := format('coalesce(%s, %L::float8)', arg, (tr ->> 'impute')::float8);
        ELSE
            unimputed := unimputed || format('f%s IS NULL', j);
        END IF;
        IF jsonb_typeof(tr) = 'object'
           AND (coalesce((tr ->> 'shift')::float8, 0) <> 0 OR coalesce((tr ->> 'scale')::float8, 1) <> 1) THEN
            arg := format('(%s - %L::float8) / %L::float8', arg, coalesce((tr ->> 'shift')::float8, 0),
                          coalesce((tr ->> 'scale')::float8, 1));
        END IF;
        declares := declares || format('    f%s float8 := %s;%s', j, arg, chr(10));
    END LOOP;
    FOR k IN 0 .. outputs - 1 LOOP
        declares := declares || format('    m%s %s := %L::%s;%s', k, sum_type,
                                       CASE sum_type WHEN 'float4' THEN ((artifact -> 'base' ->> k)::float4)::text
                                                     ELSE ((artifact -> 'base' ->> k)::float8)::text END,
                                       sum_type, chr(10));
        chunk := '{}';
        FOR tree IN SELECT t.value FROM jsonb_array_elements(artifact -> 'trees') WITH ORDINALITY AS t(value, i)
                    WHERE (t.value ->> 'output')::integer = k ORDER BY t.i LOOP
            chunk := chunk || ml_stack._tree_sql(tree, sum_type, 'f%s');
            IF cardinality(chunk) = 100 THEN
                body := body || format('    m%s := m%s + %s;%s', k, k, array_to_string(chunk, ' + '), chr(10));
                chunk := '{}';
            END IF;
        END LOOP;
        IF cardinality(chunk) > 0 THEN
            body := body || format('    m%s := m%s + %s;%s', k, k, array_to_string(chunk, ' + '), chr(10));
        END IF;
        result := result || CASE WHEN artifact ? 'divisor'
                                 THEN format('m%s / %L::float8', k, (artifact ->> 'divisor')::float8)
                                 ELSE format('m%s', k) END;
    END LOOP;
    RETURN format('DECLARE%1$s%2$sBEGIN%1$s'
                  -- the count is checked first: the locals above read past a short array as NULL
                  '    IF features IS NULL THEN%1$s        RETURN NULL;%1$s    END IF;%1$s'
                  '    IF cardinality(features) <> %3$s THEN%1$s'
                  '        RETURN ARRAY[ml_stack._wrong_feature_count(%4$s, %3$s, features)];%1$s'
                  '    END IF;%1$s'
                  '%5$s'
                  '%6$s    RETURN ARRAY[%7$s]::float8[];%1$sEND',
                  chr(10), declares, num_features, model_id,
                  -- 'null' models have no rule for a missing value: NULL without an impute rule gives NULL
                  CASE WHEN artifact ->> 'missing' = 'null' AND cardinality(unimputed) > 0
                       THEN format('    IF %s THEN%s        RETURN NULL;%s    END IF;%s',
                                   array_to_string(unimputed, ' OR '), chr(10), chr(10), chr(10)) ELSE '' END,
                  body, array_to_string(result, ', '));
END
$$;

-- Compile a 'trees' model: its margins function and its two predictors.
CREATE OR REPLACE FUNCTION ml_stack._compile_trees_model(model_id bigint, num_features integer, classes float8[], artifact jsonb)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET extra_float_digits = 3
AS $$
DECLARE
    margins text := format('ml_stack.%I(features)', format('_model_%s_margins', model_id));
    class_array text := format('%L::pg_catalog.float8[]', classes);
    predict text;
    proba text;
BEGIN
    PERFORM ml_stack._check_trees_artifact(artifact, num_features, classes);
    IF ml_stack._model_is_confidential(model_id) THEN
        -- its nodes are in ml_stack._model_parameters (serving/confidential.sql)
        PERFORM ml_stack._create_model_function(format('_model_%s_margins', model_id), 'features float8[]', 'float8[]', 'sql',
                                                format('SELECT ml_stack._confidential_margins(%s::pg_catalog.int8, features)', model_id));
    ELSE
        PERFORM ml_stack._create_model_function(format('_model_%s_margins', model_id), 'features float8[]', 'float8[]', 'plpgsql',
                                                ml_stack._trees_margins_body(model_id, num_features, artifact));
    END IF;
    CASE artifact ->> 'link'
        WHEN 'identity' THEN predict := format('(%s)[1]', margins);
        WHEN 'exp' THEN predict := format('pg_catalog.exp((%s)[1])', margins);
        WHEN 'logistic' THEN
            -- inlined into the caller's query: operators schema-qualified (serving/expressions.sql)
            predict := format('(%s)[((%s)[1] OPERATOR(pg_catalog.>) 0::pg_catalog.float8)::pg_catalog.int4 OPERATOR(pg_catalog.+) 1]',
                              class_array, margins);
            proba := format('ml_stack._binary_proba((%s)[1])', margins);
        WHEN 'softmax' THEN
            predict := format('(%s)[ml_stack._argmax(%s)]', class_array, margins);
            proba := format('ml_stack._softmax(%s)', margins);
        WHEN 'probability' THEN
            predict := format('(%s)[ml_stack._argmax(%s)]', class_array, margins);
            proba := margins;
    END CASE;
    PERFORM ml_stack._create_model_function(format('_model_%s_predict', model_id), 'features float8[]', 'float8', 'sql',
                                            format('SELECT %s', predict));
    PERFORM ml_stack._create_model_function(format('_model_%s_proba', model_id), 'features float8[]', 'float8[]', 'sql',
        format('SELECT %s', coalesce(proba, format('ml_stack._no_probabilities(%s, features)', model_id))));
END
$$;

-- source: sql/serving/confidential.sql
-- Confidential projects (0.4.1). pg_proc.prosrc is readable by every role, so a compiled
-- predictor shows its model's parameters to anyone who can connect. A confidential
-- project's models are compiled without them: their predictors call the functions below,
-- which run as ml_stack's owner and read the parameters from ml_stack._model_parameters
-- (no other role reads it), and ml_stack.models shows their rows only inside the project.
-- Inside means: ml_stack_admin, or a role that may read the relation the model was trained
-- on (the issue's case: a model trained on a table a role cannot read must not teach that
-- role its coefficients). Predictions themselves stay open to whoever may predict.
-- The price is inlining: a SECURITY DEFINER call per row instead of the arithmetic
-- (bench/predict_linear.py, case c).

-- Whether the current role may see a model's parameters.
CREATE OR REPLACE FUNCTION ml_stack._inside_project(project_id bigint, snapshot_id bigint)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT NOT coalesce((SELECT p.confidential FROM ml_stack.projects AS p WHERE p.id = _inside_project.project_id), false)
        OR EXISTS (SELECT FROM pg_catalog.pg_roles AS r WHERE r.rolname = 'ml_stack_admin' AND pg_catalog.pg_has_role(r.oid, 'MEMBER'))
        -- the snapshot names the relation schema-qualified; a dropped one is nobody's
        OR coalesce((SELECT pg_catalog.has_table_privilege(pg_catalog.to_regclass(s.relation_name), 'SELECT')
                     FROM ml_stack.snapshots AS s WHERE s.id = _inside_project.snapshot_id), false)
$$;
COMMENT ON FUNCTION ml_stack._inside_project(bigint, bigint) IS
    'ml_stack internal: true when the current role may read the parameters of a model of this project and snapshot (the project is not confidential, the role is in ml_stack_admin, or it may read the training relation).';

-- The registry's model rows of a confidential project are visible (and writable) inside it
-- only. ml_stack's owner, which compiles and serves, is not subject to row security.
-- (Created or altered: this file runs in every install and upgrade script, and a DROP ... IF
-- EXISTS would print a NOTICE on each.)
ALTER TABLE ml_stack.models ENABLE ROW LEVEL SECURITY;
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_policy AS p
               WHERE p.polrelid = 'ml_stack.models'::regclass AND p.polname = 'inside_project') THEN
        ALTER POLICY inside_project ON ml_stack.models
            USING (ml_stack._inside_project(project_id, snapshot_id)) WITH CHECK (true);
    ELSE
        CREATE POLICY inside_project ON ml_stack.models
            USING (ml_stack._inside_project(project_id, snapshot_id)) WITH CHECK (true);
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION ml_stack._model_is_confidential(model_id bigint)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce((SELECT p.confidential FROM ml_stack.models AS m JOIN ml_stack.projects AS p ON p.id = m.project_id
                     WHERE m.id = _model_is_confidential.model_id), false)
$$;

-- Keep a confidential model's parameters where its predictors read them (or forget them).
CREATE OR REPLACE FUNCTION ml_stack._store_model_parameters(model_id bigint, num_features integer, artifact jsonb)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM ml_stack._model_parameters AS q WHERE q.model_id = _store_model_parameters.model_id;
    IF artifact IS NULL THEN
        RETURN;
    ELSIF artifact ->> 'format' = 'linear' THEN
        INSERT INTO ml_stack._model_parameters (model_id, format, weights, intercepts, impute)
        SELECT model_id, 'linear',
               (SELECT array_agg(w::float8 ORDER BY k, j) FROM jsonb_array_elements(artifact -> 'coefficients') WITH ORDINALITY AS c(v, k),
                                                         jsonb_array_elements_text(c.v) WITH ORDINALITY AS e(w, j)),
               (SELECT array_agg(b::float8 ORDER BY i) FROM jsonb_array_elements_text(artifact -> 'intercepts') WITH ORDINALITY AS t(b, i)),
               (SELECT array_agg(CASE WHEN jsonb_typeof(artifact -> 'impute' -> (j - 1)) = 'number'
                                      THEN (artifact -> 'impute' ->> (j - 1))::float8 END ORDER BY j)
                FROM generate_series(1, num_features) AS j);
    ELSE   -- 'trees', checked by _check_trees_artifact before: the nodes of all trees, one after another
        INSERT INTO ml_stack._model_parameters (model_id, format, node_feature, node_threshold, node_test, node_left, node_right,
                                                node_value, tree_root, tree_output, base, shift, scale, impute, sum_float4,
                                                divisor, missing_null)
        WITH trees AS (
            SELECT t.value AS tree, t.i, jsonb_array_length(t.value -> 'left') AS n,
                   coalesce(sum(jsonb_array_length(t.value -> 'left')) OVER (ORDER BY t.i ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0)::integer AS start
            FROM jsonb_array_elements(artifact -> 'trees') WITH ORDINALITY AS t(value, i)
        ), nodes AS (
            SELECT t.i, t.start, k, (t.tree -> 'left' ->> k)::integer AS l, (t.tree -> 'right' ->> k)::integer AS r,
                   t.tree -> 'feature' ->> k AS f, t.tree -> 'threshold' ->> k AS th, (t.tree -> 'inclusive' ->> k)::boolean AS inc,
                   (t.tree -> 'default_left' ->> k)::boolean AS dl, t.tree -> 'value' ->> k AS v
            FROM trees AS t CROSS JOIN LATERAL generate_series(0, t.n - 1) AS k
        ), transform AS (
            SELECT array_agg(coalesce((tr.value ->> 'shift')::float8, 0) ORDER BY j) AS shift,
                   array_agg(coalesce((tr.value ->> 'scale')::float8, 1) ORDER BY j) AS scale,
                   array_agg((tr.value ->> 'impute')::float8 ORDER BY j) AS impute
            FROM generate_series(1, num_features) AS j
            LEFT JOIN LATERAL (SELECT CASE WHEN jsonb_typeof(artifact -> 'transform' -> (j - 1)) = 'object'
                                           THEN artifact -> 'transform' -> (j - 1) ELSE '{}' END AS value) AS tr ON true
        )
        SELECT model_id, 'trees',
               array_agg(CASE WHEN n.l = -1 THEN 1 ELSE n.f::integer + 1 END ORDER BY n.i, n.k),
               array_agg(CASE WHEN n.l = -1 THEN 0 ELSE n.th::float8 END ORDER BY n.i, n.k),
               -- the tests of _tree_sql: 0 x < t, 1 x <= t (missing right); 2 x >= t, 3 x > t (missing left)
               array_agg(CASE WHEN n.l = -1 THEN 0 ELSE (CASE WHEN n.dl THEN 2 ELSE 0 END + CASE WHEN n.inc THEN 1 ELSE 0 END) END::smallint
                         ORDER BY n.i, n.k),
               array_agg(CASE WHEN n.l = -1 THEN 0 ELSE n.start + n.l + 1 END ORDER BY n.i, n.k),
               array_agg(CASE WHEN n.l = -1 THEN 0 ELSE n.start + n.r + 1 END ORDER BY n.i, n.k),
               array_agg(CASE WHEN n.l <> -1 THEN 0
                              WHEN artifact ->> 'sum' = 'float4' THEN n.v::float4::float8   -- from the text, as _tree_sql
                              ELSE n.v::float8 END ORDER BY n.i, n.k),
               (SELECT array_agg(t.start + 1 ORDER BY t.i) FROM trees AS t),
               (SELECT array_agg((t.tree ->> 'output')::integer + 1 ORDER BY t.i) FROM trees AS t),
               (SELECT array_agg(CASE WHEN artifact ->> 'sum' = 'float4' THEN b::float8::float4::float8 ELSE b::float8 END ORDER BY i)
                FROM jsonb_array_elements_text(artifact -> 'base') WITH ORDINALITY AS e(b, i)),
               (SELECT shift FROM transform), (SELECT scale FROM transform), (SELECT impute FROM transform),
               artifact ->> 'sum' = 'float4', (artifact ->> 'divisor')::float8, artifact ->> 'missing' = 'null'
        FROM nodes AS n;
    END IF;
END
$$;

-- A confidential linear model's scores (one per class or one), as _linear_scores computes them.
CREATE OR REPLACE FUNCTION ml_stack._confidential_scores(model_id bigint, features float8[])
RETURNS float8[]
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    weights float8[];
    intercepts float8[];
    impute float8[];
BEGIN
    SELECT q.weights, q.intercepts, q.impute INTO weights, intercepts, impute
    FROM ml_stack._model_parameters AS q WHERE q.model_id = _confidential_scores.model_id AND q.format = 'linear';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'model % is not compiled as a confidential linear model', model_id
            USING ERRCODE = 'PT503', HINT = 'SELECT ml_stack._compile_model(model_id) as ml_stack''s owner compiles it again.';
    END IF;
    RETURN ml_stack._linear_scores(features, weights, intercepts, impute);
END
$$;

-- A confidential tree ensemble's margins: the walk that the compiled CASE of serving/trees.sql
-- writes out, over the stored nodes, in the same arithmetic (float4 sums for XGBoost).
CREATE OR REPLACE FUNCTION ml_stack._confidential_margins(model_id bigint, features float8[])
RETURNS float8[]
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    feature integer[];
    threshold float8[];
    test smallint[];
    lefts integer[];
    rights integer[];
    leaf float8[];
    roots integer[];
    outputs integer[];
    m float8[];
    shift float8[];
    scale float8[];
    impute float8[];
    sum_float4 boolean;
    divisor float8;
    missing_null boolean;
    f float8[];
    x float8;
    n integer;
    k integer;
BEGIN
    IF features IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT q.node_feature, q.node_threshold, q.node_test, q.node_left, q.node_right, q.node_value, q.tree_root, q.tree_output,
           q.base, q.shift, q.scale, q.impute, q.sum_float4, q.divisor, q.missing_null
    INTO feature, threshold, test, lefts, rights, leaf, roots, outputs, m, shift, scale, impute, sum_float4, divisor, missing_null
    FROM ml_stack._model_parameters AS q WHERE q.model_id = _confidential_margins.model_id AND q.format = 'trees';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'model % is not compiled as a confidential tree model', model_id
            USING ERRCODE = 'PT503', HINT = 'SELECT ml_stack._compile_model(model_id) as ml_stack''s owner compiles it again.';
    END IF;
    IF cardinality(features) <> cardinality(shift) THEN
        RETURN ARRAY[ml_stack._wrong_feature_count(model_id, cardinality(shift), features)];
    END IF;
    f := features;
    FOR j IN 1 .. cardinality(f) LOOP
        x := coalesce(NULLIF(f[j], 'NaN'), impute[j]);   -- NaN is missing, as in XGBoost
        IF x IS NULL AND missing_null THEN
            RETURN NULL;
        END IF;
        IF shift[j] <> 0 OR scale[j] <> 1 THEN
            x := (x - shift[j]) / scale[j];
        END IF;
        f[j] := x;
    END LOOP;
    FOR t IN 1 .. cardinality(roots) LOOP
        n := roots[t];
        WHILE lefts[n] > 0 LOOP
            x := f[feature[n]];
            -- a missing feature fails every test, so it takes the ELSE side: the default branch
            n := CASE test[n] WHEN 0 THEN CASE WHEN x < threshold[n] THEN lefts[n] ELSE rights[n] END
                              WHEN 1 THEN CASE WHEN x <= threshold[n] THEN lefts[n] ELSE rights[n] END
                              WHEN 2 THEN CASE WHEN x >= threshold[n] THEN rights[n] ELSE lefts[n] END
                              ELSE CASE WHEN x > threshold[n] THEN rights[n] ELSE lefts[n] END END;
        END LOOP;
        k := outputs[t];
        m[k] := CASE WHEN sum_float4 THEN (m[k]::float4 + leaf[n]::float4)::float8 ELSE m[k] + leaf[n] END;
    END LOOP;
    IF divisor IS NOT NULL THEN
        FOR j IN 1 .. cardinality(m) LOOP
            m[j] := m[j] / divisor;
        END LOOP;
    END IF;
    RETURN m;
END
$$;

-- A confidential 'python'-format model loads its pickle as ml_stack's owner (the caller may not
-- read its row); the estimator cache is ml_stack_python's, as for any model. PL/pgSQL: the
-- functions they call exist only with ml_stack_python.
CREATE OR REPLACE FUNCTION ml_stack._confidential_python_predict(model_id bigint, generation bigint, features float8[])
RETURNS float8
LANGUAGE plpgsql STABLE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN ml_stack._python_predict(model_id, generation, features);
END
$$;

CREATE OR REPLACE FUNCTION ml_stack._confidential_python_proba(model_id bigint, generation bigint, features float8[])
RETURNS float8[]
LANGUAGE plpgsql STABLE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN ml_stack._python_predict_proba(model_id, generation, features);
END
$$;

-- Turning confidentiality off shows the parameters to every role: only a role inside the
-- project may (every model's training relation readable, or ml_stack_admin).
CREATE OR REPLACE FUNCTION ml_stack._count_project_models(project_id bigint)
RETURNS bigint
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT count(*) FROM ml_stack.models AS m WHERE m.project_id = _count_project_models.project_id $$;

CREATE OR REPLACE FUNCTION ml_stack._projects_confidential_check()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- while the project is still confidential, row security shows the role exactly the models it is inside of
    IF OLD.confidential AND NOT NEW.confidential
       AND (SELECT count(*) FROM ml_stack.models AS m WHERE m.project_id = OLD.id) <> ml_stack._count_project_models(OLD.id) THEN
        RAISE EXCEPTION 'role "%" may not make project "%" public: it cannot read what all of the project''s models were trained on',
                        current_user, OLD.name
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'A member of ml_stack_admin, or a role that may SELECT every training relation of the project, can.';
    END IF;
    RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER confidential_check BEFORE UPDATE OF confidential ON ml_stack.projects
    FOR EACH ROW EXECUTE FUNCTION ml_stack._projects_confidential_check();

CREATE OR REPLACE FUNCTION ml_stack.set_confidential(project_name text, confidential boolean DEFAULT true)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF confidential IS NULL THEN
        RAISE EXCEPTION 'confidential must be true or false' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    UPDATE ml_stack.projects AS p SET confidential = set_confidential.confidential
    WHERE p.name = set_confidential.project_name AND p.confidential <> set_confidential.confidential;
    IF NOT EXISTS (SELECT FROM ml_stack.projects AS p WHERE p.name = set_confidential.project_name) THEN
        RAISE EXCEPTION 'project "%" does not exist', project_name
            USING ERRCODE = 'PT404', HINT = 'SELECT name FROM ml_stack.projects lists the projects.';
    END IF;
    RETURN confidential;
END
$$;
COMMENT ON FUNCTION ml_stack.set_confidential(text, boolean) IS
    'ml_stack: make a project confidential (or public again; returns the new state): its models are served without their parameters in the catalog (pg_proc), and its rows of ml_stack.models are visible only to ml_stack_admin and to roles that may read the training relation. Predictions stay open to whoever may predict; serving costs a function call per row instead of inlined arithmetic.';

REVOKE EXECUTE ON FUNCTION ml_stack._confidential_scores(bigint, float8[]), ml_stack._confidential_margins(bigint, float8[]),
    ml_stack._confidential_python_predict(bigint, bigint, float8[]), ml_stack._confidential_python_proba(bigint, bigint, float8[]),
    ml_stack._count_project_models(bigint) FROM PUBLIC;

-- source: sql/serving/compile_0.2.0.sql
-- 0.2.0: compiled models have functions of several signatures; _create_model_function replaces _create_predictor.
DROP FUNCTION IF EXISTS ml_stack._create_predictor(text, text, text);

-- source: sql/serving/compile_0.4.0.sql
-- 0.4.0: the dispatch functions' CASE compares with OPERATOR(pg_catalog.=): _case_dispatch takes no key.
DO $$
BEGIN
    IF to_regprocedure('ml_stack._case_dispatch(text, text, text)') IS NOT NULL THEN
        DROP FUNCTION ml_stack._case_dispatch(text, text, text);
    END IF;
END
$$;

-- source: sql/serving/compile.sql
-- Compiled serving (DESIGN §2). Every model gets two functions, created at run
-- time (so they are not extension members and pg_dump keeps them):
--   ml_stack._model_<id>_predict(features float8[]) -> float8
--   ml_stack._model_<id>_proba(features float8[])   -> float8[]
-- made of its arithmetic (linear), of the link over a PL/pgSQL margins function
-- (trees, serving/trees.sql), or calling ml_stack_python (pickled estimators).
-- Four dispatch functions (extension members, regenerated from the registry by
-- the triggers below) route a project name or a model id to them with a CASE
-- that the planner folds when the name is a constant, so
-- predict('p', ARRAY[...]) inlines down to the model's expression.
-- pg_dump does not keep a member's regenerated body, but restoring the registry
-- tables fires the triggers, which regenerate it; install and upgrade scripts end
-- with serving/refresh.sql.

CREATE OR REPLACE FUNCTION ml_stack._compile_model(model_id bigint)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET extra_float_digits = 3
AS $$
DECLARE
    m record;
    guard text;
    confidential boolean := ml_stack._model_is_confidential(model_id);
BEGIN
    SELECT mo.id, mo.num_features, mo.classes, mo.artifact, mo.engine INTO m
    FROM ml_stack.models AS mo WHERE mo.id = model_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'model % does not exist', model_id USING ERRCODE = 'undefined_object';
    END IF;
    -- a confidential model's predictors read its parameters (serving/confidential.sql)
    PERFORM ml_stack._store_model_parameters(m.id, m.num_features,
                                             CASE WHEN confidential AND m.artifact ->> 'format' IN ('linear', 'trees') THEN m.artifact END);
    IF confidential AND m.artifact ->> 'format' = 'linear' THEN
        m.artifact := m.artifact || jsonb_build_object('confidential_model', m.id);   -- see _wide_scores_sql
    END IF;
    CASE m.artifact ->> 'format'
    WHEN 'linear' THEN
        guard := format('WHEN pg_catalog.cardinality(features) OPERATOR(pg_catalog.<>) %s THEN %%s', m.num_features);
        PERFORM ml_stack._create_model_function(format('_model_%s_predict', m.id), 'features float8[]', 'float8', 'sql',
            format('SELECT CASE %s ELSE %s END',
                   format(guard, format('ml_stack._wrong_feature_count(%s, %s, features)', m.id, m.num_features)),
                   ml_stack._predict_sql(m.artifact, m.classes, 'features[%s]')));
        PERFORM ml_stack._create_model_function(format('_model_%s_proba', m.id), 'features float8[]', 'float8[]', 'sql',
            CASE WHEN m.classes IS NULL
                 THEN format('SELECT ml_stack._no_probabilities(%s, features)', m.id)
                 ELSE format('SELECT CASE %s ELSE %s END',
                             format(guard, format('ARRAY[ml_stack._wrong_feature_count(%s, %s, features)]', m.id, m.num_features)),
                             ml_stack._proba_sql(m.artifact, 'features[%s]')) END);
    WHEN 'trees' THEN
        PERFORM ml_stack._compile_trees_model(m.id, m.num_features, m.classes, m.artifact);
    WHEN 'python' THEN
        PERFORM ml_stack._compile_python_model(m.id, ml_stack._serving_generation());
    ELSE
        RAISE EXCEPTION 'model % has artifact format "%", which ml_stack does not know', model_id, m.artifact ->> 'format'
            USING ERRCODE = 'feature_not_supported',
                  HINT = format('Install the extension of engine "%s", or update ml_stack.', m.engine);
    END CASE;
END
$$;

-- The serving generation: the time of the latest deployment, in microseconds. It
-- grows with every deployment (also across a DROP and CREATE EXTENSION, which
-- reuses model ids) and stays put when a model is only trained.
CREATE OR REPLACE FUNCTION ml_stack._serving_generation()
RETURNS bigint
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT coalesce((extract(epoch FROM max(d.created_at)) * 1000000)::bigint, 0) FROM ml_stack.deployments AS d $$;

-- Predictors of a 'python'-format model: calls into ml_stack_python, which caches
-- the unpickled estimator per backend and empties its cache when it is called
-- with a newer generation; every serving refresh compiles these with the current
-- one, so a deployment reaches every backend's cache. Without ml_stack_python,
-- they raise an error that says to install it (its install script compiles them
-- again). PARALLEL UNSAFE: PL/Python loads the model with a query, which parallel
-- mode forbids. Left as they are when their body would not change.
CREATE OR REPLACE FUNCTION ml_stack._compile_python_model(model_id bigint, generation bigint)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    installed boolean := to_regprocedure('ml_stack._python_predict(bigint, bigint, float8[])') IS NOT NULL;
    -- a confidential model's pickle is loaded as the owner (serving/confidential.sql)
    entry_points text[] := CASE WHEN ml_stack._model_is_confidential(model_id)
                                THEN ARRAY['_confidential_python_predict', '_confidential_python_proba']
                                ELSE ARRAY['_python_predict', '_python_predict_proba'] END;
    bodies text[] := CASE WHEN installed
        THEN ARRAY[format('SELECT ml_stack.%I(%s, %s, features)', entry_points[1], model_id, generation),
                   format('SELECT ml_stack.%I(%s, %s, features)', entry_points[2], model_id, generation)]
        ELSE ARRAY[format('SELECT ml_stack._engine_not_installed(%s, features)', model_id),
                   format('SELECT ARRAY[ml_stack._engine_not_installed(%s, features)]', model_id)] END;
BEGIN
    IF (SELECT count(*) FROM pg_catalog.pg_proc AS p
        WHERE p.pronamespace = 'ml_stack'::regnamespace
          AND (p.proname, p.prosrc) IN ((format('_model_%s_predict', model_id), bodies[1]),
                                        (format('_model_%s_proba', model_id), bodies[2]))) = 2 THEN
        RETURN;
    END IF;
    PERFORM ml_stack._create_model_function(format('_model_%s_predict', model_id), 'features float8[]', 'float8', 'sql',
                                            bodies[1], false);
    PERFORM ml_stack._create_model_function(format('_model_%s_proba', model_id), 'features float8[]', 'float8[]', 'sql',
                                            bodies[2], false);
END
$$;

-- (Re)create one function of a compiled model, ml_stack.<name>(<params>), as a
-- free-standing function. Drop-and-create rather than CREATE OR REPLACE: inside
-- CREATE or ALTER EXTENSION, PostgreSQL refuses to replace an object the
-- extension does not own, and a function created there becomes a member, which
-- pg_dump would leave out, so it is released from whichever extension took it.
CREATE OR REPLACE FUNCTION ml_stack._create_model_function(name text, params text, result_type text, language text, body text,
                                                           parallel_safe boolean DEFAULT true)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    fn regprocedure;
BEGIN
    FOR fn IN SELECT p.oid FROM pg_catalog.pg_proc AS p
              WHERE p.pronamespace = 'ml_stack'::regnamespace AND p.proname = name LOOP
        EXECUTE format('DROP FUNCTION %s', fn);
    END LOOP;
    EXECUTE format('CREATE FUNCTION ml_stack.%I(%s) RETURNS %s LANGUAGE %s %s %s AS %L',
                   name, params, result_type::regtype, CASE language WHEN 'sql' THEN 'sql' ELSE 'plpgsql' END,
                   -- STABLE, not IMMUTABLE: the planner must not run them on constant arguments (serving_errors.sql)
                   CASE WHEN parallel_safe THEN 'STABLE PARALLEL SAFE' ELSE 'STABLE PARALLEL UNSAFE' END,
                   -- a PL/pgSQL body (tree margins) never inlines, so it is pinned (DESIGN §4): its operators and
                   -- types cannot be taken by a schema the caller puts first (measured: 5-10% of a tree call);
                   -- SQL bodies inline and are written schema-qualified instead
                   CASE WHEN language = 'sql' THEN '' ELSE 'SET search_path = pg_catalog, pg_temp' END, body);
    SELECT p.oid INTO fn FROM pg_catalog.pg_proc AS p
    WHERE p.pronamespace = 'ml_stack'::regnamespace AND p.proname = name;
    PERFORM ml_stack._release_from_extension(fn);
END
$$;

-- Body of a dispatch function: a searched CASE whose arms compare the key with
-- OPERATOR(pg_catalog.=) (a simple CASE would look "=" up in the caller's search_path),
-- or only the fallback when there is no key yet (CASE needs at least one WHEN).
CREATE OR REPLACE FUNCTION ml_stack._case_dispatch(arms text, fallback text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN arms IS NULL THEN format('SELECT %s', fallback)
                ELSE format('SELECT CASE %s ELSE %s END', arms, fallback) END
$$;

-- Regenerate the dispatch functions from the registry (the models' own
-- predictors are compiled by the trigger on ml_stack.models). Serialised: two
-- sessions must not replace a function at the same time.
CREATE OR REPLACE FUNCTION ml_stack._refresh_serving()
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    generation bigint := ml_stack._serving_generation();
    by_project text;
    by_project_proba text;
    by_model text;
    by_model_proba text;
    parallel text;
    fn regprocedure;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('ml_stack._refresh_serving'));
    -- models of projects made confidential or public since they were compiled (set_confidential,
    -- or a restore that brought the models before their projects)
    PERFORM ml_stack._compile_model(m.id)
    FROM ml_stack.models AS m JOIN ml_stack.projects AS p ON p.id = m.project_id
    WHERE m.artifact ->> 'format' IN ('linear', 'trees')
      AND p.confidential IS DISTINCT FROM EXISTS (SELECT FROM ml_stack._model_parameters AS q WHERE q.model_id = m.id)
    ORDER BY m.id;
    -- projects by name, then their aliases as '<project>@<alias>' (set_alias refuses one that a
    -- project's name would shadow; the projects' arms come first all the same)
    SELECT string_agg(format('WHEN project_name OPERATOR(pg_catalog.=) %L::pg_catalog.text THEN ml_stack.%I(features)', d.name, format('_model_%s_predict', d.model_id)), ' '
                      ORDER BY d.alias IS NOT NULL, d.name),
           string_agg(format('WHEN project_name OPERATOR(pg_catalog.=) %L::pg_catalog.text THEN ml_stack.%I(features)', d.name, format('_model_%s_proba', d.model_id)), ' '
                      ORDER BY d.alias IS NOT NULL, d.name)
    INTO by_project, by_project_proba
    FROM (SELECT dm.project_name AS name, dm.model_id, NULL AS alias FROM ml_stack.deployed_models AS dm
          UNION ALL
          SELECT p.name || '@' || a.alias, a.model_id, a.alias
          FROM ml_stack.model_aliases AS a JOIN ml_stack.projects AS p ON p.id = a.project_id) AS d;
    SELECT string_agg(format('WHEN model_id OPERATOR(pg_catalog.=) %s::pg_catalog.int8 THEN ml_stack.%I(features)', m.id, format('_model_%s_predict', m.id)), ' ' ORDER BY m.id),
           string_agg(format('WHEN model_id OPERATOR(pg_catalog.=) %s::pg_catalog.int8 THEN ml_stack.%I(features)', m.id, format('_model_%s_proba', m.id)), ' ' ORDER BY m.id)
    INTO by_model, by_model_proba
    FROM ml_stack.models AS m;
    -- backends that cache a 'python'-format model drop it when a deployment changes
    PERFORM ml_stack._compile_python_model(m.id, generation)
    FROM ml_stack.models AS m WHERE m.artifact ->> 'format' = 'python';
    -- PL/Python cannot load a model in parallel mode (its queries open subtransactions), and the
    -- planner decides on parallelism from the labels of the functions the query names, before
    -- inlining: with a 'python'-format model in the registry, predict() itself says UNSAFE
    parallel := CASE WHEN FOUND THEN 'UNSAFE' ELSE 'SAFE' END;

    EXECUTE format(
        'CREATE OR REPLACE FUNCTION ml_stack._predict_project(project_name text, features float8[]) RETURNS float8 '
        'LANGUAGE sql STABLE PARALLEL ' || parallel || ' AS %L',
        ml_stack._case_dispatch(by_project, 'ml_stack._no_deployed_model(project_name, features)'));
    EXECUTE format(
        'CREATE OR REPLACE FUNCTION ml_stack._predict_proba_project(project_name text, features float8[]) RETURNS float8[] '
        'LANGUAGE sql STABLE PARALLEL ' || parallel || ' AS %L',
        ml_stack._case_dispatch(by_project_proba, 'ARRAY[ml_stack._no_deployed_model(project_name, features)]'));
    EXECUTE format(
        'CREATE OR REPLACE FUNCTION ml_stack._predict_model(model_id bigint, features float8[]) RETURNS float8 '
        'LANGUAGE sql STABLE PARALLEL ' || parallel || ' AS %L',
        ml_stack._case_dispatch(by_model, 'ml_stack._unknown_model(model_id, features)'));
    EXECUTE format(
        'CREATE OR REPLACE FUNCTION ml_stack._predict_proba_model(model_id bigint, features float8[]) RETURNS float8[] '
        'LANGUAGE sql STABLE PARALLEL ' || parallel || ' AS %L',
        ml_stack._case_dispatch(by_model_proba, 'ARRAY[ml_stack._unknown_model(model_id, features)]'));
    FOREACH fn IN ARRAY ARRAY['ml_stack.predict(text, float8[])', 'ml_stack.predict(bigint, float8[])',
                              'ml_stack.predict_proba(text, float8[])', 'ml_stack.predict_proba(bigint, float8[])']::regprocedure[] LOOP
        IF (SELECT p.proparallel FROM pg_catalog.pg_proc AS p WHERE p.oid = fn) <> lower(left(parallel, 1)) THEN
            EXECUTE format('ALTER FUNCTION %s PARALLEL %s', fn, parallel);
        END IF;
    END LOOP;
    -- the projects' typed serving functions (serving/typed.sql)
    PERFORM ml_stack._compile_serving(p.id) FROM ml_stack.projects AS p ORDER BY p.id;
    PERFORM ml_stack._drop_orphan_serving();
    -- the predictors of models that are gone (drop_model, a DELETE)
    FOR fn IN SELECT f.oid FROM pg_catalog.pg_proc AS f
              WHERE f.pronamespace = 'ml_stack'::regnamespace AND f.proname ~ '^_model_\d+_(predict|proba|margins)$'
                AND NOT EXISTS (SELECT FROM ml_stack.models AS m WHERE m.id = substring(f.proname FROM '^_model_(\d+)_')::bigint)
              ORDER BY f.proname LOOP
        EXECUTE format('DROP FUNCTION %s', fn);
    END LOOP;
    PERFORM ml_stack._refresh_endpoints();   -- api/expose.sql
END
$$;
COMMENT ON FUNCTION ml_stack._refresh_serving() IS
    'ml_stack internal: regenerate the predict() dispatch functions from the registry.';

-- The triggers compile as the owner of ml_stack (SECURITY DEFINER): a role that may write
-- the registry (ml_stack_trainer) trains and deploys without owning the functions that
-- serving regenerates. What they compile comes from the registry through format() with
-- %L/%I and numbers cast through float8 (serving/expressions.sql), never as SQL text.
CREATE OR REPLACE FUNCTION ml_stack._registry_changed()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM ml_stack._refresh_serving();
    RETURN NULL;
END
$$;

-- New or changed models are compiled even when a function of their name exists:
-- it may be left from an earlier DROP EXTENSION, whose ids the sequence reuses.
CREATE OR REPLACE FUNCTION ml_stack._models_written()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    model_id bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('ml_stack._refresh_serving'));
    FOR model_id IN SELECT w.id FROM written_models AS w ORDER BY w.id LOOP
        PERFORM ml_stack._compile_model(model_id);
    END LOOP;
    PERFORM ml_stack._refresh_serving();
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER refresh_serving AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ml_stack.projects
    FOR EACH STATEMENT EXECUTE FUNCTION ml_stack._registry_changed();
CREATE OR REPLACE TRIGGER refresh_serving AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ml_stack.deployments
    FOR EACH STATEMENT EXECUTE FUNCTION ml_stack._registry_changed();
CREATE OR REPLACE TRIGGER refresh_serving AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ml_stack.model_aliases
    FOR EACH STATEMENT EXECUTE FUNCTION ml_stack._registry_changed();
CREATE OR REPLACE TRIGGER refresh_serving AFTER DELETE OR TRUNCATE ON ml_stack.models
    FOR EACH STATEMENT EXECUTE FUNCTION ml_stack._registry_changed();
CREATE OR REPLACE TRIGGER compile_inserted AFTER INSERT ON ml_stack.models
    REFERENCING NEW TABLE AS written_models
    FOR EACH STATEMENT EXECUTE FUNCTION ml_stack._models_written();
CREATE OR REPLACE TRIGGER compile_updated AFTER UPDATE ON ml_stack.models
    REFERENCING NEW TABLE AS written_models
    FOR EACH STATEMENT EXECUTE FUNCTION ml_stack._models_written();

-- source: sql/serving/typed.sql
-- Typed serving (0.4.0): every deployed project has a serving function with one
-- named, typed argument per feature column of its deployed model, named as the
-- column (numbers float8, booleans boolean, arrays float8[], vectorized text text, dates
-- and times their type, categories text, bigint, boolean or their enum type):
--   ml_stack._project_<project id>_predict(<columns>) -> float8
--   ml_stack._project_<project id>_proba(<columns>)   -> float8[]   (classifiers)
-- found in ml_stack.deployed_models.serving_function. A linear model of at most
-- _wide_model_features() features over numbers, booleans and arrays is the
-- expression itself, written over the arguments: it inlines into the caller's
-- query and costs what the hand-written expression costs (no ARRAY[...] rebuilt
-- for every feature reference, as predict(name, ARRAY[...]) does). Other models
-- build their feature array once and call the model's compiled predictor.
-- A deployment of a model with the same columns replaces the body and keeps the
-- function (its oid: views and prepared statements that use it keep working);
-- other columns make another signature, so the old function is dropped (an error
-- with a hint when a view of the user depends on it). Created at run time, as the
-- models' predictors (serving/compile.sql): not extension members, kept by pg_dump.

-- The feature columns a model was trained on (snapshot columns; before 0.3.0 every
-- feature was a numeric column, as the snapshot's features list them); NULL when
-- the model does not know them (imported without names).
CREATE OR REPLACE FUNCTION ml_stack._model_layout(model_id bigint)
RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER   -- predict_row needs the columns of a confidential project's model too
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(s.columns, (SELECT jsonb_agg(jsonb_build_object('name', f.value ->> 'name', 'kind', 'number',
                                                                    'offset', f.ordinality - 1, 'width', 1) ORDER BY f.ordinality)
                                FROM jsonb_array_elements(s.features) WITH ORDINALITY AS f
                                HAVING count(*) = m.num_features))
    FROM ml_stack.models AS m
    LEFT JOIN ml_stack.snapshots AS s ON s.id = m.snapshot_id
    WHERE m.id = _model_layout.model_id
$$;

-- The SQL type of a layout column's serving argument. An array keeps its column's type
-- when it is real[] (embeddings) or float8[]: the inlined body reads it once per element,
-- and PostgreSQL inlines a function whose argument is used several times only when that
-- argument is cheap, which a real[] -> float8[] coercion is not. Dates and times keep their
-- type; categories are text, but for integer columns (bigint: any integer argument reaches
-- it), boolean and enum columns (an enum that no longer exists: text).
CREATE OR REPLACE FUNCTION ml_stack._serving_argument_type(col jsonb)
RETURNS regtype
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE col ->> 'kind' WHEN 'text' THEN 'text'::regtype
                WHEN 'array' THEN CASE WHEN col ->> 'type' IN ('real[]', 'double precision[]') THEN col ->> 'type' ELSE 'float8[]' END::regtype
                WHEN 'boolean' THEN 'boolean'::regtype
                WHEN 'temporal' THEN (col ->> 'type')::regtype
                WHEN 'category' THEN CASE WHEN col ->> 'type' IN ('smallint', 'integer', 'bigint') THEN 'bigint'::regtype
                                          WHEN col ->> 'type' = 'boolean' THEN 'boolean'::regtype
                                          ELSE coalesce((SELECT t.oid::regtype FROM pg_catalog.pg_type AS t
                                                         WHERE t.oid = to_regtype(col ->> 'type') AND t.typtype = 'e'), 'text'::regtype) END
                ELSE 'float8'::regtype END
$$;

-- A layout column's serving argument as SQL text (categories compare as text).
CREATE OR REPLACE FUNCTION ml_stack._serving_text_argument(col jsonb)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN ml_stack._serving_argument_type(col) = 'text'::regtype THEN quote_ident(col ->> 'name')
                ELSE format('%I::pg_catalog.text', col ->> 'name') END
$$;

-- The serving function's arguments, as pg_get_function_identity_arguments() prints them.
CREATE OR REPLACE FUNCTION ml_stack._serving_arguments(layout jsonb)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT string_agg(format('%s %s', quote_ident(c.value ->> 'name'), format_type(ml_stack._serving_argument_type(c.value), NULL)),
                      ', ' ORDER BY c.ordinality)
    FROM jsonb_array_elements(layout) WITH ORDINALITY AS c
$$;

-- An array column's features: its elements, all NULL for a NULL array, an error for another length.
CREATE OR REPLACE FUNCTION ml_stack._array_features(column_name text, width integer, value float8[])
RETURNS float8[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF value IS NULL THEN
        RETURN array_fill(NULL::float8, ARRAY[width]);
    ELSIF cardinality(value) <> width THEN
        RAISE EXCEPTION 'column "%" needs an array of % numbers, got %', column_name, width, cardinality(value)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Array features have the length they had at training.';
    ELSIF array_ndims(value) > 1 THEN
        RETURN ARRAY(SELECT unnest(value));   -- several dimensions: row-major, as training read them
    END IF;
    RETURN value;
END
$$;

-- A text column's features: its vector by the model's transformer; a NULL text has no terms (zeros).
CREATE OR REPLACE FUNCTION ml_stack._text_features(transformer jsonb, width integer, value text)
RETURNS float8[]
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce((SELECT e::float8[] FROM ml_stack._embed_batch(transformer, ARRAY[value]) AS e WHERE value IS NOT NULL),
                    array_fill(0::float8, ARRAY[width]))
$$;

-- The feature array of a row of serving arguments (the fallback of the inlined form).
CREATE OR REPLACE FUNCTION ml_stack._serving_features_sql(layout jsonb)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT string_agg(CASE c.value ->> 'kind'
                          WHEN 'text' THEN format('ml_stack._text_features(%L::pg_catalog.jsonb, %s, %I)', c.value -> 'transformer',
                                                  (c.value ->> 'width')::integer, c.value ->> 'name')
                          WHEN 'array' THEN format('ml_stack._array_features(%L, %s, %I)', c.value ->> 'name',
                                                   (c.value ->> 'width')::integer, c.value ->> 'name')
                          WHEN 'boolean' THEN format('ARRAY[%I::pg_catalog.int4::pg_catalog.float8]', c.value ->> 'name')
                          WHEN 'temporal' THEN format('ARRAY[pg_catalog.date_part(''epoch''::pg_catalog.text, %I)]', c.value ->> 'name')
                          WHEN 'category' THEN ml_stack._category_features_sql(c.value -> 'encoding', ml_stack._serving_text_argument(c.value))
                          ELSE format('ARRAY[%I]', c.value ->> 'name') END,
                      ' OPERATOR(pg_catalog.||) ' ORDER BY c.ordinality)
    FROM jsonb_array_elements(layout) WITH ORDINALITY AS c
$$;

-- The inlinable bodies of a linear model over the arguments (predict, proba), or NULL
-- when the model is not one (text columns, wide, another format). The expression is the
-- compiled one (serving/expressions.sql) with each feature j written as its argument.
CREATE OR REPLACE FUNCTION ml_stack._serving_inline_sql(artifact jsonb, classes float8[], num_features integer, layout jsonb)
RETURNS text[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    refs text[] := '{}';
    guards text := '';   -- a wrong array length: the error of the non-inlined form (chr(2): [1] for predict)
    col jsonb;
    marker CONSTANT text := chr(1) || '%s' || chr(1);   -- feature j, replaced below (numbers never hold chr(1))
    bodies text[];
    k integer;
BEGIN
    IF artifact ->> 'format' <> 'linear' OR num_features > ml_stack._wide_model_features()
       OR EXISTS (SELECT FROM jsonb_array_elements(layout) AS c
                  WHERE c.value ->> 'kind' = 'text'
                     OR (c.value ->> 'kind' = 'category' AND ml_stack._category_is_large(c.value -> 'encoding'))) THEN
        RETURN NULL;
    END IF;
    FOR col IN SELECT value FROM jsonb_array_elements(layout) LOOP
        CASE col ->> 'kind'
        WHEN 'array' THEN
            FOR k IN 1 .. (col ->> 'width')::integer LOOP
                refs := refs || format('%I[%s]', col ->> 'name', k);
            END LOOP;
            guards := guards || format('WHEN pg_catalog.cardinality(%1$I) OPERATOR(pg_catalog.<>) %2$s '
                                       'OR pg_catalog.array_ndims(%1$I) OPERATOR(pg_catalog.>) 1 '
                                       'THEN (ml_stack._array_features(%3$L, %2$s, %1$I))' || chr(2) || ' ',
                                       col ->> 'name', (col ->> 'width')::integer, col ->> 'name');
        WHEN 'boolean' THEN
            refs := refs || format('%I::pg_catalog.int4::pg_catalog.float8', col ->> 'name');
        WHEN 'temporal' THEN
            refs := refs || format('pg_catalog.date_part(''epoch''::pg_catalog.text, %I)', col ->> 'name');
        WHEN 'category' THEN
            FOR k IN 1 .. (col ->> 'width')::integer LOOP
                refs := refs || ml_stack._category_feature_sql(col -> 'encoding', ml_stack._serving_text_argument(col), k);
            END LOOP;
        ELSE
            refs := refs || format('%I', col ->> 'name');
        END CASE;
    END LOOP;
    IF cardinality(refs) <> num_features THEN
        RETURN NULL;
    END IF;
    bodies := ARRAY[ml_stack._predict_sql(artifact, classes, marker), ml_stack._proba_sql(artifact, marker)];
    FOR k IN 1 .. 2 LOOP
        IF bodies[k] IS NOT NULL THEN
            bodies[k] := (SELECT string_agg(CASE WHEN p.o % 2 = 0 THEN refs[p.piece::integer] ELSE p.piece END, '' ORDER BY p.o)
                          FROM regexp_split_to_table(bodies[k], chr(1)) WITH ORDINALITY AS p(piece, o));
            IF guards <> '' THEN
                bodies[k] := format('CASE %s ELSE %s END', replace(guards, chr(2), CASE WHEN k = 1 THEN '[1]' ELSE '' END), bodies[k]);
            END IF;
            bodies[k] := 'SELECT ' || bodies[k];
        END IF;
    END LOOP;
    RETURN bodies;
END
$$;

-- Release a function created at run time from the extension whose script created it
-- (inside CREATE or ALTER EXTENSION every new object becomes a member, which pg_dump
-- would leave out).
CREATE OR REPLACE FUNCTION ml_stack._release_from_extension(fn regprocedure)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ext name;
BEGIN
    SELECT e.extname INTO ext
    FROM pg_catalog.pg_depend AS d JOIN pg_catalog.pg_extension AS e ON e.oid = d.refobjid
    WHERE d.classid = 'pg_catalog.pg_proc'::regclass AND d.objid = fn AND d.deptype = 'e';
    IF FOUND THEN
        EXECUTE format('ALTER EXTENSION %I DROP FUNCTION %s', ext, fn);
    END IF;
END
$$;

-- Run a CREATE OR REPLACE FUNCTION of a function made at run time (replaced: its current oid, or
-- NULL). In an extension script PostgreSQL refuses to replace a function the extension does not
-- own: there it is taken in for the replacement, and released by the caller.
CREATE OR REPLACE FUNCTION ml_stack._create_or_replace(definition text, replaced regprocedure)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE definition;
EXCEPTION WHEN object_not_in_prerequisite_state THEN
    IF replaced IS NULL THEN
        RAISE;
    END IF;
    EXECUTE format('ALTER EXTENSION ml_stack ADD FUNCTION %s', replaced);
    EXECUTE definition;
END
$$;

-- Create or replace ml_stack.<name>(<arguments>) with this body, keeping the function (its
-- oid) when one of that name has the same arguments; others of that name are dropped.
CREATE OR REPLACE FUNCTION ml_stack._define_serving_function(name text, arguments text, result_type regtype, body text,
                                                             parallel_safe boolean, project_name text)
RETURNS regprocedure
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    fn regprocedure;
    kept regprocedure;
    definition text := format('CREATE OR REPLACE FUNCTION ml_stack.%I(%s) RETURNS %s LANGUAGE sql STABLE PARALLEL %s AS %L',
                              name, arguments, result_type, CASE WHEN parallel_safe THEN 'SAFE' ELSE 'UNSAFE' END, body);
    dependents text;
BEGIN
    FOR fn IN SELECT p.oid FROM pg_catalog.pg_proc AS p
              WHERE p.pronamespace = 'ml_stack'::regnamespace AND p.proname = name LOOP
        IF pg_catalog.pg_get_function_identity_arguments(fn) = arguments
           AND (SELECT p.prorettype FROM pg_catalog.pg_proc AS p WHERE p.oid = fn) = result_type THEN
            kept := fn;
            CONTINUE;
        END IF;
        BEGIN
            EXECUTE format('DROP FUNCTION %s', fn);
        EXCEPTION WHEN dependent_objects_still_exist THEN
            SELECT string_agg(regexp_replace(pg_catalog.pg_describe_object(d.classid, d.objid, d.objsubid), '^rule _RETURN on ', ''), ', ')
            INTO dependents
            FROM pg_catalog.pg_depend AS d WHERE d.refclassid = 'pg_catalog.pg_proc'::regclass AND d.refobjid = fn AND d.deptype = 'n';
            RAISE EXCEPTION 'the model to serve for project "%" has other feature columns than its serving function %, which % uses',
                            project_name, fn, coalesce(dependents, 'another object')
                USING ERRCODE = 'dependent_objects_still_exist',
                      HINT = format('The new serving function takes (%s). Drop or change what uses the old one first, or deploy a model with the same columns.',
                                    arguments);
        END;
    END LOOP;
    IF kept IS NOT NULL AND (SELECT p.prosrc = body AND p.proparallel = CASE WHEN parallel_safe THEN 's' ELSE 'u' END
                             FROM pg_catalog.pg_proc AS p WHERE p.oid = kept) THEN
        RETURN kept;
    END IF;
    PERFORM ml_stack._create_or_replace(definition, kept);
    SELECT p.oid INTO fn FROM pg_catalog.pg_proc AS p
    WHERE p.pronamespace = 'ml_stack'::regnamespace AND p.proname = name;   -- the only one of its name now
    PERFORM ml_stack._release_from_extension(fn);
    RETURN fn;
END
$$;

-- (Re)define a project's serving functions for its deployed model, or, without one,
-- bodies that raise why there is nothing to serve (the signature stays).
CREATE OR REPLACE FUNCTION ml_stack._compile_serving(project_id bigint)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET extra_float_digits = 3
AS $$
DECLARE
    proj record;
    m record;
    layout jsonb;
    arguments text;
    features text;
    inline text[];
    existing record;
BEGIN
    SELECT p.id, p.name, p.task, p.confidential INTO proj FROM ml_stack.projects AS p WHERE p.id = _compile_serving.project_id;
    SELECT mo.id, mo.artifact, mo.classes, mo.num_features INTO m
    FROM ml_stack.deployed_models AS d JOIN ml_stack.models AS mo ON mo.id = d.model_id
    WHERE d.project_id = _compile_serving.project_id;
    IF NOT FOUND THEN
        -- nothing deployed (or no such project any more): the functions that exist raise the reason
        FOR existing IN SELECT p.oid, p.proname, p.prorettype::regtype AS result FROM pg_catalog.pg_proc AS p
                        WHERE p.pronamespace = 'ml_stack'::regnamespace
                          AND p.proname IN (format('_project_%s_predict', project_id), format('_project_%s_proba', project_id)) LOOP
            -- the error function's argument is not a constant (DESIGN §6): $1
            PERFORM ml_stack._define_serving_function(existing.proname, pg_catalog.pg_get_function_identity_arguments(existing.oid),
                existing.result,
                format(CASE WHEN existing.result = 'float8[]'::regtype
                            THEN 'SELECT ARRAY[ml_stack._no_deployed_model(%L, ARRAY[length($1::text)]::float8[])]'
                            ELSE 'SELECT ml_stack._no_deployed_model(%L, ARRAY[length($1::text)]::float8[])' END,
                       coalesce(proj.name, format('#%s', project_id))),
                true, coalesce(proj.name, format('#%s', project_id)));
        END LOOP;
        RETURN;
    END IF;
    layout := ml_stack._model_layout(m.id);
    IF layout IS NULL THEN
        RETURN;   -- imported without column names: served by predict(name, ARRAY[...]) only
    END IF;
    arguments := ml_stack._serving_arguments(layout);
    -- a confidential project's function calls the model's predictor, which reads the parameters
    inline := CASE WHEN NOT proj.confidential THEN ml_stack._serving_inline_sql(m.artifact, m.classes, m.num_features, layout) END;
    features := ml_stack._serving_features_sql(layout);
    PERFORM ml_stack._define_serving_function(format('_project_%s_predict', project_id), arguments, 'float8',
        coalesce(inline[1], format('SELECT ml_stack.%I(%s)', format('_model_%s_predict', m.id), features)),
        m.artifact ->> 'format' <> 'python', proj.name);
    IF proj.task = 'classification' THEN
        PERFORM ml_stack._define_serving_function(format('_project_%s_proba', project_id), arguments, 'float8[]',
            coalesce(inline[2], format('SELECT ml_stack.%I(%s)', format('_model_%s_proba', m.id), features)),
            m.artifact ->> 'format' <> 'python', proj.name);
    END IF;
END
$$;

-- Serving functions of projects that are gone: dropped, or, when something of the user's
-- still uses one, left raising that the project does not exist.
CREATE OR REPLACE FUNCTION ml_stack._drop_orphan_serving()
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    fn record;
BEGIN
    FOR fn IN SELECT p.oid::regprocedure AS oid, substring(p.proname FROM '^_project_(\d+)_')::bigint AS project_id
              FROM pg_catalog.pg_proc AS p
              WHERE p.pronamespace = 'ml_stack'::regnamespace AND p.proname ~ '^_project_\d+_(predict|proba)$'
                AND NOT EXISTS (SELECT FROM ml_stack.projects AS pr
                                WHERE pr.id = substring(p.proname FROM '^_project_(\d+)_')::bigint) LOOP
        BEGIN
            EXECUTE format('DROP FUNCTION %s', fn.oid);
        EXCEPTION WHEN dependent_objects_still_exist THEN
            PERFORM ml_stack._compile_serving(fn.project_id);
        END;
    END LOOP;
END
$$;

-- source: sql/registry/deployed_models.sql
CREATE OR REPLACE VIEW ml_stack.deployed_models AS
SELECT p.name        AS project_name,
       d.model_id,
       m.algorithm,
       m.engine,
       m.metrics,
       d.created_at  AS deployed_at,
       d.strategy,
       p.task,
       m.hyperparams,
       p.id          AS project_id,
       -- the typed serving functions (serving/typed.sql; one of each name); NULL until compiled
       (SELECT f.oid::regprocedure FROM pg_catalog.pg_proc AS f
        WHERE f.pronamespace = 'ml_stack'::regnamespace AND f.proname = format('_project_%s_predict', p.id)) AS serving_function,
       (SELECT f.oid::regprocedure FROM pg_catalog.pg_proc AS f
        WHERE f.pronamespace = 'ml_stack'::regnamespace AND f.proname = format('_project_%s_proba', p.id)) AS serving_proba_function
FROM ml_stack.projects AS p
CROSS JOIN LATERAL (
    SELECT dep.model_id, dep.strategy, dep.created_at
    FROM ml_stack.deployments AS dep
    WHERE dep.project_id = p.id
    ORDER BY dep.id DESC
    LIMIT 1
) AS d
JOIN ml_stack.models AS m ON m.id = d.model_id;
COMMENT ON VIEW ml_stack.deployed_models IS
    'ml_stack: the model each project serves now (its newest deployment), with its metrics.';

-- source: sql/serving/predict.sql
-- The serving API. Plain LANGUAGE sql, no SET clause, not STRICT, not SECURITY
-- DEFINER: the planner inlines them down to the deployed model's arithmetic
-- (DESIGN §4); every name is schema-qualified instead of pinning search_path.

CREATE OR REPLACE FUNCTION ml_stack.predict(project_name text, features float8[])
RETURNS float8
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT ml_stack._predict_project(project_name, features) $$;
COMMENT ON FUNCTION ml_stack.predict(text, float8[]) IS
    'ml_stack: prediction of the project''s deployed model (regression value or class label) for one row of features, in training column order.';

CREATE OR REPLACE FUNCTION ml_stack.predict(model_id bigint, features float8[])
RETURNS float8
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT ml_stack._predict_model(model_id, features) $$;
COMMENT ON FUNCTION ml_stack.predict(bigint, float8[]) IS
    'ml_stack: prediction of one model of the registry, deployed or not, for one row of features.';

CREATE OR REPLACE FUNCTION ml_stack.predict_proba(project_name text, features float8[])
RETURNS float8[]
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT ml_stack._predict_proba_project(project_name, features) $$;
COMMENT ON FUNCTION ml_stack.predict_proba(text, float8[]) IS
    'ml_stack: class probabilities (one per class, classes ascending) from the project''s deployed classifier.';

CREATE OR REPLACE FUNCTION ml_stack.predict_proba(model_id bigint, features float8[])
RETURNS float8[]
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT ml_stack._predict_proba_model(model_id, features) $$;
COMMENT ON FUNCTION ml_stack.predict_proba(bigint, float8[]) IS
    'ml_stack: class probabilities (one per class, classes ascending) from one classifier of the registry.';

-- source: sql/serving/predict_row.sql
-- Predictions from a row given by column names (to_jsonb(t) of a table row, or a
-- JSON object from an application): the deployed model's feature array is built
-- from the row following the snapshot's column layout (numbers, booleans, arrays, dates
-- and times, categories by their encoding, text through the model's own transformer),
-- then served as predict() serves it.
-- Extra keys are ignored; a missing key is a NULL feature (NULL text: no words).

-- A JSON value as a feature: numbers, booleans (1/0), numeric strings (PostgREST's
-- query parameters are strings), NULL.
CREATE OR REPLACE FUNCTION ml_stack._json_feature(v jsonb, column_name text)
RETURNS float8
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    CASE jsonb_typeof(v)
        WHEN 'number' THEN RETURN v::text::float8;
        WHEN 'boolean' THEN RETURN CASE WHEN v::text::boolean THEN 1 ELSE 0 END;
        WHEN 'null' THEN RETURN NULL;
        WHEN 'string' THEN
            BEGIN
                RETURN CASE lower(v #>> '{}') WHEN 'true' THEN 1 WHEN 'false' THEN 0 ELSE (v #>> '{}')::float8 END;
            EXCEPTION WHEN invalid_text_representation THEN
                NULL;  -- reported below
            END;
        ELSE
            IF v IS NULL THEN
                RETURN NULL;
            END IF;
    END CASE;
    RAISE EXCEPTION 'column "%" needs a number, got %', column_name, left(v::text, 100)
        USING ERRCODE = 'invalid_text_representation', HINT = 'Numbers, booleans, numeric strings and null are accepted.';
END
$$;

-- A JSON value for a date or time column: its text as the column's type reads it (to_jsonb
-- of a row writes them so), as seconds (date_part('epoch', ...), as at training); a number
-- is taken as those seconds.
CREATE OR REPLACE FUNCTION ml_stack._json_time_feature(v jsonb, column_name text, type_name text)
RETURNS float8
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF v IS NULL OR jsonb_typeof(v) IN ('null', 'number') THEN
        RETURN ml_stack._json_feature(v, column_name);
    ELSIF jsonb_typeof(v) = 'string' THEN
        BEGIN
            RETURN CASE type_name
                WHEN 'date' THEN date_part('epoch', (v #>> '{}')::date)
                WHEN 'timestamp without time zone' THEN date_part('epoch', (v #>> '{}')::timestamp)
                WHEN 'timestamp with time zone' THEN date_part('epoch', (v #>> '{}')::timestamptz)
                WHEN 'interval' THEN date_part('epoch', (v #>> '{}')::interval)
                WHEN 'time without time zone' THEN date_part('epoch', (v #>> '{}')::time) END;
        EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow OR invalid_text_representation THEN
            NULL;  -- reported below
        END;
    END IF;
    RAISE EXCEPTION 'column "%" needs a value of type %, got %', column_name, type_name, left(v::text, 100)
        USING ERRCODE = 'invalid_datetime_format', HINT = 'e.g. "2024-05-01" for a date, or the seconds as a number.';
END
$$;

CREATE OR REPLACE FUNCTION ml_stack._row_features(layout jsonb, input jsonb)
RETURNS float8[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    features float8[] := '{}';
    col jsonb;
    v jsonb;
    width integer;
BEGIN
    IF input IS NULL THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(input) <> 'object' THEN
        RAISE EXCEPTION 'the row must be a JSON object of column values, got a JSON %', jsonb_typeof(input)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'e.g. to_jsonb(t) of a table row, or ''{"title": "..."}''.';
    END IF;
    FOR col IN SELECT value FROM jsonb_array_elements(layout) LOOP
        v := input -> (col ->> 'name');
        width := coalesce((col ->> 'width')::integer, 1);
        CASE col ->> 'kind'
        WHEN 'text' THEN
            features := features || ml_stack._text_features(col -> 'transformer', width,
                                                            CASE jsonb_typeof(v) WHEN 'null' THEN NULL WHEN 'string' THEN v #>> '{}' ELSE v::text END);
        WHEN 'category' THEN
            -- as text, the way training read the column (char(n): without its padding, as ::text drops it)
            features := features || ml_stack._category_features(col -> 'encoding',
                                                                CASE jsonb_typeof(v) WHEN 'null' THEN NULL
                                                                     WHEN 'string' THEN CASE WHEN col ->> 'type' = 'character'
                                                                                             THEN (v #>> '{}')::bpchar::text ELSE v #>> '{}' END
                                                                     ELSE v::text END);
        WHEN 'temporal' THEN
            features := features || ml_stack._json_time_feature(v, col ->> 'name', col ->> 'type');
        WHEN 'array' THEN
            IF jsonb_typeof(v) = 'array' AND jsonb_path_exists(v, 'strict $[*] ? (@.type() == "array")') THEN
                -- an array of several dimensions (to_jsonb nests them): its elements in row-major order
                v := coalesce((SELECT jsonb_agg(e.value ORDER BY e.ordinality)
                               FROM jsonb_path_query(v, 'strict $.** ? (@.type() != "array")') WITH ORDINALITY AS e(value, ordinality)), '[]');
            END IF;
            IF v IS NULL OR jsonb_typeof(v) = 'null' THEN
                features := features || array_fill(NULL::float8, ARRAY[width]);
            ELSIF jsonb_typeof(v) <> 'array' OR jsonb_array_length(v) <> width THEN
                RAISE EXCEPTION 'column "%" needs an array of % numbers, got %', col ->> 'name', width, left(v::text, 100)
                    USING ERRCODE = 'invalid_parameter_value', HINT = 'Array features have the length they had at training.';
            ELSE
                features := features || ARRAY(SELECT ml_stack._json_feature(e.value, col ->> 'name')
                                              FROM jsonb_array_elements(v) WITH ORDINALITY AS e ORDER BY e.ordinality);
            END IF;
        ELSE
            features := features || ml_stack._json_feature(v, col ->> 'name');
        END CASE;
    END LOOP;
    RETURN features;
END
$$;

-- The deployed model of a project and its column layout.
CREATE OR REPLACE FUNCTION ml_stack._deployed_layout(project_name text, OUT model_id bigint, OUT layout jsonb)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    SELECT d.model_id, ml_stack._model_layout(d.model_id) INTO model_id, layout
    FROM ml_stack.deployed_models AS d
    WHERE d.project_name = _deployed_layout.project_name;
    IF NOT FOUND THEN
        PERFORM ml_stack._no_deployed_model(project_name, NULL::float8[]);
    ELSIF layout IS NULL THEN
        RAISE EXCEPTION 'model % of project "%" does not know its columns (it was imported without feature names)', model_id, project_name
            USING ERRCODE = 'feature_not_supported', HINT = 'Use ml_stack.predict(project_name, ARRAY[...]) with the features in order.';
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION ml_stack.predict_row(project_name text, "row" jsonb)
RETURNS float8
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    deployed record := ml_stack._deployed_layout(project_name);
BEGIN
    RETURN ml_stack.predict(deployed.model_id, ml_stack._row_features(deployed.layout, "row"));
END
$$;
COMMENT ON FUNCTION ml_stack.predict_row(text, jsonb) IS
    'ml_stack: prediction of the project''s deployed model for a row given by column names (to_jsonb(t) works; extra keys are ignored); text columns go through the model''s own transformer.';

-- A model of the registry, deployed or not, by id (PostgresML's predict(model_id, row)).
CREATE OR REPLACE FUNCTION ml_stack.predict_row(model_id bigint, "row" jsonb)
RETURNS float8
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    layout jsonb := ml_stack._model_layout(model_id);
BEGIN
    IF layout IS NULL THEN
        IF NOT EXISTS (SELECT FROM ml_stack.models AS m WHERE m.id = predict_row.model_id) THEN
            RAISE EXCEPTION 'model % does not exist', model_id
                USING ERRCODE = 'no_data_found', HINT = 'SELECT id, project_id, algorithm FROM ml_stack.models lists the models.';
        END IF;
        RAISE EXCEPTION 'model % does not know its columns (it was imported without feature names)', model_id
            USING ERRCODE = 'feature_not_supported', HINT = 'Use ml_stack.predict(model_id, ARRAY[...]) with the features in order.';
    END IF;
    RETURN ml_stack.predict(model_id, ml_stack._row_features(layout, "row"));
END
$$;
COMMENT ON FUNCTION ml_stack.predict_row(bigint, jsonb) IS
    'ml_stack: prediction of one model of the registry, deployed or not, for a row given by column names.';

CREATE OR REPLACE FUNCTION ml_stack.predict_proba_row(project_name text, "row" jsonb)
RETURNS float8[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    deployed record := ml_stack._deployed_layout(project_name);
BEGIN
    RETURN ml_stack.predict_proba(deployed.model_id, ml_stack._row_features(deployed.layout, "row"));
END
$$;
COMMENT ON FUNCTION ml_stack.predict_proba_row(text, jsonb) IS
    'ml_stack: class probabilities (classes ascending) of the project''s deployed classifier for a row given by column names.';

-- source: sql/serving/labels.sql
-- Classes by name (0.5.0): a classifier trained on a text, enum or boolean label predicts the
-- class's position among its sorted classes (predict, from 0) or the class itself
-- (predict_label); predict_proba's probabilities follow the order of class_labels.

-- The classes of the model a name serves (a project's deployed model, or '<project>@<alias>'),
-- as text, in predict_proba's order; for models trained before 0.5.0, the class numbers.
-- SECURITY DEFINER: row security hides a confidential project's models from its predictors.
CREATE OR REPLACE FUNCTION ml_stack._served_class_labels(project_name text, OUT model_id bigint, OUT classes float8[],
                                                         OUT labels text[])
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    task text;
BEGIN
    SELECT d.model_id INTO model_id FROM ml_stack.deployed_models AS d WHERE d.project_name = _served_class_labels.project_name;
    IF NOT FOUND THEN
        SELECT a.model_id INTO model_id FROM ml_stack.model_aliases AS a JOIN ml_stack.projects AS p ON p.id = a.project_id
        WHERE p.name || '@' || a.alias = _served_class_labels.project_name;
    END IF;
    IF model_id IS NULL THEN
        PERFORM ml_stack._no_deployed_model(project_name, NULL::float8[]);
    END IF;
    SELECT m.task, m.classes, CASE WHEN jsonb_typeof(s.label -> 'class_labels') = 'array'
                                   THEN ARRAY(SELECT jsonb_array_elements_text(s.label -> 'class_labels'))
                                   ELSE m.classes::text[] END
    INTO task, classes, labels
    FROM ml_stack.models AS m LEFT JOIN ml_stack.snapshots AS s ON s.id = m.snapshot_id
    WHERE m.id = _served_class_labels.model_id;
    IF task <> 'classification' THEN
        RAISE EXCEPTION 'project "%" is a % project: it has no classes', project_name, task
            USING ERRCODE = 'wrong_object_type', HINT = 'Use ml_stack.predict() for a regression.';
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION ml_stack.class_labels(project_name text)
RETURNS text[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT c.labels FROM ml_stack._served_class_labels(project_name) AS c $$;
COMMENT ON FUNCTION ml_stack.class_labels(text) IS
    'ml_stack: the classes of the project''s deployed classifier, as text, in the order of predict_proba''s probabilities.';

-- The class a prediction names (predict() gives the class's number for a numeric label, its
-- position from 0 for a label by name).
CREATE OR REPLACE FUNCTION ml_stack._class_label(project_name text, prediction float8)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT c.labels[array_position(c.classes, prediction)] FROM ml_stack._served_class_labels(project_name) AS c
$$;

CREATE OR REPLACE FUNCTION ml_stack.predict_label(project_name text, features float8[])
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT ml_stack._class_label(project_name, ml_stack.predict(project_name, features)) $$;
COMMENT ON FUNCTION ml_stack.predict_label(text, float8[]) IS
    'ml_stack: the class the project''s deployed classifier predicts, as trained (the text of a text or enum label, ''true''/''false'' for a boolean one).';

CREATE OR REPLACE FUNCTION ml_stack.predict_label_row(project_name text, "row" jsonb)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT ml_stack._class_label(project_name, ml_stack.predict_row(project_name, "row")) $$;
COMMENT ON FUNCTION ml_stack.predict_label_row(text, jsonb) IS
    'ml_stack: the class the project''s deployed classifier predicts for a row given by column names, as trained.';

-- source: sql/registry/deploy.sql
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

-- source: sql/registry/manage.sql
-- Model management (0.5.0): dropping a model or a project with everything serving made of
-- it, MLflow-style aliases (predict('<project>@<alias>', ...)) and tags. Deleting from the
-- registry is ml_stack_admin's (api/grants.sql); these run with the caller's rights.

CREATE OR REPLACE FUNCTION ml_stack.drop_model(model_id bigint, force boolean DEFAULT false)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    m record;
BEGIN
    SELECT mo.id, mo.project_id, p.name AS project INTO m
    FROM ml_stack.models AS mo JOIN ml_stack.projects AS p ON p.id = mo.project_id
    WHERE mo.id = drop_model.model_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'model % does not exist', model_id
            USING ERRCODE = 'PT404', HINT = 'SELECT id, algorithm FROM ml_stack.models lists the models.';
    END IF;
    PERFORM FROM ml_stack.projects AS p WHERE p.id = m.project_id FOR UPDATE;   -- no deployment meanwhile
    IF EXISTS (SELECT FROM ml_stack.deployed_models AS d WHERE d.project_id = m.project_id AND d.model_id = m.id)
       AND NOT coalesce(force, false) THEN
        RAISE EXCEPTION 'model % is the deployed model of project "%"', m.id, m.project
            USING ERRCODE = 'object_in_use',
                  HINT = 'Deploy another model first (ml_stack.deploy), or drop_model(id, force => true): the project then serves nothing until its next deployment.';
    END IF;
    DELETE FROM ml_stack.models AS mo WHERE mo.id = m.id;
    RETURN true;
END
$$;
COMMENT ON FUNCTION ml_stack.drop_model(bigint, boolean) IS
    'ml_stack: delete a model and its compiled functions; refuses the deployed model unless force (the project then serves nothing until its next deployment; the history keeps the deployment, its model_id NULL).';

CREATE OR REPLACE FUNCTION ml_stack.drop_project(project_name text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM ml_stack.projects AS p WHERE p.name = drop_project.project_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'project "%" does not exist', project_name
            USING ERRCODE = 'PT404', HINT = 'SELECT name FROM ml_stack.projects lists the projects.';
    END IF;
    RETURN true;
END
$$;
COMMENT ON FUNCTION ml_stack.drop_project(text) IS
    'ml_stack: delete a project with its models, snapshots, deployments, aliases, run history, serving functions and HTTP endpoints.';

CREATE OR REPLACE FUNCTION ml_stack.set_alias(project_name text, alias text, model_id bigint)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    proj bigint;
BEGIN
    SELECT p.id INTO proj FROM ml_stack.projects AS p WHERE p.name = set_alias.project_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'project "%" does not exist', project_name
            USING ERRCODE = 'PT404', HINT = 'SELECT name FROM ml_stack.projects lists the projects.';
    ELSIF alias IS NULL OR alias !~ '^[A-Za-z_][A-Za-z0-9_-]*$' THEN
        RAISE EXCEPTION 'alias % is not a valid alias', coalesce(quote_literal(alias), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'An alias is a letter or "_" then letters, digits, "_" or "-", e.g. ''champion''.';
    ELSIF NOT EXISTS (SELECT FROM ml_stack.models AS m WHERE m.id = set_alias.model_id AND m.project_id = proj) THEN
        RAISE EXCEPTION 'model % is not a model of project "%"', model_id, project_name
            USING ERRCODE = 'PT404', HINT = format('SELECT id, algorithm FROM ml_stack.models WHERE project_id = %s lists them.', proj);
    ELSIF EXISTS (SELECT FROM ml_stack.projects AS p WHERE p.name = project_name || '@' || alias) THEN
        RAISE EXCEPTION 'a project is named "%@%"', project_name, alias
            USING ERRCODE = 'duplicate_object', HINT = 'predict(''<project>@<alias>'', ...) would be ambiguous: choose another alias.';
    END IF;
    INSERT INTO ml_stack.model_aliases AS a (project_id, alias, model_id) VALUES (proj, alias, model_id)
    ON CONFLICT ON CONSTRAINT model_aliases_pkey DO UPDATE SET model_id = EXCLUDED.model_id, created_at = now();
    RETURN model_id;
END
$$;
COMMENT ON FUNCTION ml_stack.set_alias(text, text, bigint) IS
    'ml_stack: point an alias of the project (e.g. ''champion'') at one of its models; predict(''<project>@<alias>'', ...) serves it.';

CREATE OR REPLACE FUNCTION ml_stack.delete_alias(project_name text, alias text)
RETURNS boolean
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH gone AS (
        DELETE FROM ml_stack.model_aliases AS a USING ml_stack.projects AS p
        WHERE p.id = a.project_id AND p.name = delete_alias.project_name AND a.alias = delete_alias.alias
        RETURNING 1
    ) SELECT EXISTS (SELECT FROM gone)
$$;
COMMENT ON FUNCTION ml_stack.delete_alias(text, text) IS
    'ml_stack: remove an alias (true if it existed).';

CREATE OR REPLACE FUNCTION ml_stack.set_tag(model_id bigint, key text, value text)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM ml_stack.models AS m WHERE m.id = set_tag.model_id) THEN
        RAISE EXCEPTION 'model % does not exist', model_id
            USING ERRCODE = 'PT404', HINT = 'SELECT id, algorithm FROM ml_stack.models lists the models.';
    ELSIF key IS NULL OR key = '' THEN
        RAISE EXCEPTION 'a tag needs a key' USING ERRCODE = 'invalid_parameter_value', HINT = 'e.g. set_tag(3, ''owner'', ''ada'').';
    ELSIF value IS NULL THEN
        DELETE FROM ml_stack.model_tags AS t WHERE t.model_id = set_tag.model_id AND t.key = set_tag.key;
    ELSE
        INSERT INTO ml_stack.model_tags AS t (model_id, key, value) VALUES (model_id, key, value)
        ON CONFLICT ON CONSTRAINT model_tags_pkey DO UPDATE SET value = EXCLUDED.value;
    END IF;
    RETURN (SELECT coalesce(jsonb_object_agg(t.key, t.value), '{}') FROM ml_stack.model_tags AS t
            WHERE t.model_id = set_tag.model_id);
END
$$;
COMMENT ON FUNCTION ml_stack.set_tag(bigint, text, text) IS
    'ml_stack: set a tag of a model (a NULL value removes it); returns the model''s tags as a JSON object.';

-- source: sql/training/compare.sql
-- Automatic deploy decides on the same rows (0.5.0): before a retrained model replaces the
-- deployed one, the deployed model is scored on the new model's test rows (after a drift,
-- its score on its own, older test rows says nothing of today's data).

-- Metrics of a model on the test rows of the split in pg_temp._ml_stack_rows (its feature
-- columns must be those of the dataset: serving arguments compared by the caller), as
-- {"metrics": {...}, "rows": n}; {"no_prediction": k, "rows": n} when it gives NULL for k
-- rows (NULL features it has no impute rule for); {"skipped": why} when it cannot be scored.
CREATE OR REPLACE FUNCTION ml_stack._score_on_split(model_id bigint, task text, dataset jsonb)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
DECLARE
    old_layout jsonb := ml_stack._model_layout(model_id);
    new_layout jsonb := dataset -> 'columns';
    parts text[] := '{}';
    xi integer := 0;
    ti integer := 0;
    gi integer := 0;
    col jsonb;
    old jsonb;
    w integer;
    classes float8[];
    scoring text;
    missing bigint;
    total bigint;
    problem text;
    art jsonb;
    attempts integer := 2;
    x_positions integer[] := '{}';
    blocks jsonb := '[]';
BEGIN
    IF old_layout IS NULL OR jsonb_array_length(old_layout) <> jsonb_array_length(new_layout) THEN
        RETURN jsonb_build_object('skipped', 'its feature columns are not known');
    END IF;
    -- its feature array from the split's raw features x (in table order) and texts t, the texts
    -- vectorized by its own transformers
    FOR k IN 0 .. jsonb_array_length(new_layout) - 1 LOOP
        col := new_layout -> k;
        old := old_layout -> k;
        w := coalesce((col ->> 'width')::integer, 1);
        IF col ->> 'name' <> old ->> 'name' OR (col ->> 'kind' IN ('text', 'category', 'temporal') OR old ->> 'kind' IN ('text', 'category', 'temporal'))
                                                 AND col ->> 'kind' IS DISTINCT FROM old ->> 'kind'
           OR (col ->> 'kind' NOT IN ('text', 'category') AND w <> coalesce((old ->> 'width')::integer, 1)) THEN
            RETURN jsonb_build_object('skipped', format('column "%s" differs', col ->> 'name'));
        END IF;
        IF col ->> 'kind' = 'category' THEN
            -- its own encoding of the split's categories (which may have other categories now)
            gi := gi + 1;
            parts := parts || ml_stack._category_features_sql(old -> 'encoding', format('g%s', gi));
            xi := xi + w;
        ELSIF col ->> 'kind' = 'text' THEN
            ti := ti + 1;
            blocks := blocks || jsonb_build_array(jsonb_build_object('t', ti, 'spec', old -> 'transformer',
                                                                     'offset', (old ->> 'offset')::integer));
            parts := parts || format('ml_stack._text_features(%L::pg_catalog.jsonb, %s, t%s)', old -> 'transformer',
                                     (old ->> 'width')::integer, ti);
        ELSE
            parts := parts || format('ARRAY[%s]', (SELECT string_agg(format('x%s', xi + j), ', ' ORDER BY j)
                                                   FROM generate_series(1, w) AS j));
            x_positions := x_positions || ARRAY(SELECT (old ->> 'offset')::integer + j FROM generate_series(1, w) AS j);
            xi := xi + w;
        END IF;
    END LOOP;
    SELECT m.classes INTO classes FROM ml_stack.models AS m WHERE m.id = _score_on_split.model_id;
    IF (SELECT s.label -> 'class_labels' FROM ml_stack.models AS m JOIN ml_stack.snapshots AS s ON s.id = m.snapshot_id
        WHERE m.id = _score_on_split.model_id) IS DISTINCT FROM dataset -> 'label' -> 'class_labels'
       AND jsonb_typeof(dataset -> 'label' -> 'class_labels') = 'array' AND dataset -> 'label' ->> 'type' NOT IN
           ('smallint', 'integer', 'bigint', 'real', 'double precision', 'numeric', 'boolean') THEN
        RETURN jsonb_build_object('skipped', 'its classes differ');
    END IF;
    IF to_regclass('pg_temp._ml_stack_deployed_predictions') IS NOT NULL THEN
        DROP TABLE pg_temp._ml_stack_deployed_predictions;
    END IF;
    art := (SELECT m.artifact FROM ml_stack.models AS m WHERE m.id = _score_on_split.model_id);
    IF task = 'classification' AND art ->> 'format' = 'linear' AND art ->> 'link' IN ('logistic', 'softmax')
       AND NOT art ? 'confidential_model' AND ti > 0 AND gi = 0
       AND (SELECT bool_and(c ? 'offset') FROM jsonb_array_elements(old_layout) AS c)
       -- SQL transformers only: a model transformer's vectors (MiniLM) have no sparse form
       AND NOT EXISTS (SELECT FROM jsonb_array_elements(blocks) AS b WHERE b -> 'spec' ->> 'kind' NOT IN ('hashing', 'counts', 'tfidf')) THEN
        -- a linear classifier of text (naive Bayes, logistic regression) scores the split's texts
        -- sparsely, as its training scored its own test rows: row by row, its dense feature vector
        -- (a vocabulary of 11k terms) cost 2 ms a row, 34 s for the 7k test rows of 29k texts
        PERFORM ml_stack._predict_test_rows_sparse(dataset || jsonb_build_object(
                    'classes', to_jsonb(classes),
                    'num_features', jsonb_array_length(art -> 'coefficients' -> 0),
                    'x_positions', to_jsonb(x_positions),
                    'transform', (SELECT coalesce(jsonb_agg(jsonb_build_object('impute', art -> 'impute' -> (xp.pos - 1)) ORDER BY xp.i), '[]')
                                  FROM unnest(x_positions) WITH ORDINALITY AS xp(pos, i)),
                    'blocks', blocks),
                ARRAY(SELECT e.coefficient::float8 FROM jsonb_array_elements(art -> 'coefficients') WITH ORDINALITY AS c(v, k),
                                 jsonb_array_elements_text(c.v) WITH ORDINALITY AS e(coefficient, j) ORDER BY c.k, e.j),
                ARRAY(SELECT t.intercept::float8 FROM jsonb_array_elements_text(art -> 'intercepts') WITH ORDINALITY AS t(intercept, i) ORDER BY t.i),
                '_ml_stack_deployed_predictions');
        attempts := 0;
    END IF;
    -- with probabilities when it has them (a classifier without them fails on the first row: then without)
    FOR attempt IN 1 .. attempts LOOP
        scoring := format('CREATE TEMPORARY TABLE _ml_stack_deployed_predictions ON COMMIT DROP AS '
                          'SELECT r, ml_stack.predict(%1$s::bigint, f) AS yhat, %2$s AS proba '
                          'FROM (SELECT r, %3$s AS f FROM pg_temp._ml_stack_rows WHERE %4$s OFFSET 0) AS s',
                          model_id,
                          CASE WHEN task = 'classification' AND attempt = 1
                               THEN format('ml_stack.predict_proba(%s::bigint, f)', model_id) ELSE 'NULL::float8[]' END,
                          array_to_string(parts, ' OPERATOR(pg_catalog.||) '), dataset ->> 'test_filter');
        BEGIN
            EXECUTE scoring;
            problem := NULL;
            EXIT;
        EXCEPTION WHEN query_canceled THEN
            RAISE;
        WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS problem = MESSAGE_TEXT;
        END;
    END LOOP;
    IF problem IS NOT NULL THEN
        RETURN jsonb_build_object('skipped', left(problem, 300));
    END IF;
    SELECT count(*) FILTER (WHERE p.yhat IS NULL), count(*) INTO missing, total FROM pg_temp._ml_stack_deployed_predictions AS p;
    IF missing > 0 THEN
        RETURN jsonb_build_object('no_prediction', missing, 'rows', total);
    END IF;
    RETURN jsonb_build_object('metrics', ml_stack._test_metrics(task, NULL, classes,
                                                                 dataset || '{"engine_predictions": true, "predictions": "deployed"}'),
                              'rows', total);
END
$$;

-- How a decision on the deployed model's own test rows explains itself.
CREATE OR REPLACE FUNCTION ml_stack._own_rows_note(comparison jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN comparison ? 'skipped' THEN format(' on its own test rows (not scored on this split: %s)', comparison ->> 'skipped')
                ELSE ' on its own test rows' END
$$;

-- source: sql/training/train.sql
-- Algorithm names known to ml_stack (PostgresML's), to tell a typo from an
-- algorithm whose engine is not installed.
CREATE OR REPLACE FUNCTION ml_stack._known_algorithms()
RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT ARRAY['linear', 'ridge', 'naive_bayes', 'lasso', 'elastic_net', 'xgboost', 'random_forest', 'extra_trees',
                 'gradient_boosting_trees', 'hist_gradient_boosting', 'ada_boost', 'svm', 'knn']
$$;

-- The engine that fits `algorithm` for `task`: the requested one, or 'sql' when it
-- has the algorithm, else 'python'. Errors name what to install or use instead.
CREATE OR REPLACE FUNCTION ml_stack._choose_engine(task text, algorithm text, engine text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    python_installed boolean := to_regprocedure('ml_stack._python_fit(text, text, jsonb, jsonb)') IS NOT NULL;
BEGIN
    IF algorithm IS NULL OR NOT algorithm = ANY (ml_stack._known_algorithms()) THEN
        RAISE EXCEPTION 'unknown algorithm "%"', algorithm
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Known algorithms: %s.', array_to_string(ml_stack._known_algorithms(), ', '));
    END IF;
    IF engine IS NOT NULL AND engine NOT IN ('sql', 'python') THEN
        RAISE EXCEPTION 'unknown engine "%"', engine
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Use ''sql'', ''python'', or NULL to choose by algorithm.';
    END IF;
    IF coalesce(engine, 'sql') = 'sql' AND ml_stack._sql_engine_hyperparams(task, algorithm) IS NOT NULL THEN
        RETURN 'sql';
    END IF;
    IF engine = 'sql' THEN
        RAISE EXCEPTION 'the sql engine has no % algorithm for %', algorithm, task
            USING ERRCODE = 'feature_not_supported',
                  HINT = CASE WHEN task = 'classification' AND algorithm = 'ridge'
                              THEN 'For classification the sql engine has ''linear'' (logistic regression) and ''naive_bayes''.'
                              ELSE 'The sql engine has ''linear'' (regression, classification), ''ridge'' (regression) and ''naive_bayes'' (classification).' END;
    END IF;
    IF NOT python_installed THEN
        RAISE EXCEPTION 'algorithm % for % needs the python engine, which is not installed', algorithm, task
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'CREATE EXTENSION ml_stack_python CASCADE (needs PL/Python, scikit-learn and xgboost), or use algorithm ''linear''.';
    END IF;
    RETURN 'python';
END
$$;

CREATE OR REPLACE FUNCTION ml_stack._train_unguarded(
    project_name text, task text, relation_name text, y_column_name text, algorithm text,
    hyperparams jsonb, search text, search_params jsonb, search_args jsonb, test_size real,
    test_sampling text, preprocess jsonb, automatic_deploy boolean, engine text, exclude text[], caller_search_path text,
    OUT trained_model_id bigint, OUT was_deployed boolean, OUT project_task text, OUT model_algorithm text, OUT model_engine text,
    OUT model_metrics jsonb)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    proj      ml_stack.projects;
    rel       regclass;
    chosen_engine text;
    seed      bigint;
    dataset   jsonb;
    artifact  jsonb;
    fitted    jsonb;
    search_result jsonb;
    classes   float8[];
    metrics   jsonb;
    t0        timestamptz;
    fit_time  float8;
    snap_id   bigint;
    key       text;
    current_score float8;
    current_model bigint;
    decision  text;
    new_columns text;
    old_columns text;
    new_score float8;
    comparison jsonb;
    same_rows boolean;
    new_rows text;
    old_rows text;
    previous  record;
BEGIN
    IF project_name IS NULL OR btrim(project_name) = '' THEN
        RAISE EXCEPTION 'project_name is required' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Name the project, e.g. ml_stack.train(''house_prices'', ''regression'', ''houses'', ''price'').';
    END IF;
    -- concurrent trains of one project queue here (a new project's name included)
    PERFORM pg_advisory_xact_lock(hashtext('ml_stack.project:' || project_name));
    SELECT p.* INTO proj FROM ml_stack.projects AS p WHERE p.name = project_name;
    IF FOUND THEN
        IF task IS NOT NULL AND task <> proj.task THEN
            RAISE EXCEPTION 'project "%" is a % project; it cannot be trained for %', project_name, proj.task, task
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Leave task out to keep the project''s task, or train under a new project name.';
        END IF;
        task := proj.task;
        -- a retrain by name (no relation given) without preprocess rules keeps those of the model it
        -- may replace (the deployed one, else the last one), as a scheduled retrain does, and
        -- (exclude NULL) the columns it left out
        SELECT m.preprocess, s.exclude INTO previous
        FROM ml_stack.models AS m JOIN ml_stack.snapshots AS s ON s.id = m.snapshot_id
        WHERE m.project_id = proj.id
        ORDER BY m.id = (SELECT d.model_id FROM ml_stack.deployed_models AS d WHERE d.project_id = proj.id) DESC NULLS LAST, m.id DESC
        LIMIT 1;
        IF FOUND THEN
            IF relation_name IS NULL AND coalesce(preprocess, '{}') = '{}' THEN
                preprocess := previous.preprocess;
            END IF;
            IF relation_name IS NULL THEN
                exclude := coalesce(exclude, previous.exclude);
            END IF;
        END IF;
        relation_name := coalesce(relation_name, proj.relation_name);
        y_column_name := coalesce(y_column_name, proj.y_column_name);
        IF relation_name IS NULL OR y_column_name IS NULL THEN
            RAISE EXCEPTION 'project "%" has no training relation (it was imported)', project_name
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Pass relation_name and y_column_name.';
        END IF;
        seed := proj.split_seed;
    ELSE
        IF task IS NULL OR relation_name IS NULL OR y_column_name IS NULL THEN
            RAISE EXCEPTION 'project "%" does not exist yet: task, relation_name and y_column_name are required', project_name
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = format('e.g. ml_stack.train(%L, ''regression'', ''my_table'', ''my_label'')', project_name);
        END IF;
        seed := (random() * 2147483647)::bigint;
    END IF;
    IF task NOT IN ('regression', 'classification') THEN
        RAISE EXCEPTION 'unknown task "%"', task
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Use ''regression'' or ''classification''.';
    END IF;
    algorithm := coalesce(algorithm, 'linear');
    IF search IS NOT NULL AND engine IS NULL
       AND to_regprocedure('ml_stack._python_fit(text, text, jsonb, jsonb)') IS NOT NULL THEN
        engine := 'python';  -- only the python engine searches
    END IF;
    chosen_engine := ml_stack._choose_engine(task, algorithm, engine);
    IF hyperparams IS NULL OR jsonb_typeof(hyperparams) <> 'object' THEN
        RAISE EXCEPTION 'hyperparams must be a JSON object' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'e.g. hyperparams => ''{"alpha": 0.5}''';
    END IF;
    IF search IS NULL AND (coalesce(search_params, '{}') <> '{}' OR coalesce(search_args, '{}') <> '{}') THEN
        RAISE EXCEPTION 'search_params or search_args given without a search'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Add search => ''grid'' or search => ''random'', or pass the values in hyperparams.';
    END IF;
    IF search IS NOT NULL AND chosen_engine = 'sql' THEN
        RAISE EXCEPTION 'hyperparameter search needs the python engine'
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'CREATE EXTENSION ml_stack_python CASCADE, then train with engine => ''python''.';
    END IF;
    PERFORM ml_stack._check_test_sampling(test_sampling);

    rel := ml_stack._resolve_relation(relation_name, caller_search_path);
    -- categories without an encode rule: one-hot for models of weighted sums, the label's mean
    -- per category for trees (as PostgresML's default for text); unpenalized least squares
    -- leaves out each column's first category (its coefficients would not be unique)
    dataset := ml_stack._prepare_dataset(rel, y_column_name, task, test_size, test_sampling, seed,
                                         coalesce(preprocess, '{}'), project_name, exclude,
                                         jsonb_build_object(
                                             'encode', CASE WHEN algorithm IN ('linear', 'ridge', 'lasso', 'elastic_net', 'svm', 'knn', 'naive_bayes')
                                                            THEN 'one_hot' ELSE 'target' END,
                                             'drop', CASE WHEN algorithm = 'linear' AND task = 'regression' THEN 'first' ELSE 'none' END));
    -- the python engine reads vectorized text itself (as dense features); of the sql engine's, naive_bayes does
    IF jsonb_array_length(dataset -> 'blocks') > 0 AND chosen_engine = 'sql' AND algorithm <> 'naive_bayes'
       AND NOT (algorithm = 'linear' AND task = 'classification') THEN  -- logistic: the sparse solver
        RAISE EXCEPTION 'the sql engine''s % cannot train on vectorized text', algorithm
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Use algorithm => ''naive_bayes'', or the python engine (e.g. algorithm => ''xgboost''), or store the vectors '
                         'in a real[] column (ml_stack.embed(''hashing'', title, ''{"dims": 256}'')) and train on it.';
    END IF;
    IF jsonb_typeof(dataset -> 'classes') = 'array' THEN
        classes := ARRAY(SELECT jsonb_array_elements_text(dataset -> 'classes')::float8);
    END IF;

    IF chosen_engine = 'sql' AND engine IS NULL AND ml_stack._sql_engine_too_large(task, algorithm, dataset) IS NOT NULL
       AND to_regprocedure('ml_stack._python_fit(text, text, jsonb, jsonb)') IS NOT NULL THEN
        RAISE NOTICE 'ml_stack: % is too large for the sql engine: the python engine trains it',
            ml_stack._sql_engine_too_large(task, algorithm, dataset);
        chosen_engine := 'python';
    END IF;
    t0 := clock_timestamp();
    IF chosen_engine = 'sql' THEN
        artifact := ml_stack._sql_fit(task, algorithm, hyperparams, dataset);
        IF algorithm = 'naive_bayes' OR (algorithm = 'linear' AND task = 'classification'
                                         AND ml_stack._sparse_logistic_wanted(dataset)) THEN
            dataset := dataset || '{"engine_predictions": true}';  -- it scores the test rows sparsely itself
        END IF;
    ELSE
        -- ml_stack_python (docs/python-engine.md): it also predicts the test rows with the
        -- library into pg_temp._ml_stack_predictions, and returns the hyperparameters it
        -- fitted with (the search's choice included) and the search's candidates
        EXECUTE 'SELECT ml_stack._python_fit($1, $2, $3, $4)' INTO fitted
            USING task, algorithm, hyperparams, dataset || jsonb_build_object(
                'search', search, 'search_params', coalesce(search_params, '{}'), 'search_args', coalesce(search_args, '{}'));
        artifact := fitted -> 'artifact';
        hyperparams := coalesce(fitted -> 'hyperparams', hyperparams);
        search_result := fitted -> 'search';
        dataset := dataset || '{"engine_predictions": true}';
    END IF;
    fit_time := extract(epoch FROM clock_timestamp() - t0);
    t0 := clock_timestamp();
    metrics := ml_stack._test_metrics(task, artifact, classes, dataset);
    metrics := metrics || jsonb_build_object('fit_time', fit_time, 'score_time', extract(epoch FROM clock_timestamp() - t0));
    -- the deployed model, scored on the same test rows (training/compare.sql), when the new one
    -- could replace it automatically
    key := ml_stack._key_metric(task);
    SELECT (d.metrics ->> key)::float8, d.model_id INTO current_score, current_model
    FROM ml_stack.deployed_models AS d WHERE d.project_id = proj.id;
    new_columns := ml_stack._serving_arguments(dataset -> 'columns');
    old_columns := ml_stack._serving_arguments(ml_stack._model_layout(current_model));
    IF current_model IS NOT NULL AND coalesce(automatic_deploy, true) AND new_columns IS NOT DISTINCT FROM old_columns THEN
        comparison := ml_stack._score_on_split(current_model, task, dataset);
    END IF;
    -- done with the data: free it now, not at the end of the transaction
    DROP TABLE pg_temp._ml_stack_rows;
    IF to_regclass('pg_temp._ml_stack_deployed_predictions') IS NOT NULL THEN
        DROP TABLE pg_temp._ml_stack_deployed_predictions;
    END IF;
    IF to_regclass('pg_temp._ml_stack_predictions') IS NOT NULL THEN  -- (IF EXISTS would print a NOTICE)
        DROP TABLE pg_temp._ml_stack_predictions;
    END IF;

    -- everything checked and fitted: now write the registry
    IF proj.id IS NULL THEN
        INSERT INTO ml_stack.projects (name, task, relation_name, y_column_name, split_seed)
        VALUES (project_name, task, relation_name, y_column_name, seed)
        RETURNING * INTO proj;
    ELSIF proj.relation_name IS DISTINCT FROM relation_name OR proj.y_column_name IS DISTINCT FROM y_column_name THEN
        UPDATE ml_stack.projects AS p SET relation_name = relation_name, y_column_name = y_column_name
        WHERE p.id = proj.id;
    END IF;
    INSERT INTO ml_stack.snapshots (project_id, relation_name, y_column_name, features, label, rows, skipped_rows,
                                    train_rows, test_rows, test_size, test_sampling, seed, columns, exclude)
    VALUES (proj.id, rel::text, y_column_name, dataset -> 'features', dataset -> 'label' || jsonb_build_object('classes', to_jsonb(classes)),
            (dataset ->> 'n')::bigint, (dataset ->> 'skipped')::bigint, (dataset ->> 'train_rows')::bigint,
            (dataset ->> 'test_rows')::bigint, test_size, test_sampling, seed, dataset -> 'columns', exclude)
    RETURNING id INTO snap_id;
    -- automatic deploy: only a model that beats the deployed one on the key metric, on the same
    -- test rows when the deployed model can be scored on them, and over the same feature columns
    -- (others would change the serving function's signature, which views, prepared statements and
    -- HTTP endpoints use: that takes a deploy() by hand)
    new_score := (metrics ->> key)::float8;
    same_rows := comparison ? 'metrics';
    IF same_rows THEN
        current_score := (comparison -> 'metrics' ->> key)::float8;
    END IF;
    -- where each score was measured, for the decision's text
    new_rows := CASE WHEN same_rows THEN ' on this split' ELSE '' END;
    old_rows := CASE WHEN same_rows THEN ' on this split' ELSE ml_stack._own_rows_note(comparison) END;
    decision := CASE
        WHEN NOT coalesce(automatic_deploy, true) THEN 'not deployed: automatic_deploy => false'
        WHEN current_model IS NULL THEN 'deployed: the project''s first deployment'
        WHEN old_columns IS NOT NULL AND new_columns IS DISTINCT FROM old_columns THEN
            format('not deployed: its feature columns (%s) differ from those of the deployed model %s (%s); '
                   'ml_stack.deploy(<its id>) deploys it and changes the serving function', left(new_columns, 500), current_model,
                   left(old_columns, 500))
        WHEN comparison ? 'no_prediction' THEN
            format('deployed: the deployed model %s gives no prediction for %s of the %s rows of this split '
                   '(NULL features it has no impute rule for)', current_model, comparison ->> 'no_prediction', comparison ->> 'rows')
        WHEN new_score > current_score OR (current_score IS NULL AND new_score IS NOT NULL) THEN
            format('deployed: %s %s%s > %s of the deployed model %s%s', key, round(new_score::numeric, 6), new_rows,
                   coalesce(round(current_score::numeric, 6)::text, 'none'), current_model, old_rows)
        ELSE format('not deployed: %s %s%s <= %s of the deployed model %s%s', key,
                    coalesce(round(new_score::numeric, 6)::text, 'none'), new_rows,
                    round(current_score::numeric, 6), current_model, old_rows) END;
    was_deployed := decision LIKE 'deployed:%';
    INSERT INTO ml_stack.models (project_id, snapshot_id, algorithm, engine, task, hyperparams, preprocess,
                                 num_features, classes, artifact, metrics, search, deploy_decision)
    VALUES (proj.id, snap_id, algorithm, chosen_engine, task, hyperparams, coalesce(preprocess, '{}'),
            (dataset ->> 'num_features')::integer, classes, artifact, metrics, search_result, decision)
    RETURNING id INTO trained_model_id;

    IF was_deployed THEN
        INSERT INTO ml_stack.deployments (project_id, model_id, strategy) VALUES (proj.id, trained_model_id, 'automatic');
    END IF;
    PERFORM ml_stack._record_manual_run(proj.id, trained_model_id, was_deployed);  -- history (sql/scheduling)
    project_task := task; model_algorithm := algorithm; model_engine := chosen_engine; model_metrics := metrics;
    RAISE NOTICE 'ml_stack: model % (% %, % engine): % = %, %', trained_model_id, algorithm, task, chosen_engine, key,
        round(new_score::numeric, 6), CASE WHEN decision LIKE 'not deployed: its feature columns%'
                                           THEN 'not deployed: its feature columns differ from the deployed model''s'
                                           ELSE CASE WHEN was_deployed THEN 'deployed' ELSE 'not deployed' END END;
END
$$;

-- _train_unguarded, with its errors re-raised as they are (SQLSTATE, message, detail, hint) but without the
-- CONTEXT of where they happened: an error inside a generated statement carries the statement in its CONTEXT
-- (a 6.7k-character CREATE TABLE of the training read, once megabytes of compiled predictor). A cancel
-- (query_canceled, which OTHERS leaves out) is re-raised the same way.
CREATE OR REPLACE FUNCTION ml_stack._train(
    project_name text, task text, relation_name text, y_column_name text, algorithm text,
    hyperparams jsonb, search text, search_params jsonb, search_args jsonb, test_size real,
    test_sampling text, preprocess jsonb, automatic_deploy boolean, engine text, exclude text[], caller_search_path text,
    OUT trained_model_id bigint, OUT was_deployed boolean, OUT project_task text, OUT model_algorithm text, OUT model_engine text,
    OUT model_metrics jsonb)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    state text; message text; detail text; hint text;
BEGIN
    PERFORM ml_stack._refuse_on_standby('ml_stack.train');
    SELECT * INTO trained_model_id, was_deployed, project_task, model_algorithm, model_engine, model_metrics
    FROM ml_stack._train_unguarded(project_name, task, relation_name, y_column_name, algorithm, hyperparams, search,
                                   search_params, search_args, test_size, test_sampling, preprocess, automatic_deploy,
                                   engine, exclude, caller_search_path);
EXCEPTION WHEN OTHERS OR query_canceled THEN
    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, message = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL,
                            hint = PG_EXCEPTION_HINT;
    detail := nullif(detail, ''); hint := nullif(hint, '');
    IF detail IS NULL AND hint IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = state, MESSAGE = message;
    ELSIF detail IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = state, MESSAGE = message, HINT = hint;
    ELSIF hint IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = state, MESSAGE = message, DETAIL = detail;
    ELSE
        RAISE EXCEPTION USING ERRCODE = state, MESSAGE = message, DETAIL = detail, HINT = hint;
    END IF;
END
$$;

-- Public entry point. LANGUAGE sql because PL/pgSQL refuses parameters named like
-- result columns (DESIGN §6). No SET clause here on purpose: it captures the
-- caller's search_path so that relation_name resolves as the caller typed it;
-- everything it calls is schema-qualified and pinned.
-- What train() shows in psql: the metrics rounded to 4 decimals, so that its row stays narrow; the full
-- values stay in ml_stack.models.metrics (deploy decisions and the views read those).
CREATE OR REPLACE FUNCTION ml_stack._rounded_metrics(metrics jsonb)
RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(jsonb_object_agg(m.key, CASE WHEN jsonb_typeof(m.value) = 'number'
                                                 THEN to_jsonb(round((m.value #>> '{}')::numeric, 4)) ELSE m.value END), '{}')
    FROM jsonb_each(metrics) AS m
$$;

CREATE OR REPLACE FUNCTION ml_stack.train(
    project_name     text,
    task             text    DEFAULT NULL,
    relation_name    text    DEFAULT NULL,
    y_column_name    text    DEFAULT NULL,
    algorithm        text    DEFAULT 'linear',
    hyperparams      jsonb   DEFAULT '{}',
    search           text    DEFAULT NULL,
    search_params    jsonb   DEFAULT '{}',
    search_args      jsonb   DEFAULT '{}',
    test_size        real    DEFAULT 0.25,
    test_sampling    text    DEFAULT 'random',
    preprocess       jsonb   DEFAULT '{}',
    automatic_deploy boolean DEFAULT true,
    engine           text    DEFAULT NULL,
    exclude          text[]  DEFAULT NULL)      -- columns that are not features; NULL: a retrain by name leaves out those left out before
RETURNS TABLE (project text, task text, algorithm text, engine text, model_id bigint, deployed boolean, metrics jsonb)
LANGUAGE sql VOLATILE
AS $$
    -- the new rows are not visible to this statement's snapshot: _train returns what it wrote
    SELECT train.project_name, r.project_task, r.model_algorithm, r.model_engine,
           r.trained_model_id, r.was_deployed, ml_stack._rounded_metrics(r.model_metrics)
    FROM ml_stack._train(train.project_name, train.task, train.relation_name, train.y_column_name, train.algorithm,
                         train.hyperparams, train.search, train.search_params, train.search_args, train.test_size,
                         train.test_sampling, train.preprocess, train.automatic_deploy, train.engine, train.exclude,
                         pg_catalog.current_setting('search_path')) AS r
$$;
COMMENT ON FUNCTION ml_stack.train(text, text, text, text, text, jsonb, text, jsonb, jsonb, real, text, jsonb, boolean, text, text[]) IS
    'ml_stack: train a model on a table or view (features: every column but the label and those in exclude, in table order; text and enums as categories), score it on a test split, register it, and deploy it if it beats the deployed model. Retrain with only the project name to reuse its relation, label, task and excluded columns.';

-- source: sql/evaluation/evaluate_0.5.1.sql
-- 0.5.1: feature_importance takes the importance type (XGBoost's gain by default for its models).
DROP FUNCTION IF EXISTS ml_stack.feature_importance(bigint);

-- source: sql/evaluation/evaluate.sql
-- Evaluation (0.5.0): a model of the registry scored on any relation that has its feature
-- columns and its label, with the contract's metrics (training/metrics.sql: the same
-- definitions as the test split's), a confusion matrix, the ROC and precision-recall
-- curves of a binary classifier, and the importance of each feature.

-- Score `rel` with model `model_id` into pg_temp._ml_stack_rows(r, y) and
-- pg_temp._ml_stack_predictions(r, yhat, proba): the features built from the columns by
-- name as the typed serving function builds them, the label as at training (classes by
-- name: their position; a class the model never saw: -1). Rows with a NULL label, or that
-- the model gives no prediction for, are left out. Returns
-- {"task", "classes", "labels", "rows", "no_prediction"}.
CREATE OR REPLACE FUNCTION ml_stack._score_relation(model_id bigint, rel regclass)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
DECLARE
    m record;
    layout jsonb := ml_stack._model_layout(model_id);
    label_name text;
    label_type text;
    labels text[];
    missing text[];
    casts text;
    y_sql text;
    features text;
    n bigint;
    scored bigint;
    by_name boolean;
BEGIN
    SELECT mo.task, mo.classes, s.y_column_name, s.label ->> 'type' AS label_type,
           CASE WHEN jsonb_typeof(s.label -> 'class_labels') = 'array' THEN ARRAY(SELECT jsonb_array_elements_text(s.label -> 'class_labels')) END AS labels
    INTO m
    FROM ml_stack.models AS mo LEFT JOIN ml_stack.snapshots AS s ON s.id = mo.snapshot_id
    WHERE mo.id = _score_relation.model_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'model % does not exist', model_id
            USING ERRCODE = 'undefined_object', HINT = 'SELECT id, algorithm FROM ml_stack.models lists the models.';
    END IF;
    IF layout IS NULL OR m.y_column_name IS NULL OR m.y_column_name = 'unknown' THEN
        RAISE EXCEPTION 'model % does not know its columns (it was imported): it cannot read a relation by column names', model_id
            USING ERRCODE = 'feature_not_supported', HINT = 'Evaluate a model trained in this database.';
    END IF;
    label_name := m.y_column_name; label_type := m.label_type; labels := m.labels;
    SELECT array_agg(c.value ->> 'name' ORDER BY c.ordinality) INTO missing
    FROM jsonb_array_elements(layout || jsonb_build_array(jsonb_build_object('name', label_name))) WITH ORDINALITY AS c
    WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_attribute AS a
                      WHERE a.attrelid = rel AND a.attname = c.value ->> 'name' AND a.attnum > 0 AND NOT a.attisdropped);
    IF cardinality(missing) > 0 THEN
        RAISE EXCEPTION 'relation % lacks columns of model %: %', rel, model_id,
                        (SELECT string_agg(format('"%s"', x), ', ') FROM unnest(missing) AS x)
            USING ERRCODE = 'undefined_column',
                  HINT = 'The relation needs the feature columns the model was trained on and its label, by name (a view can rename them).';
    END IF;
    -- the columns as the serving function's arguments take them, then its feature array
    SELECT string_agg(format('%I::%s AS %I', c.value ->> 'name', ml_stack._serving_argument_type(c.value), c.value ->> 'name'), ', ')
    INTO casts FROM jsonb_array_elements(layout) AS c;
    features := ml_stack._serving_features_sql(layout);
    by_name := m.task = 'classification' AND label_type NOT IN ('smallint', 'integer', 'bigint', 'real', 'double precision',
                                                                'numeric', 'boolean');
    y_sql := CASE WHEN by_name
                  THEN format('coalesce(pg_catalog.array_position(%L::text[], %I::text) - 1, -1)::float8', labels, label_name)
                  WHEN label_type = 'boolean' THEN format('%I::integer::float8', label_name)
                  ELSE format('%I::float8', label_name) END;
    IF to_regclass('pg_temp._ml_stack_rows') IS NOT NULL THEN
        DROP TABLE pg_temp._ml_stack_rows;
    END IF;
    IF to_regclass('pg_temp._ml_stack_predictions') IS NOT NULL THEN
        DROP TABLE pg_temp._ml_stack_predictions;
    END IF;
    -- with probabilities when the model has them (one without fails on the first row: then without)
    FOR attempt IN 1 .. 2 LOOP
        BEGIN
            EXECUTE format('CREATE TEMPORARY TABLE _ml_stack_scored ON COMMIT DROP AS '
                           'SELECT row_number() OVER () AS r, %s AS y, ml_stack.predict(%s::bigint, _ml_stack_features) AS yhat, %s AS proba '
                           'FROM (SELECT %s AS _ml_stack_features, %s FROM (SELECT %s, %I FROM %s) AS c OFFSET 0) AS t WHERE %I IS NOT NULL',
                           y_sql, model_id, CASE WHEN m.task = 'classification' AND attempt = 1
                                                 THEN format('ml_stack.predict_proba(%s::bigint, _ml_stack_features)', model_id)
                                                 ELSE 'NULL::float8[]' END,
                           features, quote_ident(label_name), casts, label_name, rel, label_name);
            EXIT;
        EXCEPTION WHEN feature_not_supported THEN
            IF attempt = 2 OR m.task <> 'classification' THEN
                RAISE;
            END IF;
        END;
    END LOOP;
    GET DIAGNOSTICS n = ROW_COUNT;
    CREATE TEMPORARY TABLE _ml_stack_rows ON COMMIT DROP AS SELECT r, y FROM pg_temp._ml_stack_scored WHERE yhat IS NOT NULL;
    GET DIAGNOSTICS scored = ROW_COUNT;
    CREATE TEMPORARY TABLE _ml_stack_predictions ON COMMIT DROP AS
        SELECT r, yhat, proba FROM pg_temp._ml_stack_scored WHERE yhat IS NOT NULL;
    DROP TABLE pg_temp._ml_stack_scored;
    IF scored = 0 THEN
        RAISE EXCEPTION 'model % gives no prediction for any of the % labelled rows of %', model_id, n, rel
            USING ERRCODE = 'no_data_found',
                  HINT = CASE WHEN n = 0 THEN format('Every row has a NULL "%s", or the relation is empty.', label_name)
                              ELSE 'Its features are NULL where the model has no impute rule.' END;
    END IF;
    RETURN jsonb_build_object('task', m.task, 'classes', to_jsonb(m.classes), 'by_name', by_name,
                              'labels', to_jsonb(coalesce(labels, m.classes::text[])), 'rows', scored, 'no_prediction', n - scored);
END
$$;

CREATE OR REPLACE FUNCTION ml_stack._evaluate(model_id bigint, relation_name text, caller_search_path text)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    info jsonb := ml_stack._score_relation(model_id, ml_stack._resolve_relation(relation_name, caller_search_path));
BEGIN
    RETURN ml_stack._test_metrics(info ->> 'task', NULL,
                                  CASE WHEN jsonb_typeof(info -> 'classes') = 'array'
                                       THEN ARRAY(SELECT jsonb_array_elements_text(info -> 'classes')::float8) END,
                                  '{"engine_predictions": true, "test_filter": "true"}')
           || jsonb_build_object('rows', info -> 'rows', 'no_prediction', info -> 'no_prediction');
END
$$;

-- No SET clause: the relation name resolves with the caller's search_path (as train's).
CREATE OR REPLACE FUNCTION ml_stack.evaluate(model_id bigint, relation_name text)
RETURNS jsonb
LANGUAGE sql VOLATILE
AS $$ SELECT ml_stack._evaluate(model_id, relation_name, pg_catalog.current_setting('search_path')) $$;
COMMENT ON FUNCTION ml_stack.evaluate(bigint, text) IS
    'ml_stack: the metrics of a model (as on its test split) on any relation with its feature columns and label, plus "rows" scored and "no_prediction" (rows whose NULL features it has no impute rule for).';

CREATE OR REPLACE FUNCTION ml_stack._confusion_matrix(model_id bigint, relation_name text, caller_search_path text)
RETURNS TABLE (actual text, predicted text, count bigint)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    info jsonb := ml_stack._score_relation(model_id, ml_stack._resolve_relation(relation_name, caller_search_path));
    classes float8[];
    labels text[];
BEGIN
    IF info ->> 'task' <> 'classification' THEN
        RAISE EXCEPTION 'model % is a regression: it has no confusion matrix', model_id
            USING ERRCODE = 'wrong_object_type', HINT = 'Use ml_stack.evaluate() for its metrics.';
    END IF;
    classes := ARRAY(SELECT jsonb_array_elements_text(info -> 'classes')::float8);
    labels := ARRAY(SELECT jsonb_array_elements_text(info -> 'labels'));
    -- every pair of the model's classes (zeros included, as scikit-learn's matrix), then
    -- labels of the relation that the model never saw (classes by name: all of them as "(unseen)")
    RETURN QUERY
        WITH pairs AS (
            SELECT t.y, p.yhat FROM pg_temp._ml_stack_rows AS t JOIN pg_temp._ml_stack_predictions AS p USING (r)
        ), known AS (
            SELECT c.v, c.i FROM unnest(classes) WITH ORDINALITY AS c(v, i)
            UNION ALL SELECT DISTINCT y, NULL::bigint FROM pairs WHERE NOT y = ANY (classes)
        )
        SELECT coalesce(labels[a.i], CASE WHEN (info ->> 'by_name')::boolean THEN '(unseen)' ELSE a.v::text END),
               labels[b.i], (SELECT count(*) FROM pairs AS q WHERE q.y = a.v AND q.yhat = b.v)
        FROM known AS a CROSS JOIN known AS b
        WHERE b.i IS NOT NULL
        ORDER BY a.i NULLS LAST, a.v, b.i;
END
$$;

CREATE OR REPLACE FUNCTION ml_stack.confusion_matrix(model_id bigint, relation_name text)
RETURNS TABLE (actual text, predicted text, count bigint)
LANGUAGE sql VOLATILE
AS $$ SELECT * FROM ml_stack._confusion_matrix(model_id, relation_name, pg_catalog.current_setting('search_path')) $$;
COMMENT ON FUNCTION ml_stack.confusion_matrix(bigint, text) IS
    'ml_stack: how many rows of each actual class a classifier predicts as each class, on any relation with its feature columns and label (every pair of its classes, zeros included).';

-- The scores of the positive (second) class of a binary classifier on a relation, with the
-- truth: pg_temp._ml_stack_curve(score, positive). An error for other models.
CREATE OR REPLACE FUNCTION ml_stack._binary_scores(model_id bigint, relation_name text, caller_search_path text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    info jsonb := ml_stack._score_relation(model_id, ml_stack._resolve_relation(relation_name, caller_search_path));
BEGIN
    IF info ->> 'task' <> 'classification' OR jsonb_array_length(info -> 'classes') <> 2 THEN
        RAISE EXCEPTION 'model % is not a binary classifier: its curves are not defined', model_id
            USING ERRCODE = 'wrong_object_type', HINT = 'ROC and precision-recall curves are of two classes; ml_stack.confusion_matrix() takes any classifier.';
    END IF;
    IF to_regclass('pg_temp._ml_stack_curve') IS NOT NULL THEN
        DROP TABLE pg_temp._ml_stack_curve;
    END IF;
    CREATE TEMPORARY TABLE _ml_stack_curve ON COMMIT DROP AS
        SELECT p.proba[2] AS score, t.y = (info -> 'classes' ->> 1)::float8 AS positive
        FROM pg_temp._ml_stack_rows AS t JOIN pg_temp._ml_stack_predictions AS p USING (r);
    IF EXISTS (SELECT FROM pg_temp._ml_stack_rows AS t WHERE NOT t.y = ANY (ARRAY[(info -> 'classes' ->> 0)::float8, (info -> 'classes' ->> 1)::float8])) THEN
        RAISE EXCEPTION 'the rows of % hold classes model % never saw', relation_name, model_id
            USING ERRCODE = 'invalid_parameter_value', HINT = 'The curves are of the model''s two classes: filter the rows in a view.';
    END IF;
    IF (SELECT count(DISTINCT positive) FROM pg_temp._ml_stack_curve) < 2 THEN
        RAISE EXCEPTION 'the rows of % hold one class only: the curves need both', relation_name
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Evaluate on rows of both classes.';
    END IF;
END
$$;

-- scikit-learn's roc_curve(drop_intermediate=False): one point per distinct score, from the
-- highest, after the point (0, 0) at threshold +Infinity.
CREATE OR REPLACE FUNCTION ml_stack._roc_curve(model_id bigint, relation_name text, caller_search_path text)
RETURNS TABLE (threshold float8, fpr float8, tpr float8)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM ml_stack._binary_scores(model_id, relation_name, caller_search_path);
    RETURN QUERY
        WITH steps AS (
            SELECT c.score, count(*) FILTER (WHERE c.positive) AS tp, count(*) FILTER (WHERE NOT c.positive) AS fp
            FROM pg_temp._ml_stack_curve AS c GROUP BY c.score
        ), totals AS (
            SELECT count(*) FILTER (WHERE c.positive)::float8 AS p, count(*) FILTER (WHERE NOT c.positive)::float8 AS n
            FROM pg_temp._ml_stack_curve AS c
        )
        SELECT 'Infinity'::float8, 0::float8, 0::float8
        UNION ALL
        (SELECT s.score, sum(s.fp) OVER w / t.n, sum(s.tp) OVER w / t.p
         FROM steps AS s, totals AS t
         WINDOW w AS (ORDER BY s.score DESC)
         ORDER BY s.score DESC);
END
$$;

CREATE OR REPLACE FUNCTION ml_stack.roc_curve(model_id bigint, relation_name text)
RETURNS TABLE (threshold float8, fpr float8, tpr float8)
LANGUAGE sql VOLATILE
AS $$ SELECT * FROM ml_stack._roc_curve(model_id, relation_name, pg_catalog.current_setting('search_path')) $$;
COMMENT ON FUNCTION ml_stack.roc_curve(bigint, text) IS
    'ml_stack: the ROC curve of a binary classifier on a relation: false and true positive rates when the positive (second) class is predicted for probabilities >= threshold, one point per distinct probability (scikit-learn''s roc_curve, drop_intermediate=False).';

-- scikit-learn's precision_recall_curve (1.2): for each distinct score, ascending, the precision
-- and recall of predicting positive at score >= threshold (its last point, precision 1 and
-- recall 0 without a threshold, left out).
CREATE OR REPLACE FUNCTION ml_stack._precision_recall_curve(model_id bigint, relation_name text, caller_search_path text)
RETURNS TABLE (threshold float8, "precision" float8, recall float8)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM ml_stack._binary_scores(model_id, relation_name, caller_search_path);
    RETURN QUERY
        WITH steps AS (
            SELECT c.score, count(*) FILTER (WHERE c.positive) AS tp, count(*) AS k
            FROM pg_temp._ml_stack_curve AS c GROUP BY c.score
        ), cumulative AS (
            SELECT s.score, sum(s.tp) OVER w AS tp, sum(s.k) OVER w AS k,
                   (SELECT count(*) FROM pg_temp._ml_stack_curve AS c WHERE c.positive) AS p
            FROM steps AS s WINDOW w AS (ORDER BY s.score DESC)
        )
        SELECT c.score, c.tp::float8 / c.k, c.tp::float8 / c.p
        FROM cumulative AS c
        ORDER BY c.score;
END
$$;

CREATE OR REPLACE FUNCTION ml_stack.precision_recall_curve(model_id bigint, relation_name text)
RETURNS TABLE (threshold float8, "precision" float8, recall float8)
LANGUAGE sql VOLATILE
AS $$ SELECT * FROM ml_stack._precision_recall_curve(model_id, relation_name, pg_catalog.current_setting('search_path')) $$;
COMMENT ON FUNCTION ml_stack.precision_recall_curve(bigint, text) IS
    'ml_stack: the precision-recall curve of a binary classifier on a relation (scikit-learn''s precision_recall_curve, without its last point: precision 1, recall 0).';

-- The name of each of a model's features: its columns' in order, an array's elements, a text column's
-- vector dimensions and a target encoding's classes as <column>[i], a one-hot feature as <column>=<category>;
-- 'feature <j>' for a model imported without names.
CREATE OR REPLACE FUNCTION ml_stack._model_feature_names(model_id bigint)
RETURNS text[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT ARRAY(
        SELECT coalesce(n.name, format('feature %s', f.j))
        FROM generate_series(1, (SELECT m.num_features FROM ml_stack.models AS m WHERE m.id = _model_feature_names.model_id)) AS f(j)
        LEFT JOIN (SELECT row_number() OVER (ORDER BY c.o, q) AS j,
                          CASE WHEN c.col #>> '{encoding,method}' = 'one_hot'
                               -- a one-hot feature by its category (the first one left out by "drop", NULL last)
                               THEN format('%s=%s', c.col ->> 'name',
                                           coalesce(c.col #> '{encoding,categories}' ->> (q - 1 + CASE WHEN c.col #>> '{encoding,drop}' = 'first'
                                                                                                   THEN 1 ELSE 0 END), 'NULL'))
                               WHEN c.col ->> 'kind' IN ('text', 'array') OR (c.col ->> 'width')::integer > 1
                               THEN format('%s[%s]', c.col ->> 'name', q)
                               ELSE c.col ->> 'name' END AS name
                   FROM jsonb_array_elements(coalesce(ml_stack._model_layout(_model_feature_names.model_id), '[]'))
                        WITH ORDINALITY AS c(col, o),
                        generate_series(1, coalesce((c.col ->> 'width')::integer, 1)) AS q) AS n ON n.j = f.j
        ORDER BY f.j)
$$;

-- Feature importance. Linear models: each coefficient times its feature's standard deviation on the
-- training rows (the coefficient of the standardised feature; a text column's dimensions: the coefficient
-- as it is), one row per score (per class of a multinomial model). Tree ensembles: XGBoost's importance
-- types from the booster's own statistics (weight: the splits on the feature; gain / cover: the mean loss
-- reduction / hessian sum of those splits; total_gain, total_cover: their sums), over the trees the model
-- predicts with; other libraries' trees: weight only.
CREATE OR REPLACE FUNCTION ml_stack.feature_importance(model_id bigint, importance_type text DEFAULT NULL)
RETURNS TABLE (feature text, importance float8, class text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    m record;
    col jsonb;
    names text[] := ml_stack._model_feature_names(feature_importance.model_id);
    stds float8[] := '{}';
    xi integer := 0;
    kind text;
    booster_trees jsonb;
BEGIN
    SELECT mo.artifact, mo.num_features, mo.classes, s.features, s.label INTO m
    FROM ml_stack.models AS mo LEFT JOIN ml_stack.snapshots AS s ON s.id = mo.snapshot_id
    WHERE mo.id = feature_importance.model_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'model % does not exist', feature_importance.model_id
            USING ERRCODE = 'undefined_object', HINT = 'SELECT id, algorithm FROM ml_stack.models lists the models.';
    END IF;
    booster_trees := m.artifact #> '{booster,learner,gradient_booster,model,trees}';
    kind := coalesce(importance_type, CASE WHEN booster_trees IS NOT NULL THEN 'gain' ELSE 'weight' END);
    IF m.artifact ->> 'format' = 'linear' THEN
        IF importance_type IS NOT NULL THEN
            RAISE EXCEPTION 'a linear model has one importance: its standardised coefficients' USING ERRCODE = 'invalid_parameter_value',
                HINT = 'Leave importance_type out; importance types are for tree ensembles.';
        END IF;
        -- each feature's training std (a text column's dimensions have none: their values are the transformer's)
        FOR col IN SELECT value FROM jsonb_array_elements(coalesce(ml_stack._model_layout(feature_importance.model_id), '[]')) LOOP
            FOR q IN 1 .. coalesce((col ->> 'width')::integer, 1) LOOP
                IF col ->> 'kind' = 'text' THEN
                    stds := stds || NULL::float8;
                ELSE
                    stds := stds || (m.features -> xi ->> 'std')::float8;
                    xi := xi + 1;
                END IF;
            END LOOP;
        END LOOP;
        RETURN QUERY
            SELECT names[j.i], j.w::float8 * coalesce(stds[j.i], 1),
                   CASE WHEN jsonb_array_length(m.artifact -> 'coefficients') = 1 THEN NULL
                        ELSE coalesce(m.label -> 'class_labels' ->> (k.o::integer - 1), m.classes[k.o]::text) END
            FROM jsonb_array_elements(m.artifact -> 'coefficients') WITH ORDINALITY AS k(ws, o),
                 jsonb_array_elements_text(k.ws) WITH ORDINALITY AS j(w, i)
            ORDER BY k.o, j.i;
    ELSIF m.artifact ->> 'format' = 'trees' AND kind = 'weight' AND booster_trees IS NULL THEN
        RETURN QUERY
            SELECT names[f.i + 1],
                   (SELECT count(*)::float8 FROM jsonb_array_elements(m.artifact -> 'trees') AS t,
                                              jsonb_array_elements_text(t -> 'feature') WITH ORDINALITY AS n(v, o)
                    WHERE (t -> 'left' ->> (n.o::integer - 1))::integer >= 0 AND n.v::integer = f.i),
                   NULL::text
            FROM generate_series(0, m.num_features - 1) AS f(i)
            ORDER BY f.i;
    ELSIF m.artifact ->> 'format' = 'trees' AND booster_trees IS NOT NULL
          AND kind IN ('weight', 'gain', 'total_gain', 'cover', 'total_cover') THEN
        RETURN QUERY
            WITH splits AS (
                SELECT (t.tree -> 'split_indices' ->> (n.o::integer - 1))::integer AS f,
                       (t.tree -> 'loss_changes' ->> (n.o::integer - 1))::float8 AS gain,
                       (t.tree -> 'sum_hessian' ->> (n.o::integer - 1))::float8 AS cover
                FROM jsonb_array_elements(booster_trees) WITH ORDINALITY AS t(tree, ti),
                     jsonb_array_elements_text(t.tree -> 'left_children') WITH ORDINALITY AS n(v, o)
                WHERE t.ti <= jsonb_array_length(m.artifact -> 'trees') AND n.v::integer <> -1
            )
            SELECT names[f.i + 1],
                   (SELECT CASE kind WHEN 'weight' THEN count(*)::float8 WHEN 'gain' THEN coalesce(avg(sp.gain), 0)
                                     WHEN 'total_gain' THEN coalesce(sum(sp.gain), 0) WHEN 'cover' THEN coalesce(avg(sp.cover), 0)
                                     ELSE coalesce(sum(sp.cover), 0) END
                    FROM splits AS sp WHERE sp.f = f.i),
                   NULL::text
            FROM generate_series(0, m.num_features - 1) AS f(i)
            ORDER BY f.i;
    ELSIF m.artifact ->> 'format' = 'trees' THEN
        RAISE EXCEPTION 'unknown importance_type "%" for this model', kind
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = CASE WHEN booster_trees IS NOT NULL THEN 'XGBoost models: weight, gain (the default), total_gain, cover, total_cover.'
                              ELSE 'These trees have weight (the number of splits on each feature).' END;
    ELSE
        RAISE EXCEPTION 'feature importance of % models is not available', coalesce(m.artifact ->> 'format', 'these')
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Linear models and tree ensembles (xgboost, random_forest, gradient boosting) have it.';
    END IF;
END
$$;
COMMENT ON FUNCTION ml_stack.feature_importance(bigint, text) IS
    'ml_stack: importance of each feature: linear models, the coefficient times the feature''s standard deviation on the training rows (per class of a multinomial model); XGBoost models, the booster''s importance_type (gain by default; weight, total_gain, cover, total_cover); other tree ensembles, the number of splits on the feature (weight).';

-- source: sql/evaluation/contributions.sql
-- Per-row explanations of XGBoost models: each feature's contribution to the margin, and the bias, which
-- add up to the margin the model predicts with (before the link: the log-odds of a binary classifier, a
-- class's score of a multiclass one). They are XGBoost's own approximate contributions
-- (predict(pred_contribs=True, approx_contribs=True), Saabas' method): along the row's path in each tree,
-- a split's feature gets the change of the node's mean value (its leaves' values weighted by their hessian
-- sums, the booster's "sum_hessian"); the bias is the base margin plus the trees' root means.
CREATE OR REPLACE FUNCTION ml_stack.feature_contributions(model_id bigint, features float8[])
RETURNS TABLE (feature text, contribution float8, class text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    m record;
    booster jsonb;
    tree jsonb;
    k integer; p integer;
    v float8[];
    tr jsonb;
    contrib float8[];
    lefts integer[]; rights integer[]; splits integer[]; default_left boolean[];
    conds float8[]; hess float8[]; means float8[];
    node integer; nxt integer; out integer; f integer;
    names text[];
BEGIN
    SELECT mo.artifact, mo.num_features, mo.classes, s.label INTO m
    FROM ml_stack.models AS mo LEFT JOIN ml_stack.snapshots AS s ON s.id = mo.snapshot_id
    WHERE mo.id = model_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'model % does not exist', model_id
            USING ERRCODE = 'undefined_object', HINT = 'SELECT id, algorithm FROM ml_stack.models lists the models.';
    END IF;
    booster := m.artifact #> '{booster,learner,gradient_booster,model}';
    IF m.artifact ->> 'format' IS DISTINCT FROM 'trees' OR booster IS NULL THEN
        RAISE EXCEPTION 'feature contributions are available for XGBoost models only'
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'ml_stack.feature_importance(model_id) ranks the features of every linear or tree model.';
    END IF;
    p := m.num_features;
    IF cardinality(features) IS DISTINCT FROM p THEN
        PERFORM ml_stack._wrong_feature_count(model_id, p, features);
    END IF;
    -- the values the trees test: the model's preprocessing (impute, shift, scale), as in serving
    v := features;
    FOR j IN 1 .. p LOOP
        tr := m.artifact -> 'transform' -> (j - 1);
        IF tr IS NOT NULL THEN
            v[j] := (coalesce(v[j], (tr ->> 'impute')::float8) - coalesce((tr ->> 'shift')::float8, 0))
                    / coalesce((tr ->> 'scale')::float8, 1);
        END IF;
    END LOOP;
    k := (m.artifact ->> 'outputs')::integer;
    contrib := array_fill(0::float8, ARRAY[k * (p + 1)]);
    FOR o IN 0 .. k - 1 LOOP
        contrib[o * (p + 1) + p + 1] := (m.artifact -> 'base' ->> o)::float8;
    END LOOP;
    -- the trees the model predicts with (its best iteration's), in the booster's own numbering
    FOR t IN 0 .. jsonb_array_length(m.artifact -> 'trees') - 1 LOOP
        tree := booster -> 'trees' -> t;
        out := (booster -> 'tree_info' ->> t)::integer;
        lefts := ARRAY(SELECT e::integer FROM jsonb_array_elements_text(tree -> 'left_children') AS e);
        rights := ARRAY(SELECT e::integer FROM jsonb_array_elements_text(tree -> 'right_children') AS e);
        splits := ARRAY(SELECT e::integer FROM jsonb_array_elements_text(tree -> 'split_indices') AS e);
        default_left := ARRAY(SELECT e::integer <> 0 FROM jsonb_array_elements_text(tree -> 'default_left') AS e);
        conds := ARRAY(SELECT e::float8 FROM jsonb_array_elements_text(tree -> 'split_conditions') AS e);
        hess := ARRAY(SELECT e::float8 FROM jsonb_array_elements_text(tree -> 'sum_hessian') AS e);
        -- node means bottom-up (XGBoost numbers a node's children after it); a leaf's value is its split_condition
        means := array_fill(0::float8, ARRAY[cardinality(lefts)]);
        FOR i IN REVERSE cardinality(lefts) .. 1 LOOP
            means[i] := CASE WHEN lefts[i] = -1 THEN conds[i]
                             ELSE (means[lefts[i] + 1] * hess[lefts[i] + 1] + means[rights[i] + 1] * hess[rights[i] + 1]) / hess[i] END;
        END LOOP;
        node := 0;
        contrib[out * (p + 1) + p + 1] := contrib[out * (p + 1) + p + 1] + means[1];
        WHILE lefts[node + 1] <> -1 LOOP
            f := splits[node + 1];
            -- XGBoost's rule: left when float32(value) < the float32 condition; missing values go the default way
            nxt := CASE WHEN v[f + 1] IS NULL OR v[f + 1] = 'NaN'::float8
                        THEN CASE WHEN default_left[node + 1] THEN lefts[node + 1] ELSE rights[node + 1] END
                        WHEN v[f + 1]::float4 < conds[node + 1]::float4 THEN lefts[node + 1]
                        ELSE rights[node + 1] END;
            contrib[out * (p + 1) + f + 1] := contrib[out * (p + 1) + f + 1] + means[nxt + 1] - means[node + 1];
            node := nxt;
        END LOOP;
    END LOOP;
    names := ml_stack._model_feature_names(model_id) || '(bias)'::text;
    RETURN QUERY
        SELECT names[j], contrib[o * (p + 1) + j],
               CASE WHEN k = 1 THEN NULL
                    ELSE coalesce(m.label -> 'class_labels' ->> o, m.classes[o + 1]::text) END
        FROM generate_series(0, k - 1) AS o, generate_series(1, p + 1) AS j
        ORDER BY o, j;
END
$$;
COMMENT ON FUNCTION ml_stack.feature_contributions(bigint, float8[]) IS
    'ml_stack: why an XGBoost model predicts what it does for one row: each feature''s contribution to the margin and the bias, which add up to the margin (per class of a multiclass model); XGBoost''s approximate contributions (pred_contribs with approx_contribs).';

CREATE OR REPLACE FUNCTION ml_stack.feature_contributions_row(project_name text, "row" jsonb)
RETURNS TABLE (feature text, contribution float8, class text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    deployed record := ml_stack._deployed_layout(project_name);
BEGIN
    RETURN QUERY SELECT * FROM ml_stack.feature_contributions(deployed.model_id, ml_stack._row_features(deployed.layout, "row"));
END
$$;
COMMENT ON FUNCTION ml_stack.feature_contributions_row(text, jsonb) IS
    'ml_stack: feature_contributions of the project''s deployed XGBoost model for a row given by column names.';

-- source: sql/portability/export_import.sql
-- Models as portable JSON documents: everything needed to serve the model in
-- another database, plus its provenance (features, label, metrics, hyperparameters).
CREATE OR REPLACE FUNCTION ml_stack.export_model(model_id bigint)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    doc jsonb;
BEGIN
    SELECT jsonb_build_object(
        'ml_stack_model', 1,
        'exported_by', 'ml_stack ' || (SELECT e.extversion FROM pg_catalog.pg_extension AS e WHERE e.extname = 'ml_stack'),
        'project', p.name,
        'task', m.task,
        'algorithm', m.algorithm,
        'engine', m.engine,
        'hyperparams', m.hyperparams,
        'preprocess', m.preprocess,
        'num_features', m.num_features,
        'classes', to_jsonb(m.classes),
        'features', coalesce(s.features, '[]'),
        'label', s.label,
        'relation_name', s.relation_name,
        'metrics', m.metrics,
        'search', m.search,
        'artifact', m.artifact,
        'created_at', m.created_at)
    INTO doc
    FROM ml_stack.models AS m
    JOIN ml_stack.projects AS p ON p.id = m.project_id
    LEFT JOIN ml_stack.snapshots AS s ON s.id = m.snapshot_id
    WHERE m.id = model_id;
    IF doc IS NULL THEN
        RAISE EXCEPTION 'model % does not exist', model_id
            USING ERRCODE = 'undefined_object', HINT = 'SELECT id, algorithm FROM ml_stack.models lists the models.';
    END IF;
    RETURN doc;
END
$$;
COMMENT ON FUNCTION ml_stack.export_model(bigint) IS
    'ml_stack: a model as a JSON document that ml_stack.import_model() loads into another database.';

CREATE OR REPLACE FUNCTION ml_stack.import_model(project_name text, model jsonb, deploy boolean DEFAULT true)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    proj     ml_stack.projects;
    task     text := model ->> 'task';
    art      jsonb := model -> 'artifact';
    p        integer;
    classes  float8[];
    k        integer;
    snap_id  bigint;
    new_id   bigint;
BEGIN
    IF project_name IS NULL OR btrim(project_name) = '' THEN
        RAISE EXCEPTION 'project_name is required' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Name the project to import into, e.g. ml_stack.import_model(''house_prices'', doc).';
    END IF;
    IF model IS NULL OR jsonb_typeof(model) <> 'object' OR (model ->> 'ml_stack_model') IS DISTINCT FROM '1' THEN
        RAISE EXCEPTION 'not an ml_stack model document'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass what ml_stack.export_model() returned.';
    END IF;
    IF task IS NULL OR task NOT IN ('regression', 'classification') THEN
        RAISE EXCEPTION 'model document has unknown task "%"', task USING ERRCODE = 'invalid_parameter_value',
            HINT = 'The task must be ''regression'' or ''classification''; export the model again with ml_stack.export_model().';
    END IF;
    -- the artifact becomes SQL: check its shape, and let only numbers through (a 'trees' artifact's
    -- nodes are checked by _compile_trees_model, which the insert below runs, and says what is wrong)
    IF art ->> 'format' = 'python' THEN
        RAISE EXCEPTION 'model % is a pickled scikit-learn estimator, which import_model does not load', model ->> 'algorithm'
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Unpickling runs code. Train the model in this database instead (linear models and tree ensembles export as SQL-servable documents).';
    ELSIF coalesce(art ->> 'format', '') NOT IN ('linear', 'trees') THEN
        RAISE EXCEPTION 'model artifact format "%" is not supported here', art ->> 'format'
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'ml_stack serves the ''linear'' and ''trees'' formats; update ml_stack if the model comes from a newer version.';
    END IF;
    BEGIN
        p := (model ->> 'num_features')::integer;
        IF model -> 'classes' IS NOT NULL AND jsonb_typeof(model -> 'classes') = 'array' THEN
            classes := ARRAY(SELECT jsonb_array_elements_text(model -> 'classes')::float8);
        END IF;
        IF p IS NULL OR p < 1
           OR (jsonb_typeof(model -> 'features') = 'array' AND jsonb_array_length(model -> 'features') NOT IN (0, p))
           -- classes strictly ascending: predict_proba's columns follow them
           OR EXISTS (SELECT FROM unnest(classes) WITH ORDINALITY AS c(v, i) WHERE c.v >= classes[c.i + 1])
           OR (task = 'regression') <> (classes IS NULL)
           OR (task = 'classification' AND cardinality(classes) < 2)
           OR EXISTS (SELECT FROM jsonb_array_elements(model -> 'classes') AS x
                      WHERE jsonb_typeof(model -> 'classes') = 'array' AND jsonb_typeof(x) <> 'number')
        THEN
            RAISE EXCEPTION 'inconsistent';
        END IF;
        IF art ->> 'format' = 'linear' THEN
            k := jsonb_array_length(art -> 'coefficients');
            IF k < 1 OR jsonb_array_length(art -> 'intercepts') <> k
               OR jsonb_array_length(art -> 'impute') <> p
               OR EXISTS (SELECT FROM jsonb_array_elements(art -> 'coefficients') AS w WHERE jsonb_array_length(w) <> p)
               OR coalesce(art ->> 'link', '') NOT IN ('identity', 'logistic', 'softmax')
               OR (task = 'regression') <> (art ->> 'link' = 'identity')
               OR (task = 'classification' AND k <> CASE WHEN cardinality(classes) = 2 THEN 1 ELSE cardinality(classes) END)
            THEN
                RAISE EXCEPTION 'inconsistent';
            END IF;
            -- every number must be a JSON number (never a string, so never NaN or Infinity)
            IF EXISTS (SELECT FROM jsonb_array_elements(art -> 'intercepts') AS x WHERE jsonb_typeof(x) <> 'number')
               OR EXISTS (SELECT FROM jsonb_array_elements(art -> 'coefficients') AS w, jsonb_array_elements(w) AS x
                          WHERE jsonb_typeof(x) <> 'number')
               OR EXISTS (SELECT FROM jsonb_array_elements(art -> 'impute') AS x WHERE jsonb_typeof(x) NOT IN ('number', 'null'))
            THEN
                RAISE EXCEPTION 'not a number';
            END IF;
        END IF;
    EXCEPTION WHEN OTHERS THEN
        RAISE EXCEPTION 'model document is damaged: its artifact does not match its task and feature count'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Export the model again with ml_stack.export_model().';
    END;
    PERFORM pg_advisory_xact_lock(hashtext('ml_stack.project:' || project_name));
    SELECT pr.* INTO proj FROM ml_stack.projects AS pr WHERE pr.name = project_name;
    IF NOT FOUND THEN
        INSERT INTO ml_stack.projects (name, task, split_seed)
        VALUES (project_name, task, (random() * 2147483647)::bigint)
        RETURNING * INTO proj;
    ELSIF proj.task <> task THEN
        RAISE EXCEPTION 'project "%" is a % project; the model is for %', project_name, proj.task, task
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Import it under another project name.';
    END IF;
    INSERT INTO ml_stack.snapshots (project_id, relation_name, y_column_name, features, label, rows,
                                    train_rows, test_rows, test_size, test_sampling, seed)
    VALUES (proj.id, model ->> 'relation_name', coalesce(model -> 'label' ->> 'name', 'unknown'),
            coalesce(model -> 'features', '[]'), coalesce(model -> 'label', '{}'), 0, 0, 0, 0, 'random', 0)
    RETURNING id INTO snap_id;
    INSERT INTO ml_stack.models (project_id, snapshot_id, algorithm, engine, task, hyperparams, preprocess,
                                 num_features, classes, artifact, metrics, status, search)
    VALUES (proj.id, snap_id, coalesce(model ->> 'algorithm', 'unknown'), coalesce(model ->> 'engine', 'sql'), task,
            coalesce(model -> 'hyperparams', '{}'), coalesce(model -> 'preprocess', '{}'), p, classes, art,
            coalesce(model -> 'metrics', '{}'), 'imported', NULLIF(model -> 'search', 'null'))
    RETURNING id INTO new_id;
    IF deploy THEN
        INSERT INTO ml_stack.deployments (project_id, model_id, strategy) VALUES (proj.id, new_id, 'import');
    END IF;
    RETURN new_id;
END
$$;
COMMENT ON FUNCTION ml_stack.import_model(text, jsonb, boolean) IS
    'ml_stack: register a model document from ml_stack.export_model() under a project (created if needed), and deploy it unless deploy => false. Returns the new model id.';

-- source: sql/scheduling/training_runs.sql
-- History of training runs, ml_stack's own: every run of a scheduled retraining job, failed or not, and every
-- successful manual train() (a manual train that fails rolls back, leaving only its error). Unlike
-- cron.job_run_details it is extension configuration (pg_dump keeps it) and outlives pg_cron's log purges.
CREATE TABLE ml_stack.training_runs (
    id           bigserial PRIMARY KEY,
    project_id   bigint REFERENCES ml_stack.projects (id) ON DELETE CASCADE,  -- NULL: no such project at the run
    project_name text NOT NULL,
    job_name     text,              -- the pg_cron job (ml_stack.schedule_training); NULL for a train() call
    trigger      text NOT NULL CHECK (trigger IN ('cron', 'manual')),  -- 'cron': started by pg_cron
    status       text NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    started_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at  timestamptz,       -- NULL while running, and for a run whose server process died
    algorithm    text,              -- what was trained (NULL when the run failed before deciding it)
    hyperparams  jsonb,
    model_id     bigint REFERENCES ml_stack.models (id) ON DELETE SET NULL,
    deployed     boolean,           -- whether the new model was deployed (only when it beat the deployed one)
    error        text,              -- a failed run's error message
    sqlstate     text,              -- and its SQLSTATE
    username     text NOT NULL DEFAULT current_user,
    pid          integer NOT NULL DEFAULT pg_backend_pid(),  -- the server process (cron.job_run_details.job_pid)
    CHECK ((status = 'failed') = (error IS NOT NULL))
);
CREATE INDEX ON ml_stack.training_runs (job_name, id);
CREATE INDEX ON ml_stack.training_runs (project_id);
CREATE INDEX ON ml_stack.training_runs (model_id);
COMMENT ON TABLE ml_stack.training_runs IS
    'ml_stack: history of training runs: every run of a scheduled job (trigger cron, or manual when its command was called by hand), failed or not, and every successful train() (trigger manual). Extension configuration: kept by pg_dump; outlives pg_cron''s log.';

SELECT pg_catalog.pg_extension_config_dump('ml_stack.training_runs', '');
SELECT pg_catalog.pg_extension_config_dump('ml_stack.training_runs_id_seq', '');

-- source: sql/api/endpoints_table.sql
-- 0.4.0: the projects exposed over HTTP (api/expose.sql): one row per project and API
-- schema, with the roles its endpoints are granted to. Extension configuration (kept by
-- pg_dump); the endpoint functions themselves are made from it at run time.
CREATE TABLE ml_stack.endpoints (
    project_id  bigint NOT NULL REFERENCES ml_stack.projects (id) ON DELETE CASCADE,
    schema_name text NOT NULL,
    grant_to    text[] NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, schema_name)
);
COMMENT ON TABLE ml_stack.endpoints IS
    'ml_stack registry: the projects exposed over HTTP by ml_stack.expose(): API schema and the roles granted its endpoints.';

SELECT pg_catalog.pg_extension_config_dump('ml_stack.endpoints', '');

-- source: sql/api/roles_0.4.0.sql
-- 0.4.0: the group roles of ml_stack (DESIGN §3c), NOLOGIN, created when missing (roles
-- belong to the cluster: another database's ml_stack may have made them). Each holds
-- what its work needs (api/grants.sql); grant them to login roles:
--   ml_stack_predictor  predicts with every project's deployed model, reads the registry
--   ml_stack_trainer    also trains, deploys and schedules retraining (and predicts)
--   ml_stack_admin      also exposes projects over HTTP and deletes from the registry
-- An installer without CREATEROLE gets a NOTICE instead, and api/grants.sql grants to the
-- roles that exist.
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['ml_stack_predictor', 'ml_stack_trainer', 'ml_stack_admin'] LOOP
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles AS ro WHERE ro.rolname = r) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', r);
            EXCEPTION WHEN insufficient_privilege THEN
                RAISE NOTICE 'ml_stack: role % not created (this role may not create roles); a superuser can: CREATE ROLE % NOLOGIN, then ALTER EXTENSION ml_stack UPDATE grants it its rights', r, r;
            END;
        END IF;
    END LOOP;
    -- each role does what the one before it does
    IF to_regrole('ml_stack_trainer') IS NOT NULL AND to_regrole('ml_stack_predictor') IS NOT NULL
       AND NOT pg_catalog.pg_has_role('ml_stack_trainer', 'ml_stack_predictor', 'MEMBER') THEN
        GRANT ml_stack_predictor TO ml_stack_trainer;
    END IF;
    IF to_regrole('ml_stack_admin') IS NOT NULL AND to_regrole('ml_stack_trainer') IS NOT NULL
       AND NOT pg_catalog.pg_has_role('ml_stack_admin', 'ml_stack_trainer', 'MEMBER') THEN
        GRANT ml_stack_trainer TO ml_stack_admin;
    END IF;
END
$$;

-- source: sql/scheduling/training_jobs_0.5.0.sql
-- 0.5.0: ml_stack.training_jobs shows the last run's deploy decision, a new column of the view
-- and of the function behind it, which therefore are made again (scheduling/cron.sql). Checked
-- rather than DROP ... IF EXISTS, which would print a NOTICE in a fresh install.
DO $$
BEGIN
    IF to_regclass('ml_stack.training_jobs') IS NOT NULL THEN
        DROP VIEW ml_stack.training_jobs;
    END IF;
    IF to_regprocedure('ml_stack._training_jobs()') IS NOT NULL THEN
        DROP FUNCTION ml_stack._training_jobs();
    END IF;
END
$$;

-- source: sql/scheduling/cron.sql
-- Scheduled retraining with pg_cron (docs/design-notes/pg-cron.md). ml_stack installs and works without
-- pg_cron: nothing here refers to schema cron until a helper runs, and the helpers check first.

-- What keeps pg_cron from running jobs in this database, or NULL when nothing does. SECURITY DEFINER because
-- shared_preload_libraries and cron.database_name are readable only by superusers and pg_read_all_settings;
-- it returns a sentence, never the settings themselves. EXECUTE is revoked from PUBLIC: grant it to the roles
-- that schedule training.
CREATE OR REPLACE FUNCTION ml_stack._cron_problem()
RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    preload text;
    cron_db text;
BEGIN
    BEGIN
        preload := current_setting('shared_preload_libraries');
        cron_db := current_setting('cron.database_name', true);
    EXCEPTION WHEN insufficient_privilege THEN
        RETURN format('ml_stack cannot check shared_preload_libraries and cron.database_name: the owner of ml_stack '
                      '(role %s) needs superuser or pg_read_all_settings', current_user);
    END;
    IF preload IS NULL OR preload !~ '(^|[\s,"/])pg_cron(\.so)?($|[\s,"])' THEN
        RETURN 'pg_cron is not loaded: shared_preload_libraries does not include pg_cron';
    END IF;
    IF cron_db IS DISTINCT FROM current_database() THEN
        RETURN format('pg_cron runs its jobs in database "%s" (cron.database_name), not in this database "%s"',
                      coalesce(cron_db, 'postgres'), current_database());
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_extension AS e WHERE e.extname = 'pg_cron') THEN
        RETURN 'the pg_cron extension is not created in this database';
    END IF;
    RETURN NULL;
END
$$;
REVOKE EXECUTE ON FUNCTION ml_stack._cron_problem() FROM PUBLIC;

-- Raise, naming pg_cron, shared_preload_libraries and cron.database_name and what to do, unless the calling
-- role can schedule jobs with pg_cron in this database.
CREATE OR REPLACE FUNCTION ml_stack._require_cron()
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    problem text;
    recipe  text := format('Scheduled training needs pg_cron running jobs in this database: in postgresql.conf, '
                           'shared_preload_libraries = ''pg_cron'' and cron.database_name = %L (restart PostgreSQL '
                           'after changing them), then CREATE EXTENSION pg_cron in database %I. '
                           'Everything else in ml_stack works without pg_cron.', current_database(), current_database());
BEGIN
    IF NOT has_function_privilege('ml_stack._cron_problem()', 'EXECUTE') THEN
        RAISE EXCEPTION 'role % may not check whether pg_cron is usable here', current_user
            USING ERRCODE = 'insufficient_privilege',
                  HINT = format('GRANT EXECUTE ON FUNCTION ml_stack._cron_problem() TO %I (as the owner of ml_stack). ', current_user)
                         || recipe;
    END IF;
    problem := ml_stack._cron_problem();
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION 'pg_cron is not usable in database "%": %', current_database(), problem
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = CASE WHEN problem LIKE 'pg_cron runs its jobs in database %'
                              THEN 'pg_cron runs jobs in one database per server. Either install ml_stack in the database '
                                   'named by cron.database_name and schedule there, or: ' || recipe
                              ELSE recipe END;
    END IF;
    IF NOT has_schema_privilege('cron', 'USAGE')
       OR NOT has_function_privilege('cron.schedule(text, text, text)', 'EXECUTE')
       OR NOT has_function_privilege('cron.unschedule(bigint)', 'EXECUTE') THEN
        RAISE EXCEPTION 'role % may not use pg_cron (schema cron)', current_user
            USING ERRCODE = 'insufficient_privilege',
                  HINT = format('As a superuser: GRANT USAGE ON SCHEMA cron TO %I. (pg_cron itself is set up: '
                                'shared_preload_libraries has pg_cron and cron.database_name is this database.)', current_user);
    END IF;
END
$$;

-- The prefix of every job command that ml_stack made: the jobs it lists, reschedules and unschedules.
CREATE OR REPLACE FUNCTION ml_stack._training_command_prefix()
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT 'CALL ml_stack.run_training(job_name => ' $$;

-- The project name in a job command written by schedule_training (NULL for any other text). The command
-- starts "CALL ml_stack.run_training(job_name => <literal>, project_name => <literal>"; literals are what
-- format('%L') writes: '...' with '' for a quote, or E'...' with \\ for a backslash when there is one.
CREATE OR REPLACE FUNCTION ml_stack._training_job_project(command text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    m text[];
BEGIN
    m := regexp_match(command, '^CALL ml_stack\.run_training\(job_name => E?''(?:[^'']|'''')*'', '
                               'project_name => (E?)''((?:[^'']|'''')*)''');
    IF m IS NULL THEN
        RETURN NULL;
    END IF;
    RETURN CASE WHEN m[1] = 'E' THEN replace(replace(m[2], '''''', ''''), '\\', '\')
                ELSE replace(m[2], '''''', '''') END;
END
$$;

CREATE OR REPLACE FUNCTION ml_stack.schedule_training(
    job_name         text,
    schedule         text,
    project_name     text,
    algorithm        text    DEFAULT NULL,
    hyperparams      jsonb   DEFAULT NULL,
    test_size        real    DEFAULT NULL,
    test_sampling    text    DEFAULT NULL,
    preprocess       jsonb   DEFAULT NULL,
    engine           text    DEFAULT NULL,
    automatic_deploy boolean DEFAULT true)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    existing record;
    command  text;
    jobid    bigint;
BEGIN
    IF job_name IS NULL OR btrim(job_name) = '' THEN
        RAISE EXCEPTION 'job_name is required' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Name the job, e.g. ml_stack.schedule_training(''diabetes_nightly'', ''0 3 * * *'', ''diabetes'').';
    END IF;
    IF octet_length(job_name) > 63 THEN
        RAISE EXCEPTION 'job_name "%" is longer than 63 bytes', job_name USING ERRCODE = 'invalid_parameter_value',
            HINT = 'pg_cron stores job names as type name (at most 63 bytes): choose a shorter name.';
    END IF;
    IF schedule IS NULL OR btrim(schedule) = '' THEN
        RAISE EXCEPTION 'schedule is required' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'A cron schedule such as ''0 3 * * *'' (03:00 every day, in the server''s time zone) or ''@daily''.';
    END IF;
    PERFORM ml_stack._require_cron();
    -- the project and what its retrain will train: fails now rather than at every run
    PERFORM ml_stack._retrain_settings(project_name, algorithm, hyperparams, test_size, test_sampling, preprocess, engine);

    EXECUTE 'SELECT j.jobid, j.command FROM cron.job AS j WHERE j.jobname = $1 AND j.username = current_user'
        INTO existing USING job_name;
    IF existing.jobid IS NOT NULL AND NOT starts_with(existing.command, ml_stack._training_command_prefix()) THEN
        RAISE EXCEPTION 'pg_cron job "%" exists and is not an ml_stack training job', job_name
            USING ERRCODE = 'duplicate_object',
                  DETAIL = format('Its command: %s', existing.command),
                  HINT = 'Choose another job name; ml_stack does not replace jobs it did not make.';
    END IF;

    command := ml_stack._training_command_prefix() || format('%L, project_name => %L', job_name, project_name)
        || CASE WHEN algorithm IS NULL THEN '' ELSE format(', algorithm => %L', algorithm) END
        || CASE WHEN hyperparams IS NULL THEN '' ELSE format(', hyperparams => %L', hyperparams) END
        || CASE WHEN test_size IS NULL THEN '' ELSE format(', test_size => %L', test_size) END
        || CASE WHEN test_sampling IS NULL THEN '' ELSE format(', test_sampling => %L', test_sampling) END
        || CASE WHEN preprocess IS NULL THEN '' ELSE format(', preprocess => %L', preprocess) END
        || CASE WHEN engine IS NULL THEN '' ELSE format(', engine => %L', engine) END
        || CASE WHEN automatic_deploy IS DISTINCT FROM false THEN '' ELSE ', automatic_deploy => false' END
        || ')';
    BEGIN
        -- the same name again updates the job in place and keeps its jobid (pg_cron 1.4)
        EXECUTE 'SELECT cron.schedule($1, $2, $3)' INTO jobid USING job_name, schedule, command;
    EXCEPTION WHEN invalid_parameter_value THEN
        RAISE EXCEPTION '%', SQLERRM USING ERRCODE = 'invalid_parameter_value',
            HINT = 'pg_cron takes a cron schedule of five fields (minute hour day-of-month month day-of-week), '
                   'e.g. ''0 3 * * *'' for 03:00 every day or ''*/15 * * * *'', or @hourly, @daily, @weekly, '
                   '@monthly, @yearly; the finest is one minute.';
    END;
    RETURN jobid;
END
$$;
COMMENT ON FUNCTION ml_stack.schedule_training(text, text, text, text, jsonb, real, text, jsonb, text, boolean) IS
    'ml_stack: schedule a pg_cron job that retrains the project on its relation''s current rows (CALL ml_stack.run_training(...)): arguments left NULL come from the deployed model (or the most recent one) at each run; the new model is deployed only if it beats the deployed one; every run is recorded in ml_stack.training_runs. The same job name again reschedules. Returns the pg_cron jobid. Needs pg_cron in this database.';

CREATE OR REPLACE FUNCTION ml_stack.unschedule_training(job_name text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    existing record;
    removed  boolean;
BEGIN
    PERFORM ml_stack._require_cron();
    EXECUTE 'SELECT j.jobid, j.command FROM cron.job AS j WHERE j.jobname = $1 AND j.username = current_user'
        INTO existing USING job_name;
    IF existing.jobid IS NULL THEN
        RAISE EXCEPTION 'no training job named "%"', job_name
            USING ERRCODE = 'undefined_object',
                  HINT = 'SELECT job_name, project FROM ml_stack.training_jobs lists your training jobs.';
    END IF;
    IF NOT starts_with(existing.command, ml_stack._training_command_prefix()) THEN
        RAISE EXCEPTION 'pg_cron job "%" is not an ml_stack training job', job_name
            USING ERRCODE = 'wrong_object_type',
                  DETAIL = format('Its command: %s', existing.command),
                  HINT = 'Remove it with cron.unschedule() if you mean to.';
    END IF;
    EXECUTE 'SELECT cron.unschedule($1::bigint)' INTO removed USING existing.jobid;
    RETURN removed;
END
$$;
COMMENT ON FUNCTION ml_stack.unschedule_training(text) IS
    'ml_stack: remove a training job made by ml_stack.schedule_training (a run in progress is cancelled). Its history stays in ml_stack.training_runs.';

-- The rows of view ml_stack.training_jobs. A function, so that ml_stack installs without pg_cron (a view over
-- cron.job could not be created); it returns no rows when pg_cron is not in this database or the caller has no
-- USAGE on schema cron. pg_cron's row-level security shows each role its own jobs (a superuser all).
-- The last run is pg_cron's latest run of the job, with the ml_stack run it executed (same server process),
-- unless ml_stack's history has a newer run of the job (its command CALLed by hand, or pg_cron's log purged).
CREATE OR REPLACE FUNCTION ml_stack._training_jobs()
RETURNS TABLE (job_name text, jobid bigint, schedule text, project text, active boolean, username text,
               last_run_start timestamptz, last_run_end timestamptz, last_run_status text, last_run_message text,
               run_id bigint, model_id bigint, deployed boolean, command text, deploy_decision text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    -- a role that may not read the history still sees its jobs, without the run's model
    runs text := CASE WHEN has_table_privilege('ml_stack.training_runs', 'SELECT') THEN 'ml_stack.training_runs'
                      ELSE '(SELECT NULL::bigint AS id, NULL::timestamptz AS started_at, NULL::timestamptz AS finished_at,'
                           ' NULL::text AS status, NULL::text AS error, NULL::bigint AS model_id,'
                           ' NULL::boolean AS deployed, NULL::integer AS pid, NULL::text AS job_name,'
                           ' NULL::text AS username LIMIT 0)' END;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_extension AS e WHERE e.extname = 'pg_cron') THEN
        RETURN;
    END IF;
    IF NOT has_schema_privilege('cron', 'USAGE') THEN
        RETURN;
    END IF;
    IF NOT has_table_privilege('cron.job', 'SELECT') OR NOT has_table_privilege('cron.job_run_details', 'SELECT') THEN
        RETURN;
    END IF;
    RETURN QUERY EXECUTE format($q$
        SELECT j.jobname::text, j.jobid, j.schedule, ml_stack._training_job_project(j.command), j.active,
               j.username::text,
               CASE WHEN x.src = 'ml_stack' THEN r.started_at ELSE c.start_time END,
               CASE WHEN x.src = 'ml_stack' THEN r.finished_at ELSE c.end_time END,
               CASE WHEN x.src = 'ml_stack' THEN r.status ELSE c.status END,
               CASE WHEN x.src = 'ml_stack' THEN r.error ELSE c.return_message END,
               CASE WHEN x.src <> 'cron' THEN r.id END,
               CASE WHEN x.src <> 'cron' THEN r.model_id END,
               CASE WHEN x.src <> 'cron' THEN r.deployed END,
               j.command,
               CASE WHEN x.src <> 'cron' THEN ml_stack._deploy_decision(r.model_id) END
        FROM cron.job AS j
        LEFT JOIN LATERAL (
            SELECT d.start_time, d.end_time, d.status, d.return_message, d.job_pid
            FROM cron.job_run_details AS d WHERE d.jobid = j.jobid
            ORDER BY d.runid DESC LIMIT 1) AS c ON true
        LEFT JOIN LATERAL (
            SELECT t.id, t.started_at, t.finished_at, t.status, t.error, t.model_id, t.deployed, t.pid
            FROM %s AS t WHERE t.job_name = j.jobname::text AND t.username = j.username::text
            ORDER BY t.id DESC LIMIT 1) AS r ON true
        -- r ran in pg_cron's last run when it ran in its process, during it. pg_cron's launcher stamps
        -- start_time once it has sent the command, which the job's process may have begun running:
        -- its started_at can come first, by milliseconds
        CROSS JOIN LATERAL (SELECT CASE
            WHEN c.start_time IS NOT NULL AND r.pid = c.job_pid
                 AND r.started_at BETWEEN c.start_time - interval '5 seconds' AND coalesce(c.end_time, 'infinity') THEN 'both'
            WHEN c.start_time IS NOT NULL AND (r.id IS NULL OR c.start_time > r.started_at) THEN 'cron'
            WHEN r.id IS NOT NULL THEN 'ml_stack'
            END AS src) AS x
        WHERE starts_with(j.command, ml_stack._training_command_prefix()) AND j.database = current_database()
        ORDER BY j.jobid
    $q$, runs);
END
$$;

-- The recorded deploy decision of a model (row security may hide a confidential project's: NULL).
CREATE OR REPLACE FUNCTION ml_stack._deploy_decision(model_id bigint)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT m.deploy_decision FROM ml_stack.models AS m WHERE m.id = _deploy_decision.model_id $$;

CREATE OR REPLACE VIEW ml_stack.training_jobs AS
SELECT * FROM ml_stack._training_jobs();
COMMENT ON VIEW ml_stack.training_jobs IS
    'ml_stack: the training jobs scheduled with ml_stack.schedule_training (pg_cron jobs visible to the current role): schedule, project, whether active, and the last run: start, end, status and message (from cron.job_run_details, or from ml_stack.training_runs when that has a newer run), the ml_stack run, the model it produced, whether it was deployed and why (deploy_decision). Empty without pg_cron.';

-- source: sql/scheduling/run_training.sql
-- Retraining a project with its snapshot settings, and the history of training runs (ml_stack.training_runs).

-- What a retrain of `project_name` trains, from the project's reference model: its deployed model when it was
-- trained here, else its most recent trained model (restricted to `algorithm` when given). Every argument
-- left NULL comes from that model: algorithm, hyperparams and engine (when the algorithm is the same),
-- preprocess, and the split (test_size, test_sampling) of its snapshot. The relation is the project's, resolved
-- in the schema where it was found at the last train (r_search_path), so that a pg_cron job, whose session has
-- the default search_path, trains on the same relation as the user did. Raises when there is nothing to retrain.
CREATE OR REPLACE FUNCTION ml_stack._retrain_settings(
    project_name text, algorithm text, hyperparams jsonb, test_size real, test_sampling text, preprocess jsonb,
    engine text,
    OUT r_project_id bigint, OUT r_task text, OUT r_algorithm text, OUT r_hyperparams jsonb, OUT r_test_size real,
    OUT r_test_sampling text, OUT r_preprocess jsonb, OUT r_engine text, OUT r_search_path text,
    OUT r_reference_model_id bigint)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    proj     ml_stack.projects;
    ref      record;
    same     boolean;
    relname  text;
    parts    text[];
BEGIN
    IF project_name IS NULL OR btrim(project_name) = '' THEN
        RAISE EXCEPTION 'project_name is required' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Name the project to retrain; SELECT name FROM ml_stack.projects lists the projects.';
    END IF;
    SELECT p.* INTO proj FROM ml_stack.projects AS p WHERE p.name = project_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'project "%" does not exist', project_name
            USING ERRCODE = 'undefined_object',
                  HINT = 'Train the project once with ml_stack.train(project_name, task, relation_name, y_column_name); SELECT name FROM ml_stack.projects lists the projects.';
    END IF;
    IF proj.relation_name IS NULL OR proj.y_column_name IS NULL THEN
        RAISE EXCEPTION 'project "%" has no training relation (it was imported)', project_name
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Train it once on a relation: ml_stack.train(project_name, relation_name => ..., y_column_name => ...).';
    END IF;
    -- the reference model: trained here (not imported), the deployed one first, then the newest
    SELECT m.id, m.algorithm, m.engine, m.hyperparams, m.preprocess, s.test_size, s.test_sampling INTO ref
    FROM ml_stack.models AS m
    LEFT JOIN ml_stack.snapshots AS s ON s.id = m.snapshot_id
    LEFT JOIN ml_stack.deployed_models AS d ON d.project_id = m.project_id AND d.model_id = m.id
    WHERE m.project_id = proj.id AND m.status = 'successful' AND (algorithm IS NULL OR m.algorithm = algorithm)
    ORDER BY d.model_id IS NOT NULL DESC, m.id DESC
    LIMIT 1;
    same := FOUND;
    IF NOT same THEN  -- a new algorithm for this project: the split and preprocessing of its latest model
        SELECT m.id, m.algorithm, m.engine, m.hyperparams, m.preprocess, s.test_size, s.test_sampling INTO ref
        FROM ml_stack.models AS m
        LEFT JOIN ml_stack.snapshots AS s ON s.id = m.snapshot_id
        LEFT JOIN ml_stack.deployed_models AS d ON d.project_id = m.project_id AND d.model_id = m.id
        WHERE m.project_id = proj.id AND m.status = 'successful'
        ORDER BY d.model_id IS NOT NULL DESC, m.id DESC
        LIMIT 1;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'project "%" has no model trained in this database to retrain', project_name
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'Train it once with ml_stack.train(); imported models carry no training settings.';
        END IF;
    END IF;

    r_project_id := proj.id;
    r_task := proj.task;
    r_reference_model_id := ref.id;
    r_algorithm := coalesce(algorithm, ref.algorithm);
    r_hyperparams := coalesce(hyperparams, CASE WHEN same THEN ref.hyperparams ELSE '{}' END);
    r_engine := coalesce(engine, CASE WHEN same THEN ref.engine END);
    r_preprocess := coalesce(preprocess, ref.preprocess, '{}');
    r_test_size := coalesce(test_size, ref.test_size, 0.25);
    r_test_sampling := coalesce(test_sampling, ref.test_sampling, 'random');

    -- checked now, so that a schedule with a typo fails when it is made, not every night
    PERFORM ml_stack._choose_engine(r_task, r_algorithm, r_engine);
    IF jsonb_typeof(r_hyperparams) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'hyperparams must be a JSON object' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'e.g. hyperparams => ''{"alpha": 0.5}'', or NULL for the reference model''s.';
    END IF;
    IF jsonb_typeof(r_preprocess) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'preprocess must be a JSON object' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'e.g. preprocess => ''{"bmi": {"impute": "median"}}'', or NULL for the reference model''s.';
    END IF;
    PERFORM ml_stack._check_test_sampling(r_test_sampling);
    IF NOT r_test_size > 0 THEN
        RAISE EXCEPTION 'test_size must be a fraction in (0, 1) or a row count >= 1, got %', r_test_size
            USING ERRCODE = 'invalid_parameter_value', HINT = 'e.g. test_size => 0.25, or NULL for the reference model''s.';
    END IF;

    -- the schema of the relation of the project's last train (regclass text, qualified: see _train)
    SELECT s.relation_name INTO relname
    FROM ml_stack.snapshots AS s JOIN ml_stack.models AS m ON m.snapshot_id = s.id
    WHERE s.project_id = proj.id AND m.status = 'successful'
    ORDER BY s.id DESC
    LIMIT 1;
    BEGIN
        parts := parse_ident(relname);
    EXCEPTION WHEN OTHERS THEN
        parts := NULL;
    END;
    r_search_path := CASE WHEN cardinality(parts) = 2 THEN quote_ident(parts[1]) ELSE current_setting('search_path') END;
END
$$;

-- Called by _train (sql/training/train.sql) once a manual train has written its model: one 'manual' row in
-- the history. Skipped inside ml_stack.run_training, which records its own row (transaction-local setting
-- ml_stack.training_run). A train that fails never gets here: its transaction leaves no trace.
CREATE OR REPLACE FUNCTION ml_stack._record_manual_run(project_id bigint, model_id bigint, deployed boolean)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    previous_end timestamptz := nullif(current_setting('ml_stack.last_manual_run_end', true), '')::timestamptz;
    finished     timestamptz := clock_timestamp();
BEGIN
    IF coalesce(current_setting('ml_stack.training_run', true), '') <> '' THEN
        RETURN;
    END IF;
    -- the run started with its statement, or after the previous train of the same statement (a loop)
    INSERT INTO ml_stack.training_runs (project_id, project_name, job_name, trigger, status, started_at, finished_at,
                                        algorithm, hyperparams, model_id, deployed)
    SELECT p.id, p.name, NULL, 'manual', 'succeeded',
           greatest(statement_timestamp(), coalesce(previous_end, '-infinity')), finished,
           m.algorithm, m.hyperparams, m.id, deployed
    FROM ml_stack.projects AS p JOIN ml_stack.models AS m ON m.project_id = p.id
    WHERE p.id = project_id AND m.id = model_id;
    PERFORM set_config('ml_stack.last_manual_run_end', finished::text, true);
END
$$;

-- The command of every scheduled training job: one retrain of the project, recorded in ml_stack.training_runs
-- whatever happens. The 'running' row is committed first; a failure is recorded and committed in the handler
-- and then raised again, so that pg_cron records it too (cron.job_run_details) with the original error.
-- A procedure with COMMIT cannot carry a SET clause: the search_path is pinned by set_config for each
-- transaction instead, and every name is schema-qualified. It must be CALLed at top level (as pg_cron does),
-- not inside a transaction block.
CREATE OR REPLACE PROCEDURE ml_stack.run_training(
    job_name         text,
    project_name     text,
    algorithm        text    DEFAULT NULL,
    hyperparams      jsonb   DEFAULT NULL,
    test_size        real    DEFAULT NULL,
    test_sampling    text    DEFAULT NULL,
    preprocess       jsonb   DEFAULT NULL,
    engine           text    DEFAULT NULL,
    automatic_deploy boolean DEFAULT true)
LANGUAGE plpgsql
AS $$
#variable_conflict use_variable
DECLARE
    run_id     bigint;
    proj_id    bigint;
    settings   record;
    trained    record;
    run_algorithm   text;
    run_hyperparams jsonb;
    err_message text;
    err_state   text;
BEGIN
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    IF project_name IS NULL OR btrim(project_name) = '' THEN
        RAISE EXCEPTION 'project_name is required' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'CALL ml_stack.run_training(job_name, project_name); SELECT name FROM ml_stack.projects lists the projects.';
    END IF;
    -- runs whose server process is gone (terminated, crashed) will never finish: say so
    UPDATE ml_stack.training_runs AS t
    SET status = 'failed', error = 'the run did not finish: its server process ended first'
    WHERE t.status = 'running'
      AND NOT EXISTS (SELECT FROM pg_catalog.pg_stat_activity AS a
                      WHERE a.pid = t.pid AND (a.backend_start IS NULL OR a.backend_start <= t.started_at));
    SELECT p.id INTO proj_id FROM ml_stack.projects AS p WHERE p.name = project_name;
    INSERT INTO ml_stack.training_runs (project_id, project_name, job_name, trigger, status)
    VALUES (proj_id, project_name, job_name,
            CASE WHEN job_name IS NOT NULL AND pg_catalog.current_setting('application_name') = 'pg_cron'
                 THEN 'cron' ELSE 'manual' END,
            'running')
    RETURNING id INTO run_id;
    COMMIT;  -- the run is on record from now on, whatever follows

    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    PERFORM pg_catalog.set_config('ml_stack.training_run', run_id::text, true);  -- _record_manual_run: not a manual train
    BEGIN
        settings := ml_stack._retrain_settings(project_name, algorithm, hyperparams, test_size, test_sampling,
                                               preprocess, engine);
        run_algorithm := settings.r_algorithm;
        run_hyperparams := settings.r_hyperparams;
        -- train() resolves the project's relation with the caller's search_path: the schema it was found in
        PERFORM pg_catalog.set_config('search_path', settings.r_search_path, true);
        SELECT t.model_id, t.deployed INTO trained
        FROM ml_stack.train(project_name => project_name, algorithm => settings.r_algorithm,
                            hyperparams => settings.r_hyperparams, test_size => settings.r_test_size,
                            test_sampling => settings.r_test_sampling, preprocess => settings.r_preprocess,
                            automatic_deploy => coalesce(automatic_deploy, true), engine => settings.r_engine) AS t;
        PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
        UPDATE ml_stack.training_runs AS t
        SET status = 'succeeded', finished_at = pg_catalog.clock_timestamp(), project_id = settings.r_project_id,
            algorithm = run_algorithm, hyperparams = run_hyperparams,
            model_id = trained.model_id, deployed = trained.deployed
        WHERE t.id = run_id;
    EXCEPTION WHEN OTHERS OR query_canceled THEN
        GET STACKED DIAGNOSTICS err_message = MESSAGE_TEXT, err_state = RETURNED_SQLSTATE;
        PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
        UPDATE ml_stack.training_runs AS t
        SET status = 'failed', finished_at = pg_catalog.clock_timestamp(), error = err_message, sqlstate = err_state,
            algorithm = run_algorithm, hyperparams = run_hyperparams
        WHERE t.id = run_id;
        COMMIT;  -- keep the failure on record, then fail: pg_cron records the original error too
        RAISE;
    END;
END
$$;
COMMENT ON PROCEDURE ml_stack.run_training(text, text, text, jsonb, real, text, jsonb, text, boolean) IS
    'ml_stack: the command of a scheduled training job (ml_stack.schedule_training): retrain the project on its relation''s current rows with the settings of its deployed model (or of its most recent one) for every argument left NULL, deploy the new model only if it beats the deployed one, and record the run in ml_stack.training_runs, failed or not (a failure is raised again after it is recorded). CALL it at top level, not in a transaction block.';

-- source: sql/api/expose.sql
-- HTTP endpoints through PostgREST (DESIGN §3c). ml_stack.expose() makes a project's
-- endpoints in an API schema that holds nothing else, for PostgREST's db-schemas:
--   predict_<project>(<feature columns>)         float8: the prediction
--   predict_proba_<project>(<feature columns>)   float8[]: class probabilities (classifiers)
--   classify_<project>(<feature columns>)        jsonb: {"label": ..., "probabilities": {"<class>": ...}}
--   predict_batch_<project>(rows jsonb)          a table: one row per element of a JSON array of rows
-- Each is a STABLE PL/pgSQL function (PostgREST serves it on GET and POST, in a READ ONLY
-- transaction) that calls the project's typed serving function (serving/typed.sql), so it
-- follows the current deployment. SECURITY DEFINER, owned by ml_stack's owner, with a pinned
-- search_path: the API role needs USAGE on the API schema and EXECUTE on the endpoints, and
-- nothing in schema ml_stack (no registry, no training relations, no other project).
-- PL/pgSQL rather than SQL: a SECURITY DEFINER SQL function is never inlined, and PL/pgSQL
-- keeps its plan for the session (PostgREST's pooled connections) where SQL would re-plan
-- the body at every request. The endpoints are remade from ml_stack.endpoints whenever
-- serving changes (_refresh_serving), and every change sends NOTIFY pgrst, 'reload schema'.

-- A prediction with its probabilities as the classify endpoints return it: the class of
-- the largest probability (the first on ties), probabilities keyed by class.
CREATE OR REPLACE FUNCTION ml_stack._labelled(classes float8[], probabilities float8[])
RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN probabilities IS NOT NULL THEN
        jsonb_build_object('label', classes[ml_stack._argmax(probabilities)],
                           'probabilities', (SELECT jsonb_object_agg(u.c::text, u.p) FROM unnest(classes, probabilities) AS u(c, p)))
    END
$$;

-- The rows of a batch endpoint must be a JSON array (of objects: jsonb_to_recordset says so).
CREATE OR REPLACE FUNCTION ml_stack._check_batch_rows(rows jsonb)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF jsonb_typeof(rows) IS DISTINCT FROM 'array' THEN
        RAISE EXCEPTION 'rows must be a JSON array of objects (one per row, feature columns by name)'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'e.g. {"rows": [{"a": 1}, {"a": 2}]}';
    END IF;
END
$$;

-- The names of a project's endpoints (NULL for those its task has not).
CREATE OR REPLACE FUNCTION ml_stack._endpoint_names(project_name text, task text,
    OUT predict text, OUT predict_proba text, OUT classify text, OUT predict_batch text)
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT 'predict_' || project_name,
           CASE WHEN task = 'classification' THEN 'predict_proba_' || project_name END,
           CASE WHEN task = 'classification' THEN 'classify_' || project_name END,
           'predict_batch_' || project_name
$$;

-- Why a role may not be granted endpoints, or NULL: an API role runs every request, so it
-- must not be able to do more than call them. Membership counts whether or not it inherits:
-- a NOINHERIT member can still SET ROLE to the role it belongs to.
CREATE OR REPLACE FUNCTION ml_stack._api_role_problem(role_name text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
        WHEN r.oid IS NULL THEN format('role "%s" does not exist', role_name)
        WHEN r.rolsuper THEN format('role "%s" is a superuser', role_name)
        WHEN r.rolbypassrls THEN format('role "%s" has BYPASSRLS', role_name)
        WHEN r.rolcreaterole THEN format('role "%s" has CREATEROLE (it could grant itself other roles)', role_name)
        WHEN r.oid = e.extowner THEN format('role "%s" owns ml_stack', role_name)
        WHEN EXISTS (SELECT FROM pg_catalog.pg_roles AS g
                     WHERE g.rolname IN ('ml_stack_admin', 'ml_stack_trainer', 'ml_stack_predictor')
                       AND pg_catalog.pg_has_role(r.oid, g.oid, 'MEMBER')) THEN
            format('role "%s" is a member of an ml_stack group role (it could read the registry or train)', role_name)
        WHEN pg_catalog.pg_has_role(r.oid, e.extowner, 'MEMBER') THEN format('role "%s" is a member of ml_stack''s owner', role_name)
        ELSE (SELECT format('role "%s" is a member of role "%s", which is a superuser or has BYPASSRLS or CREATEROLE',
                            role_name, g.rolname)
              FROM pg_catalog.pg_roles AS g
              WHERE (g.rolsuper OR g.rolbypassrls OR g.rolcreaterole) AND g.oid <> r.oid
                AND pg_catalog.pg_has_role(r.oid, g.oid, 'MEMBER')
              ORDER BY g.rolname LIMIT 1)
    END
    FROM pg_catalog.pg_extension AS e
    LEFT JOIN pg_catalog.pg_roles AS r ON r.rolname = role_name
    WHERE e.extname = 'ml_stack'
$$;

-- Why a project's endpoints may not be made in a schema, or NULL: the schema is one PostgREST may
-- publish whole, and no other exposed project there has an endpoint of the same name
-- ("proba_x"'s predict endpoint is "x"'s predict_proba endpoint).
CREATE OR REPLACE FUNCTION ml_stack._endpoint_schema_problem(project_id bigint, schema_name text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
        WHEN schema_name IS NULL OR schema_name = '' OR schema_name IN ('ml_stack', 'public', 'information_schema')
             OR schema_name LIKE 'pg\_%' OR schema_name IN (SELECT e.extnamespace::regnamespace::text FROM pg_catalog.pg_extension AS e)
            THEN format('schema "%s" cannot be an API schema', schema_name)
        ELSE (SELECT format('endpoint %s.%s would be both project "%s"''s and project "%s"''s', schema_name, mine.u, p.name, other.name)
              FROM ml_stack.projects AS p,
                   ml_stack._endpoint_names(p.name, p.task) AS en,
                   unnest(ARRAY[en.predict, en.predict_proba, en.classify, en.predict_batch]) AS mine(u),
                   ml_stack.endpoints AS oe JOIN ml_stack.projects AS other ON other.id = oe.project_id,
                   ml_stack._endpoint_names(other.name, other.task) AS on_,
                   unnest(ARRAY[on_.predict, on_.predict_proba, on_.classify, on_.predict_batch]) AS theirs(u)
              WHERE p.id = _endpoint_schema_problem.project_id AND oe.schema_name = _endpoint_schema_problem.schema_name
                AND other.id <> p.id AND mine.u = theirs.u
              ORDER BY other.id LIMIT 1)
    END
$$;

-- Whether the schema holds anything but the endpoints of exposed projects.
CREATE OR REPLACE FUNCTION ml_stack._api_schema_foreign_objects(schema_name text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT string_agg(o, ', ' ORDER BY o) FROM (
        SELECT format('%s %s', CASE c.relkind WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' WHEN 'S' THEN 'sequence'
                                              ELSE 'table' END, c.relname) AS o
        FROM pg_catalog.pg_class AS c JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.nspname = schema_name AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
        UNION ALL
        SELECT format('function %s', p.oid::regprocedure)
        FROM pg_catalog.pg_proc AS p JOIN pg_catalog.pg_namespace AS n ON n.oid = p.pronamespace
        WHERE n.nspname = schema_name
          AND p.proname NOT IN (SELECT u.name
                                FROM ml_stack.endpoints AS e JOIN ml_stack.projects AS pr ON pr.id = e.project_id,
                                     ml_stack._endpoint_names(pr.name, pr.task) AS en,
                                     unnest(ARRAY[en.predict, en.predict_proba, en.classify, en.predict_batch]) AS u(name)
                                WHERE e.schema_name = _api_schema_foreign_objects.schema_name)
        LIMIT 5) AS f
$$;

-- Create, or replace in place, one endpoint; with other arguments or another result, the old one
-- is dropped first. Grants EXECUTE to the API roles only. Returns whether anything changed.
CREATE OR REPLACE FUNCTION ml_stack._define_endpoint(schema_name text, name text, arguments text, result text, body text,
                                                     description text, grant_to text[])
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    fn regprocedure;
    kept regprocedure;
    changed boolean := false;
    r text;
BEGIN
    FOR fn IN SELECT p.oid FROM pg_catalog.pg_proc AS p JOIN pg_catalog.pg_namespace AS n ON n.oid = p.pronamespace
              WHERE n.nspname = schema_name AND p.proname = name LOOP
        IF pg_catalog.pg_get_function_identity_arguments(fn) = arguments AND pg_catalog.pg_get_function_result(fn) = result THEN
            kept := fn;
        ELSE
            EXECUTE format('DROP FUNCTION %s', fn);
            changed := true;
        END IF;
    END LOOP;
    IF kept IS NULL OR (SELECT p.prosrc <> body FROM pg_catalog.pg_proc AS p WHERE p.oid = kept) THEN
        PERFORM ml_stack._create_or_replace(
            format('CREATE OR REPLACE FUNCTION %I.%I(%s) RETURNS %s LANGUAGE plpgsql STABLE SECURITY DEFINER '
                   'SET search_path = pg_catalog, pg_temp AS %L', schema_name, name, arguments, result, body), kept);
        changed := true;
    END IF;
    SELECT p.oid INTO fn FROM pg_catalog.pg_proc AS p JOIN pg_catalog.pg_namespace AS n ON n.oid = p.pronamespace
    WHERE n.nspname = schema_name AND p.proname = name;
    PERFORM ml_stack._release_from_extension(fn);
    -- every refresh of serving comes here: leave the catalog alone when it already says all this
    IF NOT changed AND obj_description(fn, 'pg_proc') IS NOT DISTINCT FROM description
       AND ARRAY(SELECT DISTINCT a.grantee::regrole::text FROM pg_catalog.pg_proc AS p, aclexplode(p.proacl) AS a
                 WHERE p.oid = fn AND a.grantee <> p.proowner ORDER BY 1)
           = ARRAY(SELECT DISTINCT quote_ident(g) FROM unnest(grant_to) AS g ORDER BY 1) THEN
        RETURN false;
    END IF;
    EXECUTE format('COMMENT ON FUNCTION %s IS %L', fn, description);
    EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', fn);
    -- roles granted before (an expose with other roles) that are not API roles of it now
    FOR r IN SELECT a.grantee::regrole::text FROM pg_catalog.pg_proc AS p, aclexplode(p.proacl) AS a
             WHERE p.oid = fn AND a.grantee <> 0 AND a.grantee <> p.proowner
               AND a.grantee::regrole::text <> ALL (SELECT quote_ident(g) FROM unnest(grant_to) AS g) LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM %s', fn, r);
    END LOOP;
    FOREACH r IN ARRAY grant_to LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', fn, r);
    END LOOP;
    RETURN changed;
END
$$;

-- (Re)make a project's endpoints in one API schema from its serving functions; drops the
-- endpoints that its model no longer has. Returns whether anything changed.
CREATE OR REPLACE FUNCTION ml_stack._define_endpoints(project_id bigint, schema_name text, grant_to text[])
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d record;
    names record;
    arguments text;
    positional text;
    record_columns text;
    record_names text;
    classes text;
    about text;
    changed boolean := false;
    defined boolean;
BEGIN
    SELECT dm.project_name, dm.task, dm.model_id, dm.algorithm, dm.serving_function, dm.serving_proba_function, m.classes
    INTO d
    FROM ml_stack.deployed_models AS dm JOIN ml_stack.models AS m ON m.id = dm.model_id
    WHERE dm.project_id = _define_endpoints.project_id;
    IF d.serving_function IS NULL THEN
        RETURN false;   -- nothing deployed now: the endpoints stay, their serving function raises why
    END IF;
    names := ml_stack._endpoint_names(d.project_name, d.task);
    arguments := pg_catalog.pg_get_function_identity_arguments(d.serving_function);
    SELECT string_agg(format('$%s', a.n), ', ' ORDER BY a.n),
           string_agg(format('%I %s', a.name, format_type(a.typ, NULL)), ', ' ORDER BY a.n),
           string_agg(format('r.%I', a.name), ', ' ORDER BY a.n)
    INTO positional, record_columns, record_names
    FROM pg_catalog.pg_proc AS p,
         unnest(p.proargnames, p.proargtypes::oid[]) WITH ORDINALITY AS a(name, typ, n)
    WHERE p.oid = d.serving_function;
    classes := format('%L::float8[]', d.classes);
    about := format(E'Project "%s" (%s), served by its deployed model (model %s, %s) through ml_stack.\n'
                    'Arguments: the feature columns of the training relation, by name (%s).',
                    d.project_name, d.task, d.model_id, d.algorithm, arguments);

    -- (each call a statement of its own: in "f() OR changed" SQL may skip f())
    defined := ml_stack._define_endpoint(schema_name, names.predict, arguments, 'double precision',
        format('BEGIN RETURN %s(%s); END', d.serving_function::oid::regproc, positional),
        format(E'Prediction of %s: %s.\n%s', d.project_name,
               CASE WHEN d.task = 'classification' THEN 'the class' ELSE 'the value' END, about), grant_to);
    changed := changed OR defined;
    IF d.task = 'classification' THEN
        defined := ml_stack._define_endpoint(schema_name, names.predict_proba, arguments, 'double precision[]',
            format('BEGIN RETURN %s(%s); END', d.serving_proba_function::oid::regproc, positional),
            format(E'Class probabilities of %s, one per class (classes ascending: %s).\n%s', d.project_name,
                   array_to_string(d.classes, ', '), about), grant_to);
        changed := changed OR defined;
        defined := ml_stack._define_endpoint(schema_name, names.classify, arguments, 'jsonb',
            format('BEGIN RETURN ml_stack._labelled(%s, %s(%s)); END', classes, d.serving_proba_function::oid::regproc, positional),
            format(E'Class and probabilities of %s: {"label": ..., "probabilities": {"<class>": ...}}.\n%s', d.project_name, about),
            grant_to);
        changed := changed OR defined;
        defined := ml_stack._define_endpoint(schema_name, names.predict_batch, 'rows jsonb',
            'TABLE("row" integer, label double precision, probabilities jsonb)',
            format($b$#variable_conflict use_column
BEGIN
    PERFORM ml_stack._check_batch_rows(rows);
    RETURN QUERY SELECT s.n::integer, (s.l ->> 'label')::float8, s.l -> 'probabilities'
    FROM (SELECT r.ml_stack_row_number AS n, ml_stack._labelled(%s, %s(%s)) AS l
          FROM ROWS FROM (jsonb_to_recordset(rows) AS (%s)) WITH ORDINALITY AS r(%s, ml_stack_row_number)) AS s
    ORDER BY s.n;
END$b$, classes, d.serving_proba_function::oid::regproc, record_names, record_columns,
                   (SELECT string_agg(format('%I', a.name), ', ' ORDER BY a.n)
                    FROM pg_catalog.pg_proc AS p, unnest(p.proargnames) WITH ORDINALITY AS a(name, n) WHERE p.oid = d.serving_function)),
            format(E'Class and probabilities of %s for many rows: {"rows": [{<feature columns>}, ...]} gives one (row, label, probabilities) per row, in order.\n%s',
                   d.project_name, about), grant_to);
        changed := changed OR defined;
    ELSE
        defined := ml_stack._define_endpoint(schema_name, names.predict_batch, 'rows jsonb',
            'TABLE("row" integer, prediction double precision)',
            format($b$#variable_conflict use_column
BEGIN
    PERFORM ml_stack._check_batch_rows(rows);
    RETURN QUERY SELECT r.ml_stack_row_number::integer, %s(%s)
    FROM ROWS FROM (jsonb_to_recordset(rows) AS (%s)) WITH ORDINALITY AS r(%s, ml_stack_row_number)
    ORDER BY r.ml_stack_row_number;
END$b$, d.serving_function::oid::regproc, record_names, record_columns,
                   (SELECT string_agg(format('%I', a.name), ', ' ORDER BY a.n)
                    FROM pg_catalog.pg_proc AS p, unnest(p.proargnames) WITH ORDINALITY AS a(name, n) WHERE p.oid = d.serving_function)),
            format(E'Predictions of %s for many rows: {"rows": [{<feature columns>}, ...]} gives one (row, prediction) per row, in order.\n%s',
                   d.project_name, about), grant_to);
        changed := changed OR defined;
    END IF;
    RETURN changed;
END
$$;

-- Remake every exposed project's endpoints (after any change of serving); tells PostgREST
-- to reload its schema cache when an endpoint changed.
CREATE OR REPLACE FUNCTION ml_stack._refresh_endpoints()
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e record;
    changed boolean := false;
BEGIN
    IF to_regclass('ml_stack.endpoints') IS NULL THEN
        RETURN;   -- during an upgrade, before the table exists
    END IF;
    FOR e IN SELECT en.project_id, en.schema_name, en.grant_to,
                    coalesce(ml_stack._endpoint_schema_problem(en.project_id, en.schema_name),
                             'it holds ' || ml_stack._api_schema_foreign_objects(en.schema_name),
                             (SELECT string_agg(ml_stack._api_role_problem(g), '; ') FROM unnest(en.grant_to) AS g)) AS problem
             FROM ml_stack.endpoints AS en
             WHERE to_regnamespace(quote_ident(en.schema_name)) IS NOT NULL ORDER BY en.project_id, en.schema_name LOOP
        -- what expose() checked is checked again: a role may have been granted more since, and
        -- a row may have been written without expose()
        IF e.problem IS NOT NULL THEN
            RAISE WARNING 'ml_stack: the endpoints of project % in schema "%" are not refreshed: %', e.project_id, e.schema_name, e.problem
                USING HINT = 'Fix the role or schema and call ml_stack.expose() again, or ml_stack.unexpose() the project.';
            CONTINUE;
        END IF;
        -- (not "f() OR changed": SQL may skip f() once changed is true)
        IF ml_stack._define_endpoints(e.project_id, e.schema_name, e.grant_to) THEN
            changed := true;
        END IF;
    END LOOP;
    IF changed THEN
        NOTIFY pgrst, 'reload schema';
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION ml_stack.expose(project_name text, schema_name text DEFAULT 'api',
                                           grant_to text[] DEFAULT ARRAY['web_anon'])
RETURNS SETOF regprocedure
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    proj record;
    names record;
    problem text;
    r text;
BEGIN
    PERFORM ml_stack._refuse_on_standby('ml_stack.expose');
    SELECT p.id, p.name, p.task INTO proj FROM ml_stack.projects AS p WHERE p.name = expose.project_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'project "%" does not exist', project_name
            USING ERRCODE = 'undefined_object', HINT = 'SELECT name FROM ml_stack.projects lists the projects.';
    END IF;
    IF (SELECT d.serving_function FROM ml_stack.deployed_models AS d WHERE d.project_id = proj.id) IS NULL THEN
        RAISE EXCEPTION 'project "%" has no deployed model with named feature columns to expose', project_name
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Deploy a model trained on a relation (ml_stack.deploy); a model imported without column names has no typed endpoint.';
    END IF;
    problem := ml_stack._endpoint_schema_problem(proj.id, schema_name);
    IF problem LIKE 'schema %' THEN
        RAISE EXCEPTION '%', problem
            USING ERRCODE = 'invalid_schema_name',
                  HINT = 'An API schema holds the endpoints only (PostgREST publishes everything in it): use a schema of its own, e.g. ''api''.';
    ELSIF problem IS NOT NULL THEN
        RAISE EXCEPTION 'cannot expose project "%" in schema "%": %', project_name, schema_name, problem
            USING ERRCODE = 'duplicate_function',
                  HINT = 'Expose one of the two projects in another API schema, or rename it.';
    END IF;
    IF grant_to IS NULL OR cardinality(grant_to) = 0 THEN
        RAISE EXCEPTION 'grant_to names no role' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Name the roles PostgREST switches to, e.g. ARRAY[''web_anon''] (its db-anon-role).';
    END IF;
    FOREACH r IN ARRAY grant_to LOOP
        problem := ml_stack._api_role_problem(r);
        IF problem IS NOT NULL THEN
            RAISE EXCEPTION 'cannot grant endpoints to role "%": %', r, problem
                USING ERRCODE = CASE WHEN problem LIKE '%does not exist' THEN 'undefined_object' ELSE 'insufficient_privilege' END,
                      HINT = 'An API role calls the endpoints and nothing else: CREATE ROLE web_anon NOLOGIN, then GRANT web_anon TO authenticator.';
        END IF;
    END LOOP;
    names := ml_stack._endpoint_names(proj.name, proj.task);
    IF (SELECT max(octet_length(u)) FROM unnest(ARRAY[names.predict, names.predict_proba, names.classify, names.predict_batch]) AS u) > 63 THEN
        RAISE EXCEPTION 'the endpoint names of project "%" would be longer than 63 bytes, PostgreSQL''s limit', project_name
            USING ERRCODE = 'name_too_long', HINT = 'Rename the project to a shorter name (at most 49 bytes).';
    END IF;
    IF to_regnamespace(quote_ident(schema_name)) IS NULL THEN
        EXECUTE format('CREATE SCHEMA %I', schema_name);
        EXECUTE format('COMMENT ON SCHEMA %I IS %L', schema_name, 'ml_stack API schema: the HTTP endpoints of exposed projects (ml_stack.expose), for PostgREST''s db-schemas.');
    END IF;
    INSERT INTO ml_stack.endpoints AS e (project_id, schema_name, grant_to)
    VALUES (proj.id, schema_name, grant_to)
    ON CONFLICT ON CONSTRAINT endpoints_pkey DO UPDATE SET grant_to = EXCLUDED.grant_to;
    problem := ml_stack._api_schema_foreign_objects(schema_name);
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION 'schema "%" holds more than ml_stack''s endpoints: %', schema_name, problem
            USING ERRCODE = 'invalid_schema_name',
                  HINT = 'PostgREST publishes every function of its schemas: give the endpoints a schema of their own.';
    END IF;
    FOREACH r IN ARRAY grant_to LOOP
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', schema_name, r);
    END LOOP;
    PERFORM ml_stack._define_endpoints(proj.id, schema_name, grant_to);
    NOTIFY pgrst, 'reload schema';
    RETURN QUERY SELECT p.oid::regprocedure
                 FROM pg_catalog.pg_proc AS p JOIN pg_catalog.pg_namespace AS n ON n.oid = p.pronamespace
                 WHERE n.nspname = schema_name
                   AND p.proname IN (names.predict, names.predict_proba, names.classify, names.predict_batch)
                 ORDER BY p.proname;
END
$$;
COMMENT ON FUNCTION ml_stack.expose(text, text, text[]) IS
    'ml_stack: make the project''s HTTP endpoints (predict_, predict_proba_, classify_, predict_batch_<project>) in an API schema for PostgREST, granted to the API roles only; they follow the current deployment.';

-- Drop a project's endpoints from an API schema and tell PostgREST.
CREATE OR REPLACE FUNCTION ml_stack._drop_endpoints(schema_name text, project_name text, task text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    names record := ml_stack._endpoint_names(project_name, task);
    fn regprocedure;
BEGIN
    FOR fn IN SELECT p.oid FROM pg_catalog.pg_proc AS p JOIN pg_catalog.pg_namespace AS n ON n.oid = p.pronamespace
              WHERE n.nspname = schema_name
                AND p.proname IN (names.predict, names.predict_proba, names.classify, names.predict_batch) LOOP
        EXECUTE format('DROP FUNCTION %s', fn);
    END LOOP;
    NOTIFY pgrst, 'reload schema';
END
$$;

-- A deleted project takes its endpoints with it (its endpoints rows go by the foreign key's
-- cascade, after which the project's name, hence the endpoints' names, would be unknown).
-- As the owner, who owns the endpoints: a member of ml_stack_admin may delete projects.
CREATE OR REPLACE FUNCTION ml_stack._drop_deleted_project_endpoints()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM ml_stack._drop_endpoints(e.schema_name, OLD.name, OLD.task)
    FROM ml_stack.endpoints AS e WHERE e.project_id = OLD.id;
    RETURN OLD;
END
$$;

CREATE OR REPLACE TRIGGER drop_endpoints BEFORE DELETE ON ml_stack.projects
    FOR EACH ROW EXECUTE FUNCTION ml_stack._drop_deleted_project_endpoints();

CREATE OR REPLACE FUNCTION ml_stack.unexpose(project_name text, schema_name text DEFAULT 'api')
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    proj record;
BEGIN
    SELECT p.id, p.name, p.task INTO proj FROM ml_stack.projects AS p WHERE p.name = unexpose.project_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'project "%" does not exist', project_name
            USING ERRCODE = 'undefined_object', HINT = 'SELECT name FROM ml_stack.projects lists the projects.';
    END IF;
    DELETE FROM ml_stack.endpoints AS e WHERE e.project_id = proj.id AND e.schema_name = unexpose.schema_name;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM ml_stack._drop_endpoints(schema_name, proj.name, proj.task);
    RETURN true;
END
$$;
COMMENT ON FUNCTION ml_stack.unexpose(text, text) IS
    'ml_stack: remove the project''s HTTP endpoints from the API schema (true if it was exposed there).';

-- A postgrest.conf for the API schema (PostgREST 12's settings).
CREATE OR REPLACE FUNCTION ml_stack.postgrest_config(schema_name text DEFAULT 'api', anon_role text DEFAULT 'web_anon',
                                                     authenticator text DEFAULT 'authenticator', jwt_secret text DEFAULT NULL,
                                                     db_uri text DEFAULT NULL, server_port integer DEFAULT 3000)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    problem text := ml_stack._api_role_problem(anon_role);
BEGIN
    -- a line break in a name would start a setting of its own in the file
    IF concat(schema_name, anon_role, authenticator, jwt_secret, db_uri) ~ '[[:cntrl:]]' THEN
        RAISE EXCEPTION 'the names and values of a postgrest.conf cannot hold control characters (line breaks, tabs)'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Rename the schema or role.';
    END IF;
    IF problem IS NOT NULL AND problem NOT LIKE '%does not exist' THEN
        RAISE EXCEPTION 'role "%" cannot be PostgREST''s anonymous role: %', anon_role, problem
            USING ERRCODE = 'insufficient_privilege', HINT = 'CREATE ROLE web_anon NOLOGIN; GRANT web_anon TO authenticator;';
    END IF;
    RETURN format(E'# postgrest.conf for the ml_stack endpoints of database %1$s (ml_stack.postgrest_config)\n'
                  'db-uri = "%2$s"\n'
                  'db-schemas = "%3$s"\n'
                  'db-anon-role = "%4$s"\n'
                  '%5$s\n'
                  '# the endpoints need nothing of public or ml_stack: no extra search path\n'
                  'db-extra-search-path = ""\n'
                  'db-pool = 10\n'
                  'server-host = "127.0.0.1"\n'
                  'server-port = %6$s\n'
                  'openapi-mode = "follow-privileges"\n'
                  '# the authenticator: CREATE ROLE %7$s LOGIN NOINHERIT PASSWORD ''...''; GRANT %4$s TO %7$s;\n',
                  current_database(),
                  coalesce(db_uri, format('postgres://%s@localhost:%s/%s', authenticator, current_setting('port'), current_database())),
                  replace(schema_name, '"', '\"'), replace(anon_role, '"', '\"'),
                  CASE WHEN jwt_secret IS NULL THEN '# jwt-secret = "<at least 32 characters>"   (JWT roles: the "role" claim)'
                       ELSE format('jwt-secret = "%s"', replace(jwt_secret, '"', '\"')) END,
                  server_port, authenticator);
END
$$;
COMMENT ON FUNCTION ml_stack.postgrest_config(text, text, text, text, text, integer) IS
    'ml_stack: a postgrest.conf serving the API schema of ml_stack.expose() (PostgREST 12), with the anonymous role checked.';

-- source: sql/api/grants.sql
-- What each group role of ml_stack may do (api/roles_0.4.0.sql), granted again by every
-- install and upgrade script (GRANT is idempotent) to the roles that exist. The boundary is
-- schema ml_stack itself: the extension grants PUBLIC no USAGE on it, so a role outside the
-- group roles (an API role of PostgREST above all) reaches nothing in it; the endpoints of
-- api/expose.sql run as ml_stack's owner. Inside, the registry tables' privileges decide
-- who writes: internal functions run with the caller's rights, and the only ones that run
-- as the owner are the triggers that compile serving (serving/compile.sql), the error
-- functions that read project names (common/serving_errors.sql) and the admin functions
-- below, whose EXECUTE is revoked from PUBLIC.
REVOKE EXECUTE ON FUNCTION ml_stack.expose(text, text, text[]) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION ml_stack.unexpose(text, text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION ml_stack._model_layout(bigint) FROM PUBLIC;   -- SECURITY DEFINER (serving/typed.sql)
REVOKE EXECUTE ON FUNCTION ml_stack._served_class_labels(text) FROM PUBLIC;   -- SECURITY DEFINER (serving/labels.sql)

DO $$
DECLARE
    registry CONSTANT text := 'ml_stack.projects, ml_stack.snapshots, ml_stack.models, ml_stack.deployments, '
                              'ml_stack.training_runs, ml_stack.vectorizers, ml_stack.vectorizer_terms, ml_stack.endpoints, '
                              'ml_stack.model_aliases, ml_stack.model_tags';
    r text;
    sequences CONSTANT text := 'ml_stack.projects_id_seq, ml_stack.snapshots_id_seq, ml_stack.models_id_seq, '
                               'ml_stack.deployments_id_seq, ml_stack.training_runs_id_seq, ml_stack.vectorizers_id_seq';
BEGIN
    IF to_regrole('ml_stack_predictor') IS NOT NULL THEN
        -- predict by project or model, predict_row (reads the layout), fitted vocabularies, the
        -- python engine's pickles (loaded with the caller's rights)
        EXECUTE 'GRANT USAGE ON SCHEMA ml_stack TO ml_stack_predictor';
        EXECUTE format('GRANT SELECT ON %s, ml_stack.deployed_models, ml_stack.transformers, ml_stack.training_jobs, '
                       'ml_stack.vector_job_definitions, ml_stack.vector_jobs TO ml_stack_predictor', registry);
        -- what confidential projects' predictors and predict_row call as the owner (serving/confidential.sql)
        EXECUTE 'GRANT EXECUTE ON FUNCTION ml_stack._confidential_scores(bigint, float8[]), '
                'ml_stack._confidential_margins(bigint, float8[]), '
                'ml_stack._confidential_python_predict(bigint, bigint, float8[]), '
                'ml_stack._confidential_python_proba(bigint, bigint, float8[]), ml_stack._model_layout(bigint), '
                'ml_stack._served_class_labels(text) TO ml_stack_predictor';
    END IF;
    IF to_regrole('ml_stack_trainer') IS NOT NULL THEN
        -- train (it reads the training relation with the trainer's own rights), deploy, schedule
        -- (pg_cron also wants GRANT USAGE ON SCHEMA cron, by a superuser)
        EXECUTE 'GRANT USAGE ON SCHEMA ml_stack TO ml_stack_trainer';
        EXECUTE format('GRANT SELECT, INSERT, UPDATE ON %s TO ml_stack_trainer', registry);

        EXECUTE format('GRANT USAGE ON SEQUENCE %s TO ml_stack_trainer', sequences);
        -- aliases and tags are a trainer's to move and remove (set_alias, delete_alias, set_tag)
        EXECUTE 'GRANT DELETE ON ml_stack.model_aliases, ml_stack.model_tags TO ml_stack_trainer';
        EXECUTE 'GRANT EXECUTE ON FUNCTION ml_stack._cron_problem(), ml_stack._count_project_models(bigint) TO ml_stack_trainer';
    END IF;
    IF to_regrole('ml_stack_admin') IS NOT NULL THEN
        EXECUTE 'GRANT USAGE ON SCHEMA ml_stack TO ml_stack_admin';
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %s TO ml_stack_admin', registry);
        EXECUTE 'GRANT EXECUTE ON FUNCTION ml_stack.expose(text, text, text[]), ml_stack.unexpose(text, text) TO ml_stack_admin';
    END IF;
    -- ml_stack.endpoints is written by expose() and unexpose() only, whose checks a row written
    -- by hand would skip: each row becomes SECURITY DEFINER functions granted to the roles it
    -- names (0.6.0 takes back the writes 0.4.0 granted)
    FOR r IN SELECT g FROM unnest(ARRAY['ml_stack_trainer', 'ml_stack_admin']) AS g WHERE to_regrole(g) IS NOT NULL LOOP
        EXECUTE format('REVOKE INSERT, UPDATE, DELETE ON ml_stack.endpoints FROM %I', r);
    END LOOP;
END
$$;

-- source: sql/serving/refresh.sql
-- Last step of every install and upgrade script: compile every model with this
-- version's code (an upgrade may change what a predictor looks like; nothing to do
-- on a fresh install), then regenerate the dispatch functions from the registry.
SELECT ml_stack._compile_model(m.id) FROM ml_stack.models AS m ORDER BY m.id;
SELECT ml_stack._refresh_serving();
