-- The seed workflow of ml_stack (`make demo`, after demo.sql): real text no one here wrote (the one-line package
-- descriptions of the Debian archive, loaded by demo/load_packages.py) -> vectors -> a classifier trained with
-- one call -> predictions from raw text; and search over the descriptions.
-- psql variable venv: the virtual environment with sentence-transformers (make setup prepares .venv).
\set ON_ERROR_STOP on
\pset footer off
SET client_min_messages = warning;
SET ml_stack.venv = :'venv';
-- the splits draw their seeds from random(): seeded, the figures repeat from run to run
SELECT setseed(0.5) AS seeded \gset

\echo
\echo '== 13. Text: what package section does a description belong to?'
\echo '-- 63k Debian package descriptions (data/debian-packages.tsv.xz); 8 sections, the label as a number'
CREATE TABLE sections AS
    SELECT (row_number() OVER (ORDER BY name) - 1)::integer AS id, name
    FROM unnest(ARRAY['admin', 'devel', 'doc', 'libs', 'net', 'perl', 'python', 'utils']) AS name;
CREATE TABLE described (id integer PRIMARY KEY, description text, section integer);
INSERT INTO described
    SELECT p.id, p.description, s.id FROM packages AS p JOIN sections AS s ON s.name = p.section;
SELECT s.name AS section, count(*) AS packages, min(d.description) AS for_example
FROM described AS d JOIN sections AS s ON s.id = d.section GROUP BY s.name ORDER BY 2 DESC;

\echo
\echo '== 14. Vectors: a transformer turns text into real[]'
\echo 'SELECT ml_stack.embed(''hashing'', ''Python 3 bindings for the GTK toolkit'', ''{"dims": 8}'');'
SELECT ml_stack.embed('hashing', 'Python 3 bindings for the GTK toolkit', '{"dims": 8}');
SELECT name, kind, dims, available FROM ml_stack.transformers;

\echo
\echo '== 15. One call each: naive Bayes (sql engine) over counts, tfidf and hashing; XGBoost (python engine) over hashing'
-- the features are every column but the label: a view leaves the id out
CREATE VIEW texts AS SELECT description, section FROM described;
\timing on
SELECT project, algorithm, engine, model_id, deployed, round((metrics ->> 'accuracy')::numeric, 3) AS accuracy,
       round((metrics ->> 'f1')::numeric, 3) AS f1
FROM ml_stack.train('sections', 'classification', 'texts', 'section', algorithm => 'naive_bayes',
                    preprocess => '{"description": {"vectorize": "counts"}}');
SELECT project, algorithm, engine, model_id, deployed, round((metrics ->> 'accuracy')::numeric, 3) AS accuracy,
       round((metrics ->> 'f1')::numeric, 3) AS f1
FROM ml_stack.train('sections', algorithm => 'naive_bayes', preprocess => '{"description": {"vectorize": "tfidf"}}');
SELECT project, algorithm, engine, model_id, deployed, round((metrics ->> 'accuracy')::numeric, 3) AS accuracy,
       round((metrics ->> 'f1')::numeric, 3) AS f1
FROM ml_stack.train('sections', algorithm => 'naive_bayes',
                    preprocess => '{"description": {"vectorize": "hashing", "options": {"signed": false}}}');
SELECT project, algorithm, engine, model_id, deployed, round((metrics ->> 'accuracy')::numeric, 3) AS accuracy,
       round((metrics ->> 'f1')::numeric, 3) AS f1
FROM ml_stack.train('sections', algorithm => 'xgboost', hyperparams => '{"n_estimators": 60, "max_depth": 6}',
                    preprocess => '{"description": {"vectorize": "hashing", "options": {"dims": 256}}}');
\timing off

\echo
\echo '== 16. MiniLM (sentence-transformers, in the server) on a 3,000-description sample, then XGBoost on its vectors'
CREATE VIEW sample AS SELECT description, section FROM described ORDER BY md5(description) LIMIT 3000;
\timing on
SELECT project, algorithm, model_id, round((metrics ->> 'accuracy')::numeric, 3) AS accuracy,
       round((metrics ->> 'f1')::numeric, 3) AS f1
FROM ml_stack.train('sections_minilm', 'classification', 'sample', 'section', algorithm => 'xgboost',
                    hyperparams => '{"n_estimators": 60, "max_depth": 4}',
                    preprocess => '{"description": {"vectorize": "sentence-transformers/all-MiniLM-L6-v2"}}');
SELECT project, algorithm, model_id, round((metrics ->> 'accuracy')::numeric, 3) AS accuracy,
       round((metrics ->> 'f1')::numeric, 3) AS f1
FROM ml_stack.train('sections_minilm', algorithm => 'naive_bayes', preprocess => '{"description": {"vectorize": "counts"}}');
\timing off

\echo
\echo '== 17. Compare and deploy the best; predict from raw text'
SELECT m.id, p.name AS project, m.algorithm, m.preprocess -> 'description' ->> 'vectorize' AS vectorize,
       round((m.metrics ->> 'accuracy')::numeric, 3) AS accuracy, round((m.metrics ->> 'f1')::numeric, 3) AS f1,
       round((m.metrics ->> 'fit_time')::numeric, 1) AS fit_s
