-- 0.4.0: the dispatch functions' CASE compares with OPERATOR(pg_catalog.=): _case_dispatch takes no key.
DO $$
BEGIN
    IF to_regprocedure('ml_stack._case_dispatch(text, text, text)') IS NOT NULL THEN
        DROP FUNCTION ml_stack._case_dispatch(text, text, text);
    END IF;
END
$$;
