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
