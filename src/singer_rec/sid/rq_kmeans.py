"""Balanced residual-quantisation k-means (RQ-KMeans) with strict cluster sizes.

Level l clusters the residuals of *all* items into K clusters whose sizes are exactly
``floor(n/K)`` or ``ceil(n/K)``; the residual update is ``R(l+1) = R(l) - centroid``.

Each level is Lloyd's algorithm with a capacity-constrained assignment step:

* seeding: greedy k-means++ (``2 + ln K`` D^2-sampled candidates per step, as scikit-learn);
* distances item x centroid come from faiss (``faiss.pairwise_distances``) in float32, computed in
  row chunks (``DISTANCE_CHUNK_ROWS``); the whole n x K float32 matrix is kept only while it fits in
  ``DISTANCE_CACHE_BYTES``, beyond that rows are recomputed when needed, so memory is
  O(chunk x K + n x d) whatever n is. Embeddings and residuals stay float32; only K-sized
  quantities (centroid sums, costs, potentials) and per-chunk gains are float64;
* the assignment starts from a feasible assignment and improves it to the *exact* optimum of the
  transportation problem by cancelling negative cycles in a graph of K + 1 nodes (one per cluster
  plus a slack node for the floor/ceil freedom). The edge p -> q costs the cheapest move of one
  item from p to q, so a negative cycle is a set of item moves that keeps every size feasible and
  lowers the cost. No negative cycle <=> the assignment is optimal (min-cost-flow optimality, the
  network collapsed to clusters). A cycle that avoids the slack node moves up to ``MAX_LAYERS``
  items per edge at once. The start is greedy under cluster prices raised until (almost) no
  cluster is over-full; later iterations start from the previous labels or, from
  ``PRICE_START_MIN_ITEMS`` items on, from the previous optimum's dual prices (the final
  search's shortest-path labels), which leaves far fewer cycles to cancel once n is large. Every
  cancellation strictly lowers the cost, so the result is the exact optimum and the balance is
  exact by construction, whatever the start.

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
DISTANCE_CHUNK_ROWS = 32768  # rows of x per distance block (block: rows x K float32, gains float64)
DISTANCE_CACHE_BYTES = 2**30  # keep the whole n x K float32 distance matrix while it fits in this


def balanced_sizes(n: int, k: int) -> tuple[int, int]:
    """(floor(n/k), ceil(n/k)): the only sizes a strictly balanced cluster may have."""
    if k < 1:
        raise ValueError(f"number of clusters must be >= 1, got {k}")
    if k > n:
        raise ValueError(f"cannot split {n} items into {k} balanced clusters: K ({k}) > number of items ({n})")
    return n // k, -(-n // k)


def _sq_distances_block(x32: np.ndarray, c32: np.ndarray) -> np.ndarray:
    import faiss

    d = faiss.pairwise_distances(np.ascontiguousarray(x32, dtype=np.float32), c32)
    return np.maximum(d, 0.0, out=d)  # float32 round-off can give tiny negatives


def iter_sq_distances(x: np.ndarray, centroids: np.ndarray, chunk_rows: int | None = None):
    """Yield ``(start, block)``: squared L2 distances float32 [rows, K] of ``x[start:start+rows]``
    to the centroids, ``chunk_rows`` rows at a time (memory: chunk_rows x K)."""
    c32 = np.ascontiguousarray(centroids, dtype=np.float32)
    chunk_rows = max(1, int(DISTANCE_CHUNK_ROWS if chunk_rows is None else chunk_rows))
    for start in range(0, x.shape[0], chunk_rows):
        yield start, _sq_distances_block(x[start : start + chunk_rows], c32)


def pairwise_sq_distances(x: np.ndarray, centroids: np.ndarray, chunk_rows: int | None = None) -> np.ndarray:
    """Squared L2 distances [n, K] (float32) between rows of x and the centroids, via faiss, computed
    ``chunk_rows`` rows at a time (no float64 n x K copy)."""
    out = np.empty((x.shape[0], np.asarray(centroids).shape[0]), dtype=np.float32)
    for start, block in iter_sq_distances(x, centroids, chunk_rows):
        out[start : start + block.shape[0]] = block
    return out


class _Distances:
    """Item x centroid distances (float32) on demand: by row chunks, or for any set of rows.

    ``x`` and ``centroids`` given: faiss, with the whole matrix cached while n x K x 4 bytes <=
    ``cache_bytes``; ``matrix`` given: rows of that array (any dtype, used as is)."""

    def __init__(self, x=None, centroids=None, *, matrix=None, chunk_rows: int | None = None,
                 cache_bytes: int | None = None):
        self.chunk_rows = max(1, int(DISTANCE_CHUNK_ROWS if chunk_rows is None else chunk_rows))
        cache_bytes = DISTANCE_CACHE_BYTES if cache_bytes is None else cache_bytes
        if matrix is not None:
            self.full = np.asarray(matrix)
            self.n, self.k = self.full.shape
            self.dtype = self.full.dtype
            return
        self.dtype = np.dtype(np.float32)
        self.x = np.ascontiguousarray(x, dtype=np.float32)
        self.c32 = np.ascontiguousarray(centroids, dtype=np.float32)
        self.n, self.k = self.x.shape[0], self.c32.shape[0]
        self.full = None
        if self.n * self.k * 4 <= cache_bytes:
            self.full = pairwise_sq_distances(self.x, self.c32, self.chunk_rows)

    def chunks(self):
        if self.full is not None:
            for start in range(0, self.n, self.chunk_rows):
                yield start, self.full[start : start + self.chunk_rows]
        else:
            yield from iter_sq_distances(self.x, self.c32, self.chunk_rows)

    def rows(self, idx: np.ndarray) -> np.ndarray:
        if self.full is not None:
            return self.full[idx]
        return _sq_distances_block(self.x[idx], self.c32)

    def columns(self, idx: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Distances of rows ``idx`` to the centroids ``cols`` only: [len(idx), len(cols)]."""
        if self.full is not None:
            return self.full[idx[:, None], cols[None, :]]
        return _sq_distances_block(self.x[idx], self.c32[cols])


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


