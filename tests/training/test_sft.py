"""The SFT entry point: answer-only loss, a tiny run whose loss falls, exact resume, 2 processes."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from tiny_catalog import tiny_config, tiny_tables  # noqa: E402

from singer_rec import modeling  # noqa: E402
from singer_rec.prompts import render_for_model  # noqa: E402
from singer_rec.training import common, sft, validation  # noqa: E402
from singer_rec.training.launch import TrainingProcessError, run_training  # noqa: E402


@pytest.fixture(scope="module")
def tokenizer():
    tok = modeling.train_scratch_tokenizer(["Widget deluxe", "### Input: ### Response:", "title"] * 3, 300)
    modeling.add_sid_tokens(tok, ["<a_0>", "<a_1>", "<b_0>", "<b_1>"])
    return tok


def test_only_answer_tokens_and_eos_carry_labels(tokenizer):
    ids, labels = sft.encode_example(tokenizer, "What is <a_1><b_0>?", "<a_0><b_1>", max_length=200)
    prompt_ids = tokenizer.encode(render_for_model("What is <a_1><b_0>?"), add_special_tokens=False)
    answer_ids = tokenizer.encode("<a_0><b_1>", add_special_tokens=False)
    assert len(answer_ids) == 2
    assert ids == prompt_ids + answer_ids + [tokenizer.eos_token_id]
    assert labels == [-100] * len(prompt_ids) + answer_ids + [tokenizer.eos_token_id]


def test_too_long_prompt_loses_its_start_never_the_answer(tokenizer):
    ids, labels = sft.encode_example(tokenizer, "Widget " * 50, "<a_0><b_1>", max_length=10)
    assert len(ids) == 10 and labels[-3:] == ids[-3:] and labels[:7] == [-100] * 7
    assert ids[-4:-3] == tokenizer.encode(render_for_model(""), add_special_tokens=False)[-1:]


def test_collate_pads_right_and_masks_padding(tokenizer):
    batch = sft.collate([([5, 6, 7], [-100, 6, 7]), ([8], [8])], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]


def test_answer_token_loss_ignores_prompt_positions():
    torch.manual_seed(0)

    class Fixed(torch.nn.Module):
        def forward(self, input_ids, attention_mask, logits_to_keep):
            logits = torch.zeros(input_ids.shape[0], input_ids.shape[1], 4)
            logits[..., 2] = 10.0  # always predicts token 2
            return type("Out", (), {"logits": logits[logits_to_keep]})()

    batch = sft.collate([([1, 1, 2, 3], [-100, -100, 2, 3])], pad_id=0)
    loss, n = sft.answer_token_loss(Fixed(), batch)
    assert n == 2  # positions predicting 2 and 3 only
    log_z = torch.logsumexp(torch.tensor([0.0, 0.0, 10.0, 0.0]), 0)
    assert float(loss) == pytest.approx(float((log_z - 10.0) + log_z), rel=1e-5)


def test_tiny_run_loss_falls_and_saves_a_loadable_model(tmp_path):
    result = sft.train(tiny_config(tmp_path, epochs=4, patience=5))
    assert result["steps"] == 16 and result["total_steps"] == 16  # 64 rows / 16 per step x 4 epochs
    meta = modeling.read_meta(result["model_dir"])
    curve = meta["train"]["result"]["valid_curve"]
    assert [point["step"] for point in curve] == [4, 8, 12, 16]  # one evaluation per epoch
    assert curve[-1]["valid_loss"] < curve[0]["valid_loss"] - 0.5
    # the kept model is the one with the best valid NDCG@10 (the first of equals)
    best = max(curve, key=lambda point: point["NDCG@10"])
    assert meta["train"]["best_step"] == result["best_step"] == best["step"]
    assert result["best_metric"] == pytest.approx(best["NDCG@10"])
    assert meta["train"]["tasks"] == ["semantic", "title_to_sid"]  # the tasks of its train rows


def test_valid_ranking_with_no_sid_answer_is_none_or_an_error_naming_file_and_need(tokenizer):
    """No valid row answers with an item's SID: None where ranking is optional, else a clear error."""
    rows = pd.DataFrame({"prompt": ["What is <a_1><b_0>?"], "answer": ["Widget deluxe"]})
    sid_map = {"item-1": "<a_0><b_1>"}
    args = (tokenizer, sid_map, rows, None, 4, 64, 0, len(tokenizer))
    assert validation.RankingValidation.build(*args) is None
    with pytest.raises(ValueError, match=r"^valid\.parquet: no valid row answers with an item's SID: nothing to rank$"):
        validation.RankingValidation.build(*args, needed_for="nothing to rank", source="valid.parquet")
    ranking = validation.RankingValidation.build(tokenizer, sid_map, rows.assign(answer=["<a_0><b_1>"]), None, 4, 64, 0,
                                                 len(tokenizer), needed_for="nothing to rank")
    assert ranking.targets == [0] and ranking.num_beams == 1


