"""The 'trees' artifact format (docs/python-engine.md): exact float64 decision boundaries for the libraries'
float32 rules, and a numpy evaluator of the format (the reference the engine checks every conversion against,
and what the unit tests compare the SQL compiler's semantics with).

A node sends raw value x (preprocessed to v, float64) left when ``v < threshold``, or ``v <= threshold`` when
``inclusive``. The libraries decide in float32:

- XGBoost: left iff ``float32(v) < t`` (t a float32). float32 rounds to nearest, ties to even, so with
  ``p`` the float32 below t and ``m = (p + t) / 2`` (exact in float64): left iff ``v < m``, or ``v <= m`` when
  m rounds down to p, i.e. when t's last mantissa bit is odd.
- scikit-learn's classic trees: left iff ``float32(v) <= t`` (t a float64). With ``c`` the largest float32
  <= t and ``q`` the next float32, ``m = (c + q) / 2``: left iff ``v < m``, or ``v <= m`` when c is even.
- HistGradientBoosting compares the float64 value itself: threshold t, inclusive.
"""

from fractions import Fraction

import numpy as np

F32_MAX = float(np.finfo(np.float32).max)
# the float32 ulp at the top of the range: values from F32_MAX + half of it on round to infinity
_TOP_HALF_ULP = float(np.float64(2.0) ** 103)


def _bits(f32):
    return np.asarray(f32, dtype=np.float32).view(np.uint32)


