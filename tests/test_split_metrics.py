"""The train/test split and the snapshot that records it (DESIGN §2-3).

The split is reproduced here in Python from what the snapshot stores (seed, test_rows, test_sampling), so that
the tests can score a model on exactly the rows the server used. ``test_oracle.py`` imports ``train_mask``.

Fingerprint of a split: the snapshot keeps per-feature statistics of the *training* rows (count, mean, min,
max) and the label's statistics; recomputing them from a reproduced mask tells whether the mask is the
server's, independently of any model.
"""

import hashlib
import math
from fractions import Fraction

import numpy as np
import pytest
from psycopg import sql

from datasets import LABEL, feature_columns, load_sklearn_dataset
from helpers import model_row, one_row, predictions, train


def snapshot(conn, model_id):
    """The snapshot row of a model, as a dict."""
    return one_row(conn, "SELECT s.* FROM ml_stack.models AS m JOIN ml_stack.snapshots AS s ON s.id = m.snapshot_id"
                         " WHERE m.id = %s", (model_id,))


def expected_test_rows(n, test_size):
    """ceil(n * test_size) for a fraction, as scikit-learn's train_test_split; the count itself for >= 1.

    test_size goes through real (float4) on its way to the server, and 0.2::real is 0.2000000030: the server
    rounds it to 6 decimals first, so 0.2 on 442 rows is 89 test rows, not 90."""
    ts = round(float(np.float32(test_size)), 6)
    return math.ceil(n * ts) if ts < 1 else int(ts)


def split_key(seed, r):
    """The server's key of row r: md5('<seed>:<r>') in hex; the random split takes the lowest keys."""
    return hashlib.md5(f"{seed}:{r}".encode()).hexdigest()


def split_masks(seed, n_test, sampling, y):
    """(train, test) boolean masks over the relation's rows in its own order, as the server splits them.

    ``y`` is the label in that order, NaN where it is NULL (such rows are in neither split).
    r, the number the key hashes, is the row's position in the relation *counting* rows with a NULL label
    (the server numbers rows as it reads them, then drops the unlabeled ones).
    """
    y = np.asarray(y, dtype=np.float64)
    labeled = np.flatnonzero(~np.isnan(y))           # positions (0-based) of the rows used
    keys = {i: split_key(seed, i + 1) for i in labeled}
    test = np.zeros(len(y), dtype=bool)
    if sampling == "last":
        test[labeled[len(labeled) - n_test:]] = True
    elif sampling == "random":
        test[sorted(labeled, key=keys.__getitem__)[:n_test]] = True
    elif sampling == "stratified":
        for cls, t in stratified_allocation(y[labeled], n_test).items():
            members = [i for i in labeled if y[i] == cls]
            test[sorted(members, key=keys.__getitem__)[:t]] = True
    else:
        raise ValueError(sampling)
    train_ = np.zeros(len(y), dtype=bool)
    train_[labeled] = True
    train_ &= ~test
    return train_, test


def stratified_allocation(y, n_test):
    """Test rows per class: its exact share n_test * count / n, rounded by largest remainder (ties: the lower
    class value first). Exact arithmetic, so that equal shares really tie."""
    classes, counts = np.unique(y, return_counts=True)
    n = int(counts.sum())
    exact = {c: Fraction(n_test * int(k), n) for c, k in zip(classes.tolist(), counts.tolist())}
    alloc = {c: math.floor(e) for c, e in exact.items()}
    left = n_test - sum(alloc.values())
    for c in sorted(exact, key=lambda c: (-(exact[c] - math.floor(exact[c])), c))[:left]:
        alloc[c] += 1
    return alloc


def train_mask(conn, model_id, y):
    """(train, test) masks of a trained model, from its snapshot's seed, test_rows and test_sampling."""
    s = snapshot(conn, model_id)
    return split_masks(s["seed"], s["test_rows"], s["test_sampling"], y)


def assert_snapshot_matches_mask(snap, X, y, train_mask_, columns):
    """The snapshot's training-row statistics are those of the rows our mask selects."""
    Xt, yt = X[train_mask_], y[train_mask_]
    assert snap["train_rows"] == train_mask_.sum()
    # first the number of rows the statistics were computed on (NULL-free columns count every training row)
    counts = [int((~np.isnan(Xt[:, j])).sum()) for j in range(len(columns))]
    assert [f["count"] for f in snap["features"]] == counts, "the server trained on other rows than train_rows says"
    assert np.isclose(snap["label"]["mean"], yt.mean(), rtol=1e-12, atol=0)
    for j, f in enumerate(snap["features"]):
        assert f["name"] == columns[j]
        col = Xt[:, j]
        present = col[~np.isnan(col)]
        # min/max are exact, the mean up to summation order
        assert (f["min"], f["max"]) == (present.min(), present.max()), f["name"]
        assert np.isclose(f["mean"], present.mean(), rtol=1e-12, atol=1e-15), f["name"]


