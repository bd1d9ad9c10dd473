"""Semantic IDs for new items from trained RQ-KMeans codebooks, without re-quantising the catalogue.

A new item's embedding goes down the residual levels as in training: at level l its residual takes
the nearest centroid of codebook l (squared L2, the distance the sid stage clusters with) and the
residual update is ``r <- r - centroid``. The balance constraint of training is not applied (the
trained clusters stay as they are): the report says how far each code is now above its balanced size.

Old items keep their SIDs exactly. A new item whose code path is already taken follows the sid
stage's suffix scheme (``dedupe_suffixes``): every item of a colliding group carries a suffix code
(the level after the last), so no SID is a prefix of another:

* the path belongs to a group that already has suffixes: the new item takes the next free one;
* the path is free but several new items share it: they get 0, 1, ... in row order;
* the path belongs to one old item without a suffix: giving the new item a suffix would make the old
  SID a prefix of the new one (and the old SID may not change), so the new item takes the nearest
  last-level code whose path is free or suffixed, then the rules above (counted as ``relocated``).

Codebooks layout (the ``sid_codebooks`` dataset): float32 ``[L, K, d]``, level l's K centroids.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from singer_rec.sid.tokens import format_sid, parse_sid


@dataclass
class Assignment:
    """SIDs of new items (rows in input order) and the report of what adding them did."""

    codes: np.ndarray          # int64 [n_new, L]: level codes (after any relocation), no suffix
    sid_codes: list[list[int]]  # level codes plus the suffix code where one is needed
    sids: list[str]
    report: dict[str, Any]


def _check(embeddings: np.ndarray, codebooks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    codebooks = np.asarray(codebooks, dtype=np.float64)
    if codebooks.ndim != 3 or 0 in codebooks.shape:
        raise ValueError(f"codebooks must be [num_levels, codebook_size, d], got shape {codebooks.shape}")
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != codebooks.shape[2]:
        raise ValueError(f"new item embeddings must be [n, {codebooks.shape[2]}] (the codebooks' dimension), "
                         f"got shape {x.shape}; embed them with the encoder the SIDs were built with")
    if not np.isfinite(x).all():
        bad = int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
        raise ValueError(f"new item embeddings contain NaN/inf (first at row {bad})")
    return x, codebooks


def sq_distances(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Squared L2 distances ``[n, K]`` (float64, clipped at 0) between rows of x and the centroids."""
    d = (x * x).sum(axis=1)[:, None] - 2.0 * (x @ centroids.T) + (centroids * centroids).sum(axis=1)[None, :]
    return np.maximum(d, 0.0)


