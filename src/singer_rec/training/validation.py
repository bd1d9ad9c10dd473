"""Model selection on valid, shared by every trainer (SFT, S-DPO, RL, TIGER).

- :func:`read_table`, :func:`seeded_sample`: the valid rows (a parquet file that must hold the named
  columns; a fixed, seeded sample of them in file order);
- :class:`RankingValidation`: that sample's rows whose answer is an item's SID, ranked by
  constrained beam search over the item dictionary (HR/NDCG@K, the same under DDP as in one process);
- :class:`BestModelSelector`: the best value of the selection metric so far (:func:`is_better`:
  loss lower, ranking metrics higher, the first of equals kept) and early stopping after
  ``patience`` evaluations without a better one; its state goes into the trainer's checkpoint.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from singer_rec import decoding, modeling
from singer_rec.metrics import METRIC_NAMES, hit_rank, metrics_from_ranks
from singer_rec.prompts import render_for_model
from singer_rec.training import common



def read_table(path: str, columns: list[str]) -> pd.DataFrame:
    """A parquet file that must hold ``columns`` (the error names the file and the missing ones)."""
    frame = pd.read_parquet(path)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}")
    return frame


def seeded_sample(frame: pd.DataFrame, cap: int | None, seed: int) -> pd.DataFrame:
    """At most ``cap`` rows of ``frame`` (all when ``cap`` is None), a seeded sample kept in file order."""
    if cap is None or len(frame) <= cap:
        return frame.reset_index(drop=True)
    order = np.random.default_rng(seed).permutation(len(frame))[:cap]
    return frame.iloc[np.sort(order)].reset_index(drop=True)


@dataclass
class RankingValidation:
    """A fixed, seeded sample of valid rows whose answer is an item's SID, ranked by constrained beam search."""

    prompts: list[list[int]]
    targets: list[int]            # index of the answer in ``trie``'s item order
    trie: decoding.PrefixTrie
    num_beams: int
    pad_id: int

    @classmethod
    def build(cls, tokenizer, sid_map: Mapping[str, str], valid_df: pd.DataFrame, rows: int | None, num_beams: int,
              max_length: int, seed: int, vocab_size: int, needed_for: str | None = None,
              source: str = "valid rows") -> RankingValidation | None:
        """``None`` when no row of ``valid_df`` answers with an item's SID, unless ``needed_for`` names what
        needs the ranking: then a ``ValueError`` naming ``source`` (the rows' file) and that need."""
        from singer_rec.sid.tokens import sid_tokens

        sids = sorted(set(sid_map.values()))
        sequences = [modeling.sid_token_ids(tokenizer, sid_tokens(sid)) for sid in sids]
        position = {sid: i for i, sid in enumerate(sids)}
        frame = valid_df[valid_df["answer"].isin(position)]
        frame = seeded_sample(frame, rows, seed)
        if len(frame) == 0:
            if needed_for is not None:
                raise ValueError(f"{source}: no valid row answers with an item's SID: {needed_for}")
            return None
        depth = max(len(x) for x in sequences)
        prompts = [tokenizer.encode(render_for_model(p), add_special_tokens=False)[-(max_length - depth - 1):]
                   for p in frame["prompt"]]
        return cls(prompts, [position[a] for a in frame["answer"]], decoding.PrefixTrie.build(sequences, vocab_size),
                   min(num_beams, len(sequences)), pad_id=tokenizer.pad_token_id)

    def ranks(self, model, dist: common.Dist, batch_size: int, amp_dtype) -> list[int | None]:
        """The target's 1-based rank (None: not among the beams) per row of this process's share,
        the model in eval mode."""
        mine = list(range(dist.rank, len(self.prompts), dist.world_size))
        if not mine:
            return []
        model.eval()
        with torch.no_grad():
            ranked = decoding.beam_search(model, [self.prompts[i] for i in mine], self.trie, num_beams=self.num_beams,
                                          batch_size=batch_size, pad_token_id=self.pad_id, autocast_dtype=amp_dtype).items
        return [hit_rank(r, self.targets[i]) for r, i in zip(ranked, mine)]

    def metric_sums(self, model, dist: common.Dist, batch_size: int, amp_dtype) -> dict[str, float]:
        """HR/NDCG@K summed over this process's share of the rows (``n`` = rows)."""
        ranks = self.ranks(model, dist, batch_size, amp_dtype)
        if not ranks:
            return {"n": 0.0}
        model.train()
        return self.sums(ranks)

    @staticmethod
    def sums(ranks: Sequence[int | None]) -> dict[str, float]:
        """HR/NDCG@K of ``ranks`` times their number (``n``)."""
        metrics = metrics_from_ranks(ranks)
        return {k: v * metrics["n"] for k, v in metrics.items() if k != "n"} | {"n": float(metrics["n"])}

    def evaluate(self, model, dist: common.Dist, batch_size: int, amp_dtype) -> dict[str, float]:
        """HR/NDCG@K over all rows: each process ranks its share, the ranks are gathered in row order
        and every process computes the metrics of the whole list, exactly as one process does."""
        ranks = dist.gather_shards(len(self.prompts), self.ranks(model, dist, batch_size, amp_dtype))
        model.train()
        totals = self.sums(ranks) if ranks else {"n": 0.0}
        return {name: totals.get(name, 0.0) / max(totals["n"], 1.0) for name in METRIC_NAMES}


def is_better(metric: str, value: float, best: float | None) -> bool:
    """Loss: lower is better; ranking metrics: higher. The first evaluation always counts."""
    if best is None:
        return True
    return value < best if metric == "loss" else value > best


class BestModelSelector:
    """The best ``metric`` value among a run's evaluations and early stopping.

    :meth:`update` with each evaluation's step and value says whether it is the new best (the
    caller then keeps that model); after ``patience`` evaluations in a row without a better one
    :attr:`should_stop` is true (``patience`` None: never). :meth:`state_dict` is what a checkpoint
    stores (``best_metric``, ``best_step``, ``bad_evals``, ``stopped_early``), so that a resumed
    run keeps its best and its count of evaluations without one.
    """

    def __init__(self, metric: str, patience: int | None = None):
        self.metric, self.patience = metric, patience
        self.best_metric: float | None = None
        self.best_step: int | None = None
        self.bad_evals = 0

    def update(self, step: int, value: float) -> bool:
        """Record the evaluation at ``step``; True when ``value`` is better than every earlier one."""
        if is_better(self.metric, value, self.best_metric):
            self.best_metric, self.best_step, self.bad_evals = value, step, 0
            return True
        self.bad_evals += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.bad_evals >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best_metric": self.best_metric, "best_step": self.best_step, "bad_evals": self.bad_evals,
                "stopped_early": self.should_stop}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best_metric, self.best_step, self.bad_evals = state["best_metric"], state["best_step"], state["bad_evals"]
