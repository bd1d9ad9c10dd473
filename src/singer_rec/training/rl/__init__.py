"""SINGER RL training: GRPO with beam rollouts, SID-prefix curriculum and SID-level rewards.

Run as its own process (``singer_rec.training.launch.run_training("singer_rec.training.rl", config,
num_processes)``), i.e. ``python -m singer_rec.training.rl --config FILE`` or, for N processes,
``torchrun --nproc_per_node N -m singer_rec.training.rl --config FILE`` (gloo on CPU, nccl on GPU).

One optimiser step (``batch_size`` prompts, split over the processes):

1. Rollout (no gradients, ``rollouts``): one constrained beam search per prompt gives the group of
   k items with their beam positions (or top-k / dynamic sampling for the sampling ablations). A
   prompt none of whose k items is the target is *hard*; with ``sampling: beam+prefix`` it is
   rolled out again with the first ``floor((1 - t/T) L)`` target SID tokens forced, and its group
   becomes the k continuations. Title-answer tasks decode over the dictionary of canonical titles.
2. Rewards (``singer_rec.rl.rewards``) and group-normalised advantages.
3. ``num_iterations`` (μ) passes of the clipped surrogate with per-token ratios against the
   rollout policy, minus β·KL(k3) to the frozen reference, accumulated over micro-batches (``update``).

Learning rate: AdamW, linear warm-up then cosine decay to 0 over all updates.

Modules, in the order a run uses them: ``settings`` (RLSettings, validate_settings), ``examples``
(dictionaries, rl_dataset rows), ``rollouts``, ``update``, ``loop`` (train_grpo, checkpoint and
resume), ``entry`` (the process: files in, model folder out), ``model_folders`` (start folders).
"""
from singer_rec.training.rl.entry import main, run
from singer_rec.training.rl.examples import (
    Dictionary,
    Example,
    build_dictionaries,
    build_examples,
    sid_ids,
    title_token_ids,
)
from singer_rec.training.rl.loop import prompt_order, train_grpo
from singer_rec.training.rl.model_folders import build_base_model_folder, retarget_model_folder
from singer_rec.training.rl.rollouts import Group, amp_dtype, rollout, rollout_stats
from singer_rec.training.rl.settings import (
    ALIGNMENT_VARIANTS,
    RL_ALIGNMENT,
    SAMPLING_VARIANTS,
    RLSettings,
    validate_settings,
)
from singer_rec.training.rl.timing import PhaseTimer
from singer_rec.training.rl.update import GRAD_BUCKET_ELEMENTS, all_reduce_gradients, policy_update

__all__ = [
    "ALIGNMENT_VARIANTS", "GRAD_BUCKET_ELEMENTS", "RL_ALIGNMENT", "SAMPLING_VARIANTS", "Dictionary", "Example", "Group",
    "PhaseTimer", "RLSettings", "all_reduce_gradients", "amp_dtype", "build_base_model_folder", "build_dictionaries",
    "build_examples", "prompt_order", "main", "policy_update", "retarget_model_folder", "rollout", "rollout_stats",
    "run", "sid_ids", "title_token_ids", "train_grpo", "validate_settings",
]
