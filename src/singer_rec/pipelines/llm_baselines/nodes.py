"""Thin nodes over ``singer_rec.baselines.title_llm``: BIGRec, BIGRec title-constrained and D3."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from singer_rec import modeling
from singer_rec.baselines import title_llm
from singer_rec.baselines.bigrec import ground_texts
from singer_rec.params import from_params, rule
from singer_rec.pipelines.baselines.nodes import METRIC_COLUMNS
from singer_rec.pipelines.prompts.nodes import PromptsParams
from singer_rec.prompts import PAPER_TEMPLATES, PromptBuilder
from singer_rec.training import common
from singer_rec.training.sft import SFTSettings
from singer_rec.training.validation import seeded_sample

logger = logging.getLogger(__name__)

TASK = "title_history_to_title"
METHODS = {"bigrec": "BIGRec", "bigrec_constrained": "BIGRec (title-constrained)", "d3": "D3"}


@dataclass
class LLMBaselinesParams:
    """``params:llm_baselines``."""

    work_dir: str = "data/06_models/bigrec_work"
    train: dict[str, Any] = field(default_factory=dict)   # keys of sft.train that differ for the title model
    num_beams: int = field(default=10, metadata=rule(ge=10))   # >= the largest K
    max_new_tokens: int = field(default=64, metadata=rule(ge=1))
    decode_batch_size: int = field(default=16, metadata=rule(ge=1))
    gamma: float = field(default=0.0, metadata=rule(ge=0))     # BIGRec's popularity adjustment
    length_penalty: float = 1.0                                 # title-constrained BIGRec
    assistant: str | None = field(default="sasrec", metadata=rule(choices=("gru4rec", "caser", "sasrec", "hstu")))
    alpha: float = field(default=0.0, metadata=rule(ge=0))      # D3's assistant weight (0: LLM only)
    alphas: list[float] | None = None                           # D3: a grid; alpha is then chosen on valid
    valid_rows: int = field(default=500, metadata=rule(ge=1))    # valid rows that choose alpha (seeded sample)
    assistant_beams: int = field(default=50, metadata=rule(ge=10))  # D3 with the assistant: beams it reorders
    num_threads: int | None = field(default=1, metadata=rule(ge=1))
    device: str = "auto"        # decoding and the assistant: auto (CUDA when available) | cpu | cuda | cuda:N
    autocast: str = field(default="auto", metadata=rule(choices=common.AUTOCAST_MODES))  # decoding: bf16 on a GPU, float32 on a CPU

    def check(self, where: str) -> None:
        common.check_device_name(self.device, f"{where}.device")
        SFTSettings.from_dict(self.train, f"{where}.train")  # the overrides: known sft.train keys, in range
        if self.alphas is not None:
            if not self.alphas or any(not isinstance(a, (int, float)) or a < 0 for a in self.alphas):
                raise ValueError(f"{where}.alphas must be a non-empty list of numbers >= 0 (or null), got {self.alphas!r}")
            if self.assistant is None:
                raise ValueError(f"{where}.alphas chooses the assistant's weight, but {where}.assistant is null")

    @property
    def uses_assistant(self) -> bool:
        """D3 mixes in the assistant: a fixed ``alpha`` > 0 or a grid to choose it from."""
        return self.assistant is not None and (self.alphas is not None or self.alpha > 0)


def _config(params: dict[str, Any]) -> LLMBaselinesParams:
    return from_params(LLMBaselinesParams, params, "llm_baselines")


def _device(config: LLMBaselinesParams) -> torch.device:
    return common.resolve_device(config.device, "llm_baselines.device")


def _decoding(config: LLMBaselinesParams, model):
    """The autocast context of the title model's decoding (``llm_baselines.autocast`` on its device)."""
    device = next(model.parameters()).device
    return common.autocast(device, common.autocast_dtype(device, config.autocast))


def _titles(items: pd.DataFrame, item_sids: pd.DataFrame) -> dict[str, str]:
    """item_id -> title as the prompts show it (whitespace collapsed), catalogue order."""
    return PromptBuilder(items, item_sids, {}).title_of


