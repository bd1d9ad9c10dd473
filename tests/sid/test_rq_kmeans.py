"""Balanced RQ-KMeans: exact balance, exact optimality of the assignment, determinism, suffixes."""
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from singer_rec.sid.rq_kmeans import (
    balanced_kmeans,
    balanced_rq_kmeans,
    balanced_sizes,
    dedupe_suffixes,
    greedy_balanced_assignment,
    optimal_balanced_assignment,
)


def _blobs(n, d, seed, centers=7):
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((centers, d)) * 3
    return (means[rng.integers(0, centers, n)] + rng.standard_normal((n, d))).astype(np.float32)


def _assignment_optimum(dist, lo, hi):
    """Brute-force reference: the transportation problem as a square assignment (scipy)."""
    k = dist.shape[1]
    columns, bonus = [], []
    for cluster in range(k):
        columns += [cluster] * lo
        bonus += [-1e6] * lo  # mandatory seats: every cluster gets at least `lo`
        if hi > lo:
            columns.append(cluster)
            bonus.append(0.0)
    columns = np.array(columns)
    rows, picked = linear_sum_assignment(dist[:, columns] + np.array(bonus))
    return dist[rows, columns[picked]].sum()


@pytest.mark.parametrize("n,k", [(10, 3), (12, 4), (7, 7), (1, 1), (100, 16)])
def test_balanced_sizes(n, k):
    lo, hi = balanced_sizes(n, k)
    assert lo == n // k and hi == -(-n // k)


def test_k_larger_than_n_is_a_clear_error():
    with pytest.raises(ValueError, match=r"K \(9\) > number of items \(8\)"):
        balanced_kmeans(np.zeros((8, 2), dtype=np.float32), 9)
    with pytest.raises(ValueError, match=r"K \(9\) > number of items \(8\)"):
        balanced_rq_kmeans(np.zeros((8, 2), dtype=np.float32), 2, 9)


def test_non_finite_embeddings_name_the_row():
    x = np.ones((6, 2), dtype=np.float32)
    x[4, 1] = np.nan
    with pytest.raises(ValueError, match="row 4"):
        balanced_kmeans(x, 2)


@pytest.mark.parametrize("trial", range(25))
def test_assignment_is_the_exact_optimum(trial):
    rng = np.random.default_rng(trial)
    n = int(rng.integers(3, 60))
    k = int(rng.integers(1, min(n, 9) + 1))
    dist = rng.random((n, k)) * 10
    lo, hi = balanced_sizes(n, k)
    greedy = greedy_balanced_assignment(dist, lo, hi)
    labels = optimal_balanced_assignment(dist, lo, hi)
    for candidate in (greedy, labels):
        counts = np.bincount(candidate, minlength=k)
        assert counts.min() >= lo and counts.max() <= hi
    got = dist[np.arange(n), labels].sum()
    assert got == pytest.approx(_assignment_optimum(dist, lo, hi), rel=1e-12, abs=1e-9)
    assert got <= dist[np.arange(n), greedy].sum() + 1e-12


def test_warm_start_must_be_feasible():
    dist = np.zeros((4, 2))
    with pytest.raises(ValueError, match="not a feasible"):
        optimal_balanced_assignment(dist, 2, 2, init_labels=np.array([0, 0, 0, 1]))


@pytest.mark.parametrize("n,k,levels", [(50, 7, 3), (64, 8, 3), (200, 16, 2), (30, 30, 2), (101, 10, 3)])
def test_every_level_strictly_balanced_and_cost_monotone(n, k, levels):
    x = _blobs(n, 12, seed=n)
    result = balanced_rq_kmeans(x, levels, k, seed=3)
    lo, hi = n // k, -(-n // k)
    for level in range(levels):
        counts = np.bincount(result.codes[:, level], minlength=k)
        assert counts.min() >= lo and counts.max() <= hi
        assert counts.sum() == n
        history = result.levels[level].cost_history
        assert all(b <= a + 1e-9 * a for a, b in zip(history, history[1:]))
    assert result.codebooks.shape == (levels, k, 12) and result.codebooks.dtype == np.float32
    # quantisation error never grows with depth, and equals the residual the codes imply
    errors = result.quantization_error
    assert all(b <= a + 1e-9 for a, b in zip(errors, errors[1:]))
    recon = sum(result.codebooks[level].astype(np.float64)[result.codes[:, level]] for level in range(levels))
    assert errors[-1] == pytest.approx(((x.astype(np.float64) - recon) ** 2).sum(axis=1).mean(), rel=1e-5)


def test_level_centroids_are_member_means():
    x = _blobs(40, 5, seed=1)
    result = balanced_kmeans(x, 4, seed=0)
    for cluster in range(4):
        np.testing.assert_allclose(result.centroids[cluster], x[result.labels == cluster].astype(np.float64).mean(axis=0), rtol=1e-5, atol=1e-6)


