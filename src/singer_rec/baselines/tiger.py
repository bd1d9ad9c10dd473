"""TIGER-style generative baseline: a small decoder-only transformer over SID tokens only.

Rajput et al. 2023 train a T5 encoder-decoder from scratch on semantic-ID sequences. Here the
model is a tiny ``Qwen2ForCausalLM`` whose vocabulary is just the SID tokens (plus pad, BOS and
SEP), so the project's constrained beam search (``singer_rec.decoding``) decodes it directly:

    prompt  = BOS, SID tokens of each history item (oldest first), SEP
    answer  = SID tokens of the next item            (loss on the answer tokens only)

Model selection and early stopping use the valid ranking (``select_metric``, NDCG@10 by default,
on the first ``valid_rows`` valid rows, decoded as test is), like every other model of the
project; ``select_metric: loss`` selects on the teacher-forced valid answer loss instead. Test
items come from a beam search constrained to the item dictionary, ranked by sequence log-prob,
scored with ``metrics.py``.
"""
from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import pandas as pd
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from singer_rec import tracking
from singer_rec.metrics import DEFAULT_KS, SELECTION_METRICS, ranking_metrics
from singer_rec.params import rule

logger = logging.getLogger(__name__)

PAD, BOS, SEP = 0, 1, 2
NUM_SPECIAL = 3
IGNORE = -100


class SidVocabulary:
    """Token ids for SID codes: level l, code c -> ``offsets[l] + c``; items in ``item_sids`` order."""

    def __init__(self, item_sids: pd.DataFrame):
        missing = [c for c in ("item_id", "codes") if c not in item_sids.columns]
        if missing:
            raise ValueError(f"item_sids: missing column(s) {missing}")
        codes = []
        for row, value in enumerate(item_sids["codes"]):
            if not hasattr(value, "__len__") or len(value) == 0:
                raise ValueError(f"item_sids row {row}: field 'codes' must be a non-empty list of ints")
            if any(int(c) < 0 for c in value):
                raise ValueError(f"item_sids row {row}: field 'codes' has a negative code {list(value)}")
            codes.append([int(c) for c in value])
        depth = max(len(c) for c in codes)
        sizes = [1 + max((c[level] for c in codes if len(c) > level), default=0) for level in range(depth)]
        self.offsets = [NUM_SPECIAL + sum(sizes[:level]) for level in range(depth)]
        self.vocab_size = NUM_SPECIAL + sum(sizes)
        self.item_ids = [str(i) for i in item_sids["item_id"]]
        self.item_tokens = [[self.offsets[level] + c for level, c in enumerate(code)] for code in codes]
        self._position = {item_id: i for i, item_id in enumerate(self.item_ids)}
        if len(self._position) != len(self.item_ids):
            raise ValueError("item_sids: an item_id appears more than once")

    def tokens_of(self, item_id: str, where: str = "") -> list[int]:
        try:
            return self.item_tokens[self._position[str(item_id)]]
        except KeyError:
            raise ValueError(f"{where}item_id {item_id!r} has no SID in item_sids") from None

    def prompt(self, history: Sequence[str], where: str = "") -> list[int]:
        return [BOS, *(t for item in history for t in self.tokens_of(item, where)), SEP]

    def encode(self, table: pd.DataFrame, max_history: int, name: str) -> tuple[list[list[int]], list[list[int]]]:
        """(prompts, answers) token lists of a sequences table; errors name table, row and field."""
        for column in ("history", "target"):
            if column not in table.columns:
                raise ValueError(f"{name}: missing column {column!r}")
        prompts, answers = [], []
        for row, (history, target) in enumerate(zip(table["history"], table["target"])):
            if isinstance(history, str) or not hasattr(history, "__len__") or len(history) == 0:
                raise ValueError(f"{name} row {row}: field 'history' must be a non-empty list of item ids")
            prompts.append(self.prompt(list(history)[-max_history:], f"{name} row {row}: field 'history': "))
            answers.append(list(self.tokens_of(target, f"{name} row {row}: field 'target': ")))
        return prompts, answers


@dataclass
class TigerConfig:
    """The TIGER-style baseline (``baselines.tiger``; ``max_history`` is ``baselines.max_history``)."""

    INTERNAL_FIELDS: ClassVar[tuple[str, ...]] = ("seed", "max_history")  # set by the node
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 256
    dropout: float = 0.1
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    batch_size: int = 256
    max_epochs: int = 60
    patience: int = 8                  # epochs without a better select_metric
    # loss | HR@K | NDCG@K of the valid ranking
    select_metric: str = field(default="NDCG@10", metadata=rule(choices=SELECTION_METRICS))
    valid_rows: int | None = 1000      # valid rows ranked after each epoch (null: all)
    num_beams: int = 10
    decode_batch_size: int = 64
    max_history: int = 10
    time_budget_s: float = math.inf
    seed: int = 42


def build_tiger_model(vocab: SidVocabulary, config: TigerConfig, max_positions: int):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(config.seed)
    model_config = Qwen2Config(
        vocab_size=vocab.vocab_size, hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers, num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_heads, max_position_embeddings=max_positions,
        attention_dropout=config.dropout, tie_word_embeddings=True,
        pad_token_id=PAD, bos_token_id=BOS, eos_token_id=SEP,
    )
    return Qwen2ForCausalLM(model_config)


