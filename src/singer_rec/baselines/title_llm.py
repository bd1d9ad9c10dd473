"""The title-generating LLM baselines of the paper's Table 1: BIGRec and D3, on our own LLM.

All three rank the catalogue for a prompt "title history -> next item's title" (the
``title_history_to_title`` task), answered by a model trained with the project's SFT trainer:

- **BIGRec** (Bao et al. 2023): free beam-search generation of one title, grounded to every item
  by the L2 distance of its embedding to the item titles' embeddings (``bigrec.grounding_scores``,
  optionally popularity-adjusted) -> a full ranking.
- **BIGRec, title-constrained**: beam search constrained to the title dictionary (every beam is a
  real title, so the beams are the ranking), finished beams ranked by the summed log-prob divided
  by ``length ** length_penalty`` as Hugging Face's beam search does (1.0 by default).
- **D3** (Bao et al. 2024): the same constrained search with D3's two decoding fixes. No length
  normalisation: the score is the summed log-prob. Ghost tokens: once a title's prefix determines
  the item, its remaining tokens are forced (probability 1 under the trie); decoding stops there, so
  the score is the summed log-prob of the determining prefix and the forced rest cannot change it
  (with length normalisation they would, the amplification bias D3 removes). Optionally a text-free
  assistant's item log-probs are added with weight ``alpha``.

A title shared by several items is one dictionary entry; its items take its place in the ranking
in catalogue order.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from singer_rec import decoding
from singer_rec.metrics import metrics_from_ranks, ranking_metrics, ranks_from_scores
from singer_rec.prompts import render_for_model
from singer_rec.training.rl import title_token_ids


def determining_prefixes(sequences: Sequence[Sequence[int]]) -> list[tuple[int, ...]]:
    """Each sequence cut after its first token that no other sequence shares at that position.

    After that token the trie has one path left: the rest are D3's ghost tokens. Sequences must be
    distinct and none a prefix of another (titles end with EOS), so the cut sequences are too.
    """
    seqs = [tuple(int(t) for t in s) for s in sequences]
    counts: dict[tuple[int, ...], int] = {}
    for seq in seqs:
        for end in range(1, len(seq) + 1):
            counts[seq[:end]] = counts.get(seq[:end], 0) + 1
    return [next(seq[:end] for end in range(1, len(seq) + 1) if counts[seq[:end]] == 1) for seq in seqs]


@dataclass
class TitleDictionary:
    """The catalogue's distinct titles as token sequences, the items of each, and their trie."""

    item_ids: list[str]             # catalogue order: item index i is item_ids[i]
    sequences: list[tuple[int, ...]]  # one per distinct title: title tokens + EOS
    items_of: list[list[int]]       # entry -> item indices with that title, catalogue order
    trie: decoding.PrefixTrie

    @classmethod
    def build(cls, tokenizer, titles: Mapping[str, str], vocab_size: int, ghost_free: bool = False) -> TitleDictionary:
        """From ``item_id -> title`` (catalogue order); items without a title cannot be decoded.

        ``ghost_free``: the trie holds the determining prefixes instead (D3's scoring).
        """
        item_ids = [str(i) for i in titles]
        entry_of: dict[tuple[int, ...], int] = {}
        sequences: list[tuple[int, ...]] = []
        items_of: list[list[int]] = []
        for index, title in enumerate(titles.values()):
            if not title:
                continue
            seq = title_token_ids(tokenizer, title)
            if seq not in entry_of:
                entry_of[seq] = len(sequences)
                sequences.append(seq)
                items_of.append([])
            items_of[entry_of[seq]].append(index)
        if not sequences:
            raise ValueError("title dictionary: no item has a title")
        decoded = determining_prefixes(sequences) if ghost_free else sequences
        return cls(item_ids, sequences, items_of, decoding.PrefixTrie.build(decoded, vocab_size))

    @property
    def longest(self) -> int:
        return max(len(s) for s in self.sequences)


