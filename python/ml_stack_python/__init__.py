"""ml_stack_python: the Python engine of ml_stack (see docs/python-engine.md).

Inside PostgreSQL this package is not imported from disk: the build embeds every module into the SQL function
``ml_stack._python_source(module)`` and ``ml_stack._python_import()`` loads them into ``sys.modules``.
Outside (unit tests in python/tests/) it is an ordinary package; nothing here needs a database except the
functions that take ``plpy``.

Modules, one concern each:
    errors      MLStackError (message, hint, SQLSTATE) and how it becomes a PostgreSQL error
    jsonutil    JSON in and out of PostgreSQL (NaN-safe), library versions
    data        bulk read of the split from pg_temp._ml_stack_rows, predictions back
    estimators  algorithm x task -> estimator class, hyperparameter checks
    search      grid / random hyperparameter search (scikit-learn's model selection)
    trees       the 'trees' artifact format: exact float32 decision boundaries, a numpy evaluator
    export      fitted estimator -> artifact ('trees', 'linear' or 'python')
    engine      fit(): the whole training call
    serving     predict / predict_proba of 'python'-format models, cached per backend
    signing     HMAC signatures of pickles (a key in the data directory)
    datasets    load_dataset(): scikit-learn's toy datasets as tables
    embeddings  embed(): sentence embeddings by all-MiniLM-L6-v2 (torch from the venv of ml_stack.venv)
    vector_search  semantic search over a numpy matrix of a vector job's vectors, cached per backend
"""

__version__ = "0.4.0"