def _templates(prompts: dict[str, Any]) -> dict[str, list[str]]:
    """The task's phrasings: ``prompts.templates.title_history_to_title`` if given, else BIGRec's."""
    return {TASK: list((prompts.get("templates") or {}).get(TASK) or PAPER_TEMPLATES[TASK])}


def _sft_train(sft: dict[str, Any], config: LLMBaselinesParams) -> dict[str, Any]:
    return {**sft["train"], **config.train}


def _rows(items, item_sids, sequences: pd.DataFrame, name: str, prompts: dict[str, Any], seed: int) -> pd.DataFrame:
    # not typed: the block's task checks concern SFT and RL, not this task
    history_length = prompts.get("history_length", PromptsParams.history_length)
    builder = PromptBuilder(items, item_sids, _templates(prompts), history_length=history_length, seed=seed)
    return builder.build([TASK], sequences, name, item_tasks=False)


def decodable_sequences(sequences: pd.DataFrame, items: pd.DataFrame, item_sids: pd.DataFrame) -> pd.DataFrame:
    """Test rows with a history and a titled target: the rows every method (and the assistant) ranks."""
    titles = _titles(items, item_sids)
    keep = [history is not None and len(history) > 0 and bool(titles.get(str(target)))
            for history, target in zip(sequences["history"], sequences["target"])]
    return sequences[keep].reset_index(drop=True)


def build_title_rows(items: pd.DataFrame, item_sids: pd.DataFrame, train_sequences: pd.DataFrame,
                     valid_sequences: pd.DataFrame, test_sequences: pd.DataFrame, prompts: dict[str, Any],
                     params: dict[str, Any], seed: int):
    """BIGRec's task (title history -> next title) over train, valid and the decodable test rows, and
    over a seeded sample of ``valid_rows`` decodable valid rows (the rows that choose D3's alpha)."""
    config = _config(params)  # a bad block stops the run before training
    test = decodable_sequences(test_sequences, items, item_sids)
    valid_ranked = seeded_sample(decodable_sequences(valid_sequences, items, item_sids), config.valid_rows, seed)
    rows = [_rows(items, item_sids, table, name, prompts, seed) for table, name in
            ((train_sequences, "train_sequences"), (valid_sequences, "valid_sequences"), (test, "test_sequences"),
             (valid_ranked, "valid_sequences"))]
    logger.info("title rows: %d train, %d valid, %d test, %d valid to rank", *map(len, rows))
    return (*rows[:3], test, rows[3], valid_ranked)


def train_title_model(train_rows: pd.DataFrame, valid_rows: pd.DataFrame, items: pd.DataFrame,
                      item_sids: pd.DataFrame, sft: dict[str, Any], prompts: dict[str, Any], params: dict[str, Any],
                      seed: int):
    """The SFT trainer on the title task: the SFT model preset, ``sft.train`` with ``llm_baselines.train`` over it."""
    from singer_rec.pipelines.sft.nodes import train_sft_model

    config = _config(params)
    started = time.perf_counter()
    sft_params = {**sft, "work_dir": config.work_dir, "train": _sft_train(sft, config)}
    folder, report = train_sft_model(train_rows, valid_rows, items, item_sids, sft_params,
                                     {"templates": _templates(prompts)}, seed)
    return folder, {**report, "train_wall_s": round(time.perf_counter() - started, 2)}


def _metrics(metrics: dict[str, float], started: float, train_report: dict[str, Any]) -> dict[str, float]:
    decode_s = time.perf_counter() - started
    return {**{m: metrics[m] for m in METRIC_COLUMNS}, "n": int(metrics["n"]),
            "wall_time_s": round(train_report["train_wall_s"] + decode_s, 2), "decode_s": round(decode_s, 2),
            "train_s": train_report["train_wall_s"]}


def _prompts(tokenizer, rows: pd.DataFrame, dictionary: title_llm.TitleDictionary, sft: dict[str, Any],
             config: LLMBaselinesParams) -> list[list[int]]:
    """Prompt ids cut as in training (``max_length`` of the title model's training)."""
    max_length = SFTSettings.from_dict(_sft_train(sft, config), "llm_baselines.train").max_length
    return title_llm.prompt_token_ids(tokenizer, rows["prompt"].tolist(), max_length, dictionary.longest)


