"""Semantic search through a numpy matrix cached per backend: ``ml_stack._python_semantic_search(job_id,
query_vector, k, candidate_ids)`` (sql/python_engine/vector_search.sql; docs/vectors-jobs-search.md, "Semantic
search in numpy").

The result must be exactly the SQL path's (``ml_stack._semantic_ranking_sql``): same ids, same float8 scores, same
order (score descending, then the key in its type's order). So numpy does not produce the final scores: it
returns a small *candidate set* that provably contains the SQL path's top k, and the SQL that calls it recomputes
the exact scores of those rows with the very expression of the SQL path, then sorts and cuts them as that path
does. Why that is exact:

- The matrix holds every embedding divided by its stored ``norm`` (float64 division, rounded to float32; a row
  whose norm is 0 is a zero row: the SQL path scores it 0). The query is normalised the same way. One float32
  matrix-vector product gives every row's approximate cosine ``s~``; for every row, ``|s~ - s| <= eps(d)``
  (``error_bound``: the rounding of the two normalisations and of a d-term float32 dot product of unit vectors,
  whatever the summation order of the BLAS).
- Let ``t`` be the k-th largest ``s~``. Every row of the exact top k (ties at the cut included) has
  ``s~ >= t - 2 eps``: the rows with ``s~ >= t - 2 eps`` are the candidates.
- Rows whose exact score is known to be 0 (norm 0; or, for a sparse query, no non-zero component where the
  query has one: every product of the SQL sum is then exactly 0) all tie at 0 and are ordered by key, so only
  the first k of them can be in the top k. This keeps the candidate set small when many rows tie at 0
  (a ``hashing`` query that few rows match, a zero query).
- When the candidate set is still large (more than ``max(2048, 4 k)`` rows), or anything about the data is
  outside what the bound covers (dims differ, NULL elements, non-finite values, lower bound not 1, a stored
  norm that is not the embedding's), the function returns one row ``(NULL, NULL)``: "use the SQL path".

Staleness, exact and cheap, without scanning the vectors table: every statement that writes the job's table
fires the statement trigger ``ml_stack_vectors_changed`` (ENABLE ALWAYS), which upserts one row per writing
transaction into ``ml_stack.vector_job_changes`` (``xid`` = the top-level transaction, ``stamp_sum`` = a fresh
value of a sequence at each statement). A cache entry is valid while ``(table oid, relfilenode, trigger row
xmin, sum(n), sum(xid_sum), sum(stamp_sum))`` read in the search's own snapshot equals what it was when the
entry was loaded, and the search's snapshot sees every transaction the load's snapshot saw (``snapshot_covers``).
Argument (docs): under that condition the set of visible writing transactions can only have gained newly
committed ones and lost the loading transaction itself (rolled back); a gain without a loss changes the count,
a loss with one gain changes the sum of xids (different xids), and statements of one transaction change its
stamp. Folding old rows into totals (the trigger does it now and then) keeps the three sums.
The fingerprint, the count and the load are read in one snapshot: the function is STABLE, so every query it
runs uses the snapshot of the statement that calls it (also the one that joins the source rows).

Memory: the matrix is ``n x d`` float32 (100k x 384: 154 MB) per backend per job; the setting
``ml_stack.search_cache_mb`` (default 512) caps what one backend keeps (least recently used jobs go first); a
job larger than the cap, or a cap of 0, takes the SQL path. A load reads the whole table (about 1 s for 100k x
384 here); every change to the job's table makes the next search of each backend load it again.
"""

import collections
import math
import time

import numpy as np

from ml_stack_python.errors import MLStackError

CACHE_SETTING = "ml_stack.search_cache_mb"
DEFAULT_CACHE_MB = 512
TRIGGER_NAME = "ml_stack_vectors_changed"
TRIGGER_TYPE = 4 | 8 | 16 | 32   # pg_trigger.tgtype: AFTER ... FOR EACH STATEMENT, INSERT | DELETE | UPDATE | TRUNCATE
FETCH_ROWS = 5000
FLOAT4_OID = 700
MIN_CANDIDATE_CAP = 2048
SPARSE_QUERY_TERMS = 64        # a query with at most this many non-zero components: look for exact zeros
NORM_TOLERANCE = 1e-6          # stored norm vs the embedding's own (relative)
MAX_ABS = 1e30                 # larger elements: the float32 products could overflow

