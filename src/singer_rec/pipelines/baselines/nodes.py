"""Thin nodes: encode the split tables, train one baseline, return its test metrics as a dict."""
from __future__ import annotations

import inspect
import logging
import time
from dataclasses import dataclass, fields
from typing import Any

import pandas as pd

from singer_rec.baselines import tiger
from singer_rec.baselines.sequences import ItemIndex, encode_sequences
from singer_rec.baselines.training import (
    TrainConfig,
    evaluate_markov,
    evaluate_model,
    evaluate_popularity,
    markov_transitions,
    popularity_scores,
    train_with_grid,
)
from singer_rec.metrics import METRIC_NAMES, SELECTION_METRICS
from singer_rec.training import common

logger = logging.getLogger(__name__)

METRIC_COLUMNS = list(METRIC_NAMES)
DISPLAY_NAMES = {"popularity": "Popularity", "markov": "Markov chain", "gru4rec": "GRU4Rec", "caser": "Caser",
                 "sasrec": "SASRec", "hstu": "HSTU", "tiger": "TIGER"}


def _check_keys(values: Any, allowed: set[str], where: str) -> dict[str, Any]:
    if not isinstance(values, dict):
        raise ValueError(f"{where} must be a mapping of parameters, got {values!r}")
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise ValueError(f"unknown parameter(s) {[f'{where}.{k}' for k in unknown]}; allowed keys of {where}: {sorted(allowed)}")
    return values


@dataclass
class BaselinesParams:
    """The ``baselines`` parameter block, checked when a run starts (``singer_rec.params``): the
    shared training keys, each model's ``model``/``training`` keys and the TIGER-style settings."""

    max_history: int = 10
    num_threads: int | None = None
    device: str = "auto"        # GRU4Rec, Caser, SASRec, HSTU and TIGER: auto (CUDA when available) | cpu | cuda | cuda:N
    training: Any = None
    gru4rec: Any = None
    caser: Any = None
    sasrec: Any = None
    hstu: Any = None
    tiger: Any = None

    def check(self, where: str) -> None:
        from singer_rec.baselines.models import MODELS

        if self.max_history < 1:
            raise ValueError(f"{where}.max_history must be >= 1, got {self.max_history}")
        common.check_device_name(self.device, f"{where}.device")
        train_keys = {f.name for f in fields(TrainConfig)} - {"seed"}
        shared = _check_keys(self.training or {}, train_keys, f"{where}.training")
        for name, cls in MODELS.items():
            block = _check_keys(getattr(self, name) or {}, {"model", "training"}, f"{where}.{name}")
            model_keys = set(inspect.signature(cls.__init__).parameters) - {"self", "num_items", "max_len"}
            _check_keys(block.get("model") or {}, model_keys, f"{where}.{name}.model")
            own = _check_keys(block.get("training") or {}, train_keys, f"{where}.{name}.training")
            try:
                TrainConfig(**{**shared, **own})
            except ValueError as error:
                raise ValueError(f"{where}.{name}.training: {error}") from None
        tiger_keys = {f.name for f in fields(tiger.TigerConfig)} - {"seed", "max_history"}
        config = tiger.TigerConfig(**_check_keys(self.tiger or {}, tiger_keys, f"{where}.tiger"))
        if config.select_metric not in SELECTION_METRICS:
            raise ValueError(f"{where}.tiger.select_metric {config.select_metric!r}; allowed: loss, HR@K, NDCG@K (K in 3, 5, 10)")


def _encode(items: pd.DataFrame, tables: dict[str, pd.DataFrame], max_history: int):
    if "item_id" not in items.columns:
        raise ValueError("items: missing column 'item_id'")
    index = ItemIndex(items["item_id"].tolist())
    return index, {name: encode_sequences(t, index, max_history, name=f"{name}_sequences") for name, t in tables.items()}


def train_popularity(items: pd.DataFrame, train_sequences: pd.DataFrame, test_sequences: pd.DataFrame,
                     params: dict[str, Any]) -> dict[str, float]:
    """Most-popular items (train target counts) for everyone: the sanity floor."""
    started = time.perf_counter()
    index, data = _encode(items, {"train": train_sequences, "test": test_sequences}, params["max_history"])
    metrics = evaluate_popularity(popularity_scores(data["train"], index.num_items), data["test"])
    return {**metrics, "wall_time_s": round(time.perf_counter() - started, 2)}


