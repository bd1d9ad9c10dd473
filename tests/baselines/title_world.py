"""A tiny catalogue for the title-generating baselines: item i is followed by item (3i + 1) mod 12.

Titles are "<colour> <thing> deluxe": three items share each colour (so the first token does not
determine the item), and " deluxe" + EOS are D3's ghost tokens once the thing is known.
"""
from __future__ import annotations

import pandas as pd

from singer_rec.baselines.toy import rule_tables
from singer_rec.sid.tokens import format_sid

COLOURS = ["amber", "azure", "coral", "ivory"]
THINGS = ["kettle", "stapler", "lantern"]
NUM_ITEMS = 12
TINY_MODEL = {"preset": "scratch", "scratch": {
    "hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
    "intermediate_size": 128, "max_position_embeddings": 256, "tokenizer_vocab_size": 400}}


def title(i: int) -> str:
    return f"{COLOURS[i // 3]} {THINGS[i % 3]} deluxe"


def title_world(num_users: int = 60, max_len: int = 4):
    """(items, item_sids, train, valid, test) in the project's table formats."""
    item_ids, train, valid, test = rule_tables(NUM_ITEMS, num_users, max_len)
    items = pd.DataFrame({"item_id": item_ids, "title": [title(i) for i in range(NUM_ITEMS)],
                          "description": [f"A {title(i)}." for i in range(NUM_ITEMS)],
                          "brand": ["Acme"] * NUM_ITEMS, "categories": [["Home"]] * NUM_ITEMS})
    item_sids = pd.DataFrame({"item_id": item_ids, "sid": [format_sid([i // 4, i % 4]) for i in range(NUM_ITEMS)],
                              "codes": [[i // 4, i % 4] for i in range(NUM_ITEMS)]})
    return items, item_sids, train, valid, test
