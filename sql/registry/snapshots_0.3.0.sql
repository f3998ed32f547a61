-- 0.3.0: the layout of a model's features by column (numbers, arrays, vectorized
-- text with its transformer), which predict_row() follows; NULL before 0.3.0 (every
-- feature was then one numeric column, as "features" lists them).
ALTER TABLE ml_stack.snapshots ADD COLUMN columns jsonb;
COMMENT ON COLUMN ml_stack.snapshots.columns IS
    'ml_stack: per feature column, in table order: name, type, kind (number, boolean, array, text), offset and width among the model''s features, and for text its transformer.';
-- _prepare_dataset takes the project's name now (it names the vocabularies it fits).
DROP FUNCTION IF EXISTS ml_stack._prepare_dataset(regclass, text, text, real, text, bigint, jsonb);
