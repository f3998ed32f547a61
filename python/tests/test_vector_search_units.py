"""Unit tests of ml_stack_python.vector_search without a database: decoding array_send() images, the candidate set
(it must hold the exact top k, ties at the cut included, for dense, sparse and zero queries, restricted rows, zero
rows), the fallbacks, the snapshot rule and the cache setting."""

import struct

import numpy as np
import pytest

from ml_stack_python import vector_search as V
from ml_stack_python.errors import MLStackError


def send(values, lbound=1, nulls=()):
    """PostgreSQL's array_send() image of a real[] (1-D)."""
    if len(values) == 0:
        return struct.pack(">iii", 0, 0, V.FLOAT4_OID)
    out = struct.pack(">iiiii", 1, 1 if nulls else 0, V.FLOAT4_OID, len(values), lbound)
    for i, x in enumerate(values):
        out += struct.pack(">i", -1) if i in nulls else struct.pack(">if", 4, x)
    return out


def norm(v):
    v = np.asarray(v, dtype=np.float32).astype(np.float64)
    return float(np.sqrt(v @ v))


def exact_scores(vecs, q):
    """The SQL path's scores to float64 accuracy: dot / (norm * qnorm), 0 for a zero row or query."""
    v = vecs.astype(np.float64)
    q = np.asarray(q, dtype=np.float64)
    n = np.sqrt(np.einsum("ij,ij->i", v, v))
    nq = np.sqrt(q @ q)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = (v @ q) / (n * nq)
    s[(n == 0) | (nq == 0)] = 0
    return s


def top_k(scores, k, rows=None):
    idx = np.arange(len(scores)) if rows is None else np.asarray(rows)
    order = sorted(idx, key=lambda i: (-scores[i], i))
    return order[:k]


def build(vecs):
    norms = [norm(v) for v in vecs]
    m, z, l, d = V.decode_chunk([send(list(map(float, v))) for v in vecs], norms, None)
    return m, z, l


def test_decode_round_trip_and_refusals():
    vecs = np.array([[3, 4, 0], [0, 0, 0], [1e-3, -2, 5]], dtype=np.float32)
    m, z, l, d = V.decode_chunk([send(list(map(float, v))) for v in vecs], [norm(v) for v in vecs], None)
    assert d == 3 and list(z) == [False, True, False] and not l.any()
    assert np.allclose(m[0], [0.6, 0.8, 0]) and not m[1].any()
    assert abs(float(np.linalg.norm(m[2].astype(np.float64))) - 1) < 1e-6
    # a zero row may be anything (empty array): its score is 0 by its norm
    m, z, _, d = V.decode_chunk([send([1.0, 0.0]), send([])], [1.0, 0.0], None)
    assert d == 2 and list(z) == [False, True]
    for blobs, norms, why in [
        ([send([1.0, 2.0]), send([1.0])], [norm([1, 2]), 1.0], "different lengths"),
        ([send([1.0, 2.0], lbound=0)], [norm([1, 2])], "subscript 1"),
        ([send([1.0, 2.0], nulls=(1,))], [1.0], "different lengths|NULL"),
        ([send([1.0, float("nan")])], [1.0], "non-finite"),
        ([send([1.0, 2.0])], [5.0], "not the norm"),
        ([send([1.0, 2.0])], [float("inf")], "not finite"),
    ]:
        with pytest.raises(ValueError, match=why):
            V.decode_chunk(blobs, norms, None)
    with pytest.raises(ValueError):
        V.decode_chunk([send([1.0, 2.0, 3.0])], [norm([1, 2, 3])], 2)   # dims of an earlier chunk


@pytest.mark.parametrize("seed", range(6))
def test_candidates_hold_the_exact_top_k(seed):
    rng = np.random.default_rng(seed)
    n, d = 3000, 384
    vecs = (rng.random((n, d), dtype=np.float32) - np.float32(0.5))
    vecs[5] = vecs[6] = vecs[7]                      # exact ties
    vecs[100] = vecs[50] * np.float32(3)             # same direction (near tie)
    vecs[200:210] = 0                                # zero rows
    m, z, l = build(vecs)
    queries = [rng.random(d, dtype=np.float32) - np.float32(0.5), vecs[7].copy(), np.zeros(d, np.float32)]
    for q in queries:
        s = exact_scores(vecs, q)
        for k in (1, 3, 10, 100, 2500, 5000):
            picked, approx = V.candidates(m, z, l, q.astype(np.float64), k)
            assert picked is not None
            assert set(top_k(s, k)) <= set(picked.tolist()), k
            assert list(picked) == sorted(picked)
            assert np.all(np.abs(approx - s[picked]) <= V.error_bound(d))
        rows = np.sort(rng.choice(n, 700, replace=False))
        picked, _ = V.candidates(m, z, l, q.astype(np.float64), 10, rows)
        assert set(top_k(s, 10, rows)) <= set(picked.tolist()) <= set(rows.tolist())