def test_valid_ranking_equals_exhaustive_scoring_of_every_item(tmp_path):
    """The selection metric: beam search (beam >= items) ranks like scoring all 16 items one by one."""
    from singer_rec.metrics import ranking_metrics
    from singer_rec.sid.tokens import sid_tokens

    result = sft.train(tiny_config(tmp_path, epochs=3, patience=5))
    model, tok, meta = modeling.load_model_folder(result["model_dir"])
    valid = pd.read_parquet(tiny_config(tmp_path / "again")["valid_path"])
    ranking = validation.RankingValidation.build(tok, meta["sid_map"], valid, None, 20, 128, 0, len(tok))
    assert ranking.num_beams == 16 and len(ranking.prompts) == len(valid) == 48
    got = ranking.evaluate(model, common.Dist(), 8, None)

    sids = sorted(set(meta["sid_map"].values()))
    ranked = []
    with torch.no_grad():
        for prompt in ranking.prompts:
            scores = []
            for sid in sids:
                answer = modeling.sid_token_ids(tok, sid_tokens(sid))
                logits = model(input_ids=torch.tensor([prompt + answer])).logits[0].log_softmax(-1)
                scores.append(sum(float(logits[len(prompt) - 1 + i, t]) for i, t in enumerate(answer)))
            ranked.append(sorted(range(len(sids)), key=lambda i: -scores[i])[:10])
    expected = ranking_metrics(ranked, ranking.targets)
    for name in ("HR@3", "HR@5", "HR@10", "NDCG@10"):
        assert got[name] == pytest.approx(expected[name], abs=1e-9), name
    model, tok, meta = modeling.load_model_folder(result["model_dir"])
    _, item_sids, _, _ = tiny_tables()
    modeling.validate_sid_map(meta["sid_map"], item_sids)
    assert meta["titles"]["item03"] == "Widget 3 deluxe" and meta["preset"] == "scratch"
    assert len(tok.encode("<a_3><b_2><c_1>", add_special_tokens=False)) == 3


def _weights(model_dir):
    from safetensors.torch import load_file

    return load_file(str(Path(model_dir) / "model.safetensors"))


