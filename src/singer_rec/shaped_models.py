"""Qwen2.5-shaped model folders built from a config, with no download.

The paper's LLM is Qwen2.5-Instruct-0.5B. Its weights cannot be fetched here, but its *shape* can
be rebuilt: the architecture from the config, and a byte-level BPE tokenizer with the same number of
tokens and the same special tokens, whose embedding matrix has more rows (151,936) than the
tokenizer has tokens (151,665), tied to the output head. That padding is what a pretrained model
brings and a scratch model does not, so the ``hf`` preset, memory at a 152k vocabulary and the SID
rows are checked on such folders (tests, ``benchmarks/gpu_check.sh``, the memory benchmark).

``write_qwen25_folder(folder, "0.5b")`` writes the paper's shape with random weights;
``write_qwen25_folder(folder, "tiny")`` a two-layer one for tests. The weights are random, with
one twist that makes padding rows visible: the rows beyond the tokenizer are zero, as in a
pretrained checkpoint whose padding rows were never trained.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

QWEN25_SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>",
    "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
)
PAD_TOKEN, EOS_TOKEN = "<|endoftext|>", "<|im_end|>"  # as in Qwen2.5-Instruct

# name -> (Qwen2Config fields, tokenizer tokens incl. special ones); 0.5b = Qwen2.5-0.5B-Instruct's config.json
SHAPES: dict[str, tuple[dict, int]] = {
    "0.5b": ({"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
              "num_key_value_heads": 2, "max_position_embeddings": 32768, "rope_theta": 1000000.0,
              "rms_norm_eps": 1e-6, "vocab_size": 151936, "tie_word_embeddings": True}, 151665),
    # same head ratio (GQA 2:1 here), padded tied vocabulary; small enough for a CPU test
    "tiny": ({"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "max_position_embeddings": 512, "rope_theta": 1000000.0,
              "rms_norm_eps": 1e-6, "vocab_size": 1088, "tie_word_embeddings": True}, 1024),
}

DEFAULT_CORPUS = (
    "Recommend the next item for this user. Widget deluxe tool kit, office paper, scientific lab glass, "
    "brand catalogue of products with a title and a description. The user bought these items in order.",
)


def qwen25_style_tokenizer(num_tokens: int, corpus: Iterable[str] = DEFAULT_CORPUS):
    """A byte-level BPE tokenizer of exactly ``num_tokens`` tokens with Qwen2.5's special tokens last.

    Merges are learnt from ``corpus`` first; when the corpus is too small for the size asked (it is, for
    152k), further merges of existing tokens fill the vocabulary deterministically. Text encodes as
    with any byte-level BPE (no unknown token).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    regular = num_tokens - len(QWEN25_SPECIAL_TOKENS)
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if regular < len(alphabet):
        raise ValueError(f"num_tokens must be >= {len(alphabet) + len(QWEN25_SPECIAL_TOKENS)}, got {num_tokens}")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=min(regular, 8000), initial_alphabet=alphabet, show_progress=False)
    bpe.train_from_iterator(list(corpus) * 4, trainer=trainer)
    learnt = json.loads(bpe.to_str())["model"]
    vocab: dict[str, int] = dict(learnt["vocab"])
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in learnt["merges"]]
    singles = sorted(alphabet)
    # fill: pairs (token, byte char) in a fixed order until the vocabulary has its size
    bases = sorted(vocab, key=vocab.get)
    position = 0
    while len(vocab) < regular:
        base = bases[position // len(singles)]
        char = singles[position % len(singles)]
        position += 1
        if base + char not in vocab:
            vocab[base + char] = len(vocab)
            merges.append((base, char))
            bases.append(base + char)
    model = models.BPE(vocab=vocab, merges=merges, ignore_merges=False)
    tokenizer = Tokenizer(model)
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(list(QWEN25_SPECIAL_TOKENS))
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token=PAD_TOKEN, eos_token=EOS_TOKEN)
    assert len(wrapped) == num_tokens, (len(wrapped), num_tokens)
    return wrapped


def write_qwen25_folder(folder: str | os.PathLike, shape: str = "tiny", *, padding_rows: int | None = None,
                        tie_word_embeddings: bool | None = None, num_hidden_layers: int | None = None, seed: int = 0,
                        corpus: Iterable[str] = DEFAULT_CORPUS) -> Path:
    """Write a Qwen2.5-shaped ``hf`` model folder (config, random safetensors, tokenizer); returns it.

    ``padding_rows``: embedding rows beyond the tokenizer (default: the shape's, 271 for 0.5b, 64 for
    tiny); they are zero, like never-trained rows. ``tie_word_embeddings`` and
    ``num_hidden_layers`` (a shallow model of the 0.5b's width and vocabulary) override the shape's.
    """
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; known: {sorted(SHAPES)}")
    fields, num_tokens = SHAPES[shape]
    fields = dict(fields)
    if padding_rows is not None:
        fields["vocab_size"] = num_tokens + int(padding_rows)
    if tie_word_embeddings is not None:
        fields["tie_word_embeddings"] = bool(tie_word_embeddings)
    if num_hidden_layers is not None:
        fields["num_hidden_layers"] = int(num_hidden_layers)
    tokenizer = qwen25_style_tokenizer(num_tokens, corpus)
    config = Qwen2Config(**fields, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=tokenizer.pad_token_id, use_sliding_window=False)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    with torch.no_grad():
        model.get_input_embeddings().weight[num_tokens:] = 0.0
        if not config.tie_word_embeddings:
            model.get_output_embeddings().weight[num_tokens:] = 0.0
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def main(argv: list[str] | None = None) -> None:
    """``python -m singer_rec.shaped_models FOLDER [--shape 0.5b|tiny]``: write a shaped folder."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("folder")
    parser.add_argument("--shape", default="tiny", choices=sorted(SHAPES))
    parser.add_argument("--untied", action="store_true", help="untie the input and output embeddings")
    args = parser.parse_args(argv)
    path = write_qwen25_folder(args.folder, args.shape, tie_word_embeddings=False if args.untied else None)
    print(f"wrote a Qwen2.5-shaped ({args.shape}) model folder to {path}")


if __name__ == "__main__":
    main()
