"""Thin nodes: decode next items for test/valid rows (``SidRecommender``), score them, draw the report."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from singer_rec import tracking
from singer_rec.metrics import DEFAULT_KS, hit_rank, ranking_metrics
from singer_rec.modeling import read_meta, training_seconds
from singer_rec.params import from_params, rule
from singer_rec.recommend import SidRecommender
from singer_rec.sid.tokens import sid_tokens
from singer_rec.training import common

logger = logging.getLogger(__name__)

SEQUENCE_COLUMNS = ("user_id", "history", "target")


@dataclass
class EvaluateParams:
    """``params:evaluate``: constrained beam search over the model's SID map, then HR/NDCG@K."""

    RENAMED_KEYS = {"autocast_dtype": "autocast"}

    num_beams: int = field(default=20, metadata=rule(ge=1))   # items ranked per row; >= the largest K
    ks: list[int] = field(default_factory=lambda: list(DEFAULT_KS))
    batch_size: int = field(default=32, metadata=rule(ge=1))
    autocast: str = field(default="auto", metadata=rule(choices=common.AUTOCAST_MODES))  # bf16 on a GPU, float32 on a CPU
    device: str = "auto"                                     # auto | cpu | cuda | cuda:N
    template_index: int = field(default=0, metadata=rule(ge=0))
    history_length: int = field(default=10, metadata=rule(ge=1))
    max_rows: int | None = field(default=None, metadata=rule(ge=1))
    valid_max_rows: int | None = field(default=1000, metadata=rule(ge=1))

    def check(self, where: str) -> None:
        common.check_device_name(self.device, f"{where}.device")
        if not self.ks or min(self.ks) < 1:
            raise ValueError(f"{where}.ks must be a non-empty list of positive cut-offs, got {self.ks}")
        if self.num_beams < max(self.ks):
            raise ValueError(f"{where}.num_beams={self.num_beams} must be >= the largest K ({max(self.ks)}) "
                             f"of {where}.ks")


def evaluate_config(params: dict[str, Any] | EvaluateParams) -> EvaluateParams:
    """The typed ``evaluate`` block (unknown keys, wrong types and out-of-range values rejected)."""
    return from_params(EvaluateParams, params, "evaluate")


def _rows(sequences: pd.DataFrame, name: str, limit: int | None) -> pd.DataFrame:
    missing = [c for c in SEQUENCE_COLUMNS if c not in sequences.columns]
    if missing:
        raise ValueError(f"{name}: missing column(s) {missing}; expected {list(SEQUENCE_COLUMNS)}")
    rows = sequences if limit in (None, 0) else sequences.head(int(limit))
    if len(rows) == 0:
        raise ValueError(f"{name}: no rows to evaluate")
    return rows.reset_index(drop=True)


def predict_next_items(model_folder: Path, sequences: pd.DataFrame, params: dict[str, Any], name: str,
                       limit: int | None = None) -> pd.DataFrame:
    """Ranked items (``num_beams`` of them, best first) and their log-probs for every row of ``sequences``."""
    config = evaluate_config(params)
    rows = _rows(sequences, name, limit)
    device = common.resolve_device(config.device)
    recommender = SidRecommender.from_folder(model_folder, device=str(device), template_index=config.template_index,
                                             history_length=config.history_length)
    targets = [str(t) for t in rows["target"]]
    for row, (user, target) in enumerate(zip(rows["user_id"], targets)):
        if target not in recommender.sid_map:
            raise ValueError(f"{name} row {row} (user {user}): target item {target!r} has no SID in the model's sid_map")
    histories = [[str(h) for h in (history if history is not None else [])] for history in rows["history"]]
    beams = config.num_beams
    start = time.perf_counter()
    items, scores = recommender.recommend(histories, k=beams, num_beams=beams, batch_size=config.batch_size,
                                          autocast_dtype=common.autocast_dtype(device, config.autocast), progress=True,
                                          where=f"{name} row")
    seconds = time.perf_counter() - start
    logger.info("%s: %d rows decoded with beam %d in %.1f s (%.1f rows/s)", name, len(rows), beams, seconds,
                len(rows) / seconds)
    tracking.log_metrics({f"{name}_decode_seconds": seconds, f"{name}_rows_per_s": len(rows) / seconds})
    return pd.DataFrame({"user_id": rows["user_id"].astype(str).tolist(), "target": targets,
                         "ranked_items": items, "scores": scores})


