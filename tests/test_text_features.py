"""Text as vectors and as training features (DESIGN §3b): the SQL transformers against independent
implementations of their rules and against scikit-learn, multinomial naive Bayes against MultinomialNB, array
features, predict_row, and the bad inputs of all of them.

Lexemes come from the server's own to_tsvector (read straight from the tsvector, not through ml_stack): the
oracles re-implement what ml_stack does with them.
"""

import hashlib
import json
import math
import time

import numpy as np
import psycopg
import pytest
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.linear_model import LinearRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.naive_bayes import MultinomialNB

from debian_text import load_packages
from helpers import model_row, one_row, registry_rows, train

EDGE_TEXTS = ["the quick brown fox jumps over the lazy dog", "fox fox fox FOX foxes", "café naïve Zürich façade",
              "the and of to", "", "C++ compilers & GNU-style tool-chains (x86_64)", "a" * 10 + " b"]


def server_lexemes(conn, texts, config="english"):
    """{text: {lexeme: term frequency}} from to_tsvector(config, text), as ml_stack's rule starts."""
    out = {}
    for t in texts:
        rows = conn.execute("SELECT lexeme, cardinality(positions) FROM unnest(to_tsvector(%s::regconfig, %s))",
                            (config, t)).fetchall()
        out[t] = dict(rows)
    return out


def tokens(lex):
    """A document as a token list (each lexeme repeated tf times), for scikit-learn's analyzer."""
    return [term for term, tf in sorted(lex.items()) for _ in range(tf)]


def hashing_oracle(lex, dims, signed=True):
    v = np.zeros(dims)
    for term, tf in lex.items():
        h = hashlib.md5(term.encode()).hexdigest()
        sign = -1.0 if signed and int(h[8], 16) >= 8 else 1.0
        v[int(h[:8], 16) % dims] += sign * (1 + math.log(tf))
    norm = np.linalg.norm(v)
    return v / norm if norm > 0 else v


def embed(conn, transformer, text, options=None):
    v = conn.execute("SELECT ml_stack.embed(%s, %s::text, %s::jsonb)",
                     (transformer, text, json.dumps(options or {}))).fetchone()[0]
    return None if v is None else np.array(v, dtype=np.float64)


@pytest.fixture
def packages(conn):
    """Up to 1500 Debian packages of six sections, in name order, with a numeric label (the section's index)."""
    sections = ["libs", "python", "utils", "admin", "devel", "net"]
    rows = load_packages(conn, sections=set(sections), limit=1500)
    conn.execute("CREATE TABLE docs AS SELECT description, installed_size, "
                 "array_position(%s::text[], section) - 1 AS label FROM packages ORDER BY id", (sections,))
    return rows


# ---------------------------------------------------------------------------------------------------------------
# transformers


@pytest.mark.parametrize("dims,signed,config", [(16, True, "english"), (1024, True, "english"),
                                                (1024, False, "simple"), (7, False, "english")])
def test_hashing_matches_an_independent_implementation(conn, packages, dims, signed, config):
    texts = EDGE_TEXTS + [r[4] for r in packages[:200]]
    lex = server_lexemes(conn, texts, config)
    opts = {"dims": dims, "signed": signed, "config": config}
    worst = 0.0
    for t in texts:
        got = embed(conn, "hashing", t, opts)
        assert got.shape == (dims,)
        worst = max(worst, float(np.max(np.abs(got - hashing_oracle(lex[t], dims, signed)))))
    assert worst < 1e-6, worst  # real[] holds 24 bits


def test_embed_batch_keeps_order_and_equals_single_calls(conn):
    texts = EDGE_TEXTS + [None, "fox"]
    batch = [r[0] for r in conn.execute("SELECT ml_stack.embed('hashing', %s::text[], '{\"dims\": 32}')", (texts,))]
    assert len(batch) == len(texts)
    for t, b in zip(texts, batch):
        single = embed(conn, "hashing", t, {"dims": 32})
        assert (b is None and single is None) or np.array_equal(np.array(b), single)