def test_same_seed_same_result_different_seed_differs():
    x = _blobs(120, 8, seed=5)
    a = balanced_rq_kmeans(x, 3, 6, seed=11)
    b = balanced_rq_kmeans(x, 3, 6, seed=11)
    c = balanced_rq_kmeans(x, 3, 6, seed=12)
    np.testing.assert_array_equal(a.codes, b.codes)
    np.testing.assert_array_equal(a.codebooks, b.codebooks)
    assert not np.array_equal(a.codes, c.codes)


def test_separated_clusters_are_recovered_exactly():
    # four tight, far-apart groups of 5: the balanced optimum is the groups themselves
    rng = np.random.default_rng(0)
    corners = np.array([[0, 0], [100, 0], [0, 100], [100, 100]], dtype=np.float32)
    x = np.repeat(corners, 5, axis=0) + rng.standard_normal((20, 2)).astype(np.float32) * 0.1
    labels = balanced_kmeans(x, 4, seed=0).labels
    groups = labels.reshape(4, 5)
    assert all(len(set(row)) == 1 for row in groups.tolist())
    assert len(set(groups[:, 0].tolist())) == 4


def test_dedupe_suffixes_on_hand_made_paths():
    codes = np.array([[0, 1], [2, 3], [0, 1], [4, 4], [0, 1], [2, 3]])
    suffix, stats = dedupe_suffixes(codes)
    assert suffix.tolist() == [0, 0, 1, -1, 2, 1]
    assert stats == {"colliding_groups": 2, "colliding_items": 5, "largest_group": 3, "distinct_paths": 3}
    none, stats = dedupe_suffixes(np.array([[0], [1]]))
    assert none.tolist() == [-1, -1] and stats["largest_group"] == 0


def test_seeding_trials():
    x = _blobs(90, 6, seed=2)
    plain = balanced_rq_kmeans(x, 2, 9, seed=0, init_trials=1)
    for level in range(2):
        assert set(np.bincount(plain.codes[:, level], minlength=9).tolist()) == {10}
    with pytest.raises(ValueError, match="at least 1 candidate"):
        balanced_kmeans(x, 9, init_trials=0)


# Codes of the float64, unchunked implementation on a fixed input: the float32, chunked one (and its
# recompute-on-demand mode) must give the same.
PINNED_LEVEL_CODES = [
    [0, 2, 3, 0, 1, 0, 2, 1, 4, 3, 2, 3, 0, 5, 4, 3, 3, 5, 5, 2, 5, 0, 5, 4, 1, 5, 5, 1, 4, 2, 2, 4, 1, 4, 3, 4, 1, 1, 3, 2,
     0, 5, 2, 0, 3, 4, 0, 1],
    [2, 0, 2, 0, 5, 1, 3, 2, 1, 4, 3, 1, 0, 3, 4, 3, 2, 5, 2, 0, 3, 4, 1, 3, 1, 4, 2, 5, 1, 4, 5, 5, 0, 3, 2, 5, 1, 4, 4, 0,
     2, 1, 5, 0, 4, 0, 5, 3],
]


@pytest.mark.parametrize("chunk_rows,cache_bytes", [(None, None), (5, 0), (7, 10**9)])
def test_pinned_codes_whatever_the_chunking(monkeypatch, chunk_rows, cache_bytes):
    from singer_rec.sid import rq_kmeans

    if chunk_rows is not None:
        monkeypatch.setattr(rq_kmeans, "DISTANCE_CHUNK_ROWS", chunk_rows)
        monkeypatch.setattr(rq_kmeans, "DISTANCE_CACHE_BYTES", cache_bytes)
    result = balanced_rq_kmeans(_blobs(48, 6, seed=21), 2, 6, seed=4)
    assert result.codes.T.tolist() == PINNED_LEVEL_CODES


