"""Project pipelines: every folder under ``pipelines/`` is a stage, ``__default__`` runs them all.

Each stage's parameter block has a typed config class (``PARAMETER_SCHEMAS``), checked for every
block a run uses before its first node loads data (``ParameterValidationHook``).
"""
from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from typing import Any

from kedro.framework.hooks import hook_impl
from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

from singer_rec.params import from_params

logger = logging.getLogger(__name__)

# Stages left out of the default `kedro run` (run them by name).
NOT_IN_DEFAULT = {"baselines", "report", "ablations", "llm_baselines", "sdpo", "catalog_update"}

# parameter block -> "module:Class" of its typed config (imported when a run uses that block)
PARAMETER_SCHEMAS: dict[str, str] = {
    "ingest": "singer_rec.pipelines.ingest.nodes:IngestParams",
    "split": "singer_rec.pipelines.split.nodes:SplitParams",
    "embed": "singer_rec.pipelines.embed.nodes:EmbedParams",
    "sid": "singer_rec.pipelines.sid.nodes:SidParams",
    "prompts": "singer_rec.pipelines.prompts.nodes:PromptsParams",
    "evaluate": "singer_rec.pipelines.evaluate.nodes:EvaluateParams",
    "serving": "singer_rec.pipelines.evaluate.nodes:ServingParams",
    "sft": "singer_rec.pipelines.sft.nodes:SFTParams",
    "rl": "singer_rec.pipelines.rl.nodes:RLParams",
    "sdpo": "singer_rec.pipelines.sdpo.nodes:SDPOParams",
    "baselines": "singer_rec.pipelines.baselines.nodes:BaselinesParams",
    "llm_baselines": "singer_rec.pipelines.llm_baselines.nodes:LLMBaselinesParams",
    "report": "singer_rec.pipelines.report.nodes:ReportParams",
    "ablations": "singer_rec.pipelines.ablations.nodes:AblationsParams",
    "unseen_domain": "singer_rec.pipelines.ablations.nodes:UnseenDomainParams",
    "catalog_update": "singer_rec.pipelines.catalog_update.nodes:CatalogUpdateParams",
}


def register_pipelines() -> dict[str, Pipeline]:
    pipelines = find_pipelines(raise_errors=True)
    pipelines["__default__"] = sum(
        (p for name, p in pipelines.items() if name not in NOT_IN_DEFAULT), Pipeline([])
    )
    return pipelines


def parameter_schema(block: str) -> type | None:
    """The typed config class of a parameter block, or None when the block has none."""
    target = PARAMETER_SCHEMAS.get(block)
    if target is None:
        return None
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def validate_run_parameters(blocks: Mapping[str, Any]) -> list[str]:
    """Build the typed config of every known block in ``blocks``; returns the names checked."""
    checked = []
    for block, values in blocks.items():
        cls = parameter_schema(block)
        if cls is not None:
            from_params(cls, values, block)
            checked.append(block)
    return checked


def _used_blocks(pipeline: Pipeline) -> set[str]:
    """The top-level parameter blocks the pipeline's nodes take (``params:evaluate`` -> evaluate)."""
    names = set()
    for node in pipeline.nodes:
        for name in node.inputs:
            if name.startswith("params:"):
                names.add(name[len("params:"):].split(".", 1)[0])
    return names


class ParameterValidationHook:
    """Checks the parameter blocks a run's nodes take before the first node loads any data."""

    @hook_impl(tryfirst=True)  # before the tracking hook opens its run: a bad block starts nothing
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        blocks = {}
        for block in sorted(_used_blocks(pipeline)):
            if block in PARAMETER_SCHEMAS:
                blocks[block] = catalog.load(f"params:{block}")
        checked = validate_run_parameters(blocks)
        if checked:
            logger.info("parameters checked: %s", ", ".join(checked))
