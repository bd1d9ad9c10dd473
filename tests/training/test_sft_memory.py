"""Memory at a large vocabulary: the SFT loss computes logits at answer positions only, gradient
checkpointing (SFT and RL) changes no result, and every run reports its peak memory."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from tiny_catalog import TINY_MODEL, tiny_config  # noqa: E402

from singer_rec import modeling  # noqa: E402
from singer_rec.rl.grpo import completion_logprobs  # noqa: E402
from singer_rec.rl.report import summary_report  # noqa: E402
from singer_rec.shaped_models import write_qwen25_folder  # noqa: E402
from singer_rec.training import common, memory, sft, workdirs  # noqa: E402
from singer_rec.training.rl.settings import RLSettings  # noqa: E402

SIDS = ["<a_0>", "<a_1>", "<b_0>", "<b_1>", "<c_0>", "<c_1>"]
# (prompt tokens, answer tokens before EOS): right-padded rows of different answer lengths
ROW_SHAPES = [(7, 2), (3, 5), (5, 1), (9, 3)]


@pytest.fixture(scope="module")
def qwen_folder(tmp_path_factory):
    return write_qwen25_folder(tmp_path_factory.mktemp("qwen") / "tiny", "tiny")


def _model(kind: str, qwen_folder: Path):
    """A scratch model, a padded-vocabulary Qwen2.5-shaped ``hf`` model, or that one with LoRA."""
    if kind == "scratch":
        model, tokenizer = modeling.build_model(TINY_MODEL, ["Widget deluxe tool kit", "office paper"] * 3, SIDS)
    else:
        model, tokenizer = modeling.build_model({"preset": "hf", "hf": {"path": str(qwen_folder)}}, [], SIDS)
    if kind == "hf+lora":
        model = modeling.apply_lora(model, {"r": 4, "alpha": 8}, modeling.sid_token_ids(tokenizer, SIDS))
    return model, tokenizer


def _batch(tokenizer, vocab: int, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    examples = []
    for prompt_len, answer_len in ROW_SHAPES:
        prompt = torch.randint(0, vocab, (prompt_len,), generator=generator).tolist()
        answer = torch.randint(0, vocab, (answer_len,), generator=generator).tolist() + [tokenizer.eos_token_id]
        examples.append((prompt + answer, [sft.IGNORE_INDEX] * prompt_len + answer))
    return sft.collate(examples, tokenizer.pad_token_id)


def _full_logits_loss(model, batch) -> tuple[torch.Tensor, int]:
    """The loss as it was computed before: logits at every position, masked by ignore_index."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    labels = batch["labels"][:, 1:]
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                             ignore_index=sft.IGNORE_INDEX, reduction="sum")
    return loss, int((labels != sft.IGNORE_INDEX).sum())


def _loss_and_grads(loss_fn, model, batch):
    model.zero_grad(set_to_none=True)
    loss, count = loss_fn(model, batch)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}
    return loss.detach(), count, grads


def _saved_for_backward_bytes(loss_fn, model, batch) -> int:
    """Bytes of the tensors autograd keeps between the forward and the backward pass."""
    total = 0

    def pack(tensor):
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss_fn(model, batch)
    return total


@pytest.mark.parametrize("kind", ["scratch", "hf", "hf+lora"])
def test_answer_position_loss_equals_the_full_logits_loss_and_gradients(kind, qwen_folder):
    model, tokenizer = _model(kind, qwen_folder)
    model.eval()  # no dropout: both passes see the same function
    batch = _batch(tokenizer, len(tokenizer))
    full_loss, full_count, full_grads = _loss_and_grads(_full_logits_loss, model, batch)
    loss, count, grads = _loss_and_grads(sft.answer_token_loss, model, batch)
    assert count == full_count == sum(answer + 1 for _, answer in ROW_SHAPES)  # answer tokens + EOS
    torch.testing.assert_close(loss, full_loss, rtol=1e-6, atol=1e-5)
    assert grads.keys() == full_grads.keys() and len(grads) > 0
    for name in grads:
        torch.testing.assert_close(grads[name], full_grads[name], rtol=1e-5, atol=1e-7, msg=name)
    # the [B, T, V] logits are no longer kept for the backward pass
    assert _saved_for_backward_bytes(sft.answer_token_loss, model, batch) < _saved_for_backward_bytes(
        _full_logits_loss, model, batch)


def test_answer_position_loss_through_ddp_syncs_the_same_gradients(qwen_folder, tmp_path):
    """The loss calls the DDP wrapper's forward (one gloo process): its gradients are the plain model's."""
    model, tokenizer = _model("hf", qwen_folder)
    batch = _batch(tokenizer, len(tokenizer), seed=1)
    plain_loss, _, plain_grads = _loss_and_grads(sft.answer_token_loss, model, batch)
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        wrapped = torch.nn.parallel.DistributedDataParallel(model)
        loss, _, grads = _loss_and_grads(sft.answer_token_loss, wrapped, batch)
    finally:
        torch.distributed.destroy_process_group()
    torch.testing.assert_close(loss, plain_loss)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(grads[f"module.{name}"], grad, msg=name)


