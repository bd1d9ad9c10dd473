"""How semantic IDs are written: ``<a_13><b_72><c_149>`` (+ ``<d_j>`` when a collision needs it).

Level l (0-based) uses the letter ``chr(ord('a') + l)``; the de-duplication suffix uses the letter
after the last level. Tokens are written with no spaces between them.
"""
from __future__ import annotations

import re

_TOKEN = re.compile(r"<([a-z])_(\d+)>")


def level_letter(level: int) -> str:
    if not 0 <= level < 26:
        raise ValueError(f"SID level must be in [0, 26), got {level}")
    return chr(ord("a") + level)


def sid_token(level: int, code: int) -> str:
    return f"<{level_letter(level)}_{int(code)}>"


def format_sid(codes: list[int] | tuple[int, ...]) -> str:
    """Codes per level (suffix included, if any) -> ``<a_1><b_2><c_3>``."""
    return "".join(sid_token(level, code) for level, code in enumerate(codes))


def sid_tokens(sid: str) -> list[str]:
    """``<a_1><b_2>`` -> ``['<a_1>', '<b_2>']``; raises on anything that is not a well-formed SID."""
    tokens = [m.group(0) for m in _TOKEN.finditer(sid)]
    if "".join(tokens) != sid or not tokens:
        raise ValueError(f"not a semantic ID: {sid!r}")
    for level, token in enumerate(tokens):
        if token[1] != level_letter(level):
            raise ValueError(f"semantic ID {sid!r}: token {level} is {token}, expected level letter {level_letter(level)!r}")
    return tokens


def parse_sid(sid: str) -> list[int]:
    """``<a_1><b_2><c_3>`` -> ``[1, 2, 3]``."""
    return [int(_TOKEN.fullmatch(t).group(2)) for t in sid_tokens(sid)]


def vocabulary(num_levels: int, codebook_size: int, max_suffix: int = 0) -> list[str]:
    """Every SID token a model needs: K codes for each of L levels, then ``max_suffix`` suffix codes."""
    tokens = [sid_token(level, code) for level in range(num_levels) for code in range(codebook_size)]
    tokens += [sid_token(num_levels, j) for j in range(max_suffix)]
    return tokens
