-- 0.4.0: why a trained model was deployed automatically or not (train's decision, kept
-- for the user and the retraining history: a better score, or other feature columns
-- than the deployed model's, which would change the serving function's signature).
ALTER TABLE ml_stack.models ADD COLUMN deploy_decision text;
COMMENT ON COLUMN ml_stack.models.deploy_decision IS
    'ml_stack: train''s automatic-deploy decision for this model and why (e.g. "not deployed: its feature columns differ from the deployed model 3''s"); NULL for imported models and before 0.4.0.';
