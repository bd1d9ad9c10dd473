"""Balanced residual-quantisation k-means (RQ-KMeans) with strict cluster sizes.

Level l clusters the residuals of *all* items into K clusters whose sizes are exactly
``floor(n/K)`` or ``ceil(n/K)``; the residual update is ``R(l+1) = R(l) - centroid``.

Each level is Lloyd's algorithm with a capacity-constrained assignment step:

* seeding: greedy k-means++ (``2 + ln K`` D^2-sampled candidates per step, as scikit-learn);
* distances item x centroid come from faiss (``faiss.pairwise_distances``);
* the assignment keeps the previous (feasible) assignment and improves it to the *exact* optimum
  of the transportation problem by cancelling negative cycles in a graph of K + 1 nodes
  (one per cluster plus a slack node for the floor/ceil freedom). The edge p -> q costs the
  cheapest move of one item from p to q, so a negative cycle is a set of item moves that keeps
  every size feasible and lowers the cost. No negative cycle <=> the assignment is optimal
  (min-cost-flow optimality, the network collapsed to clusters). Every cancellation strictly
  lowers the cost, and the centroid update never raises it, so the cost is monotone
  non-increasing and the balance is exact by construction.

This is the same optimum that ``k-means-constrained`` computes with a min-cost flow over all
n x K arcs each iteration, but warm-started and on a K+1-node graph, hence much faster.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

logger = logging.getLogger(__name__)

@dataclass
class LevelResult:
    """One level of balanced k-means."""

    centroids: np.ndarray  # float32 [K, d]
    labels: np.ndarray  # int64 [n]
    cost: float  # sum of squared distances to the assigned centroid
    iterations: int
    converged: bool
    cost_history: list[float] = field(default_factory=list)


@dataclass
class RQResult:
    """All levels of a balanced RQ-KMeans run."""

    codes: np.ndarray  # int64 [n, L]
    codebooks: np.ndarray  # float32 [L, K, d]
    levels: list[LevelResult]
    quantization_error: list[float]  # mean squared residual norm after each level


SEEDING_CACHE_BYTES = 256 * 2**20  # distance rows k-means++ may keep for reuse


def balanced_sizes(n: int, k: int) -> tuple[int, int]:
    """(floor(n/k), ceil(n/k)): the only sizes a strictly balanced cluster may have."""
    if k < 1:
        raise ValueError(f"number of clusters must be >= 1, got {k}")
    if k > n:
        raise ValueError(f"cannot split {n} items into {k} balanced clusters: K ({k}) > number of items ({n})")
    return n // k, -(-n // k)


def pairwise_sq_distances(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Squared L2 distances [n, K] (float64) between rows of x and the centroids, via faiss."""
    import faiss

    d = faiss.pairwise_distances(np.ascontiguousarray(x, dtype=np.float32), np.ascontiguousarray(centroids, dtype=np.float32))
    d = d.astype(np.float64)
    return np.maximum(d, 0.0, out=d)  # float32 round-off can give tiny negatives


def kmeans_plus_plus(x: np.ndarray, k: int, rng: np.random.Generator, local_trials: int | None = None) -> np.ndarray:
    """Greedy k-means++ seeding: at each step draw ``local_trials`` candidates by D^2 sampling and
    keep the one that lowers the potential most (2 + ln k trials by default, as scikit-learn and
    k-means-constrained do). Returns float64 [k, d] rows of x."""
    n = x.shape[0]
    trials = 2 + int(np.log(k)) if local_trials is None else int(local_trials)
    if trials < 1:
        raise ValueError(f"k-means++ needs at least 1 candidate per step, got {local_trials}")
    x32 = np.ascontiguousarray(x, dtype=np.float32)
    sq_norms = np.einsum("ij,ij->i", x32, x32)
    # A point that was a candidate but not chosen is often drawn again: keep its distance row
    # (float32, at most SEEDING_CACHE_BYTES in all) instead of recomputing it.
    cached: dict[int, np.ndarray] = {}
    cache_rows = SEEDING_CACHE_BYTES // (4 * n)

    def sq_dist_to(rows: np.ndarray) -> np.ndarray:  # [len(rows), n]; norms computed once
        missing = sorted({int(r) for r in rows if int(r) not in cached})
        if missing:
            block = np.maximum(sq_norms[missing, None] - 2.0 * (x32[missing] @ x32.T) + sq_norms[None, :], 0.0)
            fresh = dict(zip(missing, block))
            if len(cached) + len(fresh) <= cache_rows:
                cached.update(fresh)
        else:
            fresh = {}
        return np.stack([fresh[int(r)] if int(r) in fresh else cached[int(r)] for r in rows]).astype(np.float64)

    chosen = np.empty(k, dtype=np.int64)
    chosen[0] = rng.integers(n)
    closest = sq_dist_to(chosen[:1])[0]
    for c in range(1, k):
        total = closest.sum()
        if total <= 0:  # every point coincides with a chosen one: any point will do
            chosen[c] = rng.integers(n)
            continue
        candidates = np.searchsorted(np.cumsum(closest), rng.random(trials) * total, side="right")
        candidates = np.minimum(candidates, n - 1)
        potentials = np.minimum(closest[None, :], sq_dist_to(candidates))
        best = int(potentials.sum(axis=1).argmin())
        chosen[c] = candidates[best]
        closest = potentials[best]
    return x[chosen].astype(np.float64)