def prompt_token_ids(tokenizer, prompts: Sequence[str], max_length: int, answer_room: int) -> list[list[int]]:
    """Rendered prompts as token ids, cut from the start (as in SFT) to leave ``answer_room`` tokens."""
    keep = max(1, max_length - answer_room)
    return [tokenizer.encode(render_for_model(p), add_special_tokens=False)[-keep:] for p in prompts]


def expand_entries(entries: Sequence[int], scores: Sequence[float], items_of: Sequence[Sequence[int]]
                   ) -> tuple[list[int], list[float]]:
    """Dictionary entries (best first) -> item indices: an entry's items share its place and score."""
    items, item_scores = [], []
    for entry, score in zip(entries, scores):
        items += list(items_of[entry])
        item_scores += [score] * len(items_of[entry])
    return items, item_scores


@torch.inference_mode()
def constrained_search(model, prompt_ids: Sequence[Sequence[int]], dictionary: TitleDictionary, num_beams: int,
                       pad_token_id: int, batch_size: int = 16, progress: bool = False):
    """Beam search over ``dictionary``'s trie: per prompt, the found entries and their summed log-probs
    (full-vocabulary softmax), best first (``decoding.beam_search``'s result)."""
    return decoding.beam_search(model, prompt_ids, dictionary.trie, num_beams=min(num_beams, dictionary.trie.num_items),
                                batch_size=batch_size, pad_token_id=pad_token_id, progress=progress)


def rank_beams(result, dictionary: TitleDictionary, length_penalty: float = 0.0, item_bonus: np.ndarray | None = None
               ) -> tuple[list[list[int]], list[list[float]]]:
    """Per prompt: item indices (best first) and scores from a ``constrained_search`` result.

    Finished beams are ranked by ``score / len(title tokens) ** length_penalty`` (0: no
    normalisation) plus ``item_bonus[row, item]`` when given (``[rows, items]``). Equal scores keep
    the beam order. The bonus only reorders what the search found, so one search serves every bonus.
    """
    rankings, all_scores = [], []
    for row, (entries, scores) in enumerate(zip(result.items, result.scores)):
        normalised = [s / len(dictionary.sequences[e]) ** length_penalty for e, s in zip(entries, scores)]
        items, item_scores = expand_entries(entries, normalised, dictionary.items_of)
        if item_bonus is not None:
            item_scores = [s + float(item_bonus[row, i]) for i, s in zip(items, item_scores)]
        order = sorted(range(len(items)), key=lambda j: -item_scores[j])
        rankings.append([items[j] for j in order])
        all_scores.append([item_scores[j] for j in order])
    return rankings, all_scores


def constrained_rankings(model, prompt_ids: Sequence[Sequence[int]], dictionary: TitleDictionary, num_beams: int,
                         pad_token_id: int, length_penalty: float = 0.0, item_bonus: np.ndarray | None = None,
                         batch_size: int = 16, progress: bool = False) -> tuple[list[list[int]], list[list[float]]]:
    """``constrained_search`` then ``rank_beams``: item indices (best first) and scores per prompt."""
    result = constrained_search(model, prompt_ids, dictionary, num_beams, pad_token_id, batch_size, progress)
    return rank_beams(result, dictionary, length_penalty, item_bonus)


def select_assistant_weight(result, dictionary: TitleDictionary, targets: Sequence[int], log_probs: np.ndarray,
                            alphas: Sequence[float], metric: str = "NDCG@10") -> tuple[float, dict[float, float]]:
    """D3's assistant weight chosen on held-out rows: ``metric`` of the D3 ranking (no length
    normalisation, bonus ``alpha * log_probs``) for each ``alpha`` of the grid, from one search
    ``result`` over those rows. Returns the best alpha (ties: the smallest) and every alpha's value."""
    if not alphas:
        raise ValueError("select_assistant_weight: the alpha grid is empty")
    values = {}
    for alpha in sorted(float(a) for a in alphas):
        rankings, _ = rank_beams(result, dictionary, 0.0, alpha * log_probs if alpha else None)
        values[alpha] = float(ranked_metrics(rankings, targets)[metric])
    best = max(values, key=lambda a: (values[a], -a))
    return best, values


