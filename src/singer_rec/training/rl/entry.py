"""The RL training process: read the config file, load the models and data, train, write the RL model."""
from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from singer_rec import tracking
from singer_rec.training import common, memory
from singer_rec.training.rl.examples import build_dictionaries, build_examples
from singer_rec.training.rl.loop import train_grpo
from singer_rec.training.rl.settings import RL_ALIGNMENT, RLSettings, validate_settings

logger = logging.getLogger(__name__)

def run(config: Mapping[str, Any]) -> dict[str, Any]:
    """Train from files. Config keys: ``model_path`` (the policy's start: SFT model, or a base model
    folder for the RL-only variant), ``reference_path`` (frozen KL reference; default model_path),
    ``dataset_path`` (rl_dataset parquet), ``output_path`` (the RL model folder to write),
    ``checkpoint_dir``, ``result_path`` (json summary), ``device`` (auto|cpu|cuda), ``rl`` (settings),
    ``valid_path`` (sft_dataset_valid parquet: the valid ranking when ``rl.valid_every`` > 0)."""
    import pandas as pd

    from singer_rec.modeling import load_model_folder, save_model_folder

    settings = RLSettings.from_dict(config.get("rl"))
    if settings.num_threads:
        torch.set_num_threads(settings.num_threads)
    dist = common.init_distributed(config.get("device", "auto"))
    try:
        common.seed_everything(settings.seed)
        policy, tokenizer, meta = load_model_folder(config["model_path"], device=str(dist.device))
        validate_settings(settings, num_items=len(meta["sid_map"]))
        if settings.gradient_checkpointing:
            memory.enable_gradient_checkpointing(policy)
            if settings.disable_dropout:  # transformers checkpoints in training mode only
                logger.warning("rl gradient_checkpointing has no effect with disable_dropout: true (the update "
                               "runs in eval mode, where nothing is recomputed)")
        reference = None
        if settings.beta > 0:
            reference, _, _ = load_model_folder(config.get("reference_path") or config["model_path"], device=str(dist.device))
        frame = pd.read_parquet(config["dataset_path"])
        if settings.max_prompts is not None:
            frame = frame.sample(frac=1.0, random_state=settings.seed).head(settings.max_prompts).reset_index(drop=True)
        need_titles = RL_ALIGNMENT[settings.alignment]
        sid_dict, title_dict, _ = build_dictionaries(tokenizer, meta, policy.config.vocab_size, need_titles)
        examples = build_examples(frame, tokenizer, sid_dict, title_dict, settings)
        logger.info("RL: %d prompts (%d with SID answers), k=%d, reward=%s, sampling=%s, alignment=%s, %d process(es)",
                    len(examples), sum(e.is_sid for e in examples), settings.num_generations, settings.reward,
                    settings.sampling, settings.alignment, dist.world_size)
        if dist.is_main:
            tracking.log_params({"rl.prompts": len(examples), "rl.items": len(sid_dict.sequences)})
        checkpoint_dir = Path(config["checkpoint_dir"]) if config.get("checkpoint_dir") else None
        validation = valid_ranking(config, settings, tokenizer, meta, policy.config.vocab_size)
        result = train_grpo(policy, reference, tokenizer, examples, sid_dict, title_dict, settings, checkpoint_dir,
                            dist=dist, keep_checkpoints=int(config.get("keep_checkpoints", 2)), validation=validation)
        result["prompts"] = len(examples)
        result["torch_threads"] = torch.get_num_threads()
        result.update(memory.peak_memory(dist))  # this attempt's peak, the largest over the processes
        if dist.is_main:
            tracking.log_metrics({"rl.peak_memory_mb": result["peak_memory_mb"]}, step=result["total_steps"])
            tracking.set_tags({"rl.peak_memory_kind": result["peak_memory_kind"]})
            meta = dict(meta)
            meta["rl"] = {"settings": asdict(settings), "steps": result["total_steps"], "prompts": len(examples),
                          "started_from": str(config["model_path"]), "wall_seconds": round(result["wall_seconds"], 2)}
            save_model_folder(policy, tokenizer, meta, config["output_path"])
            if config.get("result_path"):
                Path(config["result_path"]).write_text(json.dumps(result), encoding="utf-8")
        dist.barrier()
        return result
    finally:
        common.close_distributed(dist)


def valid_ranking(config: Mapping[str, Any], settings: RLSettings, tokenizer, meta: Mapping[str, Any], vocab_size: int):
    """The valid ranking of ``config["valid_path"]`` (SFT's seeded sample of SID-answer rows), or None when off."""
    from singer_rec.training.sft import SFTSettings
    from singer_rec.training.validation import RankingValidation, read_table

    if settings.valid_every == 0:
        return None
    path = config.get("valid_path")
    if not path:
        raise ValueError("rl valid_every > 0 needs valid rows: the training config has no valid_path (sft_dataset_valid)")
    frame = read_table(path, ["prompt", "answer"])
    # the SFT model's prompt budget (a base model folder has none: SFT's default)
    max_length = int((meta.get("train") or {}).get("max_length") or SFTSettings.max_length)
    return RankingValidation.build(tokenizer, meta["sid_map"], frame, settings.valid_ranking_rows,
                                   settings.valid_num_beams, max_length, settings.seed, max(len(tokenizer), vocab_size),
                                   needed_for="nothing for the RL valid ranking to rank", source=str(path))


def main(argv: Sequence[str] | None = None) -> None:
    common.run_entry_point(run, argv)