def test_null_empty_and_very_long_text(conn):
    assert embed(conn, "hashing", None) is None
    assert not embed(conn, "hashing", "").any()           # no words: the zero vector
    assert not embed(conn, "hashing", "the of and").any()  # stop words only
    long_text = " ".join(f"word{i % 5000}" for i in range(40000))  # 268k characters
    assert np.array_equal(embed(conn, "hashing", long_text), embed(conn, "hashing", long_text[:65536]))


def _server_corpus(conn, relation, column):
    rows = conn.execute(f"SELECT {column} FROM {relation} WHERE {column} IS NOT NULL").fetchall()
    texts = [r[0] for r in rows]
    lex = server_lexemes(conn, set(texts))
    return texts, lex


def _vocabulary(conn, vectorizer_id):
    return conn.execute("SELECT term, idx, idf FROM ml_stack.vectorizer_terms WHERE vectorizer_id = %s ORDER BY idx",
                        (vectorizer_id,)).fetchall()


@pytest.mark.parametrize("options,sk", [({}, {}), ({"min_df": 2, "max_df": 0.5}, {"min_df": 2, "max_df": 0.5})])
def test_tfidf_matches_scikit_learn(conn, packages, options, sk):
    vid = conn.execute("SELECT ml_stack.fit_vectorizer('desc_tfidf', 'packages', 'description', 'tfidf', %s)",
                       (json.dumps(options),)).fetchone()[0]
    texts, lex = _server_corpus(conn, "packages", "description")
    ref = TfidfVectorizer(analyzer=lambda t: tokens(lex[t]), **sk).fit(texts)
    vocab = _vocabulary(conn, vid)
    assert [t for t, _, _ in vocab] == sorted(ref.vocabulary_), "vocabulary"
    assert [i for _, i, _ in vocab] == list(range(1, len(vocab) + 1))
    np.testing.assert_allclose([f for _, _, f in vocab], ref.idf_, rtol=1e-12)
    lex.update(server_lexemes(conn, EDGE_TEXTS))
    expected = ref.transform(texts[:150] + EDGE_TEXTS).toarray()
    for t, e in zip(texts[:150] + EDGE_TEXTS, expected):
        np.testing.assert_allclose(embed(conn, "desc_tfidf", t), e, atol=1e-6)


def test_counts_and_max_features_match_scikit_learn(conn, packages):
    vid = conn.execute("SELECT ml_stack.fit_vectorizer('desc_counts', 'packages', 'description', 'counts', "
                       "'{\"max_features\": 200}')").fetchone()[0]
    texts, lex = _server_corpus(conn, "packages", "description")
    full = CountVectorizer(analyzer=lambda t: tokens(lex[t])).fit(texts)
    totals = np.asarray(full.transform(texts).sum(axis=0)).ravel()
    order = sorted(full.vocabulary_, key=lambda t: (-totals[full.vocabulary_[t]], t))
    kept = sorted(order[:200])   # ml_stack's tie rule: total count, then term
    vocab = _vocabulary(conn, vid)
    assert [t for t, _, _ in vocab] == kept
    cut = totals[full.vocabulary_[order[199]]]
    assert {t for t in order if totals[full.vocabulary_[t]] > cut} <= set(kept)   # what any tie rule keeps
    ref = CountVectorizer(analyzer=lambda t: tokens(lex[t]), vocabulary=kept)
    for t, e in zip(texts[:100], ref.transform(texts[:100]).toarray()):
        np.testing.assert_array_equal(embed(conn, "desc_counts", t), e)


def test_refitting_makes_a_new_version(conn, packages):
    v1 = conn.execute("SELECT ml_stack.fit_vectorizer('v', 'packages', 'description', 'tfidf', '{\"max_features\": 50}')").fetchone()[0]
    v2 = conn.execute("SELECT ml_stack.fit_vectorizer('v', 'packages', 'description', 'tfidf', '{\"max_features\": 80}')").fetchone()[0]
    assert v2 != v1
    assert len(embed(conn, "v", "python library")) == 80
    assert len(embed(conn, "v", "python library", {"version": 1})) == 50
    row = one_row(conn, "SELECT * FROM ml_stack.transformers WHERE name = 'v'")
    assert (row["version"], row["dims"], row["fitted_on"]["column"]) == ("2", 80, "description")