def train_markov(items: pd.DataFrame, train_sequences: pd.DataFrame, test_sequences: pd.DataFrame,
                 params: dict[str, Any]) -> dict[str, float]:
    """First-order Markov chain: the items most often bought right after the row's last item in
    train, then the most popular ones. No parameters, nothing to select on valid."""
    started = time.perf_counter()
    index, data = _encode(items, {"train": train_sequences, "test": test_sequences}, params["max_history"])
    transitions = markov_transitions(data["train"], index.num_items)
    metrics = evaluate_markov(transitions, popularity_scores(data["train"], index.num_items), data["test"])
    logger.info("markov test %s", {k: round(v, 4) for k, v in metrics.items()})
    return {**metrics, "wall_time_s": round(time.perf_counter() - started, 2)}


def train_sequential_baseline(name: str, items: pd.DataFrame, train_sequences: pd.DataFrame,
                              valid_sequences: pd.DataFrame, test_sequences: pd.DataFrame,
                              params: dict[str, Any], seed: int) -> dict[str, float]:
    """Grid over (lr, weight decay) with early stopping on valid; test metrics of the best model."""
    started = time.perf_counter()
    index, data = _encode(items, {"train": train_sequences, "valid": valid_sequences, "test": test_sequences},
                          params["max_history"])
    training = {**params["training"], **params[name].get("training", {}), "seed": seed}
    model_config = {"max_len": params["max_history"], **params[name].get("model", {})}
    device = common.resolve_device(params.get("device", "auto"), "baselines.device")
    with common.torch_threads(params.get("num_threads")):
        fit = train_with_grid(name, index.num_items, data["train"], data["valid"], TrainConfig(**training), model_config,
                              device=device)
        metrics = evaluate_model(fit.model, data["test"], training.get("eval_batch_size", 1024))
    logger.info("%s test %s", name, {k: round(v, 4) for k, v in metrics.items()})
    return {**metrics, "wall_time_s": round(time.perf_counter() - started, 2),
            "learning_rate": fit.learning_rate, "weight_decay": fit.weight_decay, "best_epoch": fit.best_epoch,
            "grid_points_tried": len(fit.grid), "valid_NDCG@10": fit.valid_metrics["NDCG@10"]}


def train_gru4rec(items, train_sequences, valid_sequences, test_sequences, params, seed):
    """GRU4Rec (Hidasi et al. 2016)."""
    return train_sequential_baseline("gru4rec", items, train_sequences, valid_sequences, test_sequences, params, seed)


def train_caser(items, train_sequences, valid_sequences, test_sequences, params, seed):
    """Caser (Tang & Wang 2018)."""
    return train_sequential_baseline("caser", items, train_sequences, valid_sequences, test_sequences, params, seed)


def train_sasrec(items, train_sequences, valid_sequences, test_sequences, params, seed):
    """SASRec (Kang & McAuley 2018)."""
    return train_sequential_baseline("sasrec", items, train_sequences, valid_sequences, test_sequences, params, seed)


def train_hstu(items, train_sequences, valid_sequences, test_sequences, params, seed):
    """HSTU (Zhai et al. 2024), trained and ranked like SASRec."""
    return train_sequential_baseline("hstu", items, train_sequences, valid_sequences, test_sequences, params, seed)


def train_tiger(item_sids: pd.DataFrame, train_sequences: pd.DataFrame, valid_sequences: pd.DataFrame,
                test_sequences: pd.DataFrame, params: dict[str, Any], seed: int) -> dict[str, float]:
    """TIGER-style: a tiny transformer on SID tokens only, decoded by constrained beam search."""
    started = time.perf_counter()
    config = tiger.TigerConfig(**{"max_history": params["max_history"], **params["tiger"], "seed": seed})
    vocab = tiger.SidVocabulary(item_sids)
    device = common.resolve_device(params.get("device", "auto"), "baselines.device")
    with common.torch_threads(params.get("num_threads")):
        model, info = tiger.train_tiger(vocab, train_sequences, valid_sequences, config, device=device)
        metrics = tiger.evaluate_tiger(model, vocab, test_sequences, config)
    logger.info("tiger test %s", {k: round(v, 4) for k, v in metrics.items()})
    info.pop("curve")  # per-epoch valid curve: logged to MLflow by train_tiger, not a metric
    return {**metrics, "wall_time_s": round(time.perf_counter() - started, 2), **info,
            "parameters": sum(p.numel() for p in model.parameters())}


def collect_baseline_metrics(**per_method: dict[str, float]) -> pd.DataFrame:
    """One row per baseline: method, the six metrics, n and wall time (s), in the given order."""
    rows = []
    for key, metrics in per_method.items():
        name = key.removesuffix("_metrics")
        rows.append({"method": DISPLAY_NAMES.get(name, name), **{c: metrics[c] for c in METRIC_COLUMNS},
                     "n": int(metrics["n"]), "wall_time_s": metrics["wall_time_s"]})
    return pd.DataFrame(rows, columns=["method", *METRIC_COLUMNS, "n", "wall_time_s"])