@pytest.mark.parametrize("kind", ["hf", "hf+lora"])
def test_gradient_checkpointing_keeps_loss_and_gradients_and_saves_activations(kind, qwen_folder):
    plain, tokenizer = _model(kind, qwen_folder)
    checkpointed, _ = _model(kind, qwen_folder)
    memory.enable_gradient_checkpointing(checkpointed)
    plain.train(), checkpointed.train()  # checkpointing acts in training mode only
    batch = _batch(tokenizer, len(tokenizer), seed=2)
    loss, count, grads = _loss_and_grads(sft.answer_token_loss, checkpointed, batch)
    plain_loss, plain_count, plain_grads = _loss_and_grads(sft.answer_token_loss, plain, batch)
    assert count == plain_count
    torch.testing.assert_close(loss, plain_loss, rtol=1e-6, atol=1e-5)
    assert grads.keys() == plain_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], plain_grads[name], rtol=1e-5, atol=1e-7, msg=name)
    assert _saved_for_backward_bytes(sft.answer_token_loss, checkpointed, batch) < _saved_for_backward_bytes(
        sft.answer_token_loss, plain, batch)


def test_rl_logprobs_under_gradient_checkpointing_equal_the_shared_prompt_cache(qwen_folder):
    """Checkpointed layers keep no cache: each completion re-encodes its prompt, with the same log-probs."""
    plain, _ = _model("hf", qwen_folder)
    checkpointed, _ = _model("hf", qwen_folder)
    memory.enable_gradient_checkpointing(checkpointed)
    prompts = [[5, 6, 7, 8], [5, 6, 7, 8], [9, 10], [9, 10], [11]]
    completions = [[20, 21, 22], [20, 23], [24, 25, 26, 27], [28], [29, 30]]
    results = {}
    for name, model in (("plain", plain), ("checkpointed", checkpointed)):
        model.train()
        out = completion_logprobs(model, prompts, completions, pad_token_id=0)
        (out.logp * out.mask).sum().backward()
        results[name] = out, {n: p.grad for n, p in model.named_parameters()}
    (out, grads), (plain_out, plain_grads) = results["checkpointed"], results["plain"]
    assert torch.equal(out.mask, plain_out.mask)
    torch.testing.assert_close(out.logp, plain_out.logp, rtol=1e-5, atol=1e-6)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_gradient_checkpointing_is_a_resume_neutral_setting_of_sft_and_rl():
    assert sft.SFTSettings.from_dict({"gradient_checkpointing": True}).gradient_checkpointing is True
    assert RLSettings.from_dict({"gradient_checkpointing": True}).gradient_checkpointing is True
    on = {"sft": {"train": {"gradient_checkpointing": True, "seed": 1}}}
    off = {"sft": {"train": {"gradient_checkpointing": False, "seed": 1}}}
    assert workdirs.run_fingerprint(on, {}) == workdirs.run_fingerprint(off, {})


def test_tiny_sft_run_reports_its_peak_memory(tmp_path):
    result = sft.train(tiny_config(tmp_path, max_steps=2, gradient_checkpointing=True))
    assert result["steps"] == 2
    assert result["peak_memory_kind"] == memory.CPU_RSS
    # a process with torch loaded holds tens of MiB; the peak never exceeds the later peak of this process
    assert 50 < result["peak_memory_mb"] <= memory.local_peak_memory_mb(torch.device("cpu"))[0] + 0.1
    written = json.loads(Path(tmp_path / "result.json").read_text())
    assert written["peak_memory_mb"] == result["peak_memory_mb"]


def _tiny_world():
    spec = importlib.util.spec_from_file_location("tiny_world", Path(__file__).parents[1] / "rl" / "tiny_world.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rl_run_with_gradient_checkpointing_trains_the_same_model_and_reports_peak_memory(tmp_path):
    from safetensors.torch import load_file

    from singer_rec.training.rl.entry import run

    sft_path, data_path = _tiny_world().write(tmp_path / "inputs")
    results, weights = {}, {}
    for flag in (False, True):
        out = tmp_path / f"out_{flag}"
        results[flag] = run({"model_path": str(sft_path), "dataset_path": str(data_path), "device": "cpu",
                             "output_path": str(out), "rl": {
                                 "num_generations": 4, "batch_size": 8, "micro_batch_size": 64, "rollout_batch_size": 8,
                                 "learning_rate": 5e-3, "max_steps": 1, "probe_prompts": 8, "alignment": "sft",
                                 "gradient_checkpointing": flag}})
        weights[flag] = load_file(str(out / "model.safetensors"))
    # Adam's first step moves a weight by about lr * sign(grad) (5e-3): a gradient component near
    # zero, rounded differently, moves by a fraction of that; a wrong gradient moves whole steps
    for name, weight in weights[False].items():
        torch.testing.assert_close(weights[True][name], weight, rtol=0, atol=5e-5, msg=name)
    assert results[True]["history"][0]["entropy"] == pytest.approx(results[False]["history"][0]["entropy"], rel=1e-5)
    for result in results.values():
        assert result["peak_memory_kind"] == memory.CPU_RSS and result["peak_memory_mb"] > 50
        assert summary_report(result)["peak_memory_mb"] == result["peak_memory_mb"]


def test_peak_memory_of_one_process_is_its_own():
    dist = common.Dist()  # one process on the CPU
    peak = memory.peak_memory(dist)
    assert peak["peak_memory_kind"] == "cpu_rss"
    assert 0 < peak["peak_memory_mb"] <= memory.local_peak_memory_mb(torch.device("cpu"))[0] + 0.1