def evaluate_test(model_folder: Path, test_sequences: pd.DataFrame, params: dict[str, Any]) -> tuple[pd.DataFrame, dict]:
    """``test_predictions`` (user_id, target, ranked_items, scores) and ``test_metrics``: HR/NDCG@K, n, and the
    method's cost as the report shows it: ``train_s`` (the training stages that made the model, as their
    folder records them: SFT, then RL or S-DPO), ``decode_s`` (this test ranking) and their sum ``wall_time_s``."""
    config = evaluate_config(params)
    started = time.perf_counter()
    predictions = predict_next_items(model_folder, test_sequences, config, "test_sequences", config.max_rows)
    metrics = ranking_metrics(predictions["ranked_items"].tolist(), predictions["target"].tolist(), config.ks)
    decode_s = time.perf_counter() - started
    train_s = sum(training_seconds(read_meta(model_folder)).values())
    metrics.update({"train_s": round(train_s, 2), "decode_s": round(decode_s, 2),
                    "wall_time_s": round(train_s + decode_s, 2)})
    logger.info("test metrics: %s", metrics)
    return predictions, metrics


def evaluate_valid(model_folder: Path, valid_sequences: pd.DataFrame, params: dict[str, Any]) -> dict:
    """``valid_metrics`` on the first ``valid_max_rows`` validation rows."""
    config = evaluate_config(params)
    predictions = predict_next_items(model_folder, valid_sequences, config, "valid_sequences", config.valid_max_rows)
    metrics = ranking_metrics(predictions["ranked_items"].tolist(), predictions["target"].tolist(), config.ks)
    logger.info("valid metrics: %s", metrics)
    return metrics


# -- report ----------------------------------------------------------------------------------------

def matching_depth(predicted_sid: str, target_sid: str) -> int:
    """How many leading SID tokens the prediction shares with the target (0 = first level wrong)."""
    depth = 0
    for a, b in zip(sid_tokens(predicted_sid), sid_tokens(target_sid)):
        if a != b:
            break
        depth += 1
    return depth


def report_tables(test_sequences: pd.DataFrame, predictions: pd.DataFrame, sid_map: dict[str, str]) -> dict[str, pd.DataFrame]:
    """The numbers behind the plots: hit ranks, HR@10 per history length, top-1 SID matching depth."""
    rows = test_sequences.head(len(predictions)).reset_index(drop=True)
    same = (rows["user_id"].astype(str).to_numpy() == predictions["user_id"].astype(str).to_numpy()) & (
        rows["target"].astype(str).to_numpy() == predictions["target"].astype(str).to_numpy())
    if not same.all():
        first = int(np.flatnonzero(~same)[0])
        raise ValueError(f"test_predictions row {first} does not match test_sequences row {first} (user/target differ)")
    ranks = [hit_rank(list(r), t) for r, t in zip(predictions["ranked_items"], predictions["target"])]
    max_rank = max(len(r) for r in predictions["ranked_items"])
    rank_counts = pd.Series([r if r is not None else 0 for r in ranks]).value_counts()
    hit_ranks = pd.DataFrame({"rank": list(range(1, max_rank + 1)) + ["miss"],
                              "rows": [int(rank_counts.get(r, 0)) for r in range(1, max_rank + 1)] + [int(rank_counts.get(0, 0))]})
    lengths = [len(h) if h is not None else 0 for h in rows["history"]]
    hit10 = [r is not None and r <= 10 for r in ranks]
    by_length = (pd.DataFrame({"history_length": lengths, "hit": hit10}).groupby("history_length")["hit"]
                 .agg(rows="size", hr_at_10="mean").reset_index())
    depths = [matching_depth(sid_map[str(r[0])], sid_map[str(t)]) if len(r) else 0
              for r, t in zip(predictions["ranked_items"], predictions["target"])]
    max_depth = max(len(sid_tokens(s)) for s in sid_map.values())
    depth_counts = pd.Series(depths).value_counts()
    depth = pd.DataFrame({"matching_levels": list(range(max_depth + 1)),
                          "rows": [int(depth_counts.get(d, 0)) for d in range(max_depth + 1)]})
    depth["share"] = depth["rows"] / len(depths)
    return {"hit_ranks": hit_ranks, "hr_by_history": by_length, "sid_depth": depth}


def _bar_figure(x, heights, title: str, xlabel: str, ylabel: str, labels=None, colors=None) -> Figure:
    figure = Figure(figsize=(6.4, 3.8), dpi=110)
    axes = figure.add_subplot()
    bars = axes.bar([str(v) for v in x], heights, color=colors or "#4C72B0")
    if labels is not None:
        axes.bar_label(bars, labels=labels, fontsize=8, padding=2)
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.margins(y=0.15)
    axes.spines[["top", "right"]].set_visible(False)
    figure.tight_layout()
    return figure


