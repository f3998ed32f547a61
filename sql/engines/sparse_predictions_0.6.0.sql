-- 0.6.0: the sparse scoring of test rows writes into a table the caller names (the deployed
-- model is scored so on a new split: training/compare.sql); the signature before that goes.
DROP FUNCTION IF EXISTS ml_stack._predict_test_rows_sparse(jsonb, float8[], float8[]);
