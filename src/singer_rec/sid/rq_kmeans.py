"""Balanced residual-quantisation k-means (RQ-KMeans) with strict cluster sizes.

Level l clusters the residuals of *all* items into K clusters whose sizes are exactly
``floor(n/K)`` or ``ceil(n/K)``; the residual update is ``R(l+1) = R(l) - centroid``.

Each level is Lloyd's algorithm with a capacity-constrained assignment step:

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
    return np.maximum(d.astype(np.float64), 0.0)


def kmeans_plus_plus(x: np.ndarray, k: int, rng: np.random.Generator, local_trials: int | None = None) -> np.ndarray:
    """Greedy k-means++ seeding: at each step draw ``local_trials`` candidates by D^2 sampling and
    keep the one that lowers the potential most (2 + ln k trials by default, as scikit-learn and
    k-means-constrained do). Returns float64 [k, d] rows of x."""
    n = x.shape[0]
    trials = local_trials or 2 + int(np.log(k))
    x32 = np.ascontiguousarray(x, dtype=np.float32)

    def sq_dist_to(rows: np.ndarray) -> np.ndarray:  # [len(rows), n], faiss for the distance work
        return pairwise_sq_distances(x32[rows], x32)

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
    order = np.argsort(labels, kind="stable")
    counts = np.bincount(labels, minlength=k)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    return np.add.reduceat(x[order], starts, axis=0) / counts[:, None]


def greedy_balanced_assignment(dist: np.ndarray, size_lo: int, size_hi: int) -> np.ndarray:
    """A feasible (not necessarily optimal) balanced assignment, in proposal rounds.

    First every cluster is filled to ``size_lo``: unassigned items propose to their nearest cluster
    that still has room, each cluster keeps its closest proposers. Then the ``n - K*size_lo``
    leftover items each take one extra seat in distinct clusters the same way.
    """
    n, k = dist.shape
    labels = np.full(n, -1, dtype=np.int64)
    counts = np.zeros(k, dtype=np.int64)
    order = np.argsort(dist, axis=1, kind="stable")  # clusters by preference, per item

    def fill(capacity: np.ndarray) -> None:
        pointer = np.zeros(n, dtype=np.int64)
        while True:
            free = np.flatnonzero(labels < 0)
            room = capacity - counts
            if free.size == 0 or room.sum() == 0:
                return
            # advance each free item's pointer to the first cluster with room
            choice = order[free, pointer[free]]
            blocked = room[choice] <= 0
            while blocked.any():
                pointer[free[blocked]] += 1
                choice[blocked] = order[free[blocked], pointer[free[blocked]]]
                blocked = room[choice] <= 0
            # each cluster accepts its closest proposers up to its room
            proposal_dist = dist[free, choice]
            by = np.lexsort((free, proposal_dist, choice))
            sorted_choice = choice[by]
            starts = np.searchsorted(sorted_choice, sorted_choice, side="left")
            rank = np.arange(by.size) - starts
            accept = rank < room[sorted_choice]
            accepted = free[by[accept]]
            labels[accepted] = sorted_choice[accept]
            np.add.at(counts, sorted_choice[accept], 1)

    fill(np.full(k, size_lo, dtype=np.int64))
    if size_hi > size_lo:
        fill(counts + 1)
    assert (labels >= 0).all()
    return labels


class _CycleCanceller:
    """Optimal balanced assignment by negative-cycle cancelling on the cluster graph."""

    def __init__(self, dist: np.ndarray, labels: np.ndarray, size_lo: int, size_hi: int, tol: float):
        self.dist = dist
        self.labels = labels.copy()
        self.n, self.k = dist.shape
        self.size_lo, self.size_hi = size_lo, size_hi
        self.counts = np.bincount(self.labels, minlength=self.k)
        self.members: list[np.ndarray] = [np.flatnonzero(self.labels == c) for c in range(self.k)]
        self.tol = tol
        # edge[p, q] = min over items i in p of dist[i, q] - dist[i, p]; argmin kept in best_item
        self.edge = np.full((self.k + 1, self.k + 1), np.inf)
        self.best_item = np.full((self.k, self.k), -1, dtype=np.int64)
        for c in range(self.k):
            self._refresh_row(c)
        self._refresh_slack()

    def _refresh_row(self, c: int) -> None:
        items = self.members[c]
        if items.size == 0:
            self.edge[c, : self.k] = np.inf
            return
        gain = self.dist[items] - self.dist[items, c][:, None]
        arg = gain.argmin(axis=0)
        self.edge[c, : self.k] = gain[arg, np.arange(self.k)]
        self.edge[c, c] = np.inf
        self.best_item[c] = items[arg]

    def _refresh_slack(self) -> None:
        # slack -> p: p may lose an item (it holds size_hi); p -> slack: p may gain one (size_lo)
        s = self.k
        self.edge[s, :] = np.inf
        self.edge[:, s] = np.inf
        if self.size_hi > self.size_lo:
            self.edge[s, : self.k][self.counts == self.size_hi] = 0.0
            self.edge[: self.k, s][self.counts == self.size_lo] = 0.0

    def _negative_cycles(self) -> list[list[int]]:
        """Disjoint negative cycles of the cluster graph (Bellman-Ford from a virtual source)."""
        m = self.k + 1
        dist = np.zeros(m)
        pred = np.full(m, -1, dtype=np.int64)
        edge_in = np.ascontiguousarray(self.edge.T)  # edge_in[q, p] = edge[p, q]: row-wise argmin
        for _ in range(m + 1):
            cand = edge_in + dist[None, :]
            best_from = cand.argmin(axis=1)
            best = cand[np.arange(m), best_from]
            improved = best < dist - self.tol
            if not improved.any():
                return []
            dist = np.where(improved, best, dist)
            pred = np.where(improved, best_from, pred)
            cycles = self._cycles_in(pred)
            if cycles:
                return cycles
        return []

    def _cycles_in(self, pred: np.ndarray) -> list[list[int]]:
        """Cycles of the predecessor graph, each as the node list in edge order, negative only."""
        m = pred.size
        # after m pointer steps every walk that does not end at the source sits on a cycle
        hop = np.where(pred >= 0, pred, np.arange(m))  # roots point to themselves
        for _ in range(int(np.ceil(np.log2(m))) + 1):
            hop = hop[hop]
        on_cycle = np.unique(hop[pred[hop] >= 0])
        cycles, seen = [], set()
        for node in on_cycle.tolist():
            if node in seen:
                continue
            cycle_rev = [node]
            nxt = int(pred[node])
            while nxt != node:
                cycle_rev.append(nxt)
                nxt = int(pred[nxt])
            seen.update(cycle_rev)
            cycle = cycle_rev[::-1]  # pred points backwards along edges
            cost = sum(self.edge[cycle[i], cycle[(i + 1) % len(cycle)]] for i in range(len(cycle)))
            if cost < -self.tol:
                cycles.append(cycle)
        return cycles

    def _cancel(self, cycle: list[int]) -> None:
        touched = set()
        moves = []
        for i, p in enumerate(cycle):
            q = cycle[(i + 1) % len(cycle)]
            if p == self.k or q == self.k:
                continue  # slack edges change sizes only
            moves.append((int(self.best_item[p, q]), p, q))
        for item, p, q in moves:
            self.labels[item] = q
            self.counts[p] -= 1
            self.counts[q] += 1
            touched.update((p, q))
        for item, p, q in moves:
            self.members[p] = self.members[p][self.members[p] != item]
            self.members[q] = np.append(self.members[q], item)
        for c in touched:
            self._refresh_row(c)
        self._refresh_slack()

    def run(self, max_rounds: int = 100_000) -> np.ndarray:
        for _ in range(max_rounds):
            cycles = self._negative_cycles()
            if not cycles:
                break
            for cycle in cycles:
                self._cancel(cycle)
        return self.labels


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


def _cost(x: np.ndarray, centroids: np.ndarray, labels: np.ndarray) -> float:
    return float(((x - centroids[labels]) ** 2).sum())


def balanced_kmeans(
    x: np.ndarray, k: int, *, max_iter: int = 100, tol: float = 1e-7, seed: int = 0
) -> LevelResult:
    """Lloyd's k-means where every cluster holds exactly floor(n/k) or ceil(n/k) items.

    Stops after ``max_iter`` iterations or when the relative cost decrease is <= ``tol``
    (or the assignment no longer changes).
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
    centroids = kmeans_plus_plus(x, k, rng)
    labels = None
    history: list[float] = []
    converged = False
    iterations = 0
    for iterations in range(1, max_iter + 1):
        dist = pairwise_sq_distances(x, centroids)
        new_labels = optimal_balanced_assignment(dist, size_lo, size_hi, init_labels=labels)
        changed = labels is None or not np.array_equal(new_labels, labels)
        labels = new_labels
        centroids = cluster_means(x, labels, k)  # every cluster holds >= size_lo >= 1 items
        cost = _cost(x, centroids, labels)
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
    progress: bool = False,
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
        result = balanced_kmeans(residual, codebook_size, max_iter=max_iter, tol=tol, seed=seed + level)
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
