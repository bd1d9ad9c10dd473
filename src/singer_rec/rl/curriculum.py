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