def test_sparse_queries_and_many_zero_ties():
    """A hashing-like job: sparse vectors; a query that few rows match. The rows that score exactly 0 tie and go
    by row order; the candidate set stays small even when k reaches into them."""
    rng = np.random.default_rng(1)
    n, d = 20000, 1024
    vecs = np.zeros((n, d), dtype=np.float32)
    for i in range(n):
        vecs[i, rng.choice(d, 6, replace=False)] = rng.choice([-1.0, 1.0, 2.0], 6)
    q = np.zeros(d, dtype=np.float32)
    q[[3, 700]] = [1.0, -2.0]
    m, z, l = build(vecs)
    s = exact_scores(vecs, q)
    matched = int(np.count_nonzero(s))
    assert 0 < matched < 500
    for k in (10, 100, 1000, 5000):
        picked, _ = V.candidates(m, z, l, q.astype(np.float64), k)
        assert picked is not None
        assert set(top_k(s, k)) <= set(picked.tolist())
        assert len(picked) <= matched + k + 300
    # the exact-zero shortcut must not trust an element that underflowed in float32
    tiny = vecs[:50].copy()
    tiny[0, :] = 0
    tiny[0, 3] = np.float32(1e-40)
    tiny[0, 4] = np.float32(1e25)
    m2, z2, l2 = build(tiny)
    assert l2[0] and not l2[1:].any()


def test_too_many_near_ties_say_fall_back():
    vecs = np.ones((5000, 8), dtype=np.float32)
    vecs[:, 0] += np.linspace(0, 1e-7, 5000, dtype=np.float32)  # all within the bound of each other
    m, z, l = build(vecs)
    q = np.ones(8)
    assert V.candidates(m, z, l, q, 10)[0] is None
    assert V.candidates(m, z, l, q, 10, cap=10000)[0] is not None
    assert len(V.candidates(m, z, l, q, 10, rows=np.arange(40))[0]) == 40


def test_zero_query_and_small_pools():
    vecs = np.eye(4, dtype=np.float32)
    m, z, l = build(vecs)
    assert V.candidates(m, z, l, np.zeros(4), 2)[0].tolist() == [0, 1]
    assert V.candidates(m, z, l, np.zeros(4), 2, rows=np.array([3, 2]))[0].tolist() == [2, 3]
    assert V.candidates(m, z, l, np.ones(4), 10)[0].tolist() == [0, 1, 2, 3]
    assert V.candidates(m, z, l, np.ones(4), 1, rows=np.array([], dtype=np.int64))[0].tolist() == []


def test_snapshot_rule():
    s0 = V.parse_snapshot("100:105:100,102")
    assert s0 == (100, 105, frozenset({100, 102}))
    assert V.snapshot_covers(V.parse_snapshot("100:105:100,102"), s0)
    assert V.snapshot_covers(V.parse_snapshot("102:110:102,107"), s0)       # 100 has ended: newer
    assert V.snapshot_covers(V.parse_snapshot("110:110:"), s0)
    assert not V.snapshot_covers(V.parse_snapshot("101:105:101,102"), s0)  # 101 was visible, now running
    assert not V.snapshot_covers(V.parse_snapshot("100:104:100"), s0)      # older xmax


def test_cache_setting():
    assert V.cache_mb(None) == V.DEFAULT_CACHE_MB == V.cache_mb("")
    assert V.cache_mb("0") == 0 and V.cache_mb("0.5") == 0.5
    for bad in ("lots", "-1", "nan", "inf"):
        with pytest.raises(MLStackError, match="search_cache_mb"):
            V.cache_mb(bad)


def test_error_bound_holds_on_adversarial_rows():
    rng = np.random.default_rng(5)
    d = 384
    worst = 0.0
    for _ in range(20):
        vecs = (rng.standard_normal((2000, d)) * rng.choice([1e-20, 1.0, 1e20], (2000, 1))).astype(np.float32)
        vecs[:, :5] *= np.float32(1e3)   # a few large components
        q = rng.standard_normal(d).astype(np.float32)
        m, z, l = build(vecs)
        qhat = (q.astype(np.float64) / np.sqrt(q.astype(np.float64) @ q)).astype(np.float32)
        worst = max(worst, float(np.max(np.abs((m @ qhat).astype(np.float64) - exact_scores(vecs, q)))))
    assert worst <= V.error_bound(d)
