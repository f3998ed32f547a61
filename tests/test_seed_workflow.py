"""The seed workflow, end to end, on real text no one here wrote (issue 8, DESIGN §3b): Debian package
descriptions -> vectors (hashing, a vocabulary, MiniLM) -> classifiers trained with one call each (naive Bayes in
the sql engine, XGBoost in the python engine) -> deploy the best -> predictions from raw text; and a vector job
that keeps the descriptions searchable. The per-part oracles live in test_text_features.py, test_python_text.py,
test_vector_jobs.py and test_search.py; this checks that the parts work together as a user would chain them.
"""

import json

import pytest

from debian_text import load_packages

SECTIONS = ["admin", "devel", "doc", "libs", "net", "perl", "python", "utils"]


@pytest.fixture
def described(conn):
    conn.execute("CREATE EXTENSION ml_stack_python CASCADE")
    load_packages(conn, sections=set(SECTIONS))
    conn.execute("CREATE TABLE described AS SELECT p.id, p.description, array_position(%s::text[], p.section) - 1 "
                 "AS section FROM packages AS p ORDER BY md5(p.package) LIMIT 3000", (SECTIONS,))
    conn.execute("ALTER TABLE described ADD PRIMARY KEY (id)")
    conn.execute("CREATE VIEW texts AS SELECT description, section FROM described")
    return conn


def _train(conn, *args, **kwargs):
    """ml_stack.train(args..., name => value...): dicts as jsonb, the rest as text; its row as a dict."""
    named = ", ".join(f"{k} => %s::{'jsonb' if isinstance(v, dict) else 'text'}" for k, v in kwargs.items())
    values = [json.dumps(v) if isinstance(v, dict) else v for v in kwargs.values()]
    row = conn.execute(f"SELECT model_id, deployed, metrics FROM ml_stack.train({', '.join(['%s'] * len(args))}"
                       f"{', ' if args and kwargs else ''}{named})", [*args, *values]).fetchone()
    return {"model_id": row[0], "deployed": row[1], "metrics": row[2]}


def test_descriptions_to_predictions_from_raw_text(described):
    conn = described
    majority = conn.execute("SELECT max(c)::float8 / sum(c) FROM (SELECT count(*) AS c FROM described "
                            "GROUP BY section) AS g").fetchone()[0]
    models = {
        "counts_nb": _train(conn, "sections", "classification", "texts", "section", algorithm="naive_bayes",
                            preprocess={"description": {"vectorize": "counts"}}),
        "hashing_nb": _train(conn, "sections", algorithm="naive_bayes",
                             preprocess={"description": {"vectorize": "hashing", "options": {"signed": False}}}),
        "hashing_xgboost": _train(conn, "sections", algorithm="xgboost", hyperparams={"n_estimators": 30},
                                  preprocess={"description": {"vectorize": "hashing", "options": {"dims": 128}}}),
        "minilm_xgboost": _train(conn, "sections", algorithm="xgboost", hyperparams={"n_estimators": 30},
                                 preprocess={"description": {"vectorize": "sentence-transformers/all-MiniLM-L6-v2"}}),
    }
    for name, m in models.items():
        # real text is learnable: every model beats always answering the most frequent section, by a margin
        assert m["metrics"]["accuracy"] > majority + 0.15, (name, m["metrics"]["accuracy"], majority)
    best = max(models.values(), key=lambda m: m["metrics"]["f1"])
    deployed = conn.execute("SELECT model_id FROM ml_stack.deploy('sections', 'best_score')").fetchone()[0]
    assert deployed == best["model_id"]
    # raw text in, a section out, from the deployed model; the same as predict() on the features it builds
    got = conn.execute(
        "SELECT ml_stack.predict_row('sections', '{\"description\": \"Python 3 bindings for the GTK toolkit\"}'), "
        "ml_stack.predict_row('sections', '{\"description\": \"shared library for reading PNG images\"}')").fetchone()
    assert [SECTIONS[int(g)] for g in got] == ["python", "libs"]
    # the label and the probabilities are compiled apart: the label is the class of the largest probability
    pairs = conn.execute("SELECT ml_stack.predict_row('sections', to_jsonb(d)), "
                         "ml_stack.predict_proba_row('sections', to_jsonb(d)) FROM described AS d WHERE d.id % 10 = 0"
                         ).fetchall()
    classes = sorted({r[0] for r in conn.execute("SELECT section FROM described")})
    assert pairs and all(label == classes[max(range(len(p)), key=p.__getitem__)] for label, p in pairs)


def test_descriptions_searchable_and_in_sync(described):
    conn = described
    conn.execute("SELECT ml_stack.create_vector_job('pkg', 'described', 'id', ARRAY['description'])")
    conn.execute("INSERT INTO described VALUES (9000001, 'a terminal file manager with two panes', 7)")
    for mode in ("keyword", "semantic", "hybrid"):
        ids = [r[0] for r in conn.execute(
            "SELECT id FROM ml_stack.search('pkg', 'terminal file manager with two panes', 5, mode => %s)", (mode,))]
        assert ids[0] == "9000001", (mode, ids)
    conn.execute("DELETE FROM described WHERE id = 9000001")
    assert "9000001" not in [r[0] for r in conn.execute(
        "SELECT id FROM ml_stack.search('pkg', 'terminal file manager with two panes', 5, mode => 'hybrid')")]
