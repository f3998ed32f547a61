-- PostgresML's enum types, with its labels in its order (pgrx enums of PostgresML 2.9), so that calls
-- written for PostgresML ('xgboost'::pgml.algorithm, strategy => 'best_score') resolve alike. Labels that
-- ml_stack adds come last: algorithm 'naive_bayes', sampling 'first' (PostgresML 1.x's), runtime 'sql'
-- (ml_stack's SQL engine).
CREATE TYPE pgml.task AS ENUM ('regression', 'classification', 'decomposition', 'clustering', 'question_answering',
    'summarization', 'translation', 'text_classification', 'text_generation', 'text2text', 'embedding',
    'text_pair_classification', 'conversation');
CREATE TYPE pgml.algorithm AS ENUM ('linear', 'xgboost', 'xgboost_random_forest', 'svm', 'lasso', 'elastic_net', 'ridge',
    'kmeans', 'dbscan', 'knn', 'random_forest', 'least_angle', 'lasso_least_angle', 'orthogonal_matching_pursuit',
    'bayesian_ridge', 'automatic_relevance_determination', 'stochastic_gradient_descent', 'perceptron',
    'passive_aggressive', 'ransac', 'theil_sen', 'huber', 'quantile', 'kernel_ridge', 'gaussian_process', 'nu_svm',
    'ada_boost', 'bagging', 'extra_trees', 'gradient_boosting_trees', 'hist_gradient_boosting', 'linear_svm',
    'lightgbm', 'transformers', 'affinity_propagation', 'birch', 'feature_agglomeration', 'mini_batch_kmeans',
    'mean_shift', 'optics', 'spectral', 'spectral_bi', 'spectral_co', 'catboost', 'pca', 'naive_bayes');
CREATE TYPE pgml.sampling AS ENUM ('random', 'last', 'stratified', 'first');
CREATE TYPE pgml.runtime AS ENUM ('python', 'rust', 'openai', 'sql');
CREATE TYPE pgml.search AS ENUM ('grid', 'random');
CREATE TYPE pgml.strategy AS ENUM ('new_score', 'best_score', 'most_recent', 'rollback', 'specific');
COMMENT ON TYPE pgml.algorithm IS 'ml_stack_pgml: PostgresML''s algorithm names (which of them ml_stack trains: ml_stack.train''s documentation), plus naive_bayes.';
COMMENT ON TYPE pgml.sampling IS 'ml_stack_pgml: how train() picks its test rows: random, last (the relation''s last rows), stratified (by class), first.';
COMMENT ON TYPE pgml.runtime IS 'ml_stack_pgml: python (ml_stack_python''s engine), sql (ml_stack''s SQL engine), rust (ml_stack picks, as for NULL), openai (not available).';

-- Tables that pgml.train(materialize_snapshot => true) makes are named from this sequence: pgml.snapshot_<n>.
CREATE SEQUENCE pgml.snapshot_seq;
SELECT pg_catalog.pg_extension_config_dump('pgml.snapshot_seq', '');
