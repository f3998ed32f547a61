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