# ---------------------------------------------------------------------------------------------------------------
# naive Bayes on text


def _split_last(n, test_size=0.25):
    return n - math.ceil(n * test_size)


@pytest.mark.parametrize("method", ["tfidf", "counts"])
def test_naive_bayes_on_fitted_vocabulary_matches_multinomialnb(conn, packages, method):
    result = train(conn, "pkg", "classification", "docs", "label", algorithm="naive_bayes", test_sampling="last",
                   hyperparams={"alpha": 0.5},
                   preprocess={"description": {"vectorize": method}, "installed_size": {"impute": "zero"}})
    rows = conn.execute("SELECT description, installed_size, label FROM docs").fetchall()
    ntrain = _split_last(len(rows))
    texts = [r[0] for r in rows]
    lex = server_lexemes(conn, {t for t in texts if t is not None})
    cls = TfidfVectorizer if method == "tfidf" else CountVectorizer
    vec = cls(analyzer=lambda t: tokens(lex[t])).fit([t for t in texts[:ntrain] if t is not None])
    text_x = vec.transform([t or "" for t in texts]).toarray().astype(np.float32).astype(np.float64)
    size = np.array([r[1] or 0 for r in rows], dtype=np.float64)[:, None]
    x = np.hstack([text_x, size])   # table order: description, installed_size
    y = np.array([r[2] for r in rows])
    nb = MultinomialNB(alpha=0.5).fit(x[:ntrain], y[:ntrain])

    art = model_row(conn, result["model_id"])["artifact"]
    assert art["format"] == "linear" and art["link"] == "softmax"
    np.testing.assert_allclose(np.array(art["coefficients"]), nb.feature_log_prob_, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(art["intercepts"], nb.class_log_prior_, rtol=1e-12)
    served = np.array([r[0] for r in conn.execute(
        "SELECT ml_stack.predict_proba_row('pkg', to_jsonb(d)) FROM docs AS d")])
    np.testing.assert_allclose(served, nb.predict_proba(x), atol=1e-9)
    labels = [r[0] for r in conn.execute("SELECT ml_stack.predict_row('pkg', to_jsonb(d)) FROM docs AS d")]
    np.testing.assert_array_equal(labels, nb.predict(x))
    m = result["metrics"]
    test_pred = nb.predict(x[ntrain:])
    assert m["accuracy"] == pytest.approx(accuracy_score(y[ntrain:], test_pred), abs=1e-12)
    assert m["f1"] == pytest.approx(f1_score(y[ntrain:], test_pred, average="macro"), abs=1e-12)
    # the vocabulary was fitted on the training rows only, and is kept under <project>.<column>
    fitted = one_row(conn, "SELECT * FROM ml_stack.vectorizers WHERE name = 'pkg.description'")
    assert fitted["dims"] == len(vec.vocabulary_) and fitted["fitted_on"]["training_rows"] == ntrain


def test_naive_bayes_on_unsigned_hashing(conn, packages):
    opts = {"dims": 256, "signed": False}
    result = train(conn, "hashed", "classification", "docs", "label", algorithm="naive_bayes",
                   test_sampling="last", preprocess={"description": {"vectorize": "hashing", "options": opts},
                                                     "installed_size": {"impute": "zero"}})
    rows = conn.execute("SELECT description, installed_size, label FROM docs").fetchall()
    lex = server_lexemes(conn, {r[0] for r in rows if r[0] is not None})
    x = np.array([np.append(hashing_oracle(lex.get(r[0], {}), 256, False).astype(np.float32), r[1] or 0)
                  for r in rows], dtype=np.float64)
    y = np.array([r[2] for r in rows])
    ntrain = _split_last(len(rows))
    nb = MultinomialNB().fit(x[:ntrain], y[:ntrain])
    art = model_row(conn, result["model_id"])["artifact"]
    np.testing.assert_allclose(np.array(art["coefficients"]), nb.feature_log_prob_, atol=1e-6)
    # predict(float8[]) takes the same features that predict_row builds: the vector, then installed_size
    got = conn.execute("SELECT ml_stack.predict_proba('hashed', ml_stack.embed('hashing', description, %s)::float8[] "
                       "|| coalesce(installed_size, 0)::float8), ml_stack.predict_proba_row('hashed', to_jsonb(d)) "
                       "FROM docs AS d LIMIT 50", (json.dumps(opts),)).fetchall()
    for a, b in got:
        np.testing.assert_allclose(a, b, atol=1e-12)
    np.testing.assert_allclose([a for a, _ in got], nb.predict_proba(x[:50]), atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# arrays and predict_row


def test_array_features_train_as_their_elements(conn):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(120, 4))
    y = x @ [1.5, -2.0, 0.25, 3.0] + 0.1 * rng.normal(size=120) + 4
    conn.execute("CREATE TABLE emb (id integer, v real[], flag boolean, y float8)")
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO emb VALUES (%s, %s, %s, %s)",
                        [(i, [float(e) for e in x[i, :3]], bool(x[i, 3] > 0), float(y[i])) for i in range(120)])
    result = train(conn, "arr", "regression", "emb", "y", test_size=20, test_sampling="last")
    rows = conn.execute("SELECT id, v, flag, y FROM emb").fetchall()
    feats = np.array([[r[0], *r[1], float(r[2])] for r in rows], dtype=np.float64)
    ref = LinearRegression().fit(feats[:100], [r[3] for r in rows][:100])
    art = model_row(conn, result["model_id"])["artifact"]
    np.testing.assert_allclose(art["coefficients"][0], ref.coef_, rtol=1e-7, atol=1e-9)
    snap = one_row(conn, "SELECT s.columns, s.features FROM ml_stack.snapshots AS s")
    assert [c["name"] for c in snap["columns"]] == ["id", "v", "flag"]
    assert [f["name"] for f in snap["features"]] == ["id", "v[1]", "v[2]", "v[3]", "flag"]
    served = [r[0] for r in conn.execute("SELECT ml_stack.predict_row('arr', to_jsonb(e)) FROM emb AS e")]
    np.testing.assert_allclose(served, ref.predict(feats), rtol=1e-6)  # normal equations vs LAPACK lstsq
    # JSON as an application sends it: booleans, numeric strings (PostgREST's GET), extra keys ignored
    row = {"id": "5", "v": [1, 2, 3], "flag": True, "unused": "x"}
    got = conn.execute("SELECT ml_stack.predict_row('arr', %s)", (json.dumps(row),)).fetchone()[0]
    assert got == pytest.approx(float(ref.predict([[5, 1, 2, 3, 1]])[0]), rel=1e-6)
    assert conn.execute("SELECT ml_stack.predict_row('arr', '{\"v\": [1, 2, 3], \"flag\": false}')").fetchone()[0] is None


