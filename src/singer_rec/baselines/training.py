"""Training, model selection and full-ranking evaluation of the classic baselines.

Paper, Appendix B: BCE loss (one positive and sampled negatives per position), Adam, batch 1024,
learning rate and weight decay chosen on valid from {1e-2,1e-3,1e-4} x {1e-2,...,1e-6}. We add
early stopping on valid, a time budget over the grid (configs are tried in order while the
budget lasts; the first always runs) and an optional full-softmax cross-entropy loss.
"""
from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
from scipy import sparse
from torch.nn import functional as F
from tqdm.auto import tqdm

from singer_rec import tracking
from singer_rec.baselines.models import SequentialRecommender, build_baseline_model
from singer_rec.baselines.sequences import EncodedSequences
from singer_rec.metrics import DEFAULT_KS, metrics_from_ranks, ranks_from_scores
from singer_rec.params import check_fields, rule

logger = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """The training of GRU4Rec, Caser, SASRec and HSTU (``baselines.training`` and ``baselines.<model>.training``)."""

    INTERNAL_FIELDS: ClassVar[tuple[str, ...]] = ("seed",)  # the global seed, set by the node
    loss: str = field(default="bce", metadata=rule(choices=("bce", "ce")))  # bce (paper: sampled negatives) | ce (full softmax)
    num_negatives: int = 1
    # all: loss at every history position; last: only the target
    positions: str = field(default="all", metadata=rule(choices=("all", "last")))
    batch_size: int = 1024
    max_epochs: int = 50
    patience: int = 3
    select_metric: str = "NDCG@10"
    eval_batch_size: int = 1024
    learning_rates: list[float] = field(default_factory=lambda: [1e-3], metadata=rule(min_items=1))
    weight_decays: list[float] = field(default_factory=lambda: [0.0], metadata=rule(min_items=1))
    time_budget_s: float = math.inf  # for the whole grid
    seed: int = 42

    def __post_init__(self):  # built directly too (tests, benchmarks): the same rules
        check_fields(self, "training")


@dataclass
class FitResult:
    model: SequentialRecommender
    learning_rate: float
    weight_decay: float
    valid_metrics: dict[str, float]
    best_epoch: int
    grid: list[dict] = field(default_factory=list)