@pytest.mark.parametrize("chunk_rows", [1, 7, 64, 1000])
def test_chunked_distances_equal_unchunked(chunk_rows):
    from singer_rec.sid.rq_kmeans import _Distances, iter_sq_distances, pairwise_sq_distances

    x = _blobs(300, 16, seed=9)
    centroids = _blobs(11, 16, seed=10)
    whole = pairwise_sq_distances(x, centroids, chunk_rows=10**6)
    assert whole.dtype == np.float32 and whole.shape == (300, 11)
    # equal up to float32 round-off: BLAS may sum a dot product in another order for another block shape
    chunked = pairwise_sq_distances(x, centroids, chunk_rows=chunk_rows)
    assert chunked.dtype == np.float32
    np.testing.assert_allclose(chunked, whole, rtol=1e-6, atol=1e-5)
    blocks = list(iter_sq_distances(x, centroids, chunk_rows=chunk_rows))
    assert all(block.shape[0] <= chunk_rows for _, block in blocks)
    np.testing.assert_array_equal(np.concatenate([block for _, block in blocks]), chunked)
    rows = np.random.default_rng(0).permutation(300)[:40]
    cached = _Distances(x, centroids, chunk_rows=chunk_rows)
    np.testing.assert_array_equal(cached.rows(rows), chunked[rows])  # one matrix: bit-identical
    recomputed = _Distances(x, centroids, chunk_rows=chunk_rows, cache_bytes=0)
    assert recomputed.full is None
    np.testing.assert_allclose(recomputed.rows(rows), whole[rows], rtol=1e-6, atol=1e-5)
    columns = np.array([10, 0, 4])  # a few centroids only (the cycle cancelling's reads)
    np.testing.assert_array_equal(cached.columns(rows, columns), chunked[rows][:, columns])
    np.testing.assert_allclose(recomputed.columns(rows, columns), whole[rows][:, columns], rtol=1e-6, atol=1e-5)
    reference = (x.astype(np.float64)[:, None, :] - centroids.astype(np.float64)[None]) ** 2
    np.testing.assert_allclose(whole, reference.sum(axis=2), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("trial", range(6))
@pytest.mark.parametrize("cache_bytes,whole_rows_max", [(0, 10**9), (10**9, 10**9), (0, 0), (10**9, 0)])
def test_chunked_assignment_is_balanced_and_optimal(monkeypatch, trial, cache_bytes, whole_rows_max):
    """The assignment from chunked / recomputed distances, started from prices, meets the balance
    bound and the exact optimum (brute force), like the in-memory one, whether the clusters' edges
    are kept from whole rows or by column (``whole_rows_max`` 0)."""
    from singer_rec.sid import rq_kmeans
    from singer_rec.sid.rq_kmeans import _Distances, _balancing_prices, _optimal_assignment

    monkeypatch.setattr(rq_kmeans, "WHOLE_ROWS_MAX_VALUES", whole_rows_max)

    rng = np.random.default_rng(100 + trial)
    n, k = int(rng.integers(20, 90)), int(rng.integers(2, 9))
    x = rng.standard_normal((n, 5)).astype(np.float32)
    centroids = x[rng.choice(n, k, replace=False)]
    dist = _Distances(x, centroids, chunk_rows=int(rng.integers(3, 17)), cache_bytes=cache_bytes)
    lo, hi = balanced_sizes(n, k)
    prices = _balancing_prices(dist, np.zeros(k), hi)
    labels, potentials = _optimal_assignment(dist, lo, hi, None, 1e-9, prices=prices)
    counts = np.bincount(labels, minlength=k)
    assert counts.min() >= lo and counts.max() <= hi and counts.sum() == n
    full = dist.rows(np.arange(n)).astype(np.float64)
    got = full[np.arange(n), labels].sum()
    assert got == pytest.approx(_assignment_optimum(full, lo, hi), rel=1e-9, abs=1e-9)
    # the potentials are dual prices: every item sits in a cluster minimising dist - potential
    reduced = full - potentials[None, :]
    assert (reduced[np.arange(n), labels] <= reduced.min(axis=1) + 1e-6 * full.max()).all()


@pytest.mark.parametrize("trial", range(4))
@pytest.mark.parametrize("whole_rows_max", [0, 10**9])
def test_cancelled_edges_equal_a_recomputation(monkeypatch, trial, whole_rows_max):
    """After cycle cancelling (large clusters: edges kept up to date column by column, through the
    member that gives each edge; small ones: from whole rows), every edge p -> q equals min over p's
    members of dist[i, q] - dist[i, p] recomputed from the final labels, and each known cheapest
    member is in p and gives it."""
    from singer_rec.sid import rq_kmeans
    from singer_rec.sid.rq_kmeans import _CycleCanceller, _Distances, greedy_balanced_assignment

    monkeypatch.setattr(rq_kmeans, "WHOLE_ROWS_MAX_VALUES", whole_rows_max)  # 0: every cluster "large"

    rng = np.random.default_rng(300 + trial)
    n, k = int(rng.integers(200, 600)), int(rng.integers(5, 14))
    x = _blobs(n, 6, seed=400 + trial)
    dist = _Distances(x, x[rng.choice(n, k, replace=False)])
    lo, hi = balanced_sizes(n, k)
    canceller = _CycleCanceller(dist, greedy_balanced_assignment(dist, lo, hi), lo, hi, 1e-9)
    labels = canceller.run()
    full = dist.rows(np.arange(n)).astype(np.float64)
    for p in range(k):
        members = np.flatnonzero(labels == p)
        assert sorted(canceller.members[p].tolist()) == members.tolist()
        expected = (full[members] - full[members, p][:, None]).min(axis=0)
        expected[p] = np.inf
        np.testing.assert_array_equal(canceller.into[:k, p], expected)
        for q in np.flatnonzero(canceller.cheapest[p] >= 0):
            if q != p:
                i = canceller.cheapest[p, q]
                assert labels[i] == p and full[i, q] - full[i, p] == expected[q]


def test_bulk_cancelling_on_a_large_swap():
    """Two clusters whose members all belong to the other: one cycle moves many items at once
    and the result is the optimum."""
    n = 40
    dist = np.zeros((n, 2))
    dist[:20, 0] = 5.0  # items 0..19 prefer cluster 1
    dist[20:, 1] = 5.0  # items 20..39 prefer cluster 0
    dist += np.random.default_rng(0).random((n, 2)) * 0.1
    start = np.r_[np.zeros(20, dtype=np.int64), np.ones(20, dtype=np.int64)]
    labels = optimal_balanced_assignment(dist, 20, 20, init_labels=start)
    assert labels.tolist() == [1] * 20 + [0] * 20