def _collate(prompts: Sequence[list[int]], answers: Sequence[list[int]]):
    """Right-padded ids, attention mask and labels (answer tokens only)."""
    rows = [p + a for p, a in zip(prompts, answers)]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), PAD, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (p, a) in enumerate(zip(prompts, answers)):
        ids[i, :len(p) + len(a)] = torch.tensor(p + a)
        labels[i, len(p):len(p) + len(a)] = torch.tensor(a)
        mask[i, :len(p) + len(a)] = 1
    return ids, mask, labels


def _answer_loss(model, prompts, answers) -> torch.Tensor:
    device = next(model.parameters()).device
    ids, mask, labels = (t.to(device) for t in _collate(prompts, answers))
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=IGNORE)


@torch.no_grad()
def answer_loss(model, prompts, answers, batch_size: int = 512) -> float:
    """Mean teacher-forced loss per answer token."""
    model.eval()
    total, tokens = 0.0, 0
    for start in range(0, len(prompts), batch_size):
        p, a = prompts[start:start + batch_size], answers[start:start + batch_size]
        n = sum(len(x) for x in a)
        total += _answer_loss(model, p, a).item() * n
        tokens += n
    return total / tokens


def train_tiger(vocab: SidVocabulary, train: pd.DataFrame, valid: pd.DataFrame, config: TigerConfig,
                device: torch.device | str = "cpu"):
    """AdamW on the answer tokens, selection and early stopping on the valid ranking (or loss); the
    model is initialised on the CPU (the same weights on every device), then trained on ``device``.

    Returns (model at its best epoch, info with the best epoch, its valid loss and metric, and the
    per-epoch valid curve).
    """
    from singer_rec.training.validation import BestModelSelector

    train_prompts, train_answers = vocab.encode(train, config.max_history, "train_sequences")
    valid_prompts, valid_answers = vocab.encode(valid, config.max_history, "valid_sequences")
    valid_ranked = valid if config.valid_rows is None else valid.head(config.valid_rows)
    longest = max(len(p) + len(a) for p, a in zip(train_prompts + valid_prompts, train_answers + valid_answers))
    model = build_tiger_model(vocab, config, max_positions=longest + 8 * len(vocab.offsets)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)
    started = time.perf_counter()
    selector = BestModelSelector(config.select_metric, config.patience)
    best_state, best_loss, curve = None, math.inf, []
    epochs = tqdm(range(1, config.max_epochs + 1), desc="tiger epochs", leave=False)
    for epoch in epochs:
        model.train()
        order = torch.randperm(len(train_prompts), generator=generator).tolist()
        total, batches = 0.0, 0
        for start in range(0, len(order), config.batch_size):
            rows = order[start:start + config.batch_size]
            loss = _answer_loss(model, [train_prompts[i] for i in rows], [train_answers[i] for i in rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, batches = total + loss.item(), batches + 1
        valid_loss = answer_loss(model, valid_prompts, valid_answers)
        ranked = {} if config.select_metric == "loss" else evaluate_tiger(model, vocab, valid_ranked, config, progress=False)
        value = valid_loss if config.select_metric == "loss" else ranked[config.select_metric]
        curve.append({"epoch": epoch, "seconds": time.perf_counter() - started, "valid_loss": valid_loss, **ranked})
        tracking.log_metrics({"tiger.train_loss": total / batches, "tiger.valid_loss": valid_loss,
                              **{f"tiger.valid_{k.replace('@', '_at_')}": v for k, v in ranked.items() if k != "n"}},
                             step=epoch)
        epochs.set_postfix(loss=f"{total / batches:.4f}", valid=f"{value:.4f}")
        if selector.update(epoch, value):
            best_state, best_loss = copy.deepcopy(model.state_dict()), valid_loss
        elif selector.should_stop:
            break
        if time.perf_counter() - started > config.time_budget_s:
            logger.info("tiger: time budget %.0fs spent after epoch %d", config.time_budget_s, epoch)
            break
    model.load_state_dict(best_state)
    model.eval()
    return model, {"best_epoch": selector.best_step, "valid_loss": best_loss,
                   f"valid_{config.select_metric.replace('@', '_at_')}": selector.best_metric, "curve": curve}


def recommend(model, vocab: SidVocabulary, histories: Sequence[Sequence[str]], config: TigerConfig,
              progress: bool = True) -> list[list[str]]:
    """Top ``num_beams`` item ids per history by constrained beam search over the item dictionary."""
    from singer_rec.decoding import PrefixTrie, beam_search

    trie = PrefixTrie.build(vocab.item_tokens, vocab.vocab_size)
    prompts = [vocab.prompt(list(h)[-config.max_history:], f"history {i}: ") for i, h in enumerate(histories)]
    result = beam_search(model, prompts, trie, num_beams=config.num_beams, batch_size=config.decode_batch_size,
                         pad_token_id=PAD, progress=progress)
    return [[vocab.item_ids[i] for i in items] for items in result.items]


def evaluate_tiger(model, vocab: SidVocabulary, table: pd.DataFrame, config: TigerConfig,
                   ks: Sequence[int] = DEFAULT_KS, progress: bool = True) -> dict[str, float]:
    ranked = recommend(model, vocab, table["history"].tolist(), config, progress=progress)
    return ranking_metrics(ranked, [str(t) for t in table["target"]], ks)
