-- Models of the python format already in the registry (trained before a
-- DROP EXTENSION ml_stack_python, or restored) serve again: their predictors
-- and the dispatch functions now call this extension. Last in the script, once
-- the entry points exist. Nothing to do without such models.
SELECT ml_stack._compile_model(m.id) FROM ml_stack.models AS m WHERE m.artifact ->> 'format' = 'python';
SELECT ml_stack._refresh_serving()
WHERE EXISTS (SELECT FROM ml_stack.models AS m WHERE m.artifact ->> 'format' = 'python');