def evaluate_scores(scores: np.ndarray | torch.Tensor, target_columns: np.ndarray | torch.Tensor,
                    ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """HR/NDCG@K of full-ranking scores ``[rows, items]`` whose targets sit at ``target_columns``."""
    return metrics_from_ranks(list(_ranks(scores, target_columns)), ks)


def _ranks(scores, target_columns) -> np.ndarray:
    scores = scores.detach().cpu().numpy() if isinstance(scores, torch.Tensor) else np.asarray(scores)
    columns = target_columns.cpu().numpy() if isinstance(target_columns, torch.Tensor) else np.asarray(target_columns)
    return ranks_from_scores(scores, columns)


@torch.no_grad()
def evaluate_model(model: SequentialRecommender, data: EncodedSequences, batch_size: int = 1024,
                   ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """Full ranking over all items (no item excluded), HR/NDCG@K with the shared metric code."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    ranks = []
    for start in range(0, len(data), batch_size):
        scores = model.score_all(data.histories[start:start + batch_size].to(device))
        ranks.append(_ranks(scores, data.targets[start:start + batch_size] - 1))
    model.train(was_training)
    return metrics_from_ranks(list(np.concatenate(ranks)), ks)


def prefix_windows(sequences: torch.Tensor) -> torch.Tensor:
    """``[B, T]`` -> ``[B, T, T]``: window t is ``sequences[:, :t+1]`` left-padded to length T."""
    length = sequences.shape[1]
    positions = torch.arange(length, device=sequences.device)
    source = positions[:, None] - (length - 1 - positions[None, :])  # [window t, slot s]
    return sequences[:, source.clamp(min=0)] * (source >= 0)


def _batch_loss(model: SequentialRecommender, batch: torch.Tensor, config: TrainConfig,
                generator: torch.Generator) -> torch.Tensor:
    inputs, labels = batch[:, :-1], batch[:, 1:]
    if config.positions == "all":
        if model.per_position:
            states = model.states(inputs)
        else:  # a window model (Caser) sees each prefix as its own left-padded window
            windows = prefix_windows(inputs)
            states = model.states(windows.flatten(0, 1))[:, -1].view(*inputs.shape, -1)
        keep = (labels != 0) & (inputs != 0)  # a prediction needs at least one history item
    else:
        states = model.states(inputs)[:, -1:]
        labels = labels[:, -1:]
        keep = labels != 0
    states, labels = states[keep], labels[keep]  # [n, d], [n]
    if config.loss == "ce":
        logits = states @ model.output_embeddings()[1:].T
        return F.cross_entropy(logits, labels - 1)
    # drawn on the CPU by the seeded generator: the same negatives on every device
    negatives = torch.randint(1, model.num_items + 1, (len(labels), config.num_negatives), generator=generator).to(states.device)
    positive = model.score_items(states, labels[:, None])
    negative = model.score_items(states, negatives)
    return (F.softplus(-positive).sum(-1) + F.softplus(negative).sum(-1)).mean()


def fit_one(model: SequentialRecommender, train: EncodedSequences, valid: EncodedSequences,
            learning_rate: float, weight_decay: float, config: TrainConfig,
            log_prefix: str = "", deadline: float = math.inf) -> tuple[dict[str, float], int]:
    """Adam with early stopping on valid; leaves ``model`` at its best epoch. Returns (valid metrics, epoch).

    Training also stops after the epoch during which ``time.perf_counter()`` passes ``deadline``.
    Batches go to the model's device; the shuffling and the negatives are drawn on the CPU.
    """
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate, weight_decay=weight_decay)
    sequences = train.full_sequences()
    device = next(model.parameters()).device
    best_value, best_metrics, best_epoch, best_state, stale = -math.inf, {}, 0, None, 0
    epochs = tqdm(range(1, config.max_epochs + 1), desc=f"{log_prefix}epochs", leave=False)
    for epoch in epochs:
        model.train()
        order = torch.randperm(len(sequences), generator=generator)
        total, batches = 0.0, 0
        for start in range(0, len(order), config.batch_size):
            batch = sequences[order[start:start + config.batch_size]].to(device)
            loss = _batch_loss(model, batch, config, generator)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, batches = total + loss.item(), batches + 1
        metrics = evaluate_model(model, valid, config.eval_batch_size)
        value = metrics[config.select_metric]
        tracking.log_metrics({f"{log_prefix}train_loss": total / batches,
                              **{f"{log_prefix}valid.{k}": v for k, v in metrics.items() if k != "n"}}, step=epoch)
        epochs.set_postfix(loss=f"{total / batches:.4f}", **{config.select_metric: f"{value:.4f}"})
        if value > best_value:
            best_value, best_metrics, best_epoch, stale = value, metrics, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
            if stale >= config.patience:
                break
        if time.perf_counter() > deadline:
            logger.info("%stime budget spent after epoch %d", log_prefix, epoch)
            break
    model.load_state_dict(best_state)
    return best_metrics, best_epoch


def train_with_grid(name: str, num_items: int, train: EncodedSequences, valid: EncodedSequences,
                    config: TrainConfig, model_config: dict | None = None,
                    device: torch.device | str = "cpu") -> FitResult:
    """Try (lr, weight decay) pairs in order while the time budget lasts; keep the best on valid.

    The budget covers the whole grid: a grid point starts only while time is left (the first
    always starts) and its training stops at the first epoch end past the budget. Each model is
    initialised on the CPU (the same weights on every device), then trained on ``device``.
    """
    model_config = dict(model_config or {})
    grid = [(lr, wd) for lr in config.learning_rates for wd in config.weight_decays]
    started = time.perf_counter()
    best: FitResult | None = None
    tried: list[dict] = []
    for lr, wd in tqdm(grid, desc=f"{name} grid", leave=False):
        if best is not None and time.perf_counter() - started > config.time_budget_s:
            logger.info("%s: time budget %.0fs spent after %d of %d grid points", name, config.time_budget_s, len(tried), len(grid))
            break
        torch.manual_seed(config.seed)  # same initialisation for every grid point
        model = build_baseline_model(name, num_items, **model_config).to(device)
        t0 = time.perf_counter()
        valid_metrics, epoch = fit_one(model, train, valid, lr, wd, config, log_prefix=f"{name}.lr{lr:g}_wd{wd:g}.",
                                       deadline=started + config.time_budget_s)
        tried.append({"learning_rate": lr, "weight_decay": wd, "best_epoch": epoch,
                      "seconds": round(time.perf_counter() - t0, 2), **valid_metrics})
        logger.info("%s lr=%g wd=%g: valid %s=%.4f at epoch %d", name, lr, wd, config.select_metric,
                    valid_metrics[config.select_metric], epoch)
        if best is None or valid_metrics[config.select_metric] > best.valid_metrics[config.select_metric]:
            best = FitResult(model, lr, wd, valid_metrics, epoch)
    best.grid = tried
    return best


def popularity_scores(train: EncodedSequences, num_items: int) -> np.ndarray:
    """Train-target counts per item as a strict total order (ties broken by catalogue order).

    Returns float scores ``[num_items]`` (column j = item index j + 1); a strict order keeps the
    pessimistic tie rule of ``ranks_from_scores`` from pushing every tied item to the bottom.
    """
    counts = np.bincount(train.targets.numpy(), minlength=num_items + 1)[1:].astype(np.float64)
    tie_break = np.arange(num_items, 0, -1, dtype=np.float64) / (num_items + 1)  # earlier item wins
    return counts + tie_break


def evaluate_popularity(scores: np.ndarray, data: EncodedSequences, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    return evaluate_scores(np.broadcast_to(scores, (len(data), len(scores))), data.targets - 1, ks)


def markov_transitions(train: EncodedSequences, num_items: int) -> sparse.csr_matrix:
    """First-order Markov chain: ``[num_items + 1, num_items]`` counts of (last history item -> target)
    over the train rows (row = item index, column j = item index j + 1; row 0, padding, stays empty).

    Train rows are every prefix of a user's train sequence, so each consecutive pair counts once.
    """
    last = train.histories[:, -1].numpy()
    counts = np.ones(len(last), dtype=np.float64)
    return sparse.csr_matrix((counts, (last, train.targets.numpy() - 1)), shape=(num_items + 1, num_items))


def markov_ranks(transitions: sparse.csr_matrix, popularity: np.ndarray, data: EncodedSequences,
                 batch_size: int = 1024) -> np.ndarray:
    """Full-ranking ranks (1-based) of each row's target by the count of (last history item -> item)
    in train; unseen transitions and ties fall back to ``popularity_scores`` (its strict order),
    which stays below one transition."""
    scale = popularity.max() + 1.0
    ranks = []
    for start in range(0, len(data), batch_size):
        last = data.histories[start:start + batch_size, -1].numpy()
        scores = transitions[last].toarray() * scale + popularity
        ranks.append(_ranks(scores, data.targets[start:start + batch_size] - 1))
    return np.concatenate(ranks)


def evaluate_markov(transitions: sparse.csr_matrix, popularity: np.ndarray, data: EncodedSequences,
                    ks: Sequence[int] = DEFAULT_KS, batch_size: int = 1024) -> dict[str, float]:
    return metrics_from_ranks(list(markov_ranks(transitions, popularity, data, batch_size)), ks)