def residual_walk(embeddings: np.ndarray, codebooks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest code per level on the residual: ``(codes [n, L], last-level distances [n, K])``.

    Ties go to the lowest code."""
    x, codebooks = _check(embeddings, codebooks)
    residual = x.copy()
    codes = np.empty((x.shape[0], codebooks.shape[0]), dtype=np.int64)
    dist = np.zeros((x.shape[0], codebooks.shape[1]))
    for level, centroids in enumerate(codebooks):
        dist = sq_distances(residual, centroids)
        codes[:, level] = dist.argmin(axis=1)
        residual = residual - centroids[codes[:, level]]
    return codes, dist


def nearest_codes(embeddings: np.ndarray, codebooks: np.ndarray) -> np.ndarray:
    """Level codes ``[n, L]`` of new items: the nearest centroid of each level on the residual."""
    return residual_walk(embeddings, codebooks)[0]


def _old_catalogue(old_sids: Sequence[str], num_levels: int) -> tuple[dict[tuple[int, ...], list[int]], np.ndarray]:
    """Path -> suffixes used (``[]`` for a path held by one item without suffix), and the old level codes."""
    members: dict[tuple[int, ...], list[int | None]] = defaultdict(list)
    rows = []
    for sid in old_sids:
        codes = parse_sid(sid)
        if len(codes) not in (num_levels, num_levels + 1):
            raise ValueError(f"old SID {sid!r} has {len(codes)} tokens; the codebooks have {num_levels} levels "
                             f"(a SID has {num_levels}, or {num_levels + 1} with a suffix)")
        path = tuple(codes[:num_levels])
        rows.append(path)
        members[path].append(codes[num_levels] if len(codes) > num_levels else None)
    groups: dict[tuple[int, ...], list[int]] = {}
    for path, suffixes in members.items():
        if None in suffixes and len(suffixes) > 1:
            raise ValueError(f"old SIDs: {format_sid(path)} is an item's SID and the path of {len(suffixes) - 1} "
                             "other item(s): not a catalogue the sid stage writes")
        groups[path] = [s for s in suffixes if s is not None]
    old_codes = np.asarray(rows, dtype=np.int64).reshape(len(rows), num_levels)
    return groups, old_codes


def level_overflow(old_codes: np.ndarray, new_codes: np.ndarray, codebook_size: int) -> dict[str, Any]:
    """Per level: how far each code's item count is now above the balanced ceiling ``ceil(n_old/K)``
    that training held every cluster to."""
    n_old = old_codes.shape[0]
    ceiling = -(-n_old // codebook_size) if n_old else 0
    levels = {}
    for level in range(new_codes.shape[1]):
        before = np.bincount(old_codes[:, level], minlength=codebook_size) if n_old else np.zeros(codebook_size, int)
        after = before + np.bincount(new_codes[:, level], minlength=codebook_size)
        over = np.maximum(after - ceiling, 0)
        levels[f"level_{level}"] = {
            "balanced_size_max": int(ceiling),
            "size_max_after": int(after.max()),
            "max_overflow": int(over.max()),
            "codes_over": int((over > 0).sum()),
            "codes_receiving_new_items": int((np.bincount(new_codes[:, level], minlength=codebook_size) > 0).sum()),
        }
    return levels


def sid_vocabulary_tokens(sid_codes: Sequence[Sequence[int]]) -> set[tuple[int, int]]:
    """(level, code) pairs of every token up to the largest code per level (as the model's vocabulary)."""
    max_code: dict[int, int] = defaultdict(lambda: -1)
    for codes in sid_codes:
        for level, code in enumerate(codes):
            max_code[level] = max(max_code[level], int(code))
    return {(level, code) for level, top in max_code.items() for code in range(top + 1)}


def assign_sids(new_embeddings: np.ndarray, codebooks: np.ndarray, old_sids: Sequence[str]) -> Assignment:
    """SIDs for new items (rows of ``new_embeddings``) next to the catalogue's ``old_sids``, which stay as they are."""
    from singer_rec.sid.tokens import sid_token

    codebooks = np.asarray(codebooks)
    num_levels, k = int(codebooks.shape[0]), int(codebooks.shape[1]) if codebooks.ndim == 3 else 0
    codes, last_dist = residual_walk(new_embeddings, codebooks)
    groups, old_codes = _old_catalogue(old_sids, num_levels)
    relocated = 0
    # 1. a path held by one unsuffixed old item cannot take a suffix: nearest free/suffixed last-level code
    for row in range(codes.shape[0]):
        path = tuple(int(c) for c in codes[row])
        if groups.get(path) == []:
            for code in np.argsort(last_dist[row], kind="stable"):
                candidate = path[:-1] + (int(code),)
                if groups.get(candidate) != []:
                    codes[row, -1] = int(code)
                    relocated += 1
                    break
            else:
                raise ValueError(f"new item row {row}: every last-level code under {format_sid(path[:-1])} is held by "
                                 "an item without a suffix; rebuild the SIDs (the sid stage) instead")
    # 2. suffixes: new items on a suffixed old group take the next free ones; new items sharing a free path 0, 1, ...
    by_path: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for row, path in enumerate(map(tuple, codes.tolist())):
        by_path[path].append(row)
    suffix = np.full(codes.shape[0], -1, dtype=np.int64)
    with_old_group = new_groups = 0
    for path, rows in by_path.items():
        used = groups.get(path)
        if used:  # an old colliding group: the next free suffixes
            with_old_group += len(rows)
            free = (s for s in range(len(used) + len(rows) + 1) if s not in set(used))
            suffix[rows] = [next(free) for _ in rows]
        elif len(rows) > 1:  # a free path shared by new items only
            new_groups += 1
            suffix[rows] = np.arange(len(rows))
    sid_codes = [row + [int(s)] if s >= 0 else row for row, s in zip(codes.tolist(), suffix.tolist())]
    sids = [format_sid(c) for c in sid_codes]
    old_vocab = sid_vocabulary_tokens([parse_sid(s) for s in old_sids])
    new_vocab = sid_vocabulary_tokens([parse_sid(s) for s in old_sids] + sid_codes)
    new_tokens = [sid_token(level, code) for level, code in sorted(new_vocab - old_vocab)]
    all_sids = list(old_sids) + sids
    if len(set(all_sids)) != len(all_sids):
        raise RuntimeError("assign_sids: two items share a SID after the suffixes (a bug)")
    report = {
        "n_old_items": len(old_sids),
        "n_new_items": int(codes.shape[0]),
        "num_levels": num_levels,
        "codebook_size": k,
        "levels": level_overflow(old_codes, codes, k),
        "collisions": {
            "new_items_with_suffix": int((suffix >= 0).sum()),
            "joined_old_suffixed_group": int(with_old_group),
            "new_groups_among_new_items": int(new_groups),
            "relocated_from_unsuffixed_old_path": int(relocated),
        },
        "new_suffix_tokens": [t for t in new_tokens if t.startswith(f"<{chr(ord('a') + num_levels)}_")],
        "new_tokens": new_tokens,
    }
    return Assignment(codes=codes, sid_codes=sid_codes, sids=sids, report=report)