def _targets(rows: pd.DataFrame, dictionary: title_llm.TitleDictionary) -> list[int]:
    position = {item: i for i, item in enumerate(dictionary.item_ids)}
    return [position[str(t)] for t in rows["target"]]


def evaluate_bigrec(model_folder, test_rows: pd.DataFrame, items: pd.DataFrame, item_sids: pd.DataFrame,
                    train_sequences: pd.DataFrame, embed: dict[str, Any], sft: dict[str, Any],
                    params: dict[str, Any], train_report: dict[str, Any]) -> dict[str, float]:
    """BIGRec: free beam search writes a title; grounding ranks every item by embedding distance."""
    from singer_rec.pipelines.embed.nodes import EmbedParams
    from singer_rec.sid.encoders import encode_texts

    config, started = _config(params), time.perf_counter()
    encoder = from_params(EmbedParams, embed, "embed")
    encode = lambda texts: encode_texts(texts, encoder.encoder, model_path=encoder.model_path,  # noqa: E731
                                        batch_size=encoder.batch_size, normalize=encoder.normalize,
                                        device=encoder.device, dtype=encoder.dtype, dim=encoder.dim, progress=False)
    with common.torch_threads(config.num_threads):
        model, tokenizer, _ = modeling.load_model_folder(model_folder, device=str(_device(config)))
        titles = _titles(items, item_sids)
        dictionary = title_llm.TitleDictionary.build(tokenizer, titles, max(len(tokenizer), model.config.vocab_size))
        with _decoding(config, model):
            generated = title_llm.generate_titles(model, tokenizer, _prompts(tokenizer, test_rows, dictionary, sft, config),
                                                  config.num_beams, config.max_new_tokens, config.decode_batch_size,
                                                  progress=True)
        prior = title_llm.popularity_prior(dictionary.item_ids, train_sequences["target"])
        scores = ground_texts(generated, encode(list(titles.values())), encode, prior=prior, gamma=config.gamma)
    exact = float(np.mean([g == titles[str(t)] for g, t in zip(generated, test_rows["target"])]))
    logger.info("BIGRec: %.1f%% of generated titles are the target's exactly; e.g. %r", 100 * exact, generated[:3])
    return _metrics(title_llm.grounded_metrics(scores, _targets(test_rows, dictionary)), started, train_report)


def _title_model(model_folder, items, item_sids, ghost_free: bool, device: torch.device | str = "cpu"):
    """The title model (on ``device``), its tokenizer and the catalogue's title dictionary (D3's ghost-free
    trie or the full one)."""
    model, tokenizer, _ = modeling.load_model_folder(model_folder, device=str(device))
    dictionary = title_llm.TitleDictionary.build(tokenizer, _titles(items, item_sids),
                                                 max(len(tokenizer), model.config.vocab_size), ghost_free=ghost_free)
    return model, tokenizer, dictionary


def _constrained(title_model, test_rows, sft, config: LLMBaselinesParams, train_report,
                 length_penalty: float, item_bonus=None, num_beams: int | None = None) -> dict[str, float]:
    """Metrics of a constrained search over the title dictionary; ``title_model`` is ``_title_model``'s triple."""
    model, tokenizer, dictionary = title_model
    started = time.perf_counter()
    with common.torch_threads(config.num_threads), _decoding(config, model):
        rankings, _ = title_llm.constrained_rankings(
            model, _prompts(tokenizer, test_rows, dictionary, sft, config), dictionary, num_beams or config.num_beams,
            tokenizer.pad_token_id, length_penalty=length_penalty, item_bonus=item_bonus,
            batch_size=config.decode_batch_size, progress=True)
    return _metrics(title_llm.ranked_metrics(rankings, _targets(test_rows, dictionary)), started, train_report)


def evaluate_bigrec_constrained(model_folder, test_rows, items, item_sids, sft, params, train_report):
    """BIGRec's model decoded over the title dictionary, Hugging Face's length normalisation."""
    config = _config(params)
    title_model = _title_model(model_folder, items, item_sids, ghost_free=False, device=_device(config))
    return _constrained(title_model, test_rows, sft, config, train_report, config.length_penalty)


