"""The decoder's dictionaries (item SIDs, canonical titles) and the RL examples built from rl_dataset."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from singer_rec.sid.tokens import sid_tokens
from singer_rec.modeling import sid_token_ids
from singer_rec.prompts import render_for_model
from singer_rec.training.rl.settings import RL_ALIGNMENT, RLSettings

@dataclass
class Dictionary:
    """The token sequences the decoder may emit (one per item or title), indexed, and their trie."""

    sequences: list[tuple[int, ...]]
    index: dict[tuple[int, ...], int]
    trie: Any

    @classmethod
    def build(cls, sequences: Sequence[Sequence[int]], vocab_size: int) -> Dictionary:
        from singer_rec.decoding import PrefixTrie

        seqs = [tuple(int(t) for t in s) for s in sequences]
        return cls(seqs, {s: i for i, s in enumerate(seqs)}, PrefixTrie.build(seqs, vocab_size))


def sid_ids(tokenizer, sid: str) -> tuple[int, ...]:
    """A SID's token ids (each SID token is one token of the model's tokenizer)."""
    return tuple(sid_token_ids(tokenizer, sid_tokens(sid)))


def title_token_ids(tokenizer, title: str) -> tuple[int, ...]:
    """A title as the model writes it: its tokens, then EOS (so no title is a prefix of another)."""
    return tuple(tokenizer(title, add_special_tokens=False)["input_ids"]) + (tokenizer.eos_token_id,)


@dataclass
class Example:
    prompt_ids: list[int]
    target: tuple[int, ...]   # target token sequence (SID tokens, or title tokens + EOS)
    is_sid: bool              # SID answer (hierarchical rewards, curriculum) vs title answer
    task: str


def build_examples(frame, tokenizer, sid_dict: Dictionary, title_dict: Dictionary | None, settings: RLSettings) -> list[Example]:
    """rl_dataset rows -> examples; tasks outside the alignment setting are dropped."""
    for column in ("task", "prompt", "answer"):
        if column not in frame.columns:
            raise ValueError(f"rl_dataset: missing column {column!r} (has {list(frame.columns)})")
    keep_alignment = RL_ALIGNMENT[settings.alignment]
    examples: list[Example] = []
    for row, (task, prompt, answer) in enumerate(zip(frame["task"], frame["prompt"], frame["answer"])):
        if not keep_alignment and task not in settings.semantic_tasks:
            continue
        try:
            target = sid_ids(tokenizer, answer)
            is_sid = True
            if target not in sid_dict.index:
                raise ValueError(f"rl_dataset row {row} (task {task!r}): answer SID {answer!r} is not an item of the model's SID map")
        except ValueError as error:
            if "not a semantic ID" not in str(error):
                raise
            is_sid = False
            target = title_token_ids(tokenizer, answer)
            if title_dict is None or target not in title_dict.index:
                raise ValueError(
                    f"rl_dataset row {row} (task {task!r}): answer {answer[:80]!r} is neither a SID nor a canonical title of the model"
                ) from None
        prompt_ids = tokenizer(render_for_model(prompt), add_special_tokens=False)["input_ids"]
        examples.append(Example(list(prompt_ids), target, is_sid, task))
    if not examples:
        raise ValueError(f"rl_dataset: no rows left for alignment={settings.alignment!r} (semantic_tasks={settings.semantic_tasks})")
    return examples


def build_dictionaries(tokenizer, meta: Mapping[str, Any], vocab_size: int, need_titles: bool) -> tuple[Dictionary, Dictionary | None, list[str]]:
    """The SID dictionary (item order = sorted item ids) and, when needed, the title dictionary."""
    item_ids = sorted(meta["sid_map"])
    owners: dict[str, str] = {}
    for item in item_ids:  # the decoder needs one item per SID: say which items collide
        sid = meta["sid_map"][item]
        if sid in owners:
            raise ValueError(f"model sid_map: items {owners[sid]!r} and {item!r} share the SID {sid} "
                             "(SIDs must be one-to-one; the sid stage adds a suffix level to collisions)")
        owners[sid] = item
    sid_dict = Dictionary.build([sid_ids(tokenizer, meta["sid_map"][i]) for i in item_ids], vocab_size)
    title_dict = None
    if need_titles:
        unique = sorted({title_token_ids(tokenizer, t) for t in meta.get("titles", {}).values() if t})
        if unique:
            title_dict = Dictionary.build(unique, vocab_size)
    return sid_dict, title_dict, item_ids
