-- ml_stack_python needs ml_stack 0.3.0 or later (the python engine's hooks in
-- train and serving, 0.2.0; ml_stack.embed, which calls ml_stack._python_embed,
-- 0.3.0) and, in the server's Python, numpy, scikit-learn and xgboost. Checked
-- first, so that CREATE EXTENSION fails with what to install. (torch and
-- sentence-transformers are not checked here: only embeddings need them, from
-- the venv of the setting ml_stack.venv, and their absence is reported there.)
DO LANGUAGE plpgsql $$
DECLARE
    v text := (SELECT e.extversion FROM pg_catalog.pg_extension AS e WHERE e.extname = 'ml_stack');
BEGIN
    IF v IS NULL OR pg_catalog.string_to_array(pg_catalog.regexp_replace(v, '[^0-9.].*$', ''), '.')::integer[]
                    < ARRAY[0, 3, 0] THEN
        RAISE EXCEPTION 'ml_stack_python needs ml_stack 0.3.0 or later (ml_stack.embed calls its embeddings); ml_stack % is installed', v
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'ALTER EXTENSION ml_stack UPDATE; then CREATE EXTENSION ml_stack_python (or, for an update, ALTER EXTENSION ml_stack_python UPDATE).';
    END IF;
END
$$;

DO LANGUAGE plpython3u $$
import importlib
missing = []
for module, package in (("numpy", "python3-numpy"), ("sklearn", "python3-sklearn"), ("xgboost", "python3-xgboost")):
    try:
        importlib.import_module(module)
    except Exception as e:
        missing.append((module, package, "%s: %s" % (type(e).__name__, e)))
if missing:
    plpy.error("ml_stack_python needs the Python libraries numpy, scikit-learn and xgboost in the server's Python; "
               "missing: %s" % ", ".join(m for m, _, _ in missing),
               detail="; ".join(d for _, _, d in missing),
               hint="Install them where the server's python3 finds them, on Debian: "
                    "apt-get install python3-sklearn python3-xgboost (then CREATE EXTENSION again; no restart needed).",
               sqlstate="58P01")
import re
import sklearn
if tuple(int(x) for x in re.match(r"(\d+)\.(\d+)", sklearn.__version__).groups()) < (1, 2):
    plpy.error("ml_stack_python needs scikit-learn 1.2 or later; %s is installed" % sklearn.__version__,
               hint="Install a newer scikit-learn (Debian 12: apt-get install python3-sklearn).",
               sqlstate="58P01")
$$;

-- Pickled models run code as the server's OS user when they are loaded, so whoever
-- can write ml_stack.models must already be trusted that far: its owner must be a
-- superuser (ml_stack itself may be created by a database owner who is not).
DO LANGUAGE plpgsql $$
DECLARE
    owner_name name;
    owner_is_superuser boolean;
BEGIN
    SELECT r.rolname, r.rolsuper INTO owner_name, owner_is_superuser
    FROM pg_catalog.pg_class AS c JOIN pg_catalog.pg_roles AS r ON r.oid = c.relowner
    WHERE c.oid = 'ml_stack.models'::pg_catalog.regclass;
    IF NOT owner_is_superuser THEN
        RAISE EXCEPTION 'ml_stack_python loads pickled models, which run code as the database server; ml_stack''s registry is owned by %, who is not a superuser', owner_name
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Have a superuser own ml_stack (e.g. DROP EXTENSION ml_stack and CREATE EXTENSION ml_stack as a superuser), then CREATE EXTENSION ml_stack_python.';
    END IF;
END
$$;
