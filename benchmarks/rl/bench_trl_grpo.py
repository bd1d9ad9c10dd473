"""Our RL optimiser step against trl's ``GRPOTrainer`` step, side by side in one process.

The world is ``bench_rl_step.py``'s (real Industrial items, titles and MiniOneRec SIDs, the
rl_dataset of all six tasks, the Industrial SFT preset's model with random weights) and the
Industrial CPU recipe (32 prompts x k = 16, micro-batches of 128 sequences), with ``sampling: beam``:
every group is then exactly k completions, which is all ``GRPOTrainer`` can express (a guided
hard sample has fewer continuations under its forced prefix than k, so the curriculum is left out
of the comparison). Prompts whose text repeats are dropped, so a prompt names its example.

- **ours**: one step of the trainer's own pieces, as ``train_grpo`` runs them: ``rollout`` (our
  constrained beam search over the item and title dictionaries, our rewards) then
  ``policy_update`` (shared prompt cache, reference log-probs, forward/backward, AdamW).
- **trl**: ``GRPOTrainer.train`` with a ``rollout_func`` that runs the same ``rollout`` on the
  trainer's model and hands trl the k completions per prompt, our rewards riding along as an extra
  field to the reward function; ``loss_type="grpo"``, ``scale_rewards="group"``, the same beta,
  epsilon, ``num_iterations=1``, learning rate and cosine schedule, AdamW, clipping at 1, float32,
  no gradient checkpointing (trl's default is on, slower still), no logging.

Both start from the same weights and see the same prompts at every step (trl's dataset is our
batches in order, ``shuffle_dataset=False``); the steps interleave (trl's step i, then ours from a
trainer callback). The first step of each is a warm-up, left out of the medians. Clocks: wall and
this process's CPU seconds (steadier on a shared machine); the phase split of trl's step comes
from timers wrapped around its methods.

    python benchmarks/rl/bench_trl_grpo.py --steps 3 --threads 1 --set batch_size=16   # benchmarks/README.md
    python benchmarks/rl/bench_trl_grpo.py --steps 3 --threads 1 --set batch_size=16 --trl-head completion-only
    python benchmarks/rl/bench_trl_grpo.py --steps 4 --threads 1                       # the recipe's 32 prompts
    python benchmarks/rl/bench_trl_grpo.py --steps 2 --set batch_size=2 micro_batch_size=16   # a smoke run
"""
from __future__ import annotations

import argparse
import copy
import functools
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict

import torch

from bench_rl_step import MINIONEREC, build, parse_overrides, settings_for
from singer_rec.training import common
from singer_rec.training import rl as rlt


class Clock:
    """Wall and process-CPU seconds added up per named phase."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)

    def wrap(self, name: str, func):
        """``func`` with its time added to phase ``name``."""

        @functools.wraps(func)
        def timed(*args, **kwargs):
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return func(*args, **kwargs)
            finally:
                self.wall[name] += time.perf_counter() - wall
                self.cpu[name] += time.process_time() - cpu

        return timed

    def take(self) -> tuple[dict[str, float], dict[str, float]]:
        """The phases so far, and reset."""
        taken = (dict(self.wall), dict(self.cpu))
        self.wall.clear()
        self.cpu.clear()
        return taken


def unique_prompt_world(frame, tokenizer, meta, policy, settings):
    """(examples, their prompt texts, sid_dict, title_dict) with one example per distinct prompt text."""
    frame = frame.drop_duplicates("prompt").reset_index(drop=True)
    sid_dict, title_dict, _ = rlt.build_dictionaries(tokenizer, meta, policy.config.vocab_size, True)
    examples = rlt.build_examples(frame, tokenizer, sid_dict, title_dict, settings)
    if len(examples) != len(frame):
        raise ValueError("alignment must keep every task: the benchmark pairs examples with prompt rows")
    return examples, list(frame["prompt"]), sid_dict, title_dict


def rollout_rows(groups, k: int) -> dict:
    """Groups as trl's rollout output: one row per completion, k rows per prompt, our rewards as an extra field."""
    out = {"prompt_ids": [], "completion_ids": [], "logprobs": None, "beam_reward": []}
    for group in groups:
        if len(group.completions) != k:
            raise ValueError(f"a group of {len(group.completions)} completions: trl needs exactly k = {k}")
        for completion, reward in zip(group.completions, group.rewards):
            out["prompt_ids"].append(list(group.prompt_ids))
            out["completion_ids"].append(list(completion))
            out["beam_reward"].append(reward)
    return out


