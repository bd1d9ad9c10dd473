"""SID-prefix curriculum (paper Eq. 3-5): how many target SID tokens guide a hard sample."""
from __future__ import annotations


def guide_length(step: int, total_steps: int, sid_length: int) -> int:
    """L_guide = floor((1 - t/T) * L), capped at L - 1.

    ``step`` t is the 1-based number of the optimiser step being taken (1..T), so the guide
    shrinks linearly from L - 1 tokens (t = 1, for T >= L) to 0 (t = T). The cap keeps at least
    one token to generate (t = 0 would otherwise hand over the whole answer). Integer arithmetic,
    so there is no floating-point rounding at the boundaries.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if not 0 <= step <= total_steps:
        raise ValueError(f"step must be in [0, {total_steps}], got {step}")
    if sid_length < 1:
        raise ValueError(f"sid_length must be >= 1, got {sid_length}")
    return min(((total_steps - step) * sid_length) // total_steps, sid_length - 1)


def guided_prefix(target_tokens: list[int], step: int, total_steps: int) -> list[int]:
    """y*_{L_guide}: the first L_guide target tokens, appended to the prompt of a hard sample (Eq. 5)."""
    return list(target_tokens[: guide_length(step, total_steps, len(target_tokens))])


GUIDE_DEPTHS = ("schedule", "items")


def guide_length_by_items(scheduled: int, target_tokens, items_under_prefix, min_items: int) -> int:
    """The ``items`` guide-depth variant: the deepest guide of at most ``scheduled`` tokens whose prefix
    still has at least ``min_items`` items under it (0 when even the first token leaves fewer).

    With 256 codes per level and a few thousand items, a 2-token SID prefix leaves one or two items
    (a one-item group has zero advantage), so the paper's schedule can hand over a group with no
    signal; this variant backs off to a shallower prefix instead. ``items_under_prefix(prefix)``
    counts the items starting with ``prefix`` (the trie does it).
    """
    if min_items < 1:
        raise ValueError(f"guide_min_items must be >= 1, got {min_items}")
    for depth in range(scheduled, 0, -1):
        if items_under_prefix(tuple(target_tokens[:depth])) >= min_items:
            return depth
    return 0
