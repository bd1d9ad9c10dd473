"""Where does RL's gradient point, and is it more than noise? A first-order probe at the start model.

    python benchmarks/quality/rl_direction_probe.py data/office/06_models/sft_model \
        data/office/05_model_input/rl_dataset.parquet data/office/05_model_input/sft_dataset_valid.parquet \
        --rl-settings '{"learning_rate": 5e-5, "batch_size": 32, "max_steps": 100, "autocast": "auto", "seed": 44}' \
        --prompts 1024 --valid-rows 2000 --out probe.json

What it does, without changing any weight file:

1. Rolls out the model on ``--prompts`` seeded rl_dataset prompts in batches of ``batch_size`` (the RL
   run's rollouts: beams, curriculum guide, rewards; batch b uses the schedule's step
   (b + 0.5) · max_steps / batches, so the sample covers the whole curriculum) and takes, per batch,
   the gradient of the GRPO loss at the start model (ratio 1, KL gradient 0; dropout off so that
   the gradient is the model's, not a dropout draw). The same prompts' SFT gradient (cross-entropy
   of the target answer) is taken beside it as the control.
2. Noise: the mean pairwise cosine of the per-batch gradients, and the gradient noise scale
   B = tr(Σ)/|G|² (McCandlish et al. 2018) from the per-batch and the mean gradient: the batch size
   at which a step's signal equals its noise.
3. Directions, each probed as one Adam-like step θ − η·d for several η: ``sign`` (the first Adam
   step on the mean gradient: what RL at the paper's large batch would do first) and ``drift``
   (G / RMS of the per-batch gradients: Adam's expected update direction at the RL run's batch,
   i.e. where many small noisy steps drift on average). Split by group: ``easy`` (the target in the
   unguided beams; itself split into the target's candidate, pushed up, and the others, pushed
   down) and ``hard`` (the guided groups, SID-level rewards). Each point is ranked on
   the same seeded valid rows (beam 20) and compared with the start model row by row (paired bootstrap).
   ``--valid-control N`` adds the SFT gradient of N other valid rows (never the ranked ones): a
   direction that fits the valid distribution, to show what one step can gain where one exists.

Valid only: nothing here reads test.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from singer_rec.metrics import metrics_from_ranks, paired_bootstrap
from singer_rec.modeling import load_model_folder
from singer_rec.rl.grpo import completion_logprobs, group_advantages, grpo_loss
from singer_rec.training.rl.examples import Example, build_dictionaries, build_examples
from singer_rec.training.rl.loop import prompt_order
from singer_rec.training import common
from singer_rec.training.rl.rollouts import amp_dtype, has_zero_advantage, rollout
from singer_rec.training.rl.settings import RL_ALIGNMENT, RLSettings, validate_settings
from singer_rec.training.sft import SFTSettings
from singer_rec.training.validation import RankingValidation, seeded_sample


def flat_grad(params) -> torch.Tensor:
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float() for p in params])


def group_sequences(groups, examples, keep) -> list[tuple[list[int], list[int], float]]:
    """(prompt, completion, advantage) of the candidates of ``groups`` that ``keep(group, is_target)``
    accepts; advantages are Eq. 1 over the whole group, so the parts of a split add up to the gradient."""
    sequences = []
    for group, example in zip(groups, examples):
        for completion, candidate, advantage in zip(group.completions, group.candidates,
                                                    group_advantages(group.rewards).tolist()):
            if keep(group, tuple(candidate) == example.target):
                sequences.append((group.prompt_ids, completion, advantage))
    return sequences


# the RL gradient's parts: groups with the target among the unguided beams (the target's candidate,
# the other candidates) and the hard (guided / SID-level reward) groups
PARTS = {
    "easy-target": lambda group, is_target: not group.hard and is_target,
    "easy-others": lambda group, is_target: not group.hard and not is_target,
    "hard": lambda group, is_target: group.hard,
}


def loss_gradient(policy, params, sequences, divisor: int, pad_id: int, settings: RLSettings, chunk: int = 128):
    """Gradient of the GRPO loss at ratio 1 (divided by the batch's sequence count, as the run; no KL term)."""
    policy.zero_grad(set_to_none=True)
    for i in range(0, len(sequences), chunk):
        part = sequences[i : i + chunk]
        out = completion_logprobs(policy, [s[0] for s in part], [s[1] for s in part], pad_id)
        advantages = torch.tensor([s[2] for s in part], dtype=torch.float32)
        grpo_loss(out.logp, out.logp.detach(), None, advantages, out.mask, clip_eps=settings.epsilon, beta=0.0,
                  num_sequences=divisor).loss.backward()
    return flat_grad(params)


def sft_gradient(policy, params, examples, pad_id: int, chunk: int = 64) -> torch.Tensor:
    """Cross-entropy of each example's target answer (token mean per answer, mean over examples)."""
    policy.zero_grad(set_to_none=True)
    for i in range(0, len(examples), chunk):
        part = examples[i : i + chunk]
        out = completion_logprobs(policy, [e.prompt_ids for e in part], [list(e.target) for e in part], pad_id)
        per_answer = (out.logp * out.mask).sum(1) / out.mask.sum(1).clamp(min=1)
        (-per_answer.sum() / len(examples)).backward()
    return flat_grad(params)


def noise_stats(batch_grads: list[torch.Tensor], batch_size: int) -> dict[str, float]:
    """Mean pairwise cosine of per-batch gradients and the noise scale B = tr(Σ)/|G|² (per prompt)."""
    g = torch.stack(batch_grads).double()
    n = g.shape[0]
    mean = g.mean(0)
    unit = g / g.norm(dim=1, keepdim=True).clamp(min=1e-30)
    cos = unit @ unit.T
    pairwise = float((cos.sum() - cos.diagonal().sum()) / (n * (n - 1)))
    batch_sq = float((g.norm(dim=1) ** 2).mean())                      # E|g_b|² = |G|² + tr(Σ)/b
    mean_sq = float(mean.norm() ** 2)                                   # E|Ḡ|² = |G|² + tr(Σ)/(n b)
    big = n * batch_size
    true_sq = (big * mean_sq - batch_size * batch_sq) / (big - batch_size)
    trace = (batch_sq - mean_sq) / (1 / batch_size - 1 / big)
    return {"pairwise_cosine": pairwise, "signal_sq": true_sq, "trace_sigma": trace,
            "noise_scale_prompts": trace / true_sq if true_sq > 1e-12 * batch_sq else None,  # None: no signal measurable
            "batches": n, "batch_size": batch_size}


def held_out_valid_examples(frame: pd.DataFrame, sid_map, tokenizer, ranked_rows: int, seed: int, count: int,
                            max_length: int, vocab_size: int, source: str) -> list[Example]:
    """``count`` seeded valid rows outside the ``ranked_rows`` that ``RankingValidation`` ranks (the same
    seeded sample of the SID-answer rows), as SFT examples: the control direction that fits the
    valid distribution without touching the rows it is judged on. The prompts are encoded as the
    valid ranking encodes them."""
    from singer_rec.training.rl.examples import sid_ids

    sids = sorted(set(sid_map.values()))  # RankingValidation's item order: its targets index it
    frame = frame[frame["answer"].isin(sids)].reset_index(drop=True)
    control = RankingValidation.build(tokenizer, sid_map, frame.iloc[unranked_rows(len(frame), ranked_rows, seed, count)],
                                      None, 1, max_length, seed, vocab_size, needed_for="the valid control", source=source)
    return [Example(prompt, sid_ids(tokenizer, sids[target]), True, "semantic")
            for prompt, target in zip(control.prompts, control.targets)]


def unranked_rows(num_rows: int, ranked_rows: int, seed: int, count: int) -> list[int]:
    """``count`` seeded row positions outside those that ``seeded_sample(frame, ranked_rows, seed)`` ranks."""
    ranked = set(seeded_sample(pd.DataFrame({"row": range(num_rows)}), ranked_rows, seed)["row"])
    rest = [i for i in range(num_rows) if i not in ranked]
    if not rest:
        raise SystemExit(f"--valid-control: all {num_rows} valid rows are ranked (--valid-rows {ranked_rows})")
    return np.random.default_rng(seed + 1).permutation(rest)[:count].tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("rl_dataset", type=Path)
    parser.add_argument("valid", type=Path, help="sft_dataset_valid parquet (semantic rows)")
    parser.add_argument("--rl-settings", default="{}", help="json: rl.settings of the run being probed")
    parser.add_argument("--prompts", type=int, default=1024)
    parser.add_argument("--valid-rows", type=int, default=2000)
    parser.add_argument("--etas", default="1e-4,3e-4,1e-3,3e-3")
    parser.add_argument("--drift-etas", default="1.25e-3,2.5e-3,5e-3,1e-2",
                        help="η for the drift direction (2.5e-3 = Σ lr of 100 cosine steps from 5e-5)")
    parser.add_argument("--valid-control", type=int, default=0,
                        help="N > 0: also probe the SFT gradient of N valid rows outside the ranked ones (a control)")
    parser.add_argument("--directions", default="", help="comma list of the directions to probe (default: all)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    settings = validate_settings(RLSettings.from_dict(json.loads(args.rl_settings)))
    torch.manual_seed(settings.seed)
    policy, tokenizer, meta = load_model_folder(args.model)
    policy.eval()
    params = [p for p in policy.parameters() if p.requires_grad]
    start_weights = [p.detach().clone() for p in params]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    sid_dict, title_dict, _ = build_dictionaries(tokenizer, meta, policy.config.vocab_size, RL_ALIGNMENT[settings.alignment])
    examples = build_examples(pd.read_parquet(args.rl_dataset), tokenizer, sid_dict, title_dict, settings)
    chosen = [examples[i] for i in prompt_order(len(examples), 0, settings.seed)[: args.prompts]]
    total_steps = settings.max_steps or settings.epochs * math.ceil(len(examples) / settings.batch_size)
    batches = [chosen[i : i + settings.batch_size] for i in range(0, len(chosen), settings.batch_size)]
    if len(batches) < 2:
        raise SystemExit(f"--prompts {len(chosen)}: the noise estimate needs two or more batches of {settings.batch_size}")

    per_batch_rl, per_batch_sft = [], []
    sums = dict.fromkeys(PARTS)
    counts = {"groups": 0, "easy": 0, "hard": 0, "guided": 0, "zero_advantage": 0, "title_groups": 0,
              "zero_advantage_title": 0, "zero_advantage_guided": 0, "zero_advantage_unguided_sid": 0}
    for b, batch in enumerate(batches):
        step = max(1, round((b + 0.5) * total_steps / len(batches)))
        with torch.no_grad():
            groups = rollout(policy, batch, sid_dict, title_dict, settings, step, total_steps, pad_id,
                             torch.Generator().manual_seed(settings.seed * 7919 + step))
        divisor = sum(len(g.completions) for g in groups)
        parts = {}
        for name, keep in PARTS.items():
            sequences = group_sequences(groups, batch, keep)
            parts[name] = (loss_gradient(policy, params, sequences, divisor, pad_id, settings)
                           if sequences else torch.zeros(sum(p.numel() for p in params)))
            sums[name] = parts[name] if sums[name] is None else sums[name] + parts[name]
        per_batch_rl.append(sum(parts.values()))
        per_batch_sft.append(sft_gradient(policy, params, batch, pad_id))
        counts["groups"] += len(groups)
        counts["easy"] += sum(not g.hard for g in groups)
        counts["hard"] += sum(g.hard for g in groups)
        counts["guided"] += sum(g.guide > 0 for g in groups)
        flat = [g for g in groups if has_zero_advantage(g)]
        counts["zero_advantage"] += len(flat)
        counts["title_groups"] += sum(not g.is_sid for g in groups)
        counts["zero_advantage_title"] += sum(not g.is_sid for g in flat)
        counts["zero_advantage_guided"] += sum(g.guide > 0 for g in flat)
        counts["zero_advantage_unguided_sid"] += sum(g.is_sid and g.guide == 0 for g in flat)
        print(f"batch {b + 1}/{len(batches)} (schedule step {step}): {time.perf_counter() - started:.0f} s", flush=True)
    policy.zero_grad(set_to_none=True)

    def mean(gs):
        return torch.stack(gs).mean(0)

    rl_mean, sft_mean = mean(per_batch_rl), mean(per_batch_sft)
    rms_rl = torch.stack(per_batch_rl).pow(2).mean(0).sqrt()
    rms_sft = torch.stack(per_batch_sft).pow(2).mean(0).sqrt()
    n = len(batches)
    sums["easy"] = sums["easy-target"] + sums["easy-others"]
    directions = {
        "sft sign": (sft_mean.sign(), args.etas),
        "rl sign": (rl_mean.sign(), args.etas),
        "rl-easy sign": ((sums["easy"] / n).sign(), args.etas),
        "rl-hard sign": ((sums["hard"] / n).sign(), args.etas),
        "rl-easy-target sign": ((sums["easy-target"] / n).sign(), args.etas),
        "rl-easy-others sign": ((sums["easy-others"] / n).sign(), args.etas),
        "sft drift": (sft_mean / (rms_sft + 1e-12), args.drift_etas),
        "rl drift": (rl_mean / (rms_rl + 1e-12), args.drift_etas),
    }

    def cosine(a, b):
        return float(a.double() @ b.double() / (a.double().norm() * b.double().norm()).clamp(min=1e-30))

    result = {
        "model": str(args.model), "settings": json.loads(args.rl_settings), "prompts": len(chosen),
        "valid_rows": args.valid_rows, "counts": counts,
        "noise": {"rl": noise_stats(per_batch_rl, settings.batch_size), "sft": noise_stats(per_batch_sft, settings.batch_size)},
        "cosines": {"rl_vs_sft": cosine(rl_mean, sft_mean), "easy_vs_hard": cosine(sums["easy"], sums["hard"]),
                    "rl_vs_easy": cosine(rl_mean, sums["easy"]), "rl_vs_hard": cosine(rl_mean, sums["hard"]),
                    "easy_target_vs_sft": cosine(sums["easy-target"], sft_mean),
                    "easy_others_vs_sft": cosine(sums["easy-others"], sft_mean)},
        "drift_magnitude": {"rl": float((rl_mean / (rms_rl + 1e-12)).abs().mean()),
                            "sft": float((sft_mean / (rms_sft + 1e-12)).abs().mean())},
        "gradient_seconds": round(time.perf_counter() - started, 1),
    }
    del per_batch_rl, per_batch_sft
    valid_frame = pd.read_parquet(args.valid, columns=["prompt", "answer"])
    max_length = int((meta.get("train") or {}).get("max_length") or SFTSettings.max_length)  # as the RL run
    vocab_size = max(len(tokenizer), policy.config.vocab_size)
    validation = RankingValidation.build(tokenizer, meta["sid_map"], valid_frame, args.valid_rows, settings.valid_num_beams,
                                         max_length, settings.seed, vocab_size, needed_for="the probe", source=str(args.valid))
    if args.valid_control:
        control = held_out_valid_examples(valid_frame, meta["sid_map"], tokenizer, args.valid_rows, settings.seed,
                                          args.valid_control, max_length, vocab_size, str(args.valid))
        directions["valid-sft sign"] = (sft_gradient(policy, params, control, pad_id).sign(), args.etas)
        policy.zero_grad(set_to_none=True)
        result["valid_control_rows"] = len(control)
    if args.directions:
        unknown = set(args.directions.split(",")) - set(directions)
        if unknown:
            raise SystemExit(f"--directions: unknown {sorted(unknown)}; expected some of {list(directions)}")
        directions = {k: v for k, v in directions.items() if k in args.directions.split(",")}
    amp = amp_dtype(policy, settings)
    single = common.Dist()

    def valid_ranks():
        return validation.ranks(policy, single, 32, amp)

    base = valid_ranks()
    result["start"] = metrics_from_ranks(base)
    print(f"start model: valid NDCG@10 {result['start']['NDCG@10']:.4f} ({len(base)} rows)", flush=True)
    result["points"] = []
    for name, (direction, etas) in directions.items():
        for eta in [float(x) for x in etas.split(",")]:
            with torch.no_grad():
                offset = 0
                for p, w in zip(params, start_weights):
                    # descend the loss: the gradient of −reward (RL) and of cross-entropy (SFT)
                    p.copy_(w - eta * direction[offset : offset + p.numel()].view_as(p).to(p.dtype))
                    offset += p.numel()
            ranks = valid_ranks()
            point = {"direction": name, "eta": eta, **metrics_from_ranks(ranks),
                     "delta_ndcg10": paired_bootstrap(base, ranks, "NDCG@10"),
                     "delta_hr10": paired_bootstrap(base, ranks, "HR@10")}
            result["points"].append(point)
            d = point["delta_ndcg10"]
            print(f"{name:14s} η={eta:.1e}: NDCG@10 {point['NDCG@10']:.4f}  Δ {d['mean']:+.4f} "
                  f"[{d['ci95_low']:+.4f}, {d['ci95_high']:+.4f}]  ({time.perf_counter() - started:.0f} s)", flush=True)
    with torch.no_grad():
        for p, w in zip(params, start_weights):
            p.copy_(w)
    result["seconds"] = round(time.perf_counter() - started, 1)
    args.out.write_text(json.dumps(result, indent=1), encoding="utf-8")
    print(json.dumps({k: result[k] for k in ("counts", "noise", "cosines", "drift_magnitude", "start")}, indent=1))


if __name__ == "__main__":
    main()