FALLBACK = [(None, None)]

_cache = collections.OrderedDict()   # job id -> _Entry, least recently used first
_state = {"loads": {}, "hits": 0, "fallbacks": {}, "last_fallback": None}


def error_bound(d):
    """An upper bound of |s~ - s| for one row: s~ the float32 cosine of the normalised row and query, s the SQL
    path's float8 score. Rounding each normalised element to float32 (relative 2^-24, twice), a d-term float32
    dot product of unit vectors (gamma_d <= d 2^-24 (1 + small) for any summation order, FMA or not), the
    float64 work (below 1e-12)."""
    u = 2.0 ** -24
    return (d + 8) * u * 1.01 + 1e-12


def parse_snapshot(text):
    """'xmin:xmax:xip,...' (pg_snapshot's text) -> (xmin, xmax, frozenset of running xids)."""
    xmin, xmax, xip = text.split(":")
    return int(xmin), int(xmax), frozenset(int(x) for x in xip.split(",") if x)


def snapshot_covers(s1, s0):
    """Does snapshot s1 see every transaction that s0 sees? (Always so for the snapshots one backend takes one
    after the other; not for an older snapshot imported with SET TRANSACTION SNAPSHOT.)"""
    _, xmax0, xip0 = s0
    _, xmax1, xip1 = s1
    return xmax1 >= xmax0 and all(x in xip0 for x in xip1 if x < xmax0)


class _Entry:
    __slots__ = ("job_id", "key", "snapshot", "ids", "matrix", "zero", "lossy", "dims", "nbytes", "index",
                 "loaded_at", "load_seconds", "hits", "unusable")

    def __init__(self, job_id, key, snapshot, ids, matrix, zero, lossy, dims, load_seconds, unusable=None):
        self.job_id = job_id
        self.key = key
        self.snapshot = snapshot
        self.ids = ids                  # numpy object array of str, in the key type's order
        self.matrix = matrix            # n x d float32, rows divided by their stored norm; zero rows: norm 0
        self.zero = zero                # bool n: norm 0 (score exactly 0)
        self.lossy = lossy              # bool n: a non-zero element became 0 in float32 (never "exact zero")
        self.dims = dims
        self.nbytes = 0 if matrix is None else int(matrix.nbytes + zero.nbytes + lossy.nbytes)
        self.index = None               # id -> row, made on the first call with candidate ids
        self.loaded_at = time.time()
        self.load_seconds = load_seconds
        self.hits = 0
        self.unusable = unusable        # why this job's vectors cannot take the numpy path (None: they can)


# ---------------------------------------------------------------------------------------------------------------
# decoding and building (no database)


def decode_chunk(blobs, norms, dims):
    """array_send() images of real[] values and their stored norms -> (matrix float32 rows / norm, zero mask,
    lossy mask, dims) or raises ValueError saying why these vectors cannot take the numpy path. ``dims`` is the
    dimension seen so far (None: not yet known)."""
    n = len(blobs)
    norms = np.asarray(norms, dtype=np.float64)
    zero = norms == 0
    live = np.flatnonzero(~zero)
    if live.size and not np.all(np.isfinite(norms[live])):
        raise ValueError("a stored norm is not finite")
    if dims is None:
        dims = None if live.size == 0 else (len(blobs[live[0]]) - 20) // 8
    width = 0 if dims is None else dims
    matrix = np.zeros((n, width), dtype=np.float32)
    lossy = np.zeros(n, dtype=bool)
    if live.size == 0:
        return matrix, zero, lossy, dims
    size = 20 + 8 * dims
    if dims <= 0 or any(len(blobs[i]) != size for i in live):
        raise ValueError("embeddings of different lengths (or empty ones with a non-zero norm)")
    raw = np.frombuffer(b"".join(blobs[i] for i in live), dtype=np.uint8).reshape(live.size, size)
    header = raw[:, :20].copy().view(">i4")
    if not (np.all(header[:, 0] == 1) and np.all(header[:, 1] == 0) and np.all(header[:, 2] == FLOAT4_OID)
            and np.all(header[:, 3] == dims) and np.all(header[:, 4] == 1)):
        raise ValueError("an embedding is not a one-dimensional real[] from subscript 1 without NULLs")
    body = raw[:, 20:].copy().view(">i4").reshape(live.size, dims, 2)
    if not np.all(body[:, :, 0] == 4):
        raise ValueError("an embedding has a NULL element")
    values = body[:, :, 1].copy().view(">f4").astype(np.float64)
    if not np.all(np.isfinite(values)) or np.max(np.abs(values)) > MAX_ABS:
        raise ValueError("an embedding has non-finite or huge elements")
    own = np.sqrt(np.einsum("ij,ij->i", values, values))
    stored = norms[live]
    if not np.all(np.abs(own - stored) <= NORM_TOLERANCE * stored):
        raise ValueError("a stored norm is not the norm of its embedding")
    scaled = (values / stored[:, None]).astype(np.float32)
    matrix[live] = scaled
    lossy[live] = np.any((values != 0) & (scaled == 0), axis=1)
    return matrix, zero, lossy, dims


