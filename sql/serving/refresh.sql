-- Last step of every install and upgrade script: compile every model with this
-- version's code (an upgrade may change what a predictor looks like; nothing to do
-- on a fresh install), then regenerate the dispatch functions from the registry.
SELECT ml_stack._compile_model(m.id) FROM ml_stack.models AS m ORDER BY m.id;
SELECT ml_stack._refresh_serving();
