"""JSON in and out of PostgreSQL, and the versions of the libraries an artifact was made with."""

import json
import math
import platform

import numpy as np


def loads(text):
    """jsonb text (as PL/Python passes it) -> Python; None stays None."""
    if text is None:
        return None
    return json.loads(text)


def plain(value):
    """``value`` with numpy scalars and arrays made plain Python, tuples made lists, NaN and infinities made None
    (jsonb has no NaN)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return [plain(v) for v in value.tolist()]
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return v if math.isfinite(v) else None
    return value


def dumps(value):
    """Python -> JSON text for jsonb (numpy values converted, NaN -> null, floats exact: repr round-trips)."""
    return json.dumps(plain(value), allow_nan=False, separators=(",", ":"))


def library_versions(extra=()):
    """{"python", "numpy", "sklearn", "xgboost"} versions, as recorded on every artifact."""
    import sklearn
    versions = {"python": platform.python_version(), "numpy": np.__version__, "sklearn": sklearn.__version__}
    try:
        import xgboost
        versions["xgboost"] = xgboost.__version__
    except ImportError:  # pragma: no cover - the install script requires it
        pass
    return versions
