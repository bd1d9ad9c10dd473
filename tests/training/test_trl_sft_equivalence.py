"""Our answer-only SFT loss is trl's SFTTrainer loss (prompt-completion data, completion_only_loss).

Same tiny model, same rows, same padding: trl's own tokenization of (prompt, completion) gives our
``encode_example`` ids and labels (``truncation_mode="keep_end"`` cuts the prompt's start as we do),
its collator gives our ``collate`` batch, and its loss and gradients equal ours.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from tiny_catalog import TINY_MODEL, tiny_tables  # noqa: E402

from singer_rec import modeling  # noqa: E402
from singer_rec.prompts import PAPER_TEMPLATES, PromptBuilder, render_for_model  # noqa: E402
from singer_rec.training import sft  # noqa: E402

datasets = pytest.importorskip("datasets")
trl = pytest.importorskip("trl")

ROWS = 8


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(model, tokenizer, rows, max_length): max_length cuts the longest prompts."""
    items, item_sids, train_seq, _ = tiny_tables()
    rows = PromptBuilder(items, item_sids, PAPER_TEMPLATES, seed=0).build(
        ["semantic", "title_to_sid", "sid_to_title"], train_seq, "train_sequences")
    rows = rows.sample(n=ROWS, random_state=0).reset_index(drop=True)  # three tasks: three lengths to pad
    vocab = modeling.sid_vocabulary_for(item_sids["sid"])
    model, tokenizer = modeling.build_model(TINY_MODEL, sft.tokenizer_corpus(items, PAPER_TEMPLATES), vocab, seed=0)
    lengths = sorted(len(sft.encode_example(tokenizer, p, a, 10_000)[0]) for p, a in zip(rows["prompt"], rows["answer"]))
    max_length = lengths[-1] - 5  # the longest rows lose the start of their prompt
    assert lengths[0] < max_length < lengths[-1]
    return model, tokenizer, rows, max_length


def _trl_trainer(model, tokenizer, rows, max_length, out: Path):
    datasets.disable_progress_bars()
    data = datasets.Dataset.from_dict({"prompt": [render_for_model(p) for p in rows["prompt"]],
                                       "completion": list(rows["answer"])})
    args = trl.SFTConfig(output_dir=str(out), completion_only_loss=True, max_length=max_length,
                         truncation_mode="keep_end", per_device_train_batch_size=ROWS, use_cpu=True,
                         report_to="none", save_strategy="no", disable_tqdm=True, seed=0)
    return trl.SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer)


def test_trl_tokenizes_and_pads_our_examples_and_its_loss_and_gradients_are_ours(setup, tmp_path):
    model, tokenizer, rows, max_length = setup
    examples = [sft.encode_example(tokenizer, p, a, max_length) for p, a in zip(rows["prompt"], rows["answer"])]
    ours_batch = sft.collate(examples, tokenizer.pad_token_id)
    model.eval()  # no dropout: both losses see the same forward
    loss_sum, count = sft.answer_token_loss(model, ours_batch)
    (loss_sum / count).backward()
    ours_grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)

    trainer = _trl_trainer(model, tokenizer, rows, max_length, tmp_path)
    prepared = trainer.train_dataset
    assert [prepared[i]["input_ids"] for i in range(ROWS)] == [ids for ids, _ in examples]
    assert [prepared[i]["labels"] for i in range(ROWS)] == [labels for _, labels in examples]
    trl_batch = trainer.data_collator([prepared[i] for i in range(ROWS)])
    for key in ("input_ids", "attention_mask", "labels"):
        assert torch.equal(trl_batch[key], ours_batch[key]), key

    model.eval()
    trl_loss = trainer.compute_loss(model, dict(trl_batch))
    trl_loss.backward()
    assert count == int((ours_batch["labels"][:, 1:] != sft.IGNORE_INDEX).sum()) > ROWS
    assert float(trl_loss.detach()) == pytest.approx(float(loss_sum.detach()) / count, rel=1e-6)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, ours_grads[name], rtol=1e-4, atol=1e-7, msg=name)
