-- 0.5.1: test_sampling 'first' (PostgresML's: the test rows are the relation's first rows).
ALTER TABLE ml_stack.snapshots DROP CONSTRAINT snapshots_test_sampling_check;
ALTER TABLE ml_stack.snapshots ADD CONSTRAINT snapshots_test_sampling_check
    CHECK (test_sampling IN ('random', 'first', 'last', 'stratified'));