def candidates(matrix, zero, lossy, query, k, rows=None, cap=None):
    """Row numbers (ascending; row order = key order) that contain the SQL path's exact top k among ``rows``
    (None: all rows), or None when the set would exceed ``cap`` (default max(2048, 4 k)): take the SQL path.
    Also returns the approximate scores of those rows."""
    n = matrix.shape[0]
    pool = np.arange(n) if rows is None else np.asarray(rows, dtype=np.int64)
    if cap is None:
        cap = max(MIN_CANDIDATE_CAP, 4 * k)
    if pool.size == 0:
        return pool, np.zeros(0)
    q = np.asarray(query, dtype=np.float64)
    qnorm = math.sqrt(float(q @ q))
    if qnorm == 0:
        # every score is exactly 0: the first k rows in key order
        picked = np.sort(pool)[:k]
        return picked, np.zeros(picked.size)
    qhat = (q / qnorm).astype(np.float32)
    if rows is None:
        approx = (matrix @ qhat).astype(np.float64)
    elif pool.size * 4 > n:
        approx = (matrix @ qhat).astype(np.float64)[pool]
    else:
        approx = (matrix[pool] @ qhat).astype(np.float64)
    if pool.size <= k:
        order = np.argsort(pool, kind="stable")
        return pool[order], approx[order]
    eps = error_bound(matrix.shape[1])
    tau = np.partition(approx, pool.size - k)[pool.size - k]
    keep = approx >= tau - 2 * eps
    if np.count_nonzero(keep) > max(2 * k, k + 256):
        # rows whose exact score is 0 tie and go by key: only the first k of them can make the cut
        exact_zero = zero[pool].copy()
        nz = np.flatnonzero(q)
        if nz.size <= SPARSE_QUERY_TERMS:
            sub = matrix[np.ix_(pool, nz)] if rows is not None else matrix[:, nz]
            exact_zero |= ~np.any(sub != 0, axis=1) & ~lossy[pool]
        if 0 >= tau - 2 * eps:
            zeros_in = np.flatnonzero(exact_zero)   # positions in pool; pool ascending when rows is sorted
            zeros_in = zeros_in[np.argsort(pool[zeros_in], kind="stable")][:k]
            keep = (keep & ~exact_zero)
            keep[zeros_in] = True
        else:
            keep &= ~exact_zero
        if np.count_nonzero(keep) > cap:
            return None, None
    picked = np.flatnonzero(keep)
    order = np.argsort(pool[picked], kind="stable")
    return pool[picked][order], approx[picked][order]


# ---------------------------------------------------------------------------------------------------------------
# in the server

