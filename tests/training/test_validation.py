"""Model selection and the shared checkpoint steps: ``BestModelSelector`` (best value, the first of
equals, patience, resume), ``checkpoints.save_checkpoint`` and ``checkpoints.publish_best``."""
from __future__ import annotations

import json

import torch

from singer_rec import modeling
from singer_rec.training import checkpoints, common
from singer_rec.training.validation import BestModelSelector, is_better


def test_ranking_metrics_select_the_highest_and_keep_the_first_of_equals():
    selector = BestModelSelector("NDCG@10", patience=3)
    assert [selector.update(step, value) for step, value in [(1, 0.2), (2, 0.3), (3, 0.3), (4, 0.1)]] == [
        True, True, False, False]
    assert (selector.best_step, selector.best_metric, selector.bad_evals) == (2, 0.3, 2)
    assert not selector.should_stop
    assert selector.update(5, 0.25) is False and selector.should_stop
    assert selector.state_dict() == {"best_metric": 0.3, "best_step": 2, "bad_evals": 3, "stopped_early": True}


def test_loss_selects_the_lowest_and_a_better_value_resets_the_count():
    selector = BestModelSelector("loss", patience=2)
    assert selector.update(1, 2.0) and not selector.update(2, 2.5)
    assert selector.update(3, 1.5) and selector.bad_evals == 0 and selector.best_step == 3
    assert is_better("loss", 1.0, 1.5) and not is_better("HR@10", 0.1, 0.2) and is_better("HR@10", 0.0, None)


def test_without_patience_it_never_stops():
    selector = BestModelSelector("NDCG@10")
    for step in range(10):
        selector.update(step, 0.5)
    assert selector.best_step == 0 and selector.bad_evals == 9 and not selector.should_stop


def test_a_resumed_selector_continues_as_the_uninterrupted_one():
    values = [0.1, 0.4, 0.3, 0.35, 0.2, 0.5, 0.1, 0.1]
    straight = BestModelSelector("NDCG@10", patience=2)
    decisions = [(straight.update(s, v), straight.should_stop) for s, v in enumerate(values)]
    first = BestModelSelector("NDCG@10", patience=2)
    for s, v in enumerate(values[:3]):
        first.update(s, v)
    saved = json.loads(json.dumps(first.state_dict()))  # what a checkpoint holds
    resumed = BestModelSelector("NDCG@10", patience=2)
    resumed.load_state_dict(saved)
    assert [(resumed.update(s, v), resumed.should_stop) for s, v in enumerate(values) if s >= 3] == decisions[3:]
    assert resumed.state_dict() == straight.state_dict()


def test_save_checkpoint_writes_a_resumable_step(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimizer, scheduler = common.optimizer_and_schedule(model, 1e-2, 0.0, 10)
    checkpoints.save_checkpoint(common.Dist(), tmp_path, 3, model, optimizer, scheduler, {"bad_evals": 1}, keep=2)
    checkpoints.save_checkpoint(common.Dist(), tmp_path, 5, model, optimizer, scheduler, {"bad_evals": 2}, keep=1)
    assert [p.name for p in common.list_checkpoints(tmp_path)] == ["step-00000005"]
    restored = common.load_checkpoint(common.latest_checkpoint(tmp_path), model, optimizer, scheduler)
    assert restored["step"] == 5 and restored["trainer"] == {"bad_evals": 2}


def test_publish_best_completes_the_meta_and_replaces_the_output(tmp_path):
    best, output = tmp_path / "ckpt" / "best", tmp_path / "out" / "model"
    best.mkdir(parents=True)
    (best / modeling.META_FILE).write_text(json.dumps({"preset": "scratch", "train": {"seed": 1}}))
    (best / "weights.bin").write_bytes(b"new")
    output.mkdir(parents=True)
    (output / "stale.bin").write_bytes(b"old")
    checkpoints.publish_best(best, output, lambda meta: {**meta, "train": {**meta["train"], "result": {"steps": 4}}})
    expected = {"preset": "scratch", "train": {"seed": 1, "result": {"steps": 4}}}
    assert modeling.read_meta(output) == modeling.read_meta(best) == expected
    assert sorted(p.name for p in output.iterdir()) == [modeling.META_FILE, "weights.bin"]
    assert not list(output.parent.glob(".*tmp*"))