def train_assistant(items: pd.DataFrame, train_sequences: pd.DataFrame, valid_sequences: pd.DataFrame,
                    test_decodable: pd.DataFrame, valid_ranked: pd.DataFrame, baselines: dict[str, Any],
                    params: dict[str, Any], seed: int):
    """D3's text-free assistant (``llm_baselines.assistant``, trained as in the baselines stage): its item
    log-probs for the test rows (and, with an ``alphas`` grid, the valid rows that choose alpha) with its
    training time, or ``{}`` (Kedro saves no None) when D3 does not use it."""
    from singer_rec.pipelines.baselines.nodes import BaselinesParams

    config = _config(params)
    if not config.uses_assistant:
        return {}
    baselines = from_params(BaselinesParams, baselines, "baselines")
    started = time.perf_counter()
    scored = {"test_sequences": test_decodable}
    if config.alphas is not None:
        scored["valid_sequences (ranked)"] = valid_ranked
    with common.torch_threads(config.num_threads):
        log_probs = title_llm.assistant_log_probs(config.assistant, items["item_id"].astype(str).tolist(),
                                                  train_sequences, valid_sequences, scored,
                                                  baselines.train_config(config.assistant, seed),
                                                  getattr(baselines, config.assistant).model, baselines.max_history,
                                                  device=_device(config))
    return {"log_probs": log_probs["test_sequences"], "valid_log_probs": log_probs.get("valid_sequences (ranked)"),
            "train_s": round(time.perf_counter() - started, 2)}


def _choose_alpha(title_model, valid_rows, sft, config: LLMBaselinesParams, assistant,
                  beams: int) -> tuple[float, dict[float, float]]:
    """D3's alpha: the grid point with the best NDCG@10 on the valid rows, from one search over them."""
    model, tokenizer, dictionary = title_model
    with common.torch_threads(config.num_threads), _decoding(config, model):
        result = title_llm.constrained_search(model, _prompts(tokenizer, valid_rows, dictionary, sft, config), dictionary,
                                              beams, tokenizer.pad_token_id, batch_size=config.decode_batch_size,
                                              progress=True)
    alpha, values = title_llm.select_assistant_weight(result, dictionary, _targets(valid_rows, dictionary),
                                                      assistant["valid_log_probs"], config.alphas)
    logger.info("D3: valid NDCG@10 by alpha (%d rows) %s -> alpha %g", len(valid_rows),
                {a: round(v, 4) for a, v in values.items()}, alpha)
    return alpha, values


def evaluate_d3(model_folder, test_rows, items, item_sids, sft, params, train_report, assistant, valid_rows):
    """D3: summed log-probs without length normalisation, ghost tokens left out, optional assistant
    (weight ``alpha``, or the best of ``alphas`` on valid NDCG@10)."""
    config = _config(params)
    # the assistant only reorders what the search found: search wider so that it can lift an item into the top K
    beams = max(config.num_beams, config.assistant_beams) if assistant else config.num_beams
    title_model = _title_model(model_folder, items, item_sids, ghost_free=True, device=_device(config))  # once: valid and test
    started = time.perf_counter()
    alpha, by_alpha = config.alpha, None
    if assistant and config.alphas is not None:
        alpha, by_alpha = _choose_alpha(title_model, valid_rows, sft, config, assistant, beams)
    select_s = time.perf_counter() - started
    bonus = alpha * assistant["log_probs"] if assistant and alpha > 0 else None
    metrics = _constrained(title_model, test_rows, sft, config, train_report, 0.0, bonus, beams)
    metrics["alpha"] = alpha
    if by_alpha is not None:
        metrics["valid_NDCG@10_by_alpha"] = {str(a): round(v, 6) for a, v in by_alpha.items()}
        metrics["alpha_select_s"] = round(select_s, 2)
    if assistant:
        metrics["wall_time_s"] = round(metrics["wall_time_s"] + assistant["train_s"] + select_s, 2)
        metrics["assistant_s"] = assistant["train_s"]
    return metrics


def collect_llm_baseline_metrics(**per_method: dict[str, float]) -> dict[str, dict[str, float]]:
    """``{method name: metrics}`` in the order given (keys ``<method>_metrics`` of ``METHODS``)."""
    return {METHODS[key.removesuffix("_metrics")]: metrics for key, metrics in per_method.items()}
