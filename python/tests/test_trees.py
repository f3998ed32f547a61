"""The 'trees' format's exact float32 boundaries, checked against the libraries' own float32 rules."""

from fractions import Fraction

import numpy as np
import pytest

from ml_stack_python import trees as T

F32 = np.float32
RNG = np.random.default_rng(20261126)


def _special_float32():
    tiny = np.finfo(F32).smallest_subnormal
    vals = [0.0, -0.0, tiny, -tiny, 2 * tiny, np.finfo(F32).tiny, 1.0, -1.0, 0.5, 0.1, -0.1, 1e-30, -1e-30,
            np.finfo(F32).max, -np.finfo(F32).max, 3.4e38, 16777216.0, 16777217.0, 2.45, 5.0, 0.30000001]
    return np.array(vals, dtype=F32)


def _random_float32(n):
    a = RNG.standard_normal(n) * 10.0 ** RNG.integers(-8, 8, n)
    bits = RNG.integers(0, 2 ** 32 - 1, n, dtype=np.uint64).astype(np.uint32).view(F32)
    bits = bits[np.isfinite(bits)]
    return np.concatenate([a.astype(F32), bits, _special_float32()])


def _probes(m):
    """Values at, just below and just above each boundary (float64), and far from it."""
    m = np.asarray(m, dtype=np.float64)
    return np.concatenate([m, np.nextafter(m, -np.inf), np.nextafter(m, np.inf),
                           np.nextafter(np.nextafter(m, np.inf), np.inf), m * (1 + 1e-9), m * (1 - 1e-9)])


def _left(v, threshold, inclusive):
    return np.where(inclusive, v <= threshold, v < threshold)


def test_xgboost_boundary_reproduces_float32_less_than():
    t = _random_float32(20000)
    m, inc = T.xgboost_boundary(t)
    for probe in (_probes(m).reshape(6, -1)):
        with np.errstate(over="ignore"):
            expected = probe.astype(F32) < t
        got = _left(probe, m, inc)
        ok = np.isfinite(probe)
        assert np.array_equal(got[ok], expected[ok])


def test_sklearn_boundary_reproduces_float32_less_equal():
    t32 = _random_float32(10000).astype(np.float64)
    # thresholds as scikit-learn makes them: midpoints of float32 values, and arbitrary float64
    t = np.concatenate([t32, (t32[:-1] + t32[1:]) / 2, RNG.standard_normal(5000) * 1e3,
                        np.nextafter(t32, np.inf), np.nextafter(t32, -np.inf)])
    t = t[np.isfinite(t)]
    m, inc = T.sklearn_boundary(t)
    for probe in _probes(m).reshape(6, -1):
        with np.errstate(over="ignore"):
            expected = probe.astype(F32).astype(np.float64) <= t
        got = _left(probe, m, inc)
        ok = np.isfinite(probe)
        assert np.array_equal(got[ok], expected[ok])


def test_sklearn_boundary_beyond_float32_range():
    t = np.array([1e39, -1e39, 3.5e38, -3.5e38])
    m, inc = T.sklearn_boundary(t)
    probes = np.array([3.4028235e38, 3.4028236e38, 3.40282357e38, 3.4028236e38 * 1.0000001, 1e39, -1e39,
                       -3.4028235e38, -3.40282357e38, -3.4028236e38, -3.5e38])
    for ti, mi, ii in zip(t, m, inc):
        with np.errstate(over="ignore"):
            expected = probes.astype(F32).astype(np.float64) <= ti
        assert np.array_equal(_left(probes, mi, ii), expected), ti


def test_parse_float32_is_exact_even_at_double_rounding_ties():
    # the decimal just above the midpoint of 1 and 1 + 2^-23, within float64's precision of it: through float64
    # it lands on the midpoint and rounds (to even) down to 1; exactly it is above, so 1 + 2^-23
    mid = Fraction(1) + Fraction(1, 2 ** 24)
    text = format(float(mid), ".17g") + "0000000000001"
    assert float(text) == float(mid)
    got = T.parse_float32([text, "5E-1", "2.45", "-0.22004892", "0", "1E0"])
    assert got[0] == np.nextafter(F32(1), F32(2))
    assert got[1] == F32(0.5) and got[2] == F32(2.45) and got[3] == F32(-0.22004892)
    assert got[4] == 0 and got[5] == 1
    # every float32's shortest text parses back to it
    vals = _random_float32(2000)
    texts = [np.format_float_positional(v, unique=True) if abs(v) < 1e16 and abs(v) > 1e-16 or v == 0
             else np.format_float_scientific(v, unique=True) for v in vals]
    assert np.array_equal(T.parse_float32(texts).view(np.uint32), vals.view(np.uint32))


def test_make_tree_renumbers_depth_first():
    # node 0 splits into 2 (left) and 1 (right); node 2 into 3 and 4; node 5 is unreachable
    left = [2, -1, 3, -1, -1, -1]
    right = [1, -1, 4, -1, -1, -1]
    tree = T.make_tree(0, left, right, [1, 0, 0, 0, 0, 0], [0.5, 0, 1.5, 0, 0, 0], [True] * 6, [False] * 6,
                       [0, 10, 0, 30, 40, 50])
    assert tree["left"] == [1, 2, -1, -1, -1] and tree["right"] == [4, 3, -1, -1, -1]
    assert tree["value"] == [0.0, 0.0, 30.0, 40.0, 10.0]
    assert all(c == -1 or c > i for side in ("left", "right") for i, c in enumerate(tree[side]))
    X = np.array([[0.0, 0.0], [0.0, 1.0], [2.0, 0.5], [0.0, 3.0]])
    assert T.tree_values(tree, X).tolist() == [30.0, 10.0, 40.0, 10.0]