def test_predict_row_of_a_model_of_numeric_columns(conn):
    conn.execute("CREATE TABLE t AS SELECT g::float8 AS a, (g % 3)::integer AS b, 2 * g + (g % 3) AS y "
                 "FROM generate_series(1, 40) AS g")
    train(conn, "num", "regression", "t", "y")
    a = conn.execute("SELECT ml_stack.predict('num', ARRAY[3, 1]), ml_stack.predict_row('num', '{\"b\": 1, \"a\": 3}')").fetchone()
    assert a[0] == pytest.approx(a[1], rel=1e-12) and a[0] == pytest.approx(7, rel=1e-9)


# ---------------------------------------------------------------------------------------------------------------
# bad input: a clear error with a hint, and nothing written


def _state(conn):
    return (registry_rows(conn), conn.execute("SELECT count(*) FROM ml_stack.vectorizers").fetchone()[0],
            conn.execute("SELECT count(*) FROM ml_stack.vectorizer_terms").fetchone()[0])


def assert_rejected(conn, query, params, sqlstate, message, hint):
    before = _state(conn)
    with pytest.raises(psycopg.Error) as info:
        conn.execute(query, params)
    diag = info.value.diag
    assert diag.sqlstate == sqlstate, (diag.sqlstate, diag.message_primary)
    assert message in diag.message_primary, diag.message_primary
    assert diag.message_hint and hint in diag.message_hint, diag.message_hint
    assert len(diag.context or "") < 2000, "an error's CONTEXT must not carry generated SQL"
    assert _state(conn) == before