_FINGERPRINT = f"""
SELECT d.vectors_table, c.oid::bigint AS relid, pg_catalog.pg_relation_filenode(c.oid)::bigint AS filenode,
       c.relrowsecurity AS rls, t.tgenabled::text AS enabled, t.tgtype::integer AS tgtype,
       t.xmin::text AS trigger_xmin, ch.n::text AS n, ch.xid_sum::text AS xid_sum, ch.stamp_sum::text AS stamp_sum,
       pg_catalog.pg_current_snapshot()::text AS snapshot,
       CASE WHEN c.oid IS NOT NULL THEN pg_catalog.has_table_privilege(c.oid, 'SELECT') END AS readable,
       pg_catalog.current_setting('{CACHE_SETTING}', true) AS cache_mb
FROM ml_stack.vector_job_definitions AS d
LEFT JOIN pg_catalog.pg_class AS c ON c.oid = pg_catalog.to_regclass(pg_catalog.format('ml_stack.%I', d.vectors_table))
LEFT JOIN pg_catalog.pg_trigger AS t ON t.tgrelid = c.oid AND t.tgname = '{TRIGGER_NAME}'
      AND t.tgfoid = 'ml_stack._python_vectors_changed()'::pg_catalog.regprocedure
CROSS JOIN LATERAL (SELECT pg_catalog.sum(x.n) AS n, pg_catalog.sum(x.xid_sum) AS xid_sum,
                           pg_catalog.sum(x.stamp_sum) AS stamp_sum
                    FROM ml_stack.vector_job_changes AS x WHERE x.job_id = d.id) AS ch
WHERE d.id = $1
"""

_plans = {}


def _plan(plpy, name, query, types):
    plan = _plans.get(name)
    if plan is None:
        plan = _plans[name] = plpy.prepare(query, types)
    return plan


def _quote_ident(name):
    return '"' + name.replace('"', '""') + '"'


def cache_mb(text):
    if text is None or text == "":
        return DEFAULT_CACHE_MB
    try:
        value = float(text)
    except ValueError:
        value = -1
    if not value >= 0 or math.isinf(value):
        raise MLStackError(f"{CACHE_SETTING} must be a number of megabytes >= 0, got {text!r}",
                           hint=f"SET {CACHE_SETTING} = 512 (the default); 0 turns the numpy path off.")
    return value


def _fallback(job_id, why):
    _state["fallbacks"][job_id] = _state["fallbacks"].get(job_id, 0) + 1
    _state["last_fallback"] = why
    return FALLBACK


def _evict(cap_bytes, keep=None):
    total = sum(e.nbytes for e in _cache.values())
    for job_id in list(_cache):
        if total <= cap_bytes:
            break
        if job_id == keep:
            continue
        total -= _cache.pop(job_id).nbytes


def _load(plpy, job_id, table, key, snapshot, cap_bytes):
    started = time.perf_counter()
    qtable = "ml_stack." + _quote_ident(table)
    n = plpy.execute(f"SELECT pg_catalog.count(*) AS n FROM {qtable}")[0]["n"]
    dims = None
    ids = np.empty(n, dtype=object)
    parts = []
    unusable = None
    seen = 0
    cursor = plpy.cursor(f"SELECT v.id::text AS id, pg_catalog.array_send(v.embedding) AS e, v.norm "
                         f"FROM {qtable} AS v ORDER BY v.id")
    while True:
        rows = cursor.fetch(FETCH_ROWS)
        if not rows:
            break
        if seen + len(rows) > n:
            raise MLStackError(f"vector job {job_id}: its table changed while it was read", sqlstate="40001")
        ids[seen:seen + len(rows)] = [r["id"] for r in rows]
        if unusable is None:
            try:
                m, z, l, dims = decode_chunk([r["e"] for r in rows], [r["norm"] for r in rows], dims)
                if parts and parts[0][0].shape[1] != m.shape[1]:
                    if parts[0][0].shape[1] == 0:   # the first chunks held zero rows only
                        parts = [(np.zeros((p[0].shape[0], m.shape[1]), dtype=np.float32), p[1], p[2])
                                 for p in parts]
                    elif m.shape[1] == 0:
                        m = np.zeros((m.shape[0], parts[0][0].shape[1]), dtype=np.float32)
                parts.append((m, z, l))
                if sum(p[0].nbytes for p in parts) > cap_bytes:
                    unusable = f"larger than {CACHE_SETTING}"
                    parts = []
            except ValueError as e:
                unusable = str(e)
                parts = []
        seen += len(rows)
    if unusable is None:
        if parts:
            matrix = np.concatenate([p[0] for p in parts])
            zero = np.concatenate([p[1] for p in parts])
            lossy = np.concatenate([p[2] for p in parts])
        else:
            matrix, zero, lossy = np.zeros((0, 0), dtype=np.float32), np.zeros(0, bool), np.zeros(0, bool)
        entry = _Entry(job_id, key, snapshot, ids[:seen], matrix, zero, lossy, dims or 0,
                       time.perf_counter() - started)
    else:
        entry = _Entry(job_id, key, snapshot, None, None, None, None, dims or 0, time.perf_counter() - started,
                       unusable=unusable)
    _state["loads"][job_id] = _state["loads"].get(job_id, 0) + 1
    return entry