def parse_float32(texts):
    """Decimal strings (XGBoost writes each float32 as its shortest decimal) -> the exact float32 values.

    Going through float64 can round twice; that gives a wrong float32 only when the float64 lands exactly on
    the midpoint of two float32 values, which is checked for and resolved with exact rational arithmetic.
    """
    texts = [str(t) for t in texts]
    d = np.array(texts, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        f = d.astype(np.float32)
        up = np.nextafter(f, np.float32(np.inf))
        down = np.nextafter(f, np.float32(-np.inf))
        tie = (d == (f.astype(np.float64) + up.astype(np.float64)) / 2) | \
              (d == (f.astype(np.float64) + down.astype(np.float64)) / 2)
    for i in np.flatnonzero(tie):
        exact = Fraction(texts[i])
        candidates = [f[i], up[i], down[i]]
        best = min(candidates, key=lambda c: (abs(Fraction(float(c)) - exact), int(_bits(c)) & 1))
        f[i] = best
    return f


def xgboost_boundary(t):
    """float32 thresholds t (rule: left iff float32(v) < t) -> (float64 threshold, inclusive) arrays."""
    t = np.asarray(t, dtype=np.float32)
    with np.errstate(over="ignore"):
        prev = np.nextafter(t, np.float32(-np.inf)).astype(np.float64)
    t64 = t.astype(np.float64)
    # below -F32_MAX: the float32 "before" it would be -2^128; values down to its midpoint round to -F32_MAX
    prev = np.where(np.isinf(prev), t64 - _TOP_HALF_ULP * 2, prev)
    m = (prev + t64) / 2
    inclusive = (_bits(t) & 1) == 1
    return m, inclusive


def sklearn_boundary(t):
    """float64 thresholds t (rule: left iff float32(v) <= t) -> (float64 threshold, inclusive) arrays."""
    t = np.asarray(t, dtype=np.float64)
    with np.errstate(over="ignore"):
        c = t.astype(np.float32)
        c = np.where(c.astype(np.float64) > t, np.nextafter(c, np.float32(-np.inf)), c).astype(np.float32)
        q = np.nextafter(c, np.float32(np.inf)).astype(np.float64)
    c64 = c.astype(np.float64)
    q = np.where(np.isinf(q), c64 + _TOP_HALF_ULP * 2, q)   # above F32_MAX: the virtual float32 2^128
    m = (c64 + q) / 2
    inclusive = (_bits(c) & 1) == 0
    # t below -F32_MAX: only values that round to -inf go left (ties round to -inf)
    below = np.isinf(c) & (c < 0)
    m = np.where(below, -(F32_MAX + _TOP_HALF_ULP), m)
    inclusive = np.where(below, True, inclusive)
    return m, inclusive


def renumber(left, right):
    """Node order for a tree given by child arrays (-1: leaf): depth-first from node 0, so that children come
    after their parent and unreachable nodes are dropped. Returns (order, new index of each old node)."""
    order = []
    stack = [0]
    while stack:
        i = stack.pop()
        order.append(i)
        if left[i] != -1:
            stack.append(right[i])
            stack.append(left[i])
    new = {old: k for k, old in enumerate(order)}
    return order, new


def make_tree(output, left, right, feature, threshold, inclusive, default_left, value):
    """One tree of the format from per-node arrays in any node numbering (root 0): renumbered depth-first,
    leaves with feature 0, threshold 0, inclusive/default_left false, inner nodes with value 0."""
    left = [int(v) for v in left]
    right = [int(v) for v in right]
    order, new = renumber(left, right)
    tree = {"output": int(output), "feature": [], "threshold": [], "inclusive": [], "default_left": [],
            "left": [], "right": [], "value": []}
    for old in order:
        leaf = left[old] == -1
        tree["feature"].append(0 if leaf else int(feature[old]))
        tree["threshold"].append(0.0 if leaf else float(threshold[old]))
        tree["inclusive"].append(False if leaf else bool(inclusive[old]))
        tree["default_left"].append(False if leaf else bool(default_left[old]))
        tree["left"].append(-1 if leaf else new[left[old]])
        tree["right"].append(-1 if leaf else new[right[old]])
        tree["value"].append(float(value[old]) if leaf else 0.0)
    return tree


def node_count(artifact):
    return sum(len(t["left"]) for t in artifact["trees"])


# ----------------------------------------------------------------------------------------------------------
# evaluator

def transform(artifact, X):
    """Raw features (NaN: NULL) -> the values the trees test: (coalesce(x, impute) - shift) / scale."""
    V = np.array(X, dtype=np.float64, copy=True)
    for j, tr in enumerate(artifact.get("transform") or []):
        if tr.get("impute") is not None:
            V[np.isnan(V[:, j]), j] = tr["impute"]
        V[:, j] = (V[:, j] - (tr.get("shift") or 0.0)) / (tr.get("scale") or 1.0)
    return V


def tree_values(tree, V):
    """The leaf value each row of V reaches in ``tree`` (NaN follows default_left)."""
    feature = np.asarray(tree["feature"], dtype=np.int64)
    threshold = np.asarray(tree["threshold"], dtype=np.float64)
    inclusive = np.asarray(tree["inclusive"], dtype=bool)
    default_left = np.asarray(tree["default_left"], dtype=bool)
    left = np.asarray(tree["left"], dtype=np.int64)
    right = np.asarray(tree["right"], dtype=np.int64)
    value = np.asarray(tree["value"], dtype=np.float64)
    rows = np.arange(V.shape[0])
    node = np.zeros(V.shape[0], dtype=np.int64)
    active = left[node] != -1
    while active.any():
        idx = rows[active]
        nd = node[idx]
        v = V[idx, feature[nd]]
        go_left = np.where(np.isnan(v), default_left[nd],
                           np.where(inclusive[nd], v <= threshold[nd], v < threshold[nd]))
        node[idx] = np.where(go_left, left[nd], right[nd])
        active = left[node] != -1
    return value[node]


def margins(artifact, X):
    """(n, outputs) float64 margins of raw rows X, as the format defines them: base, then each tree's leaf added
    in tree order in the "sum" arithmetic, then the divisor. With "missing": "null", a row with a NaN left after
    imputation gets NaN margins."""
    V = transform(artifact, X)
    dtype = np.float32 if artifact["sum"] == "float4" else np.float64
    k = int(artifact["outputs"])
    M = np.empty((V.shape[0], k), dtype=dtype)
    M[:] = np.asarray(artifact["base"], dtype=np.float64).astype(dtype)
    for tree in artifact["trees"]:
        out = int(tree["output"])
        M[:, out] = M[:, out] + tree_values(tree, V).astype(dtype)
    M = M.astype(np.float64)
    if artifact.get("divisor"):
        M = M / float(artifact["divisor"])
    if artifact.get("missing") == "null":
        M[np.isnan(V).any(axis=1)] = np.nan
    return M


def outputs(artifact, M, classes=None):
    """(prediction, probabilities or None) from margins, per the artifact's link."""
    link = artifact["link"]
    if link == "identity":
        return M[:, 0], None
    if link == "exp":
        return np.exp(M[:, 0]), None
    classes = np.asarray(classes, dtype=np.float64)
    if link == "logistic":
        p1 = 1 / (1 + np.exp(-np.clip(M[:, 0], -700, 700)))
        return classes[(M[:, 0] > 0).astype(int)], np.column_stack([1 - p1, p1])
    if link == "softmax":
        e = np.exp(M - M.max(axis=1, keepdims=True))
        return classes[np.argmax(M, axis=1)], e / e.sum(axis=1, keepdims=True)
    if link == "probability":
        return classes[np.argmax(M, axis=1)], M
    raise ValueError(f"unknown link {link!r}")
