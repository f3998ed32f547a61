-- 0.2.0: the hyperparameter search behind a model (every candidate's scores).
ALTER TABLE ml_stack.models ADD COLUMN search jsonb;
COMMENT ON COLUMN ml_stack.models.search IS
    'ml_stack: the hyperparameter search that chose this model''s hyperparameters (method, scoring, cv, every candidate''s parameters and scores); NULL without a search.';
