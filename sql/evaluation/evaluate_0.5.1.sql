-- 0.5.1: feature_importance takes the importance type (XGBoost's gain by default for its models).
DROP FUNCTION IF EXISTS ml_stack.feature_importance(bigint);