def r2(y, yhat):
    return 1 - np.sum((y - yhat) ** 2) / np.sum((y - y.mean()) ** 2)


DIABETES_COLS = feature_columns("diabetes")


# --- test_size ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("test_size, n_test", [(0.2, 89), (0.25, 111), (0.1, 45), (0.5, 221), (100, 100), (1, 1)])
def test_test_size_fraction_and_count(conn, test_size, n_test):
    X, y = load_sklearn_dataset(conn, "diabetes")
    assert expected_test_rows(len(y), test_size) == n_test  # the rule, checked against hand-computed counts
    m = train(conn, "p", "regression", "diabetes", LABEL, test_size=test_size)
    s = snapshot(conn, m["model_id"])
    assert (s["rows"], s["test_rows"], s["train_rows"], s["skipped_rows"]) == (442, n_test, 442 - n_test, 0)
    train_, test = train_mask(conn, m["model_id"], y)
    assert (train_.sum(), test.sum()) == (442 - n_test, n_test)
    assert_snapshot_matches_mask(s, X, y, train_, DIABETES_COLS)


# --- random -----------------------------------------------------------------------------------------------

def test_random_split_reproducible_and_reproduced(conn):
    X, y = load_sklearn_dataset(conn, "diabetes")
    first = train(conn, "p", "regression", "diabetes", LABEL)
    # Retrain with the project name only, another algorithm: the project's seed, hence the same rows.
    second = train(conn, "p", algorithm="ridge")
    s1, s2 = snapshot(conn, first["model_id"]), snapshot(conn, second["model_id"])
    assert s1["seed"] == s2["seed"]
    assert (s1["test_rows"], s2["test_rows"]) == (111, 111)
    assert s1["features"] == s2["features"] and s1["label"] == s2["label"]  # same training rows, same stats

    train_, test = train_mask(conn, first["model_id"], y)
    assert_snapshot_matches_mask(s1, X, y, train_, DIABETES_COLS)
    # The test rows too: each model's stored r2 is its predictions' r2 on our test rows.
    for m in (first, second):
        yhat = predictions(conn, "diabetes", DIABETES_COLS, m["model_id"])
        assert abs(m["metrics"]["r2"] - r2(y[test], yhat[test])) < 1e-9
        # and not on some other 111 rows: the r2 on the training rows is another number
        assert abs(m["metrics"]["r2"] - r2(y[train_], yhat[train_])) > 1e-3

    # The same algorithm again scores exactly as the first time (same split, same fit).
    third = train(conn, "p")
    assert third["metrics"]["r2"] == first["metrics"]["r2"]


def test_random_split_is_not_table_order(conn):
    """A random split is scattered over the table, not a block of it."""
    _, y = load_sklearn_dataset(conn, "diabetes")
    m = train(conn, "p", "regression", "diabetes", LABEL)
    _, test = train_mask(conn, m["model_id"], y)
    positions = np.flatnonzero(test)
    assert positions.min() < 50 and positions.max() > 392


# --- last --------------------------------------------------------------------------------------------------

def test_last_takes_the_last_rows_of_the_table(conn):
    X, y = load_sklearn_dataset(conn, "diabetes")
    m = train(conn, "p", "regression", "diabetes", LABEL, test_size=0.2, test_sampling="last")
    s = snapshot(conn, m["model_id"])
    assert s["test_sampling"] == "last" and s["test_rows"] == 89
    train_ = np.arange(442) < 442 - 89
    assert_snapshot_matches_mask(s, X, y, train_, DIABETES_COLS)
    yhat = predictions(conn, "diabetes", DIABETES_COLS, m["model_id"])
    assert abs(m["metrics"]["r2"] - r2(y[~train_], yhat[~train_])) < 1e-9