FROM ml_stack.models AS m JOIN ml_stack.projects AS p ON p.id = m.project_id
WHERE p.name LIKE 'sections%' ORDER BY p.name, m.id;
SELECT * FROM ml_stack.deploy('sections', 'best_score');
\echo 'SELECT ml_stack.predict_row(''sections'', ''{"description": "..."}'')   -- raw text in, a section out'
SELECT t.description, s.name AS predicted_section
FROM (VALUES ('Python 3 bindings for the GTK graphical toolkit'), ('documentation and examples for libfoo'),
             ('simple command-line tool to rename many files'), ('shared library for reading PNG images'),
             ('Perl module to parse YAML files'), ('lightweight DNS and DHCP server')) AS t(description)
JOIN sections AS s ON s.id = ml_stack.predict_row('sections', jsonb_build_object('description', t.description));

\echo
\echo '== 18. The package list as it is: text categories, an ordinal, NULLs, free text (how big is a package?)'
CREATE VIEW package_sizes AS
    SELECT package, section, priority, description, ln(1 + installed_size) AS log_size FROM packages;
\echo 'SELECT * FROM ml_stack.train(''sizes'', ''regression'', ''package_sizes'', ''log_size'');   -- as it is'
DO $$
BEGIN
    PERFORM ml_stack.train('sizes', 'regression', 'package_sizes', 'log_size');
EXCEPTION WHEN datatype_mismatch THEN
    DECLARE message text; hint text;
    BEGIN
        GET STACKED DIAGNOSTICS message = MESSAGE_TEXT, hint = PG_EXCEPTION_HINT;
        RAISE WARNING '%', message USING HINT = hint;   -- shown as psql shows an error
    END;
END
$$;
\echo '-- so: leave out the name and the description, give priority its order; section is one-hot by default'
\timing on
SELECT project, model_id, deployed, (metrics -> 'r2')::numeric(5, 3) AS r2
FROM ml_stack.train('sizes', 'regression', 'package_sizes', 'log_size', exclude => ARRAY['package', 'description'],
                    preprocess => '{"priority": {"encode": {"ordinal": ["required", "important", "standard", "optional", "extra"]}}}');
\timing off
SELECT s.rows, s.skipped_rows AS "NULL labels left out", s.exclude,
       (SELECT string_agg(format('%s (%s, %s wide)', c ->> 'name', c -> 'encoding' ->> 'method', c ->> 'width'), ', ')
        FROM jsonb_array_elements(s.columns) AS c WHERE c ->> 'kind' = 'category') AS categories
FROM ml_stack.snapshots AS s JOIN ml_stack.projects AS p ON p.id = s.project_id WHERE p.name = 'sizes';
\echo '-- the features that weigh most (coefficient x the feature''s standard deviation)'
SELECT feature, round(importance::numeric, 3) AS importance,
       repeat('#', (30 * abs(importance) / max(abs(importance)) OVER ())::integer) AS " "
FROM ml_stack.feature_importance((SELECT model_id FROM ml_stack.deployed_models WHERE project_name = 'sizes'))
ORDER BY abs(importance) DESC LIMIT 8;
\echo '-- a row by column names; a section never seen at training is the first section''s answer'
SELECT r.row ->> 'section' AS section, round(exp(ml_stack.predict_row('sizes', r.row)) - 1) AS predicted_kb
FROM (VALUES ('{"section": "games", "priority": "optional"}'::jsonb), ('{"section": "doc", "priority": "optional"}'),
             ('{"section": "brand-new", "priority": "optional"}')) AS r(row);

\echo
\echo '== 19. Search the descriptions: a vector job keeps their vectors in sync with the table'
\timing on
SELECT ml_stack.create_vector_job('packages_search', 'described', 'id', ARRAY['description'], 'hashing');
\timing off
SELECT job_name, transformer, schedule, source_rows, embedded_rows, pending, failed FROM ml_stack.vector_jobs;
\echo '-- keyword (BM25), semantic (cosine) and hybrid (reciprocal rank fusion) for ''terminal file manager'''
SELECT 'keyword' AS mode, rank, record ->> 'description' AS description, round(score::numeric, 3) AS score
FROM ml_stack.search('packages_search', 'terminal file manager', 3, mode => 'keyword')
UNION ALL
SELECT 'semantic', rank, record ->> 'description', round(score::numeric, 3)
FROM ml_stack.search('packages_search', 'terminal file manager', 3, mode => 'semantic')
UNION ALL
SELECT 'hybrid', rank, record ->> 'description', round(score::numeric, 3)
FROM ml_stack.search('packages_search', 'terminal file manager', 3, mode => 'hybrid');
\echo '-- a new row is searchable at once (realtime job); filters are bound parameters'
INSERT INTO described VALUES (1000000, 'a terminal file manager written for this demo', 7);
SELECT rank, id, record ->> 'description' AS description
FROM ml_stack.search('packages_search', 'terminal file manager', 3, '{"section": 7}', mode => 'keyword');