TRAIN = "SELECT * FROM ml_stack.train('bad', 'classification', %s, 'label', algorithm => %s, preprocess => %s::jsonb)"


@pytest.mark.parametrize("relation,algorithm,preprocess,sqlstate,message,hint", [
    ("docs", "naive_bayes", {}, "42804", 'feature column "description" (text with', '"vectorize": "hashing"'),
    ("docs", "naive_bayes", {"description": {"vectorize": "hashing"}, "installed_size": {"impute": "zero"}},
     "22023", "signed hashing", '"signed": false'),
    ("docs", "naive_bayes", {"description": {"vectorize": "nope"}}, "22023", 'unknown transformer "nope"', "hashing"),
    ("docs", "naive_bayes", {"description": {"vectorize": "hashing", "options": {"dims": 0}}}, "22023",
     'option "dims"', "1024"),
    ("docs", "naive_bayes", {"description": {"vectorise": "hashing"}}, "22023", 'unknown preprocess rule "vectorise"',
     "vectorize"),
    ("docs", "naive_bayes", {"description": {"vectorize": "hashing", "scale": "standard"}}, "22023",
     'unknown preprocess rule "scale"', "vectorize"),
    ("docs", "naive_bayes", {"description": {"vectorize": "sentence-transformers/all-MiniLM-L6-v2"}}, "0A000",
     "ml_stack_python", "CREATE EXTENSION ml_stack_python"),
    ("ragged", "linear", {}, "22023", "varying length", "one length"),
])
def test_bad_text_and_array_input(conn, packages, relation, algorithm, preprocess, sqlstate, message, hint):
    conn.execute("CREATE TABLE ragged (v float8[], label integer)")
    conn.execute("INSERT INTO ragged VALUES ('{1,2}', 0), ('{1,2,3}', 1), ('{3,4}', 1)")
    train(conn, "keep", "classification", "docs", "label", algorithm="naive_bayes",
          preprocess={"description": {"vectorize": "tfidf"}, "installed_size": {"impute": "zero"}})
    assert_rejected(conn, TRAIN, (relation, algorithm, json.dumps(preprocess)), sqlstate, message, hint)