def cluster_means(x: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Mean of the rows of x in each cluster (every cluster must be non-empty)."""
    from scipy.sparse import csr_matrix

    n = labels.size
    membership = csr_matrix((np.ones(n), (labels, np.arange(n))), shape=(k, n))
    return (membership @ x) / np.bincount(labels, minlength=k)[:, None]


def greedy_balanced_assignment(dist: np.ndarray, size_lo: int, size_hi: int) -> np.ndarray:
    """A feasible (not necessarily optimal) balanced assignment, in proposal rounds.

    First every cluster is filled to ``size_lo``: unassigned items propose to their nearest cluster
    that still has room, each cluster keeps its closest proposers. Then the ``n - K*size_lo``
    leftover items each take one extra seat in distinct clusters the same way.
    """
    n, k = dist.shape
    labels = np.full(n, -1, dtype=np.int64)
    counts = np.zeros(k, dtype=np.int64)

    def fill(capacity: np.ndarray) -> None:
        while True:
            free = np.flatnonzero(labels < 0)
            room = capacity - counts
            open_clusters = np.flatnonzero(room > 0)
            if free.size == 0 or open_clusters.size == 0:
                return
            # every free item proposes to its nearest cluster that still has room
            choice = open_clusters[dist[np.ix_(free, open_clusters)].argmin(axis=1)]
            # each cluster accepts its closest proposers up to its room
            proposal_dist = dist[free, choice]
            by = np.lexsort((free, proposal_dist, choice))
            sorted_choice = choice[by]
            starts = np.searchsorted(sorted_choice, sorted_choice, side="left")
            rank = np.arange(by.size) - starts
            accept = rank < room[sorted_choice]
            labels[free[by[accept]]] = sorted_choice[accept]
            counts[:] += np.bincount(sorted_choice[accept], minlength=k)

    fill(np.full(k, size_lo, dtype=np.int64))
    if size_hi > size_lo:
        fill(counts + 1)
    assert (labels >= 0).all()
    return labels


class _CycleCanceller:
    """Optimal balanced assignment by negative-cycle cancelling on the cluster graph.

    Nodes 0..K-1 are clusters, node K is the slack node. ``into[q, p]`` is the cost of edge
    p -> q (stored transposed so that Bellman-Ford's per-node minimum runs over a contiguous row).
    """

    def __init__(self, dist: np.ndarray, labels: np.ndarray, size_lo: int, size_hi: int, tol: float):
        self.dist = dist
        self.labels = labels.copy()
        self.n, self.k = dist.shape
        self.size_lo, self.size_hi = size_lo, size_hi
        self.counts = np.bincount(self.labels, minlength=self.k)
        self.tol = tol
        order = np.argsort(self.labels, kind="stable")
        starts = np.concatenate(([0], np.cumsum(self.counts)[:-1]))
        self.members: list[np.ndarray] = np.split(order, starts[1:])
        # edge p -> q = min over items i in p of dist[i, q] - dist[i, p]: the cheapest move p -> q.
        # All rows at once: gains sorted by cluster, min-reduced per cluster segment.
        gain = dist[order]
        gain -= gain[np.arange(self.n), self.labels[order]][:, None]
        self.into = np.full((self.k + 1, self.k + 1), np.inf)
        self.into[: self.k, : self.k] = np.minimum.reduceat(gain, starts, axis=0).T
        np.fill_diagonal(self.into, np.inf)
        self._refresh_slack()

    def edge(self, p: int, q: int) -> float:
        return float(self.into[q, p])

    def _best_item(self, p: int, q: int) -> int:
        """The member of p whose move to q is cheapest (the item behind edge p -> q)."""
        items = self.members[p]
        return int(items[(self.dist[items, q] - self.dist[items, p]).argmin()])

    def _refresh_cluster(self, c: int) -> None:
        items = self.members[c]
        self.into[: self.k, c] = (self.dist[items] - self.dist[items, c][:, None]).min(axis=0)
        self.into[c, c] = np.inf

    def _refresh_slack(self) -> None:
        # slack -> p: p may lose an item (it holds size_hi); p -> slack: p may gain one (size_lo)
        s = self.k
        self.into[s, :] = np.inf
        self.into[:, s] = np.inf
        if self.size_hi > self.size_lo:
            self.into[: self.k, s][self.counts == self.size_hi] = 0.0
            self.into[s, : self.k][self.counts == self.size_lo] = 0.0

    def _bellman_ford(self, dist: np.ndarray, pred: np.ndarray) -> list[list[int]]:
        """Relax all edges (vectorised) until a negative cycle shows up in the predecessor graph
        (returned, disjoint) or nothing improves (returns []). ``dist``/``pred`` are updated in
        place, so a search can resume from the labels of the previous one."""
        m = self.k + 1
        rows = np.arange(m)
        for _ in range(m + 1):
            cand = self.into + dist[None, :]
            best_from = cand.argmin(axis=1)
            best = cand[rows, best_from]
            improved = best < dist - self.tol
            if not improved.any():
                return []
            dist[improved] = best[improved]
            pred[improved] = best_from[improved]
            cycles = self._cycles_in(pred)
            if cycles:
                return cycles
        return []

    def _cycles_in(self, pred: np.ndarray) -> list[list[int]]:
        """Cycles of the predecessor graph, each as the node list in edge order, negative only."""
        m = pred.size
        # after >= m pointer steps every walk that does not end at a root sits on a cycle
        hop = np.where(pred >= 0, pred, np.arange(m))  # roots point to themselves
        for _ in range(int(np.ceil(np.log2(m))) + 1):
            hop = hop[hop]
        on_cycle = np.zeros(m, dtype=bool)
        on_cycle[hop[pred[hop] >= 0]] = True
        cycles, seen = [], set()
        for node in np.flatnonzero(on_cycle).tolist():
            if node in seen:
                continue
            cycle_rev = [node]
            nxt = int(pred[node])
            while nxt != node:
                cycle_rev.append(nxt)
                nxt = int(pred[nxt])
            seen.update(cycle_rev)
            cycle = cycle_rev[::-1]  # pred points backwards along edges
            cost = sum(self.edge(cycle[i], cycle[(i + 1) % len(cycle)]) for i in range(len(cycle)))
            if cost < -self.tol:
                cycles.append(cycle)
        return cycles

    def _cancel(self, cycles: list[list[int]]) -> None:
        """Move one item along every edge of the (node-disjoint) cycles."""
        moves = []
        for cycle in cycles:
            for i, p in enumerate(cycle):
                q = cycle[(i + 1) % len(cycle)]
                if p != self.k and q != self.k:  # slack edges change sizes only
                    moves.append((self._best_item(p, q), p, q))
        for item, p, q in moves:
            self.labels[item] = q
            self.counts[p] -= 1
            self.counts[q] += 1
            self.members[p] = self.members[p][self.members[p] != item]
        for item, p, q in moves:
            self.members[q] = np.append(self.members[q], item)
        for c in {c for _, p, q in moves for c in (p, q)}:
            self._refresh_cluster(c)
        self._refresh_slack()

    def run(self) -> np.ndarray:
        """Cancel negative cycles until a search from scratch finds none (then optimal).

        Between cancellations the search resumes from its previous labels (cheap but possibly
        stale); only a search from scratch (all labels 0 = a virtual source) may end the loop."""
        m = self.k + 1
        dist, pred = np.zeros(m), np.full(m, -1, dtype=np.int64)
        from_scratch = True
        while True:
            cycles = self._bellman_ford(dist, pred)
            if cycles:
                self._cancel(cycles)
                for cycle in cycles:
                    dist[cycle] = 0.0  # the virtual source's label: always a valid upper bound
                    pred[cycle] = -1
                from_scratch = False
            elif from_scratch:
                return self.labels
            else:
                dist[:], pred[:] = 0.0, -1
                from_scratch = True


def optimal_balanced_assignment(
    dist: np.ndarray, size_lo: int, size_hi: int, init_labels: np.ndarray | None = None, tol: float = 1e-9
) -> np.ndarray:
    """Exact min-cost assignment of n items to K clusters with sizes in [size_lo, size_hi].

    ``init_labels`` (feasible) warm-starts the search; without it a greedy assignment is used.
    """
    n, k = dist.shape
    if init_labels is None:
        init_labels = greedy_balanced_assignment(dist, size_lo, size_hi)
    else:
        counts = np.bincount(init_labels, minlength=k)
        if counts.min() < size_lo or counts.max() > size_hi:
            raise ValueError("init_labels is not a feasible balanced assignment")
    scale = float(np.abs(dist).max()) or 1.0
    return _CycleCanceller(dist, init_labels, size_lo, size_hi, tol * scale).run()


def _cost_at_means(total_sq_norm: float, centroids: np.ndarray, counts: np.ndarray) -> float:
    """Sum of squared distances to the cluster means: sum |x|^2 - sum_k n_k |mean_k|^2."""
    return max(total_sq_norm - float((counts * np.einsum("ij,ij->i", centroids, centroids)).sum()), 0.0)


def balanced_kmeans(
    x: np.ndarray, k: int, *, max_iter: int = 100, tol: float = 1e-7, seed: int = 0, init_trials: int | None = None
) -> LevelResult:
    """Lloyd's k-means where every cluster holds exactly floor(n/k) or ceil(n/k) items.

    Stops after ``max_iter`` iterations or when the relative cost decrease is <= ``tol``
    (or the assignment no longer changes). ``init_trials``: k-means++ candidates per seeding step
    (None: 2 + ln k, the greedy k-means++ of scikit-learn; 1: plain k-means++, faster).
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D array [n, d], got shape {x.shape}")
    if not np.isfinite(x).all():
        bad = int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
        raise ValueError(f"embeddings contain NaN/inf (first at row {bad})")
    n = x.shape[0]
    size_lo, size_hi = balanced_sizes(n, k)
    rng = np.random.default_rng(seed)
    centroids = kmeans_plus_plus(x, k, rng, local_trials=init_trials)
    x32 = np.ascontiguousarray(x, dtype=np.float32)  # distances in float32 (faiss), means in float64
    total_sq_norm = float(np.einsum("ij,ij->", x, x))
    labels = None
    history: list[float] = []
    converged = False
    iterations = 0
    for iterations in range(1, max_iter + 1):
        dist = pairwise_sq_distances(x32, centroids)
        new_labels = optimal_balanced_assignment(dist, size_lo, size_hi, init_labels=labels)
        changed = labels is None or not np.array_equal(new_labels, labels)
        labels = new_labels
        centroids = cluster_means(x, labels, k)  # every cluster holds >= size_lo >= 1 items
        cost = _cost_at_means(total_sq_norm, centroids, np.bincount(labels, minlength=k))
        history.append(cost)
        if not changed or (len(history) > 1 and history[-2] - cost <= tol * max(history[-2], 1e-30)):
            converged = True
            break
    return LevelResult(
        centroids=centroids.astype(np.float32),
        labels=labels,
        cost=history[-1],
        iterations=iterations,
        converged=converged,
        cost_history=history,
    )


def balanced_rq_kmeans(
    x: np.ndarray, num_levels: int, codebook_size: int, *, max_iter: int = 100, tol: float = 1e-7, seed: int = 0,
    init_trials: int | None = None, progress: bool = False,
) -> RQResult:
    """Residual quantisation with one strictly balanced k-means per level."""
    x = np.asarray(x, dtype=np.float64)
    if num_levels < 1:
        raise ValueError(f"num_levels must be >= 1, got {num_levels}")
    balanced_sizes(x.shape[0], codebook_size)  # fail early with a clear message
    residual = x.copy()
    codes = np.empty((x.shape[0], num_levels), dtype=np.int64)
    codebooks = np.empty((num_levels, codebook_size, x.shape[1]), dtype=np.float32)
    levels: list[LevelResult] = []
    errors: list[float] = []
    level_iter = range(num_levels)
    if progress:
        from tqdm.auto import tqdm

        level_iter = tqdm(level_iter, desc="balanced RQ-KMeans levels", unit="level")
    for level in level_iter:
        result = balanced_kmeans(
            residual, codebook_size, max_iter=max_iter, tol=tol, seed=seed + level, init_trials=init_trials
        )
        codes[:, level] = result.labels
        codebooks[level] = result.centroids
        residual = residual - result.centroids.astype(np.float64)[result.labels]
        errors.append(float((residual**2).sum(axis=1).mean()))
        levels.append(result)
        logger.info(
            "level %d: K=%d, %d iterations (converged=%s), mean squared residual %.6f",
            level, codebook_size, result.iterations, result.converged, errors[-1],
        )
    return RQResult(codes=codes, codebooks=codebooks, levels=levels, quantization_error=errors)


def dedupe_suffixes(codes: np.ndarray) -> tuple[np.ndarray, dict[str, int]]:
    """Suffix index per item: -1 for items whose code path is unique, else the item's rank
    (0, 1, ...) within its collision group in row order. Every item of a group gets a suffix,
    so no SID is a prefix of another. Returns (suffix, stats)."""
    groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for row, path in enumerate(map(tuple, codes.tolist())):
        groups[path].append(row)
    suffix = np.full(codes.shape[0], -1, dtype=np.int64)
    colliding_groups = 0
    colliding_items = 0
    largest = 1
    for rows in groups.values():
        if len(rows) > 1:
            colliding_groups += 1
            colliding_items += len(rows)
            largest = max(largest, len(rows))
            suffix[rows] = np.arange(len(rows))
    stats = {
        "colliding_groups": colliding_groups,
        "colliding_items": colliding_items,
        "largest_group": largest if colliding_groups else 0,
        "distinct_paths": len(groups),
    }
    return suffix, stats