def search(plpy, job_id, query_vector, k, candidate_ids=None):
    """Rows (id, approximate score) that contain the SQL path's top k, or [(None, None)]: use the SQL path."""
    if job_id is None or query_vector is None or k is None or k < 1:
        return []
    fp = plpy.execute(_plan(plpy, "fingerprint", _FINGERPRINT, ["bigint"]), [job_id])
    if not fp:
        return _fallback(job_id, "no such job")
    fp = fp[0]
    cap_bytes = cache_mb(fp["cache_mb"]) * 1024 * 1024
    if cap_bytes == 0:
        _cache.clear()
        return _fallback(job_id, f"{CACHE_SETTING} = 0")
    if fp["relid"] is None or not fp["readable"]:
        return _fallback(job_id, "vectors table missing or not readable")   # the SQL path says what is wrong
    if fp["rls"]:
        return _fallback(job_id, "row level security on the vectors table")
    if fp["enabled"] != "A" or fp["tgtype"] != TRIGGER_TYPE:
        return _fallback(job_id, "the vectors table has no change trigger (ml_stack._python_vector_job_track)")
    key = (fp["relid"], fp["filenode"], fp["trigger_xmin"], fp["n"], fp["xid_sum"], fp["stamp_sum"])
    snapshot = parse_snapshot(fp["snapshot"])
    entry = _cache.get(job_id)
    if entry is not None and (entry.key != key or not snapshot_covers(snapshot, entry.snapshot)):
        del _cache[job_id]
        entry = None
    if entry is None:
        entry = _load(plpy, job_id, fp["vectors_table"], key, snapshot, cap_bytes)
        _cache[job_id] = entry
        _evict(cap_bytes, keep=job_id)
    else:
        _cache.move_to_end(job_id)
        entry.hits += 1
        _state["hits"] += 1
    if entry.unusable is not None:
        return _fallback(job_id, entry.unusable)
    if any(x is None for x in query_vector):
        return _fallback(job_id, "NULL in the query vector")
    q = np.asarray(query_vector, dtype=np.float32)
    if not np.all(np.isfinite(q)):
        return _fallback(job_id, "non-finite query vector")
    if entry.matrix.shape[0] == 0:
        return []
    if entry.matrix.shape[1] == 0:
        q = np.zeros(0, dtype=np.float32)   # every row is a zero row: every score is exactly 0
    elif np.any(q != 0) and q.size != entry.matrix.shape[1]:
        return _fallback(job_id, "the query's dimensions differ from the embeddings'")
    if q.size != entry.matrix.shape[1]:
        q = np.zeros(entry.matrix.shape[1], dtype=np.float32)
    rows = None
    if candidate_ids is not None:
        if entry.index is None:
            entry.index = {v: i for i, v in enumerate(entry.ids)}
        index = entry.index
        rows = np.fromiter((index[c] for c in candidate_ids if c in index), dtype=np.int64)
        rows = np.unique(rows)
    picked, approx = candidates(entry.matrix, entry.zero, entry.lossy, q.astype(np.float64), k, rows)
    if picked is None:
        return _fallback(job_id, "too many candidates (near ties)")
    return list(zip(entry.ids[picked].tolist(), approx.tolist()))


def cache_state():
    """One row per job cached in this backend (ml_stack._python_vector_cache())."""
    return [{"job_id": e.job_id, "rows": 0 if e.ids is None else len(e.ids), "dims": e.dims, "bytes": e.nbytes,
             "loads": _state["loads"].get(e.job_id, 0), "hits": e.hits,
             "fallbacks": _state["fallbacks"].get(e.job_id, 0), "load_seconds": e.load_seconds,
             "unusable": e.unusable} for e in _cache.values()]


def stats():
    return {"loads": dict(_state["loads"]), "hits": _state["hits"], "fallbacks": dict(_state["fallbacks"]),
            "last_fallback": _state["last_fallback"]}


def clear():
    _cache.clear()