@torch.inference_mode()
def generate_titles(model, tokenizer, prompt_ids: Sequence[Sequence[int]], num_beams: int, max_new_tokens: int,
                    batch_size: int = 16, progress: bool = False) -> list[str]:
    """BIGRec's generation step: the best beam of free (unconstrained) beam search per prompt, as text."""
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id
    texts: list[str] = [""] * len(prompt_ids)
    order = sorted(range(len(prompt_ids)), key=lambda i: -len(prompt_ids[i]))  # similar lengths pad less
    for start in tqdm(range(0, len(order), batch_size), desc="generating titles", unit="batch", disable=not progress):
        batch = order[start:start + batch_size]
        width = max(len(prompt_ids[i]) for i in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            ids[row, width - len(prompt_ids[i]):] = torch.as_tensor(prompt_ids[i])
            mask[row, width - len(prompt_ids[i]):] = 1
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), num_beams=num_beams,
                             num_return_sequences=1, do_sample=False, max_new_tokens=max_new_tokens,
                             pad_token_id=pad, eos_token_id=tokenizer.eos_token_id)
        for row, i in enumerate(batch):
            texts[i] = tokenizer.decode(out[row, width:], skip_special_tokens=True).strip()
    return texts


def grounded_metrics(scores: np.ndarray, targets: Sequence[int]) -> dict[str, float]:
    """HR/NDCG@K of full-ranking scores ``[rows, items]`` against target item indices (ties pessimistic)."""
    return metrics_from_ranks(list(ranks_from_scores(scores, np.asarray(targets))))


def ranked_metrics(rankings: Sequence[Sequence[int]], targets: Sequence[int]) -> dict[str, float]:
    """HR/NDCG@K of ranked item lists (an item outside its list is a miss)."""
    return ranking_metrics(rankings, list(targets))


def popularity_prior(item_ids: Sequence[str], train_targets: Sequence[str]) -> np.ndarray:
    """Train-target counts per item, catalogue order (BIGRec's popularity prior before min-max)."""
    position = {str(item): i for i, item in enumerate(item_ids)}
    counts = np.zeros(len(position))
    for target in train_targets:
        if str(target) in position:
            counts[position[str(target)]] += 1
    return counts


def assistant_log_probs(name: str, item_ids: Sequence[str], train, valid, scored: Mapping[str, object], config,
                        model_config: Mapping, max_history: int, batch_size: int = 1024,
                        device: torch.device | str = "cpu") -> dict[str, np.ndarray]:
    """D3's text-free assistant: a classic sequential model (``baselines.models``, e.g. SASRec) trained
    and selected on valid like the baselines; returns, for each table of ``scored`` (``{name: sequences}``),
    its item log-probs ``[rows, items]`` (full softmax over the catalogue, catalogue order). Trained and
    scored on ``device``."""
    from singer_rec.baselines.sequences import ItemIndex, encode_sequences
    from singer_rec.baselines.training import train_with_grid

    index = ItemIndex(list(item_ids))
    fit = train_with_grid(name, index.num_items, encode_sequences(train, index, max_history, name="train_sequences"),
                          encode_sequences(valid, index, max_history, name="valid_sequences"), config,
                          {"max_len": max_history, **model_config}, device=device)
    fit.model.eval()
    result = {}
    for table_name, table in scored.items():
        histories = encode_sequences(table, index, max_history, name=table_name).histories
        with torch.no_grad():
            parts = [torch.log_softmax(fit.model.score_all(histories[start:start + batch_size].to(device)), dim=-1).cpu()
                     for start in range(0, len(histories), batch_size)]
        result[table_name] = torch.cat(parts).numpy().astype(np.float64)
    return result
