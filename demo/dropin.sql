-- Coming from PostgresML and pg_vectorize (`make demo`, after text.sql): the seed's SQL as it was written for
-- them — vectorize.table, vectorize.search, pgml.train, pgml.predict over vectorize.transform_embeddings, a
-- retraining function scheduled with pg_cron — running over ml_stack (ml_stack_pgml, ml_stack_vectorize).
-- psql variable venv: the virtual environment with sentence-transformers.
\set ON_ERROR_STOP on
\pset footer off
SET client_min_messages = warning;
SET ml_stack.venv = :'venv';

\echo
\echo '== 20. The seed''s SQL as written for PostgresML and pg_vectorize, over ml_stack'
CREATE EXTENSION ml_stack_pgml;
CREATE EXTENSION ml_stack_vectorize;
\echo '-- 1,000 descriptions as "titles": is it a Python package? (half of them are)'
CREATE TABLE titles (id integer PRIMARY KEY, title text, is_python integer);
INSERT INTO titles
    (SELECT id, description, 1 FROM described WHERE section = 6 ORDER BY md5(description) LIMIT 500)
    UNION ALL
    (SELECT id, description, 0 FROM described WHERE section <> 6 ORDER BY md5(description) LIMIT 500);
\echo 'SELECT vectorize.table(job_name => ''titles'', relation => ''titles'', ..., transformer => ''sentence-transformers/all-MiniLM-L6-v2'', schedule => ''realtime'');'
\timing on
SELECT vectorize.table(
    job_name    => 'titles',
    relation    => 'titles',
    primary_key => 'id',
    columns     => ARRAY['title'],
    transformer => 'sentence-transformers/all-MiniLM-L6-v2',
    schedule    => 'realtime'
);
\timing off
SELECT * FROM vectorize.search(
    job_name       => 'titles',
    query          => 'web framework',
    return_columns => ARRAY['id', 'title'],
    num_results    => 3
);
\echo '-- the training relation of the seed: the label and the embedding (vectorize.<job>_view joins them)'
CREATE VIEW title_tng AS SELECT is_python, embeddings::double precision[] AS embedding FROM vectorize.titles_view;
\timing on
SELECT * FROM pgml.train(
    project_name  => 'python_classifier',
    algorithm     => 'xgboost',
    task          => 'classification',
    relation_name => 'title_tng',
    y_column_name => 'is_python',
    test_sampling => 'random'
);
\timing off
SELECT id, project_id, algorithm, runtime, round((metrics ->> 'f1')::numeric, 3) AS f1,
       round((metrics ->> 'accuracy')::numeric, 3) AS accuracy
FROM pgml.models WHERE project_id = (SELECT id FROM pgml.projects WHERE name = 'python_classifier');
CREATE FUNCTION predict_python(input_string text) RETURNS TABLE (is_python real) LANGUAGE sql AS $$
    SELECT pgml.predict(
        project_name => 'python_classifier',
        features => (SELECT vectorize.transform_embeddings(
            input => input_string,
            model_name => 'sentence-transformers/all-MiniLM-L6-v2')
        )
    )
$$;
SELECT t AS title, (SELECT * FROM predict_python(t)) AS is_python
FROM unnest(ARRAY['Django REST framework for building web APIs', 'PyTorch bindings for deep learning',
                  'GNU C library: shared libraries', 'console file manager']) AS t;
\echo '-- the seed''s retraining function (PERFORM where the blog wrote SELECT), scheduled weekly with pg_cron'
CREATE FUNCTION model_train() RETURNS void AS $$
BEGIN
    PERFORM * FROM pgml.train(
        project_name => 'python_classifier',
        algorithm => 'xgboost',
        test_sampling => 'random'
    );
END;
$$ LANGUAGE plpgsql;
SELECT cron.schedule(job_name => 'weekly-retrain', schedule => '0 0 * * 0', command => 'SELECT model_train()') > 0 AS scheduled;
\echo 'SELECT model_train();   -- as the weekly job will'
\o /dev/null
SELECT model_train();
\o
SELECT id, name, algorithm, deployed FROM pgml.trained_models WHERE name = 'python_classifier' ORDER BY id;
SELECT cron.unschedule('weekly-retrain');