def _kill_when_checkpointed(cfg, min_step: int) -> int:
    """Start the entry point as a user's run would, SIGKILL it once a checkpoint >= ``min_step`` exists."""
    import signal
    import subprocess
    import time

    config_path = Path(cfg["checkpoint_dir"]).parent / "config.json"
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text(json.dumps(cfg))
    proc = subprocess.Popen([sys.executable, "-m", "singer_rec.training.sft", "--config", str(config_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        steps = [int(p.name.split("-")[1]) for p in common.list_checkpoints(cfg["checkpoint_dir"])]
        if steps and max(steps) >= min_step:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    return proc.wait()


def test_killed_run_resumes_from_its_last_checkpoint_and_ends_like_an_uninterrupted_one(tmp_path):
    # 20 epochs of 4 steps: the kill lands long before the end
    straight = sft.train(tiny_config(tmp_path / "straight", epochs=20, patience=50, checkpoint_every=3))
    cfg = tiny_config(tmp_path / "killed", epochs=20, patience=50, checkpoint_every=3)
    assert _kill_when_checkpointed(cfg, min_step=3) == -9
    assert not Path(cfg["output_dir"]).exists()  # no model folder from a killed run
    left = [int(p.name.split("-")[1]) for p in common.list_checkpoints(cfg["checkpoint_dir"])]
    assert left and max(left) < 80
    checkpoint = common.latest_checkpoint(cfg["checkpoint_dir"])
    killed_wall = json.loads((checkpoint / "state.json").read_text())["trainer"]["wall_seconds"]
    assert killed_wall > 0
    resumed = run_training("singer_rec.training.sft", cfg, 1)
    assert resumed["resumed_from_step"] == max(left)
    # the reported wall time counts the killed attempt up to its checkpoint, not only the last attempt
    assert resumed["wall_s"] == pytest.approx(killed_wall + resumed["attempt_wall_s"], abs=0.5)
    assert resumed["wall_s"] > resumed["attempt_wall_s"] and straight["wall_s"] == pytest.approx(
        straight["attempt_wall_s"], abs=1e-3)
    assert resumed["steps"] == straight["steps"] == 80
    assert resumed["best_metric"] == pytest.approx(straight["best_metric"], abs=1e-6)
    assert resumed["best_step"] == straight["best_step"]
    a, b = _weights(straight["model_dir"]), _weights(resumed["model_dir"])
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_two_gloo_processes_train_through_the_launcher(tmp_path):
    cfg = tiny_config(tmp_path, epochs=2, max_train_samples=60)  # 60 rows: last batch of 12 split 6/6
    result = run_training("singer_rec.training.sft", cfg, num_processes=2)
    assert result["world_size"] == 2 and result["steps"] == 8 and result["train_samples"] == 60
    _, _, meta = modeling.load_model_folder(result["model_dir"])
    assert meta["train"]["result"]["world_size"] == 2


def test_sid_outside_the_catalog_fails_before_training(tmp_path):
    cfg = tiny_config(tmp_path)
    frame = pd.read_parquet(cfg["train_path"])
    frame.loc[3, "answer"] = "<a_9><b_9><c_9>"
    frame.to_parquet(cfg["train_path"])
    with pytest.raises(modeling.SidMapMismatchError, match=r"sft_dataset_train row 3: SID <a_9><b_9><c_9> is not in item_sids"):
        sft.train(cfg)
    assert not Path(cfg["checkpoint_dir"]).exists()


def test_unknown_preset_fails_in_the_child_with_a_clear_message(tmp_path):
    cfg = tiny_config(tmp_path, model={"preset": "gpt9"})
    with pytest.raises(TrainingProcessError, match="unknown model preset 'gpt9'"):
        run_training("singer_rec.training.sft", cfg, 1)


@pytest.mark.parametrize("values, message", [
    ({"lrr": 1e-4}, r"unknown parameter\(s\) \['sft.train.lrr'\]; allowed keys of sft.train: \[.*'learning_rate'"),
    ({"learning_rate": -1e-4}, r"sft.train.learning_rate must be > 0, got -0.0001"),
    ({"patience": "3"}, r"sft.train.patience must be an integer, got '3'"),
    ({"batch_size": 0}, r"sft.train.batch_size must be >= 1, got 0"),
    ({"select_metric": "MRR"}, r"sft.train.select_metric must be one of \['loss', 'HR@3'.*\], got 'MRR'"),
    ({"valid_num_beams": 5}, r"valid_num_beams must be >= 10"),
    ({"epochs": None}, r"sft.train.epochs must not be null"),
])
def test_bad_settings_name_the_key_and_the_allowed_values(values, message):
    with pytest.raises(ValueError, match=message):
        sft.SFTSettings.from_dict(values)


def test_a_misspelled_parameter_fails_in_the_node_before_anything_is_written(tmp_path):
    from singer_rec.pipelines.sft.nodes import train_sft_model

    paths = tiny_config(tmp_path / "inputs")
    frames = [pd.read_parquet(paths[k]) for k in ("train_path", "valid_path", "items_path", "item_sids_path")]
    params = {"model": {"preset": "scratch"}, "train": {"lrr": 1e-4}, "work_dir": str(tmp_path / "work")}
    with pytest.raises(ValueError, match=r"\['sft.train.lrr'\]"):
        train_sft_model(*frames, params, {"templates": {}}, 42)
    assert not (tmp_path / "work").exists()


def test_task_fractions_shorten_the_epoch_and_the_schedule(tmp_path):
    # 48 semantic + 16 title_to_sid rows; half the title_to_sid rows an epoch -> 56 rows = 7 steps of 8
    result = sft.train(tiny_config(tmp_path, epochs=2, patience=5, batch_size=8, micro_batch_size=8,
                                   task_fractions={"title_to_sid": 0.5}))
    assert result["train_samples"] == 64 and result["epoch_samples"] == 56
    assert result["total_steps"] == result["steps"] == 14
    assert [point["step"] for point in result["valid_curve"]] == [7, 14]  # an evaluation per (shorter) epoch