def test_last_follows_the_order_of_a_view(conn):
    """'last' means the relation's own order: a view's ORDER BY, here by bmi descending (every column after it
    as tie-breakers, so that the order is total)."""
    X, y = load_sklearn_dataset(conn, "diabetes")
    order_cols = ["bmi"] + [c for c in DIABETES_COLS if c != "bmi"] + [LABEL]
    conn.execute(sql.SQL("CREATE VIEW by_bmi AS SELECT * FROM diabetes ORDER BY {} DESC, {}").format(
        sql.Identifier("bmi"), sql.SQL(", ").join(map(sql.Identifier, order_cols[1:]))))
    # numpy's lexsort: last key is primary
    full = np.column_stack([X, y])
    keys = [full[:, (DIABETES_COLS + [LABEL]).index(c)] for c in order_cols]
    keys[0] = -keys[0]
    order = np.lexsort(keys[::-1])
    Xv, yv = X[order], y[order]

    m = train(conn, "p", "regression", "by_bmi", LABEL, test_size=0.25, test_sampling="last")
    s = snapshot(conn, m["model_id"])
    train_ = np.arange(442) < 442 - 111
    assert_snapshot_matches_mask(s, Xv, yv, train_, DIABETES_COLS)
    # The test rows are the 111 lowest bmi values; the training rows' smallest bmi is above all of them.
    assert s["features"][DIABETES_COLS.index("bmi")]["min"] >= Xv[~train_, DIABETES_COLS.index("bmi")].max()


# --- stratified ---------------------------------------------------------------------------------------------

def test_stratified_iris_gets_ten_per_class(conn):
    X, y = load_sklearn_dataset(conn, "iris")
    m = train(conn, "p", "classification", "iris", LABEL, test_size=0.2, test_sampling="stratified")
    s = snapshot(conn, m["model_id"])
    assert s["test_rows"] == 30
    train_, test = train_mask(conn, m["model_id"], y)
    assert np.bincount(y[test]).tolist() == [10, 10, 10]
    assert_snapshot_matches_mask(s, X, y, train_, feature_columns("iris"))
    # the stored accuracy is the model's on our test rows
    yhat = predictions(conn, "iris", feature_columns("iris"), m["model_id"])
    assert abs(m["metrics"]["accuracy"] - np.mean(yhat[test] == y[test])) < 1e-12


def test_stratified_uneven_classes_largest_remainder(conn):
    """wine's classes are 59/71/48 rows; 45 test rows: exact shares 14.92/17.95/12.13 -> 15/18/12."""
    X, y = load_sklearn_dataset(conn, "wine")
    m = train(conn, "p", "classification", "wine", LABEL, test_size=0.25, test_sampling="stratified")
    s = snapshot(conn, m["model_id"])
    assert s["test_rows"] == 45
    assert stratified_allocation(y, 45) == {0: 15, 1: 18, 2: 12}
    train_, test = train_mask(conn, m["model_id"], y)
    assert np.bincount(y[test]).tolist() == [15, 18, 12]
    assert_snapshot_matches_mask(s, X, y, train_, feature_columns("wine"))


def test_stratified_tied_remainders_go_to_the_lowest_class(conn):
    """Three classes of 50, 31 test rows: every share is 10 1/3, so the one extra row goes to the lowest class
    value, here class 0 although it comes last in the table (the label is reversed so that table order and
    class order disagree)."""
    X, y = load_sklearn_dataset(conn, "iris", table="iris_src")
    cols = feature_columns("iris")
    conn.execute(sql.SQL("CREATE VIEW iris AS SELECT {}, 2 - {} AS {} FROM iris_src").format(
        sql.SQL(", ").join(map(sql.Identifier, cols)), sql.Identifier(LABEL), sql.Identifier(LABEL)))
    y = 2 - y
    m = train(conn, "p", "classification", "iris", LABEL, test_size=31, test_sampling="stratified")
    train_, test = train_mask(conn, m["model_id"], y)
    assert np.bincount(y[test]).tolist() == [11, 10, 10]
    assert_snapshot_matches_mask(snapshot(conn, m["model_id"]), X, y, train_, cols)


# --- one consistent read of a changing view -------------------------------------------------------------------

def test_view_with_random_order_trains_on_one_read(conn):
    """PostgresML's example view: 100 random rows, other rows at every read. Whatever 100 rows the server got,
    the statistics in the snapshot and the fitted weights must come from the same ones. OLS with an intercept
    satisfies mean(y) = b + mean(x) . w on its own training rows; with the snapshot's statistics from one read
    and the fit from another, the identity breaks."""
    load_sklearn_dataset(conn, "diabetes")
    conn.execute("CREATE VIEW v AS SELECT * FROM diabetes ORDER BY random() LIMIT 100")
    m = train(conn, "p", "regression", "v", LABEL)
    s = snapshot(conn, m["model_id"])
    assert (s["rows"], s["train_rows"], s["test_rows"]) == (100, 75, 25)
    assert all(f["count"] == 75 for f in s["features"])
    art = model_row(conn, m["model_id"])["artifact"]
    w, b = np.array(art["coefficients"][0]), art["intercepts"][0]
    means = np.array([f["mean"] for f in s["features"]])
    ybar = s["label"]["mean"]
    assert abs(b + means @ w - ybar) <= 1e-9 * (abs(ybar) + np.abs(means) @ np.abs(w) + abs(b))


