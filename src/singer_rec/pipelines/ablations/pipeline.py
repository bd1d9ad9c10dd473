"""Ablations (paper Fig. 4) as modular pipelines: one namespace per variant of
``ablations.definitions`` (conf/base/parameters_ablations.yml), each the rl stage's nodes and the
evaluate stage's test node on that variant's settings, then one table over all of them.

    kedro run --pipelines=ablations                         # every variant, then the table
    kedro run --pipelines=ablations --namespaces=grpo-acc   # rerun one variant
    kedro run --pipelines=ablations --nodes=build_ablation_table
    kedro run --pipelines=ablations --tags=unseen_domain    # the unseen-domain study

Variants with alignment ``none``/``rl`` start from ``sft-semantic.sft_model``, an SFT model
trained on the semantic task only (namespace ``sft-semantic``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from kedro.pipeline import Node, Pipeline, pipeline

from singer_rec.pipelines.ablations import nodes
from singer_rec.pipelines.evaluate.nodes import evaluate_test
from singer_rec.pipelines.rl.nodes import plot_reward_distribution, train_rl_model
from singer_rec.pipelines.sft.nodes import train_sft_model

DEFINITIONS_FILE = Path("base") / "parameters_ablations.yml"
SEMANTIC_SFT = nodes.SEMANTIC_SFT
SHARED = ["sft_model", "sft_dataset_train", "sft_dataset_valid", "rl_dataset", "items", "item_sids", "test_sequences"]


def conf_definitions(conf_source: Path | None = None) -> dict[str, Any]:
    """``ablations.definitions`` of the project's conf/base (the pipeline's shape does not depend on
    the environment; a variant's values do). Empty when no conf folder is found."""
    if conf_source is None:
        from kedro.framework.project import settings

        conf_source = Path(settings.CONF_SOURCE)
    path = Path(conf_source) / DEFINITIONS_FILE
    if not path.is_file():
        return {}
    return dict((yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("ablations", {}).get("definitions") or {})


def _evaluation(name: str, model: str) -> list[Node]:
    return [Node(evaluate_test, [model, "test_sequences", "evaluate_params"], ["test_predictions", "test_metrics"],
                 name="evaluate_test", tags=["ablations", "eval"])]


def variant_pipeline(name: str, overrides: Any) -> Pipeline:
    """Namespace ``name``: (rl parameters ->) RL training -> reward plot -> test evaluation."""
    if nodes.is_sft_only(overrides):
        body = [Node(nodes.variant_evaluate_params, ["params:evaluate", "params:ablations"], "evaluate_params",
                     name="variant_parameters", tags=["ablations"]),
                *_evaluation(name, "sft_model")]
    else:
        alignment = (overrides or {}).get("alignment", "full")
        start = "start_model"  # sft_model, or the semantic-only one (mapped below)
        body = [
            Node(nodes.variant_parameters_node(name),
                 [start, "params:rl", "params:evaluate", "params:ablations", "params:seed"],
                 ["rl_params", "evaluate_params"], name="variant_parameters", tags=["ablations"]),
            Node(train_rl_model, [start, "rl_dataset", "sft_dataset_valid", "items", "item_sids", "rl_params", "params:prompts", "params:seed"],
                 ["rl_model", "rl_report", "rl_history"], name="train_rl_model", tags=["ablations", "rl", "train"]),
            Node(plot_reward_distribution, "rl_history", "rl_reward_plot", name="plot_rl_reward_distribution",
                 tags=["ablations", "rl"]),
            *_evaluation(name, "rl_model"),
        ]
        semantic = alignment in nodes.SEMANTIC_SFT_ALIGNMENTS
        return _namespaced(Pipeline(body), name, {"start_model": f"{SEMANTIC_SFT}.sft_model" if semantic else "sft_model"})
    return _namespaced(Pipeline(body), name)


def _namespaced(body: Pipeline, namespace: str, renamed: dict[str, str] | None = None) -> Pipeline:
    """``body`` under ``namespace``; the shared datasets and every parameter keep their global names."""
    free = body.inputs()
    inputs = {name: name for name in set(SHARED) & free} | (renamed or {})
    return pipeline(body, namespace=namespace, inputs=inputs, parameters={p for p in free if p.startswith("params:")})


def semantic_sft_pipeline() -> Pipeline:
    """Namespace ``sft-semantic``: the SFT stage's node on the semantic rows only, and that model's
    test ranking (Fig. 4a's "no alignment, no RL" point, the start of ``align-none`` / ``align-rl``)."""
    body = Pipeline([
        Node(nodes.semantic_rows, ["sft_dataset_train", "params:rl"], "train_rows", name="semantic_train_rows",
             tags=["ablations"]),
        Node(nodes.semantic_rows, ["sft_dataset_valid", "params:rl"], "valid_rows", name="semantic_valid_rows",
             tags=["ablations"]),
        Node(nodes.semantic_sft_params, ["params:sft", "params:ablations"], "sft_params", name="semantic_sft_params",
             tags=["ablations"]),
        Node(train_sft_model, ["train_rows", "valid_rows", "items", "item_sids", "sft_params", "params:prompts",
                               "params:seed"], ["sft_model", "sft_report"], name="train_sft_model",
             tags=["ablations", "sft", "train"]),
        Node(nodes.variant_evaluate_params, ["params:evaluate", "params:ablations"], "evaluate_params",
             name="variant_parameters", tags=["ablations"]),
        *_evaluation(SEMANTIC_SFT, "sft_model"),
    ])
    return _namespaced(body, SEMANTIC_SFT)


def _uses_semantic_sft(definitions: dict[str, Any]) -> bool:
    return any(not nodes.is_sft_only(o) and (o or {}).get("alignment") in nodes.SEMANTIC_SFT_ALIGNMENTS
               for o in definitions.values())


def table_node(definitions: dict[str, Any]) -> Node:
    """The comparison table over every variant's ``test_metrics`` (+ ``rl_report`` for RL variants)."""
    inputs = {"ablations": "params:ablations", "rl": "params:rl"}
    for name, overrides in definitions.items():
        inputs[f"{name}.test_metrics"] = f"{name}.test_metrics"
        if not nodes.is_sft_only(overrides):
            inputs[f"{name}.rl_report"] = f"{name}.rl_report"
    if _uses_semantic_sft(definitions):
        inputs[f"{SEMANTIC_SFT}.test_metrics"] = f"{SEMANTIC_SFT}.test_metrics"
    return Node(nodes.ablation_table, inputs, ["ablation_table", "ablation_table_markdown"],
                name="build_ablation_table", tags=["ablations"])


def create_pipeline(definitions: dict[str, Any] | None = None, **kwargs) -> Pipeline:
    """Every variant's namespace, the semantic-only SFT model they may need, the table, and the
    unseen-domain study (``--tags=unseen_domain``)."""
    definitions = conf_definitions() if definitions is None else definitions
    parts = [variant_pipeline(name, overrides) for name, overrides in definitions.items()]
    if _uses_semantic_sft(definitions):
        parts.append(semantic_sft_pipeline())
    if definitions:
        parts.append(Pipeline([table_node(definitions)]))
    parts.append(Pipeline([Node(
        nodes.evaluate_unseen_domain, ["items", "item_sids", "test_sequences", "params:unseen_domain", "params:evaluate"],
        "unseen_domain_metrics", name="evaluate_unseen_domain", tags=["unseen_domain", "eval"])]))
    return sum(parts, Pipeline([]))
