"""GRPO update cost: shared-prompt log-probs (``singer_rec.rl.grpo.completion_logprobs``) vs one
full forward per completion (the straightforward implementation), forward + backward, one process.

    python benchmarks/rl/bench_logprobs.py --runs 5

Setting of one demo optimiser step: 16 prompts of ~90 tokens (SID histories), k = 16 SID
completions of 3 tokens each, the demo's scratch model (Qwen2, hidden 128, 2 layers, vocab 2,300).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from singer_rec.rl.grpo import completion_logprobs


def per_row_logprobs(model, prompts, completions, pad_token_id=0):
    """The alternative: right-padded prompt+completion rows, full logits, one row per completion."""
    full = [list(p) + list(c) for p, c in zip(prompts, completions)]
    width = max(map(len, full))
    ids = torch.full((len(full), width), pad_token_id, dtype=torch.long)
    att = torch.zeros((len(full), width), dtype=torch.long)
    for r, s in enumerate(full):
        ids[r, : len(s)] = torch.tensor(s)
        att[r, : len(s)] = 1
    logp = model(input_ids=ids, attention_mask=att).logits.float().log_softmax(-1)
    n = max(map(len, completions))
    out = torch.zeros((len(full), n))
    for r, (p, c) in enumerate(zip(prompts, completions)):
        pos = torch.arange(len(p) - 1, len(p) - 1 + len(c))
        out[r, : len(c)] = logp[r, pos, torch.tensor(c)]
    return out


def per_row_logprobs_kept(model, prompts, completions, pad_token_id=0):
    """The honest alternative (what trl's GRPOTrainer does): one row per completion, left-padded so
    every completion ends in the last column, logits only for the last ``max completion length``
    positions (``logits_to_keep``), log-prob as z[y] - logsumexp(z)."""
    n = max(map(len, completions))
    full = [list(p) + list(c) + [pad_token_id] * (n - len(c)) for p, c in zip(prompts, completions)]
    width = max(map(len, full))
    ids = torch.full((len(full), width), pad_token_id, dtype=torch.long)
    att = torch.zeros((len(full), width), dtype=torch.long)
    for r, (row, c) in enumerate(zip(full, completions)):
        ids[r, width - len(row):] = torch.tensor(row)
        att[r, width - len(row): width - (n - len(c))] = 1
    logits = model(input_ids=ids, attention_mask=att, logits_to_keep=n + 1).logits[:, :-1].float()
    targets = torch.zeros((len(full), n), dtype=torch.long)
    mask = torch.zeros((len(full), n))
    for r, c in enumerate(completions):
        targets[r, : len(c)] = torch.tensor(c)
        mask[r, : len(c)] = 1
    return (logits.gather(-1, targets[..., None]).squeeze(-1) - torch.logsumexp(logits, -1)) * mask


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--prompt-len", type=int, default=90)
    parser.add_argument("--micro", type=int, default=64, help="sequences per forward/backward")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=2300, hidden_size=128, intermediate_size=384, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512))
    gen = torch.Generator().manual_seed(0)
    prompts, completions = [], []
    for _ in range(args.prompts):
        p = torch.randint(10, 2000, (args.prompt_len + int(torch.randint(-10, 10, (1,), generator=gen)),), generator=gen).tolist()
        for _ in range(args.k):
            prompts.append(p)
            completions.append(torch.randint(2000, 2300, (3,), generator=gen).tolist())
    methods = {"shared prompt cache (ours)": lambda p, c: completion_logprobs(model, p, c).logp,
               "one forward per completion, logits only for completion tokens (logits_to_keep)":
                   lambda p, c: per_row_logprobs_kept(model, p, c),
               "one full forward per completion, logits at every position": lambda p, c: per_row_logprobs(model, p, c)}
    check = [fn(prompts[:8], completions[:8]).detach() for fn in methods.values()]
    assert all(torch.allclose(check[0], other, atol=1e-4) for other in check[1:]), "the methods disagree"
    times = {name: [] for name in methods}
    cpu = {name: [] for name in methods}
    for _ in range(args.runs):
        for name, fn in methods.items():  # interleaved, same process
            start, cpu_start = time.perf_counter(), time.process_time()
            for i in range(0, len(prompts), args.micro):
                model.zero_grad()
                fn(prompts[i : i + args.micro], completions[i : i + args.micro]).sum().backward()
            times[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - cpu_start)
    base, cpu_base = statistics.median(times["shared prompt cache (ours)"]), statistics.median(cpu["shared prompt cache (ours)"])
    print(f"{len(prompts)} sequences ({args.prompts} prompts x k={args.k}), micro-batch {args.micro}, median of {args.runs}, "
          f"torch threads {torch.get_num_threads()}")
    print("| method | wall s (median) | ratio | CPU s (median) | ratio |\n|---|---|---|---|---|")
    for name in methods:
        wall, used = statistics.median(times[name]), statistics.median(cpu[name])
        print(f"| {name} | {wall:.2f} | {wall / base:.1f}× | {used:.2f} | {used / cpu_base:.1f}× |")


if __name__ == "__main__":
    main()
