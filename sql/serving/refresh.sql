-- Last step of every install and upgrade script: regenerate the dispatch functions
-- from the registry (none on a fresh install), with this version's code.
SELECT ml_stack._refresh_serving();