def beam_reward(prompts, completions, beam_reward, **kwargs):
    """trl's reward function: the rewards our rollout computed (they need the group and the beam ranks)."""
    return list(beam_reward)


def make_rollout_func(by_text, sid_dict, title_dict, settings, pad_id, total_steps, clock, seen):
    """A trl ``rollout_func``: our constrained beam rollout of the distinct prompts (trl passes each k times)."""
    k = settings.num_generations

    def rollout_func(prompts, trainer):
        distinct = prompts[::k]
        if list(prompts) != [p for p in distinct for _ in range(k)]:
            raise ValueError("trl passed prompts that are not k consecutive copies")
        model = trainer.model
        was_training = model.training
        model.eval()
        with torch.no_grad():
            groups = clock.wrap("rollout", rlt.rollout)(
                model, [by_text[p] for p in distinct], sid_dict, title_dict, settings,
                trainer.state.global_step + 1, total_steps, pad_id)
        model.train(was_training)
        seen.append(groups)
        return rollout_rows(groups, k)

    return rollout_func


def instrument_trl(trainer, clock: Clock, padding: list) -> None:
    """Time trl's phases: generation + scoring (rollout inside), reference log-probs, loss forward, backward."""
    generate = trainer._generate_and_score_completions

    def generate_and_record(inputs):
        out = generate(inputs)
        mask = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)
        padding.append((int(mask.sum()), mask.numel(), int(out["completion_mask"].sum())))
        return out

    trainer._generate_and_score_completions = clock.wrap("generate_and_score", generate_and_record)
    logps = trainer._get_per_token_logps_and_entropies

    def per_token_logps(model, *args, **kwargs):
        if model is not trainer.ref_model and torch.is_grad_enabled():  # the loss's forward, timed with the loss
            return logps(model, *args, **kwargs)
        name = "reference_logps" if model is trainer.ref_model else "old_policy_logps"
        return clock.wrap(name, logps)(model, *args, **kwargs)

    trainer._get_per_token_logps_and_entropies = per_token_logps
    trainer.compute_loss = clock.wrap("policy_forward_and_loss", trainer.compute_loss)
    trainer.accelerator.backward = clock.wrap("backward", trainer.accelerator.backward)


def trl_settings(settings: rlt.RLSettings, steps: int) -> dict:
    """``GRPOConfig`` keywords for our settings: our loss (``tests/rl/test_trl_grpo_equivalence.py``),
    our batch as trl's gradient accumulation of equal micro-batches, our optimiser and schedule."""
    k = settings.num_generations
    return dict(
        loss_type="grpo", scale_rewards="group", beta=settings.beta, epsilon=settings.epsilon,
        num_iterations=settings.num_iterations, num_generations=k, temperature=1.0, use_bias_correction_kl=False,
        per_device_train_batch_size=settings.micro_batch_size,
        gradient_accumulation_steps=settings.batch_size * k // settings.micro_batch_size,
        learning_rate=settings.learning_rate, lr_scheduler_type="cosine", weight_decay=settings.weight_decay,
        max_grad_norm=settings.max_grad_norm, max_steps=steps, seed=settings.seed,
        # float32 and no recomputation, as ours; no logging, saving or shuffling inside the timed steps
        gradient_checkpointing=False, bf16=False, use_cpu=True, report_to="none", logging_steps=10 ** 6,
        save_strategy="no", shuffle_dataset=False, disable_tqdm=True, dataloader_num_workers=0)


def trl_phases(cpu: dict[str, float], step: float) -> dict[str, float]:
    """trl's step split into disjoint phases (the timers nest: rollout and reference sit inside generate)."""
    generate = cpu.get("generate_and_score", 0.0)
    rollout, reference = cpu.get("rollout", 0.0), cpu.get("reference_logps", 0.0)
    old = cpu.get("old_policy_logps", 0.0)  # trl skips them when num_iterations = 1, as we do
    # compute_loss's own forward is inside policy_forward_and_loss; training_step = that + backward
    forward, backward = cpu.get("policy_forward_and_loss", 0.0), cpu.get("backward", 0.0)
    return {
        "rollout (our beam search)": rollout,
        "reference log-probs": reference,
        "old-policy log-probs": old,
        "generation bookkeeping (padding, rewards, advantages, metrics, decoding)": generate - rollout - reference - old,
        "policy forward + loss": forward,
        "backward": backward,
        "optimizer, clipping, trainer loop": step - generate - forward - backward,
    }


