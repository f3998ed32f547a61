-- Models of the python format already in the registry (trained before a
-- DROP EXTENSION ml_stack_python, or restored) serve again: their predictors
-- now call this extension (the dispatch functions call the predictors, so they
-- need no change). Last in the script, once the entry points exist.
SELECT ml_stack._compile_model(m.id) FROM ml_stack.models AS m WHERE m.artifact ->> 'format' = 'python';
