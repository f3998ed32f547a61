-- 0.5.0: train takes exclude (columns that are not features), kept in the snapshot so that a
-- retrain by project name leaves out the same columns; the internal functions on the way take
-- it too, and _prepare_dataset the default encoding of categorical columns. Their 0.4.x
-- signatures go (a DO block: DROP FUNCTION IF EXISTS would print a NOTICE on a fresh install).
ALTER TABLE ml_stack.snapshots ADD COLUMN exclude text[];
COMMENT ON COLUMN ml_stack.snapshots.exclude IS
    'ml_stack: the columns of the relation left out of the features (train''s exclude).';
DO $$
DECLARE
    fn text;
BEGIN
    FOREACH fn IN ARRAY ARRAY[
        'ml_stack.train(text, text, text, text, text, jsonb, text, jsonb, jsonb, real, text, jsonb, boolean, text)',
        'ml_stack._train(text, text, text, text, text, jsonb, text, jsonb, jsonb, real, text, jsonb, boolean, text, text)',
        'ml_stack._train_unguarded(text, text, text, text, text, jsonb, text, jsonb, jsonb, real, text, jsonb, boolean, text, text)',
        'ml_stack._prepare_dataset(regclass, text, text, real, text, bigint, jsonb, text)'] LOOP
        IF to_regprocedure(fn) IS NOT NULL THEN
            EXECUTE format('DROP FUNCTION %s', fn);
        END IF;
    END LOOP;
END
$$;