def test_view_changing_at_every_read_is_read_once(conn):
    """A view that draws other rows at every read, in a way we can replay: each read takes the next value of a
    sequence and picks 100 rows by md5(read number, row number). After training, the sequence says how many times
    the view was read (must be once), and read 1 tells exactly which rows, in which order, the server trained on:
    the fitted weights must then satisfy the OLS normal equations on the training split of those rows, and the
    stored r2 must be that of the test split."""
    X, y = load_sklearn_dataset(conn, "diabetes")
    conn.execute("CREATE SEQUENCE reads")
    # MATERIALIZED: nextval once per read of the view, not once per joined row
    conn.execute(sql.SQL(
        "CREATE VIEW v AS WITH rd AS MATERIALIZED (SELECT nextval('reads') AS n),"
        " d AS (SELECT *, row_number() OVER () AS id FROM diabetes)"
        " SELECT {} FROM d, rd ORDER BY md5(rd.n || ':' || d.id) LIMIT 100").format(
        sql.SQL(", ").join(map(sql.Identifier, DIABETES_COLS + [LABEL]))))

    m = train(conn, "p", "regression", "v", LABEL)
    assert conn.execute("SELECT last_value FROM reads").fetchone()[0] == 1, "the view was read more than once"

    picked = np.array(sorted(range(1, 443), key=lambda i: hashlib.md5(f"1:{i}".encode()).hexdigest())[:100]) - 1
    Xv, yv = X[picked], y[picked]
    train_, test = train_mask(conn, m["model_id"], yv)
    assert_snapshot_matches_mask(snapshot(conn, m["model_id"]), Xv, yv, train_, DIABETES_COLS)

    art = model_row(conn, m["model_id"])["artifact"]
    w, b = np.array(art["coefficients"][0]), art["intercepts"][0]
    resid = yv - (b + Xv @ w)
    A = np.column_stack([np.ones(100), Xv])[train_]
    # normal equations A'r = 0, relative to the size of the terms that cancel
    worst = np.max(np.abs(A.T @ resid[train_]) / (np.abs(A.T) @ np.abs(resid[train_])))
    print(f"normal equations on the one read: max relative |A'r| = {worst:.2e}")
    assert worst < 1e-9
    assert abs(m["metrics"]["r2"] - r2(yv[test], yv[test] - resid[test])) < 1e-9


# --- NULL labels ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sampling", ["random", "last", "stratified"])
def test_rows_with_null_label_are_left_out(conn, sampling):
    """Every 10th row (44 of 442 diabetes rows, 15 of 150 iris rows) has no label: those rows are counted in
    skipped_rows and are in neither split, and test_rows is a share of the labeled rows only. 'last' must take
    the last *labeled* rows: test_rows of them, however many unlabeled rows lie among or after them."""
    name, task = ("iris", "classification") if sampling == "stratified" else ("diabetes", "regression")
    X, y = load_sklearn_dataset(conn, name, table=f"{name}_src")
    cols = feature_columns(name)
    conn.execute(sql.SQL(
        "CREATE VIEW {} AS SELECT {}, CASE WHEN r % 10 <> 0 THEN {} END AS {}"
        " FROM (SELECT *, row_number() OVER () AS r FROM {}) AS s").format(
        sql.Identifier(name), sql.SQL(", ").join(map(sql.Identifier, cols)), sql.Identifier(LABEL),
        sql.Identifier(LABEL), sql.Identifier(f"{name}_src")))
    y = y.astype(np.float64)
    y[9::10] = np.nan
    n_null = int(np.isnan(y).sum())
    n = len(y) - n_null

    m = train(conn, "p", task, name, LABEL, test_size=0.2, test_sampling=sampling)
    s = snapshot(conn, m["model_id"])
    assert (s["rows"], s["skipped_rows"], s["test_rows"]) == (n, n_null, expected_test_rows(n, 0.2))
    train_, test = train_mask(conn, m["model_id"], y)
    assert test.sum() == s["test_rows"] and not (train_ | test)[np.isnan(y)].any()
    assert_snapshot_matches_mask(s, X, y, train_, cols)
    # the metrics are computed on those test rows: as many as test_rows, not more
    yhat = predictions(conn, name, cols, m["model_id"])
    if task == "regression":
        assert abs(m["metrics"]["r2"] - r2(y[test], yhat[test])) < 1e-9
    else:
        assert abs(m["metrics"]["accuracy"] - np.mean(yhat[test] == y[test])) < 1e-12