def our_phases(seconds: dict[str, float]) -> dict[str, float]:
    """Our PhaseTimer's names, grouped like trl's."""
    return {
        "rollout (our beam search)": sum(v for k, v in seconds.items() if k.startswith("rollout")),
        "reference log-probs": seconds.get("logp_old_ref", 0.0),  # holds the old log-probs too when μ > 1
        "old-policy log-probs": 0.0,
        "generation bookkeeping (padding, rewards, advantages, metrics, decoding)": seconds.get("rewards", 0.0),
        "policy forward + loss": seconds.get("policy_forward", 0.0),
        "backward": seconds.get("backward", 0.0),
        "optimizer, clipping, trainer loop": seconds.get("optimizer", 0.0),
    }


def same_completions(a, b) -> float:
    """Share of groups whose completions are the same in both rollouts."""
    return sum(x.completions == y.completions for x, y in zip(a, b)) / max(1, len(a))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4, help="optimiser steps of each (the first is a warm-up)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", nargs="*", default=[], help="rl settings overrides, key=value")
    parser.add_argument("--trl-head", choices=["all-positions", "completion-only"], default="all-positions",
                        help="trl's LM head: all-positions (what it does without Triton, i.e. on a CPU) or "
                             "completion-only (its CUDA/XPU path, forced here)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is marked experimental
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    if args.trl_head == "completion-only":
        import trl.trainer.utils

        trl.trainer.utils._use_triton = lambda device: True  # the fused head then scores the labelled positions only

    if not MINIONEREC.is_dir():
        sys.exit(f"{MINIONEREC} not found: the benchmark uses the real Industrial items and SIDs")
    started = time.perf_counter()
    policy, tokenizer, meta, frame = build(args.seed)
    settings = settings_for(args.steps, {"sampling": "beam", **parse_overrides(args.set)}, args.seed)
    settings = rlt.validate_settings(settings, len(meta["sid_map"]))
    k, pad_id = settings.num_generations, tokenizer.pad_token_id
    if (settings.batch_size * k) % settings.micro_batch_size:
        sys.exit("batch_size * k must be a multiple of micro_batch_size (trl's gradient accumulation)")
    examples, texts, sid_dict, title_dict = unique_prompt_world(frame, tokenizer, meta, policy, settings)
    order = rlt.epoch_order(len(examples), 0, settings.seed)[: settings.batch_size * args.steps]
    batches = [[examples[i] for i in order[s * settings.batch_size:(s + 1) * settings.batch_size]]
               for s in range(args.steps)]
    by_text = dict(zip(texts, examples))
    reference = copy.deepcopy(policy).eval().requires_grad_(False)
    trl_policy = copy.deepcopy(policy)
    print(f"# world: {len(examples)} distinct prompts, {sum(not e.is_sid for e in examples) / len(examples):.0%} "
          f"title answers, vocab {len(tokenizer)}, {sum(p.numel() for p in policy.parameters()) / 1e6:.1f}M params, "
          f"built in {time.perf_counter() - started:.0f} s")
    print(f"# settings: batch {settings.batch_size} prompts, k {k}, micro {settings.micro_batch_size}, sampling "
          f"{settings.sampling}, trl head {args.trl_head}, torch threads {args.threads}, load average {os.getloadavg()}")

    optimizer, scheduler = common.optimizer_and_schedule(policy, settings.learning_rate, settings.weight_decay,
                                                         args.steps)
    ours: list[dict] = []
    our_groups: list = []

    def our_step(step: int) -> None:
        timer = rlt.PhaseTimer()
        timer.clock = time.process_time  # CPU seconds per phase, like the step totals
        wall, cpu = time.perf_counter(), time.process_time()
        with torch.no_grad():
            groups = rlt.rollout(policy, batches[step - 1], sid_dict, title_dict, settings, step, args.steps, pad_id,
                                 timer=timer)
        rlt.policy_update(policy, reference, groups, settings, optimizer, scheduler, pad_id, common.Dist(), timer)
        ours.append({"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu,
                     "phases": our_phases(dict(timer.seconds))})
        our_groups.append(groups)

    clock, padding, trl_groups, trl_steps = Clock(), [], [], []
    mark = {"wall": 0.0, "cpu": 0.0}

    class Interleave(TrainerCallback):
        """End of trl's step i: record it, then run our step i (outside trl's clock)."""

        def on_step_end(self, args_, state, control, **kwargs):
            wall, cpu = time.perf_counter() - mark["wall"], time.process_time() - mark["cpu"]
            _, phases = clock.take()
            trl_steps.append({"wall": wall, "cpu": cpu, "phases": trl_phases(phases, cpu)})
            our_step(state.global_step)
            print(f"# step {state.global_step}: trl {trl_steps[-1]['cpu']:.1f} CPU s ({trl_steps[-1]['wall']:.1f} wall), "
                  f"ours {ours[-1]['cpu']:.1f} CPU s ({ours[-1]['wall']:.1f} wall); load average {os.getloadavg()}",
                  flush=True)
            mark["wall"], mark["cpu"] = time.perf_counter(), time.process_time()

    with tempfile.TemporaryDirectory() as tmp:
        reference.save_pretrained(tmp)  # trl builds its reference model from the policy's config path
        trl_policy.config._name_or_path = tmp
        config = GRPOConfig(output_dir=f"{tmp}/trl", **trl_settings(settings, args.steps))
        dataset = Dataset.from_dict({"prompt": [texts[i] for i in order]})
        trainer = GRPOTrainer(
            model=trl_policy, reward_funcs=beam_reward, args=config, train_dataset=dataset, processing_class=tokenizer,
            rollout_func=make_rollout_func(by_text, sid_dict, title_dict, settings, pad_id, args.steps, clock,
                                           trl_groups),
            callbacks=[Interleave()])
        instrument_trl(trainer, clock, padding)
        mark["wall"], mark["cpu"] = time.perf_counter(), time.process_time()
        trainer.train()
    report(ours, trl_steps, our_groups, trl_groups, padding, policy, trl_policy)


def report(ours, trl_steps, our_groups, trl_groups, padding, policy, trl_policy):
    """Medians of the measured steps, per phase, and the checks that both did the same work."""
    measured_ours, measured_trl = ours[1:] or ours, trl_steps[1:] or trl_steps
    same_prompts = all([g.prompt_ids for g in a] == [g.prompt_ids for g in b] for a, b in zip(our_groups, trl_groups))
    print(f"# same prompts every step: {same_prompts}; groups with the same completions per step: "
          f"{[round(same_completions(a, b), 2) for a, b in zip(our_groups, trl_groups)]}")
    drift = max(float((a - b).abs().max()) for a, b in zip(policy.state_dict().values(), trl_policy.state_dict().values()))
    print(f"# max |weight difference| after {len(ours)} steps of each: {drift:.2e}")
    real, positions, completion_tokens = padding[-1]
    print(f"# trl's last batch: {positions} token positions through the model per pass, {real} real "
          f"({1 - real / positions:.0%} padding), {completion_tokens} completion tokens")
    print("| phase | ours CPU s | trl CPU s |")
    print("|---|---|---|")
    for name in measured_ours[0]["phases"]:
        a = statistics.median(s["phases"][name] for s in measured_ours)
        b = statistics.median(s["phases"][name] for s in measured_trl)
        print(f"| {name} | {a:.2f} | {b:.2f} |")
    for name in ("cpu", "wall"):
        a = statistics.median(s[name] for s in measured_ours)
        b = statistics.median(s[name] for s in measured_trl)
        print(f"| **step, {name}** | **{a:.2f}** | **{b:.2f}** ({b / a:.2f}x ours) |")
    print(f"# per step (cpu) ours {[round(s['cpu'], 1) for s in ours]}, trl {[round(s['cpu'], 1) for s in trl_steps]}; "
          f"(wall) ours {[round(s['wall'], 1) for s in ours]}, trl {[round(s['wall'], 1) for s in trl_steps]}; "
          f"load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
