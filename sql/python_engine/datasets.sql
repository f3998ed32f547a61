-- scikit-learn's bundled toy datasets as tables (DESIGN.md §3).
CREATE OR REPLACE FUNCTION ml_stack.load_dataset(name text)
RETURNS TABLE (table_name text, rows bigint)
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp
AS $ml_stack$
if "datasets" not in SD:
    plpy.execute("SELECT ml_stack._python_import()")
    import ml_stack_python.datasets
    import ml_stack_python.errors
    SD["errors"] = ml_stack_python.errors
    SD["datasets"] = ml_stack_python.datasets
return SD["errors"].call(plpy, SD["datasets"].load_dataset, plpy, name)
$ml_stack$;
COMMENT ON FUNCTION ml_stack.load_dataset(text) IS
    'ml_stack: load scikit-learn''s toy dataset iris, breast_cancer, diabetes, wine, digits or linnerud into table ml_stack.<name> (replaced if it exists): the features as float8 columns, the label "target" last (linnerud: Weight; Waist and Pulse are left out). Returns the table name, usable as written in a query, and its row count.';
