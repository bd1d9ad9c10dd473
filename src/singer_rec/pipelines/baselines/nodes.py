"""Thin nodes: encode the split tables, train one baseline, return its test metrics as a dict."""
from __future__ import annotations

import functools
import inspect
import logging
import time
from dataclasses import dataclass, field, make_dataclass, replace
from typing import Any

import pandas as pd

from singer_rec.baselines import tiger
from singer_rec.baselines.models import MODELS
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
from singer_rec.metrics import METRIC_NAMES
from singer_rec.params import from_params, rule
from singer_rec.training import common

logger = logging.getLogger(__name__)

METRIC_COLUMNS = list(METRIC_NAMES)
DISPLAY_NAMES = {"popularity": "Popularity", "markov": "Markov chain",
                 **{name: cls.display_name for name, cls in MODELS.items()}, "tiger": "TIGER"}


@functools.cache
def model_options(name: str) -> type:
    """``baselines.<name>.model`` as a dataclass: the model class's keyword arguments with its defaults
    (``max_len`` is ``baselines.max_history``), so that ``from_params`` names an unknown key."""
    cls = MODELS[name]
    options = [p for p in inspect.signature(cls.__init__).parameters.values()
               if p.kind is p.POSITIONAL_OR_KEYWORD and p.name not in ("self", "num_items", "max_len")]
    return make_dataclass(f"{cls.__name__}Options", [(p.name, Any, field(default=p.default)) for p in options])


@dataclass
class ModelBlock:
    """``baselines.<model>``: the model's keyword arguments and its own training keys over ``baselines.training``."""

    model: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)


@dataclass
class _SharedBaselinesParams:
    """The keys of ``baselines`` that are not one classic model's block (see ``BaselinesParams``)."""

    max_history: int = field(default=10, metadata=rule(ge=1))
    num_threads: int | None = None
    device: str = "auto"        # GRU4Rec, Caser, SASRec, HSTU and TIGER: auto (CUDA when available) | cpu | cuda | cuda:N
    training: dict[str, Any] = field(default_factory=dict)  # TrainConfig keys shared by the four models below
    tiger: dict[str, Any] = field(default_factory=dict)  # TigerConfig keys

    def check(self, where: str) -> None:
        common.check_device_name(self.device, f"{where}.device")
        from_params(TrainConfig, self.training, f"{where}.training")  # a bad shared key is named as shared
        for name in MODELS:
            from_params(model_options(name), getattr(self, name).model, f"{where}.{name}.model")
            self.train_config(name, seed=0, where=where)
        self.tiger_config(seed=0, where=where)

    def train_config(self, name: str, seed: int, where: str = "baselines") -> TrainConfig:
        """``name``'s training: its own keys over the shared ``training``, with the global ``seed``."""
        given = {**self.training, **getattr(self, name).training}
        return replace(from_params(TrainConfig, given, f"{where}.{name}.training"), seed=seed)

    def model_config(self, name: str) -> dict[str, Any]:
        """``name``'s keyword arguments: ``max_len`` and its ``model`` keys as given."""
        return {"max_len": self.max_history, **getattr(self, name).model}

    def tiger_config(self, seed: int, where: str = "baselines") -> tiger.TigerConfig:
        """The TIGER-style settings with ``max_history`` and the global ``seed``."""
        config = from_params(tiger.TigerConfig, self.tiger, f"{where}.tiger")
        return replace(config, max_history=self.max_history, seed=seed)


# The ``baselines`` parameter block, checked when a run starts (``singer_rec.params``): the shared
# training keys, a ``model``/``training`` block per classic model of ``MODELS`` and the TIGER-style
# settings. One field per model, made from the registry, so a new model needs no edit here.
BaselinesParams = make_dataclass(
    "BaselinesParams", [(name, ModelBlock, field(default_factory=ModelBlock)) for name in MODELS],
    bases=(_SharedBaselinesParams,))