@pytest.mark.parametrize("query,sqlstate,message,hint", [
    ("SELECT ml_stack.embed('nope', 'x')", "22023", 'unknown transformer "nope"', "fit_vectorizer"),
    ("SELECT ml_stack.embed('tfidf', 'x')", "22023", "needs a fitted vocabulary", "fit_vectorizer"),
    ("SELECT ml_stack.embed('hashing', 'x', '{\"dims\": 70000}')", "22023", 'option "dims"', "1024"),
    ("SELECT ml_stack.embed('hashing', 'x', '{\"size\": 7}')", "22023", 'unknown option "size"', "dims"),
    ("SELECT ml_stack.embed('hashing', 'x', '{\"config\": \"klingon\"}')", "22023", "text search configuration",
     "english"),
    ("SELECT ml_stack.fit_vectorizer('x', 'packages', 'installed_size')", "42804", "not text", "description"),
    ("SELECT ml_stack.fit_vectorizer('x', 'packages', 'nope')", "42703", '"nope" does not exist', "description"),
    ("SELECT ml_stack.fit_vectorizer('x', 'packages; DROP TABLE packages', 'description')", "42P01", "does not exist",
     "schema"),
    ("SELECT ml_stack.fit_vectorizer('hashing', 'packages', 'description')", "22023", "invalid vectorizer name",
     "own"),
    ("SELECT ml_stack.fit_vectorizer('x', 'packages', 'description', 'bm25')", "22023", "unknown vectorizer method",
     "tfidf"),
    ("SELECT ml_stack.fit_vectorizer('x', 'packages', 'description', 'tfidf', '{\"min_df\": 100000}')", "22023",
     "vocabulary is empty", "min_df"),
    ("SELECT ml_stack.predict_row('keep', '[1, 2]')", "22023", "JSON object", "to_jsonb"),
    ("SELECT ml_stack.predict_row('keep', '{\"installed_size\": \"big\"}')", "22P02", "needs a number", "numeric"),
    ("SELECT ml_stack.predict_row('nope', '{}')", "PT404", 'project "nope" does not exist', "train"),
])
def test_bad_transformer_and_row_input(conn, packages, query, sqlstate, message, hint):
    train(conn, "keep", "classification", "docs", "label", algorithm="naive_bayes",
          preprocess={"description": {"vectorize": "tfidf"}, "installed_size": {"impute": "zero"}})
    assert_rejected(conn, query, None, sqlstate, message, hint)
    assert conn.execute("SELECT count(*) FROM packages").fetchone()[0] == len(packages)


def test_dense_solvers_refuse_what_would_take_minutes(conn):
    """384 features (a MiniLM embedding) once hung the planner for 16 minutes: least squares now refuses at once,
    with no trace (logistic regression goes to the sparse solver: tests/test_sparse_logistic.py)."""
    conn.execute("CREATE TABLE wide AS SELECT array_agg(random()::real) AS v, (random() > 0.5)::integer AS label, "
                 "random() AS y FROM generate_series(1, 300) AS r, generate_series(1, 384) AS j GROUP BY r")
    for task, label in (("regression", "y"),):
        conn.execute(f"CREATE VIEW wide_{label} AS SELECT v, {label} FROM wide")
        assert_rejected(conn, "SELECT * FROM ml_stack.train('wide', %s, %s, %s, engine => 'sql')",
                        (task, f"wide_{label}", label), "54000", "too large for the sql engine", "engine => 'python'")


def test_a_text_search_configuration_of_the_users_schema(conn):
    conn.execute("CREATE TEXT SEARCH CONFIGURATION public.plain (COPY = pg_catalog.simple)")
    assert np.array_equal(embed(conn, "hashing", "the cats", {"config": "plain"}),
                          embed(conn, "hashing", "the cats", {"config": "simple"}))
    conn.execute("CREATE SCHEMA other")
    conn.execute("CREATE TEXT SEARCH CONFIGURATION other.plain (COPY = pg_catalog.english)")
    with pytest.raises(psycopg.Error) as info:   # two of that name: say which
        embed(conn, "hashing", "the cats", {"config": "plain"})
    assert "other.plain" in info.value.diag.message_hint and "public.plain" in info.value.diag.message_hint
    assert np.array_equal(embed(conn, "hashing", "the cats", {"config": "other.plain"}),
                          embed(conn, "hashing", "the cats", {"config": "english"}))


def test_a_cancel_stops_naive_bayes_training_promptly(conn, packages):
    conn.execute("CREATE TABLE many AS SELECT d.description, d.label FROM docs AS d, generate_series(1, 40)")
    before = registry_rows(conn)
    conn.execute("SET statement_timeout = '500ms'")
    started = time.monotonic()
    with pytest.raises(psycopg.errors.QueryCanceled):
        conn.execute("SELECT * FROM ml_stack.train('slow', 'classification', 'many', 'label', "
                     "algorithm => 'naive_bayes', preprocess => '{\"description\": {\"vectorize\": \"tfidf\"}}')")
    assert time.monotonic() - started < 2.5
    conn.execute("RESET statement_timeout")
    assert registry_rows(conn) == before