def cluster_means(x: np.ndarray, labels: np.ndarray, k: int, chunk_rows: int | None = None) -> np.ndarray:
    """Mean (float64 [k, d]) of the rows of x in each cluster (every cluster must be non-empty);
    summed in float64 ``chunk_rows`` rows at a time (no float64 copy of x)."""
    from scipy.sparse import csr_matrix

    n = labels.size
    sums = np.zeros((k, x.shape[1]), dtype=np.float64)
    chunk_rows = max(1, int(DISTANCE_CHUNK_ROWS if chunk_rows is None else chunk_rows))
    for start in range(0, n, chunk_rows):
        part = labels[start : start + chunk_rows]
        rows = part.size
        membership = csr_matrix((np.ones(rows), (part, np.arange(rows))), shape=(k, rows))
        sums += membership @ np.asarray(x[start : start + rows], dtype=np.float64)
    return sums / np.bincount(labels, minlength=k)[:, None]


def _as_distances(dist) -> _Distances:
    return dist if isinstance(dist, _Distances) else _Distances(matrix=dist)


def greedy_balanced_assignment(dist, size_lo: int, size_hi: int, prices: np.ndarray | None = None) -> np.ndarray:
    """A feasible (not necessarily optimal) balanced assignment, in proposal rounds.

    First every cluster is filled to ``size_lo``: unassigned items propose to their nearest cluster
    that still has room, each cluster keeps its closest proposers. Then the ``n - K*size_lo``
    leftover items each take one extra seat in distinct clusters the same way. ``prices`` (K, float64)
    are added to the distances when items choose a cluster (a cluster's ranking of its proposers is
    unchanged). ``dist``: an [n, K] array, or distances computed in chunks.
    """
    dist = _as_distances(dist)
    n, k = dist.n, dist.k
    labels = np.full(n, -1, dtype=np.int64)
    counts = np.zeros(k, dtype=np.int64)

    def proposals(free: np.ndarray, open_clusters: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each free item's nearest open cluster (under the prices) and its distance to it."""
        choice = np.empty(free.size, dtype=np.int64)
        proposal_dist = np.empty(free.size, dtype=np.float64)
        step = dist.chunk_rows
        for start in range(0, free.size, step):
            rows = free[start : start + step]
            block = dist.rows(rows)[:, open_clusters]
            scored = block if prices is None else block + prices[open_clusters]
            pick = scored.argmin(axis=1)
            choice[start : start + rows.size] = open_clusters[pick]
            proposal_dist[start : start + rows.size] = block[np.arange(rows.size), pick]
        return choice, proposal_dist

    def fill(capacity: np.ndarray) -> None:
        while True:
            free = np.flatnonzero(labels < 0)
            room = capacity - counts
            open_clusters = np.flatnonzero(room > 0)
            if free.size == 0 or open_clusters.size == 0:
                return
            # every free item proposes to its nearest cluster that still has room
            choice, proposal_dist = proposals(free, open_clusters)
            # each cluster accepts its closest proposers up to its room
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


def _smallest_gains(block: np.ndarray, own: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column of ``block`` (some items' distances to some centroids): the smallest gain
    ``block - own`` in float64 (``own``: each item's distance to its own cluster), and its row."""
    gain = np.subtract(block, own[:, None], dtype=np.float64)
    at = gain.argmin(axis=0)
    return gain[at, np.arange(gain.shape[1])], at


class _CycleCanceller:
    """Optimal balanced assignment by negative-cycle cancelling on the cluster graph.

    Nodes 0..K-1 are clusters, node K is the slack node. ``into[q, p]`` is the cost of edge
    p -> q (stored transposed so that Bellman-Ford's per-node minimum runs over a contiguous row).
    Distances are read in row chunks (initial edges) and per cluster (after each cancellation).
    """

    def __init__(self, dist: _Distances, labels: np.ndarray, size_lo: int, size_hi: int, tol: float):
        self.dist = dist
        self.labels = labels.copy()
        self.n, self.k = dist.n, dist.k
        self.size_lo, self.size_hi = size_lo, size_hi
        self.counts = np.bincount(self.labels, minlength=self.k)
        order = np.argsort(self.labels, kind="stable")
        starts = np.concatenate(([0], np.cumsum(self.counts)[:-1]))
        self.members: list[np.ndarray] = np.split(order, starts[1:])
        # edge p -> q = min over items i in p of dist[i, q] - dist[i, p]: the cheapest move p -> q,
        # min-reduced per cluster one row chunk at a time (gains in float64, as the distances' differences)
        into_t = np.full((self.k, self.k), np.inf)  # into_t[p, q] = edge p -> q
        scale = 0.0
        for start, block in dist.chunks():
            part = self.labels[start : start + block.shape[0]]
            gain = block.astype(np.float64)
            scale = max(scale, float(np.abs(gain).max(initial=0.0)))
            gain -= gain[np.arange(part.size), part][:, None]
            by = np.argsort(part, kind="stable")
            present, first = np.unique(part[by], return_index=True)
            into_t[present] = np.minimum(into_t[present], np.minimum.reduceat(gain[by], first, axis=0))
        self.tol = tol * (scale or 1.0)
        # cheapest[c, q]: the member of c that gives edge c -> q (-1: not known yet, the initial
        # edges come from a segment minimum); a cluster's column is recomputed only when that
        # member leaves, so a cancellation reads a few columns, not whole distance rows
        self.cheapest = np.full((self.k, self.k), -1, dtype=np.int64)
        self.into = np.full((self.k + 1, self.k + 1), np.inf)
        self.into[: self.k, : self.k] = into_t.T
        np.fill_diagonal(self.into, np.inf)
        self._refresh_slack()
        self.potentials = np.zeros(self.k)

    def edge(self, p: int, q: int) -> float:
        return float(self.into[q, p])

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
        """Move items along every edge of the (node-disjoint) negative cycles.

        A cycle through the slack node moves one item per edge (the slack edges carry one unit).
        Any other cycle moves the t cheapest items along each of its edges, t as large as keeps the
        t-th layer's total gain negative: a layer moves one item out of and one into every cluster
        of the cycle (sizes unchanged), each item moves once and the cost is separable, so each
        layer lowers the cost by its total gain (the gains are sorted, so layers only get dearer).
        An edge's gains need two distance columns of its cluster's members; afterwards each touched
        cluster's outgoing edges are brought up to date (:meth:`_update_edges`)."""
        leaving: dict[int, np.ndarray] = {}  # cluster -> positions (in its members) of leavers
        moves = []  # (p, q, positions in p's members)
        refresh: set[int] = set()
        for cycle in cycles:
            edges = [(p, cycle[(i + 1) % len(cycle)]) for i, p in enumerate(cycle)]
            real = [(p, q) for p, q in edges if p != self.k and q != self.k]  # slack edges change sizes only
            order = {}
            depth = 1 if len(real) < len(edges) else min(MAX_LAYERS, min(self.members[p].size for p, _ in real))
            for p, q in real:
                pair = self.dist.columns(self.members[p], np.array([p, q]))
                gain = pair[:, 1].astype(np.float64) - pair[:, 0]
                if depth == 1:
                    cheapest = np.array([int(gain.argmin())])
                else:  # the `depth` cheapest moves, in order
                    cheapest = np.argpartition(gain, depth - 1)[:depth]
                    cheapest = cheapest[np.argsort(gain[cheapest], kind="stable")]
                order[p] = (cheapest, gain)
            layer_gain = sum(order[p][1][order[p][0]] for p, _ in real)
            # the distances just read decide (recomputed distances may differ from the edge's in the
            # last bit): a cycle that is not negative on them moves nothing, and its clusters' edges
            # are recomputed from scratch so that the search does not find it again
            layers = int(np.count_nonzero(layer_gain < -self.tol))
            for p, q in real:
                positions = order[p][0][:layers]
                leaving[p] = positions
                if layers:
                    moves.append((p, q, positions))
                else:
                    refresh.add(p)
        incoming: dict[int, list[np.ndarray]] = defaultdict(list)
        for p, q, positions in moves:
            items = self.members[p][positions]
            self.labels[items] = q
            self.counts[p] -= positions.size
            self.counts[q] += positions.size
            incoming[q].append(items)
        for c in set(leaving) | set(incoming):
            self._update_edges(c, leaving.get(c, np.empty(0, dtype=np.int64)), incoming.get(c, []), c in refresh)
        self._refresh_slack()

    def _update_edges(self, c: int, leaver_positions: np.ndarray, arrivals: list[np.ndarray], refresh: bool) -> None:
        """Cluster c's outgoing edges after its leavers (positions in its members) left and the
        arrivals' items joined. A large cluster whose edges' cheapest members are known recomputes
        only the edges whose cheapest member left, from two columns each; a small one (or one with
        ``refresh``) recomputes all from whole rows. The arrivals may then lower any edge."""
        self.members[c] = np.delete(self.members[c], leaver_positions)
        others = np.arange(self.k) != c
        if refresh or (leaver_positions.size and (self._is_small(c) or (self.cheapest[c][others] < 0).any())):
            self._recompute_edges(c, None)
        elif leaver_positions.size:  # the leavers already carry their new label
            self._recompute_edges(c, np.flatnonzero(others & (self.labels[self.cheapest[c]] != c)))
        for items in arrivals:  # the arrivals may add cheaper edges
            rows = self.dist.rows(items)
            best, at = _smallest_gains(rows, rows[:, c])
            better = best < self.into[: self.k, c]
            self.into[: self.k, c][better] = best[better]
            self.cheapest[c, better] = items[at[better]]
            self.members[c] = np.concatenate([self.members[c], items])
        self.into[c, c] = np.inf

    def _is_small(self, c: int) -> bool:
        """Whether cluster c's edges are kept from whole rows (no cheapest members tracked)."""
        return self.members[c].size * self.k <= WHOLE_ROWS_MAX_VALUES

    def _recompute_edges(self, c: int, targets: np.ndarray | None) -> None:
        """Edges c -> q as the minimum over c's members: for q in ``targets`` from two columns
        each, or (None) for every q from whole rows (edge c -> c is reset by the caller); with the
        member that gives each edge, which a small cluster does not keep."""
        members = self.members[c]
        if not members.size:
            self.into[: self.k, c] = np.inf
            self.cheapest[c] = -1
            return
        if targets is None:
            block = self.dist.rows(members)
            own, targets = block[:, c], np.arange(self.k)
        else:
            block = self.dist.columns(members, np.append(targets, c))
            own, block = block[:, -1], block[:, :-1]
        if self._is_small(c):
            self.into[targets, c] = np.subtract(block, own[:, None], dtype=np.float64).min(axis=0)
            self.cheapest[c, targets] = -1
        else:
            self.into[targets, c], at = _smallest_gains(block, own)
            self.cheapest[c, targets] = members[at]

    def run(self) -> np.ndarray:
        """Cancel negative cycles until a search from scratch finds none (then optimal).

        Between cancellations the search resumes from its previous labels (cheap but possibly
        stale); only a search from scratch (all labels 0 = a virtual source) may end the loop.
        The labels of that last search are kept in ``potentials``: every item's cluster minimises
        ``dist[i, k] - potentials[k]`` (up to the tolerance), the optimum's dual prices."""
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
                self.potentials = dist[: self.k].copy()
                return self.labels
            else:
                dist[:], pred[:] = 0.0, -1
                from_scratch = True


MAX_LAYERS = 32  # items moved per edge of one cycle at most (the next search finds the rest)
WHOLE_ROWS_MAX_VALUES = 2**17  # a cluster's edges from whole rows up to this many distances, else by column
PRICE_ROUNDS = 10  # price-raising passes over the distances before the greedy start (0: none)
PRICE_START_MIN_ITEMS = 100_000  # below: warm-start each iteration from the previous labels
PRICE_SURPLUS_LEFT = 0.005  # stop raising once at most this share of the items is surplus


def _balancing_prices(dist: _Distances, prices: np.ndarray, size_hi: int, rounds: int = PRICE_ROUNDS) -> np.ndarray:
    """Cluster prices under which (nearly) no cluster is the cheapest cluster of more than
    ``size_hi`` items: a start for the greedy assignment, so that the exact cycle cancelling has
    few items left to move. Each round (one vectorised pass over the distance chunks) raises every
    over-full cluster's price just enough to push its surplus -- the members with the smallest
    margin to their second choice -- out; prices only rise (as in an auction), so it settles.
    Only a heuristic: the optimum does not depend on it."""
    n, k = dist.n, dist.k
    prices = prices.astype(np.float64, copy=True)
    if k < 2:
        return prices
    for _ in range(rounds):
        best = np.empty(n, dtype=np.int64)
        margin = np.empty(n)
        for start, block in dist.chunks():
            red = block + prices  # float64 [rows, K]
            rows = np.arange(red.shape[0])
            stop = start + red.shape[0]
            best[start:stop] = choice = red.argmin(axis=1)
            first = red[rows, choice]
            red[rows, choice] = np.inf
            margin[start:stop] = red.min(axis=1) - first
        counts = np.bincount(best, minlength=k)
        over = np.flatnonzero(counts > size_hi)
        if int((counts[over] - size_hi).sum()) <= PRICE_SURPLUS_LEFT * n:  # the greedy start does the rest
            break
        by = np.lexsort((margin, best))  # members of each cluster, by margin
        first_member = np.searchsorted(best[by], over)
        surplus = counts[over] - size_hi
        raise_by = margin[by[first_member + surplus - 1]]
        prices[over] += np.where(np.isfinite(raise_by), raise_by, 0.0) * (1 + 1e-9) + 1e-12
    return prices


def _optimal_assignment(dist: _Distances, size_lo: int, size_hi: int, init_labels: np.ndarray | None,
                        tol: float, prices: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(labels, potentials) of the exact optimum; without ``init_labels`` the start is greedy
    (under ``prices`` when given)."""
    if init_labels is None:
        init_labels = greedy_balanced_assignment(dist, size_lo, size_hi, prices=prices)
    else:
        counts = np.bincount(init_labels, minlength=dist.k)
        if counts.min() < size_lo or counts.max() > size_hi:
            raise ValueError("init_labels is not a feasible balanced assignment")
    canceller = _CycleCanceller(dist, init_labels, size_lo, size_hi, tol)
    labels = canceller.run()
    return labels, canceller.potentials


def optimal_balanced_assignment(
    dist: np.ndarray, size_lo: int, size_hi: int, init_labels: np.ndarray | None = None, tol: float = 1e-9
) -> np.ndarray:
    """Exact min-cost assignment of n items to K clusters with sizes in [size_lo, size_hi].

    ``init_labels`` (feasible) warm-starts the search; without it a greedy assignment is used.
    """
    return _optimal_assignment(_as_distances(dist), size_lo, size_hi, init_labels, tol)[0]


def _cost_at_means(total_sq_norm: float, centroids: np.ndarray, counts: np.ndarray) -> float:
    """Sum of squared distances to the cluster means: sum |x|^2 - sum_k n_k |mean_k|^2."""
    return max(total_sq_norm - float((counts * np.einsum("ij,ij->i", centroids, centroids)).sum()), 0.0)


def _sq_norm_total(x: np.ndarray) -> float:
    total, chunk_rows = 0.0, DISTANCE_CHUNK_ROWS
    for start in range(0, x.shape[0], chunk_rows):
        part = np.asarray(x[start : start + chunk_rows], dtype=np.float64)
        total += float(np.einsum("ij,ij->", part, part))
    return total


def _check_embeddings(x: np.ndarray) -> None:
    chunk_rows = DISTANCE_CHUNK_ROWS
    if x.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D array [n, d], got shape {x.shape}")
    for start in range(0, x.shape[0], chunk_rows):
        finite = np.isfinite(x[start : start + chunk_rows]).all(axis=1)
        if not finite.all():
            raise ValueError(f"embeddings contain NaN/inf (first at row {start + int(np.flatnonzero(~finite)[0])})")


def balanced_kmeans(
    x: np.ndarray, k: int, *, max_iter: int = 100, tol: float = 1e-7, seed: int = 0, init_trials: int | None = None
) -> LevelResult:
    """Lloyd's k-means where every cluster holds exactly floor(n/k) or ceil(n/k) items.

    Stops after ``max_iter`` iterations or when the relative cost decrease is <= ``tol``
    (or the assignment no longer changes). ``init_trials``: k-means++ candidates per seeding step
    (None: 2 + ln k, the greedy k-means++ of scikit-learn; 1: plain k-means++, faster).
    ``x`` is used in float32 (a float32 array is not copied).
    """
    x = np.asarray(x)
    _check_embeddings(x)
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = x.shape[0]
    size_lo, size_hi = balanced_sizes(n, k)
    rng = np.random.default_rng(seed)
    centroids = kmeans_plus_plus(x, k, rng, local_trials=init_trials)
    total_sq_norm = _sq_norm_total(x)
    labels = None
    prices = None
    history: list[float] = []
    converged = False
    iterations = 0
    for iterations in range(1, max_iter + 1):
        dist = _Distances(x, centroids)
        # start from every item's cheapest cluster under prices that (nearly) balance the clusters,
        # adjusted from the previous optimum's dual prices and made feasible greedily: the optimum
        # is exact whatever the start, the start only saves cycle cancelling
        if n >= PRICE_START_MIN_ITEMS or labels is None:
            prices = _balancing_prices(dist, np.zeros(k) if prices is None else prices, size_hi)
            new_labels, potentials = _optimal_assignment(dist, size_lo, size_hi, None, 1e-9, prices=prices)
        else:  # small catalogues: the previous labels are a start as good and cheaper to get
            new_labels, potentials = _optimal_assignment(dist, size_lo, size_hi, labels, 1e-9)
        del dist
        prices = -potentials
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
    """Residual quantisation with one strictly balanced k-means per level (float32 residuals)."""
    x = np.asarray(x)
    if num_levels < 1:
        raise ValueError(f"num_levels must be >= 1, got {num_levels}")
    balanced_sizes(x.shape[0], codebook_size)  # fail early with a clear message
    _check_embeddings(x)
    residual = np.array(x, dtype=np.float32, order="C", copy=True)
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
        squared = 0.0
        for start in range(0, residual.shape[0], DISTANCE_CHUNK_ROWS):
            part = residual[start : start + DISTANCE_CHUNK_ROWS]
            part -= result.centroids[result.labels[start : start + DISTANCE_CHUNK_ROWS]]
            part64 = part.astype(np.float64)
            squared += float(np.einsum("ij,ij->", part64, part64))
        errors.append(squared / max(residual.shape[0], 1))
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