def _encode(items: pd.DataFrame, tables: dict[str, pd.DataFrame], max_history: int):
    if "item_id" not in items.columns:
        raise ValueError("items: missing column 'item_id'")
    index = ItemIndex(items["item_id"].tolist())
    return index, {name: encode_sequences(t, index, max_history, name=f"{name}_sequences") for name, t in tables.items()}


def train_popularity(items: pd.DataFrame, train_sequences: pd.DataFrame, test_sequences: pd.DataFrame,
                     params: dict[str, Any] | BaselinesParams) -> dict[str, float]:
    """Most-popular items (train target counts) for everyone: the sanity floor."""
    params = from_params(BaselinesParams, params, "baselines")
    started = time.perf_counter()
    index, data = _encode(items, {"train": train_sequences, "test": test_sequences}, params.max_history)
    metrics = evaluate_popularity(popularity_scores(data["train"], index.num_items), data["test"])
    return {**metrics, "wall_time_s": round(time.perf_counter() - started, 2)}


def train_markov(items: pd.DataFrame, train_sequences: pd.DataFrame, test_sequences: pd.DataFrame,
                 params: dict[str, Any] | BaselinesParams) -> dict[str, float]:
    """First-order Markov chain: the items most often bought right after the row's last item in
    train, then the most popular ones. No parameters, nothing to select on valid."""
    params = from_params(BaselinesParams, params, "baselines")
    started = time.perf_counter()
    index, data = _encode(items, {"train": train_sequences, "test": test_sequences}, params.max_history)
    transitions = markov_transitions(data["train"], index.num_items)
    metrics = evaluate_markov(transitions, popularity_scores(data["train"], index.num_items), data["test"])
    logger.info("markov test %s", {k: round(v, 4) for k, v in metrics.items()})
    return {**metrics, "wall_time_s": round(time.perf_counter() - started, 2)}


def train_sequential_baseline(name: str, items: pd.DataFrame, train_sequences: pd.DataFrame,
                              valid_sequences: pd.DataFrame, test_sequences: pd.DataFrame,
                              params: dict[str, Any] | BaselinesParams, seed: int) -> dict[str, float]:
    """Grid over (lr, weight decay) with early stopping on valid; test metrics of the best model."""
    params = from_params(BaselinesParams, params, "baselines")
    started = time.perf_counter()
    index, data = _encode(items, {"train": train_sequences, "valid": valid_sequences, "test": test_sequences},
                          params.max_history)
    training = params.train_config(name, seed)
    device = common.resolve_device(params.device, "baselines.device")
    with common.torch_threads(params.num_threads):
        fit = train_with_grid(name, index.num_items, data["train"], data["valid"], training, params.model_config(name),
                              device=device)
        metrics = evaluate_model(fit.model, data["test"], training.eval_batch_size)
    logger.info("%s test %s", name, {k: round(v, 4) for k, v in metrics.items()})
    return {**metrics, "wall_time_s": round(time.perf_counter() - started, 2),
            "learning_rate": fit.learning_rate, "weight_decay": fit.weight_decay, "best_epoch": fit.best_epoch,
            "grid_points_tried": len(fit.grid), "valid_NDCG@10": fit.valid_metrics["NDCG@10"]}


def sequential_node(name: str) -> functools.partial:
    """The node function that trains ``MODELS[name]``: named ``train_<name>``, documented by its class,
    picklable (a partial of a module function) for the parallel runner."""
    train = functools.partial(train_sequential_baseline, name)
    train.__name__ = f"train_{name}"
    train.__doc__ = MODELS[name].__doc__
    return train


def train_tiger(item_sids: pd.DataFrame, train_sequences: pd.DataFrame, valid_sequences: pd.DataFrame,
                test_sequences: pd.DataFrame, params: dict[str, Any] | BaselinesParams, seed: int) -> dict[str, float]:
    """TIGER-style: a tiny transformer on SID tokens only, decoded by constrained beam search."""
    params = from_params(BaselinesParams, params, "baselines")
    started = time.perf_counter()
    config = params.tiger_config(seed)
    vocab = tiger.SidVocabulary(item_sids)
    device = common.resolve_device(params.device, "baselines.device")
    with common.torch_threads(params.num_threads):
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