def markdown_table(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "---|" * len(frame.columns)
    body = ["| " + " | ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row) + " |"
            for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def build_report(model_folder: Path, test_sequences: pd.DataFrame, test_predictions: pd.DataFrame,
                 test_metrics: dict, valid_metrics: dict) -> tuple[str, Figure, Figure, Figure]:
    """Markdown metrics table + three PNG figures (hit-rank histogram, HR@10 by history length, SID depth)."""
    meta = read_meta(model_folder)
    tables = report_tables(test_sequences, test_predictions, meta["sid_map"])
    names = [k for k in test_metrics if k != "n"]
    metrics = pd.DataFrame({"metric": names, "test": [float(test_metrics[k]) for k in names],
                            "valid": [float(valid_metrics.get(k, float("nan"))) for k in names]})
    n = int(test_metrics["n"])
    hits, depth, by_length = tables["hit_ranks"], tables["sid_depth"], tables["hr_by_history"]
    markdown = "\n\n".join([
        f"# Evaluation of `{Path(model_folder).as_posix()}`",
        f"Test rows: {n}; valid rows: {int(valid_metrics.get('n', 0))}. Item-level metrics, constrained beam search "
        f"({len(hits) - 1} beams, no length normalisation).",
        markdown_table(metrics),
        "## Top-1 prediction: SID levels matching the target", markdown_table(depth),
        "## HR@10 by history length", markdown_table(by_length),
        "## Hit ranks", markdown_table(hits),
        "Plots: `hit_rank.png`, `hr_by_history_length.png`, `sid_depth.png`.",
    ]) + "\n"
    found = hits[hits["rank"] != "miss"]
    missed = int(hits.loc[hits["rank"] == "miss", "rows"].sum())
    hit_fig = _bar_figure(found["rank"], found["rows"] / n,
                          f"Rank of the target among {len(found)} beams (n={n}; not found: {missed / n:.1%})",
                          "rank of the target (dark: within top 10)", "share of test rows",
                          labels=[str(v) for v in found["rows"]],
                          colors=["#4C72B0" if r <= 10 else "#A6BDDB" for r in found["rank"]])
    length_fig = _bar_figure(by_length["history_length"], by_length["hr_at_10"], "HR@10 by history length",
                             "items in the history", "HR@10", labels=[f"n={v}" for v in by_length["rows"]])
    depth_fig = _bar_figure(depth["matching_levels"], depth["share"],
                            "How deep the top prediction matches the target's SID",
                            "leading SID levels equal to the target's (all = exact item)", "share of test rows",
                            labels=[f"{s:.1%}" for s in depth["share"]])
    return markdown, hit_fig, length_fig, depth_fig


# -- serving -----------------------------------------------------------------------------------------

@dataclass
class ServingParams:
    """``params:serving``: each evaluated model logged as an MLflow pyfunc model and registered (docs/serving.md)."""

    enabled: bool = True
    register_as: dict[str, str | None] = field(default_factory=lambda: {"sft": "singer-rec-sft", "rl": "singer-rec"})
    max_batch: int = field(default=64, metadata=rule(ge=1))   # requests per call; more is a 400
    default_k: int = field(default=10, metadata=rule(ge=1))   # k of a request that gives none
    device: str = "cpu"                                      # where the served model decodes: auto | cpu | cuda | cuda:N

    def check(self, where: str) -> None:
        common.check_device_name(self.device, f"{where}.device")


def serving_config(params: dict[str, Any] | ServingParams) -> ServingParams:
    return from_params(ServingParams, params, "serving")


def log_serving_model(model_name: str, model_folder: Path, test_metrics: dict | None, evaluate: dict[str, Any],
                      serving: dict[str, Any]) -> None:
    """Log the model folder as a pyfunc model in this node's MLflow run and register it as
    ``serving.register_as[<model_name>]`` (null: logged, not registered). The served model decodes
    like the evaluation (``evaluate``'s beam width, template and history length). A no-op with a
    log line when MLflow tracking is off or ``serving.enabled`` is false; a store that fails is
    reported once and never fails the node. ``test_metrics`` only orders it after the test evaluation."""
    config, decoding = serving_config(serving), evaluate_config(evaluate)
    run_id = tracking.active_run_id()
    if not config.enabled or run_id is None:
        logger.info("serving model %s not logged: %s", model_name,
                    "serving.enabled is false" if not config.enabled else "no MLflow run (tracking is disabled)")
        return
    if config.default_k > decoding.num_beams:
        raise ValueError(f"serving.default_k={config.default_k} exceeds evaluate.num_beams={decoding.num_beams} "
                         "(the served model's beam width)")
    import mlflow

    from singer_rec.serving.publish import log_recommender

    registered = config.register_as.get(model_name)
    model_config = {"device": config.device, "num_beams": decoding.num_beams, "default_k": config.default_k,
                    "max_batch": config.max_batch, "batch_size": decoding.batch_size,
                    "template_index": decoding.template_index, "history_length": decoding.history_length}
    started = time.perf_counter()

    def log() -> Any:
        active = mlflow.active_run()
        if active is not None and active.info.run_id == run_id:
            return log_recommender(model_folder, model_name, registered, model_config)
        with mlflow.start_run(run_id=run_id):
            return log_recommender(model_folder, model_name, registered, model_config)

    info = tracking.guarded(run_id, f"logging the serving model {model_name}", log)
    if info is not None:
        version = f" as {registered} version {info.registered_model_version}" if registered else ""
        logger.info("serving model %s logged%s in %.1f s (%s)", model_name, version, time.perf_counter() - started,
                    info.model_uri)
