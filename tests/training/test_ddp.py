"""Two gloo processes (torchrun through ``run_training``) train SFT, RL and S-DPO like one process.

Each stage on a tiny Qwen2.5-shaped ``hf`` model (padded, tied vocabulary): the first step's loss of
a 2-process run equals one process's on the same rows, a 2-process run SIGKILLed after a checkpoint
resumes to the uninterrupted 2-process result, and no run hangs: every launch has a deadline, past
which its processes are killed and the test fails.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
from safetensors.torch import load_file

from singer_rec.prompts import PAPER_TEMPLATES
from singer_rec.shaped_models import write_qwen25_folder
from singer_rec.training import common
from singer_rec.training.launch import run_training, training_command
from process_tools import kill_tree
from tiny_catalog import tiny_config, tiny_tables

pytestmark = pytest.mark.slow


DEADLINE_S = 240  # one launch of these tiny runs takes ~20-40 s on 2 busy cores


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="module")
def hf_model(tmp_path_factory) -> dict:
    folder = write_qwen25_folder(tmp_path_factory.mktemp("qwen") / "base", "tiny")
    return {"preset": "hf", "hf": {"path": str(folder)}}


def _launch(entry: str, config: dict, num_processes: int = 2, deadline: float = DEADLINE_S) -> dict:
    """``run_training`` in a thread; past ``deadline`` seconds its processes are killed and the test fails."""
    out: dict = {}

    def target():
        try:
            out["result"] = run_training(entry, config, num_processes)
        except BaseException as error:  # noqa: BLE001 - re-raised below
            out["error"] = error

    before = {p.pid for p in psutil.Process().children(recursive=True)}
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(deadline)
    if thread.is_alive():
        for child in psutil.Process().children():
            if child.pid not in before:
                kill_tree(child.pid)
        thread.join(30)
        pytest.fail(f"{entry} with {num_processes} processes did not finish in {deadline} s (hang)")
    if "error" in out:
        raise out["error"]
    return out["result"]


def _kill_after_checkpoint(entry: str, config: dict, min_step: int, num_processes: int = 2) -> int:
    """Start the launcher a user's run starts; SIGKILL it and its workers once checkpoint >= ``min_step`` exists."""
    path = Path(config["checkpoint_dir"]).parent / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config))
    proc = subprocess.Popen(training_command(entry, path, num_processes), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + DEADLINE_S
    while time.time() < deadline and proc.poll() is None:
        steps = [int(p.name.split("-")[1]) for p in common.list_checkpoints(config["checkpoint_dir"])]
        if steps and max(steps) >= min_step:
            break
        time.sleep(0.01)
    if proc.poll() is None:
        kill_tree(proc.pid)
    return proc.wait()


def _weights(folder) -> dict:
    return load_file(str(Path(folder) / "model.safetensors"))


def _same_weights(a, b) -> bool:
    a, b = _weights(a), _weights(b)
    return a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)


def _checkpoint_steps(config: dict, key: str = "checkpoint_dir") -> list[int]:
    return [int(p.name.split("-")[1]) for p in common.list_checkpoints(config[key])]


def test_a_checkpoint_keeps_every_ranks_rng_and_each_rank_restores_its_own(tmp_path, caplog):
    import torch

    model = torch.nn.Linear(2, 2)
    optimizer, scheduler = common.optimizer_and_schedule(model, 1e-3, 0.0, 10)
    states = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        states.append(common.rng_states()[0])
    path = common.save_checkpoint(tmp_path, 3, model, optimizer, scheduler, {}, rng=states)
    for rank in (1, 0):
        torch.manual_seed(99)
        common.load_checkpoint(path, model, optimizer, scheduler, rank=rank)
        assert torch.equal(torch.get_rng_state(), states[rank][0]["torch"])
    # a checkpoint of one process: rank 0's state on a rank it does not know, said in the log
    single = common.save_checkpoint(tmp_path / "one", 3, model, optimizer, scheduler, {})
    assert not (single / "rng.rank1.safetensors").exists() and "rng_ranks" not in (single / "state.json").read_text()
    common.load_checkpoint(single, model, optimizer, scheduler, rank=1)
    assert "no RNG state of rank 1" in caplog.text


# --------------------------------------------------------------------------------------------
# SFT
# --------------------------------------------------------------------------------------------
def _sft_config(tmp: Path, model: dict, **overrides) -> dict:
    # 60 rows, batches of 16: 4 steps per epoch, the last of 12 rows split 6/6 over the two processes
    return tiny_config(tmp, **{"model": model, "max_train_samples": 60, "epochs": 1, "valid_ranking_rows": 16,
                               "valid_num_beams": 10, "max_length": 96, **overrides})


def test_sft_two_processes_match_one_and_a_finished_rerun_does_not_hang(tmp_path, hf_model):
    from singer_rec.training import sft

    one = sft.train(_sft_config(tmp_path / "one", hf_model, max_steps=1))
    cfg = _sft_config(tmp_path / "two", hf_model, max_steps=1)
    two = _launch("singer_rec.training.sft", cfg)
    assert two["world_size"] == 2 and one["world_size"] == 1 and two["steps"] == one["steps"] == 1
    (p1,), (p2,) = one["valid_curve"], two["valid_curve"]
    assert p2["train_loss"] == pytest.approx(p1["train_loss"], rel=1e-5)
    assert p2["valid_loss"] == pytest.approx(p1["valid_loss"], rel=1e-5)
    # the valid ranking: each process ranks half of the rows, the metrics are those of all of them
    for name in ("HR@10", "NDCG@10", "HR@3"):
        assert p2[name] == pytest.approx(p1[name], abs=1e-12), name

    # a rerun of the finished run whose best folder is gone: every rank must reach save_best's barrier
    shutil.rmtree(Path(cfg["checkpoint_dir"]) / "best")
    again = _launch("singer_rec.training.sft", cfg)
    assert again["resumed_from_step"] == 1 and (Path(cfg["output_dir"]) / "model.safetensors").is_file()


def test_sft_two_processes_killed_resume_like_an_uninterrupted_run_with_their_own_dropout(tmp_path, hf_model):
    # attention dropout on: each rank draws its own masks, and a resumed rank must go on with its own stream
    folder = tmp_path / "dropout"
    shutil.copytree(hf_model["hf"]["path"], folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "attention_dropout": 0.3}))
    model = {"preset": "hf", "hf": {"path": str(folder)}}
    settings = dict(epochs=2, checkpoint_every=1, patience=5)  # 8 steps, a checkpoint after each

    straight = _launch("singer_rec.training.sft", _sft_config(tmp_path / "straight", model, **settings))
    cfg = _sft_config(tmp_path / "killed", model, **settings)
    assert _kill_after_checkpoint("singer_rec.training.sft", cfg, min_step=3) != 0
    left = _checkpoint_steps(cfg)
    assert left and 3 <= max(left) < 8 and not Path(cfg["output_dir"]).exists()
    last = common.latest_checkpoint(cfg["checkpoint_dir"])
    rank0, rank1 = load_file(str(last / "rng.safetensors")), load_file(str(last / "rng.rank1.safetensors"))
    assert not bool((rank0["torch"] == rank1["torch"]).all())  # two streams, both kept
    resumed = _launch("singer_rec.training.sft", cfg)

    assert resumed["resumed_from_step"] == max(left) and straight["resumed_from_step"] is None
    assert resumed["steps"] == straight["steps"] == 8
    assert resumed["valid_curve"][-1]["train_loss"] == straight["valid_curve"][-1]["train_loss"]
    assert [p["valid_loss"] for p in resumed["valid_curve"]] == [p["valid_loss"] for p in straight["valid_curve"]]
    assert resumed["best_step"] == straight["best_step"] and resumed["best_metric"] == straight["best_metric"]
    assert _same_weights(straight["model_dir"], resumed["model_dir"])  # bit for bit


# --------------------------------------------------------------------------------------------
# RL and S-DPO: a base model folder of the hf preset with the tiny catalog's SIDs
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def world(tmp_path_factory, hf_model) -> dict:
    from singer_rec.training.rl import build_base_model_folder

    root = tmp_path_factory.mktemp("world")
    items, item_sids, _, _ = tiny_tables()
    model = build_base_model_folder(hf_model, items, item_sids, PAPER_TEMPLATES, 0, root / "base_model")
    inputs = tiny_config(root)  # the SFT rows of the tiny catalog: semantic (valid too) and title_to_sid
    train = pd.read_parquet(inputs["train_path"])
    return {"model": model, "train_path": inputs["train_path"], "valid_path": inputs["valid_path"],
            "semantic_rows": int((train["task"] == "semantic").sum())}


RL_SETTINGS = dict(num_generations=4, batch_size=8, micro_batch_size=16, rollout_batch_size=8, probe_prompts=6,
                   epochs=100, learning_rate=1e-3, alignment="full", checkpoint_every=1, seed=3, max_prompts=24,
                   valid_every=2, valid_ranking_rows=12, valid_num_beams=10)


def _rl_config(world: dict, run: Path, **settings) -> dict:
    model = str(world["model"])
    return {"rl": {**RL_SETTINGS, **settings}, "device": "cpu", "model_path": model, "reference_path": model,
            "dataset_path": world["train_path"], "valid_path": world["valid_path"],
            "output_path": str(run / "model"), "checkpoint_dir": str(run / "checkpoints"),
            "result_path": str(run / "result.json"), "keep_checkpoints": 2}


def _comparable(history: list[dict]) -> list[dict]:
    """Per-step records without the clock readings."""
    return [{k: v for k, v in h.items() if not k.startswith("time_") and k not in ("seconds_per_step", "rollout_seconds")}
            for h in history]


def test_rl_two_processes_match_one_and_resume_after_a_kill(tmp_path, world):
    from singer_rec.training.rl import run

    # the same schedule (the guide's curriculum and the learning rate follow the step count)
    one = run(_rl_config(world, tmp_path / "one", max_steps=4))
    straight = _launch("singer_rec.training.rl", _rl_config(world, tmp_path / "straight", max_steps=4))
    # step 1: the same rollouts, loss and KL; step 2's rollouts and entropy follow the first update,
    # so they check that the gradients were summed over the processes as one process sums them
    for step in (0, 1):
        mine, reference = straight["history"][step], one["history"][step]
        for key in ("loss", "mean_reward", "hit_rate", "hard_fraction", "kl", "entropy"):
            assert mine[key] == pytest.approx(reference[key], rel=1e-4, abs=1e-6), (step + 1, key)
    # the probe (rolled out by each process on its share) and the valid ranking before step 1
    assert straight["probe"]["before"] == one["probe"]["before"]
    for name in ("HR@10", "NDCG@10"):
        assert straight["valid_curve"][0][name] == pytest.approx(one["valid_curve"][0][name], abs=1e-12)

    cfg = _rl_config(world, tmp_path / "killed", max_steps=4)
    assert _kill_after_checkpoint("singer_rec.training.rl", cfg, min_step=2) != 0
    left = _checkpoint_steps(cfg)
    assert left and 2 <= max(left) < 4 and not Path(cfg["output_path"]).exists()
    resumed = _launch("singer_rec.training.rl", cfg)
    assert resumed["start_step"] == max(left) and straight["start_step"] == 0
    assert _comparable(resumed["history"]) == _comparable(straight["history"])
    assert resumed["probe"] == straight["probe"]
    assert [{k: v for k, v in p.items() if not k.endswith("seconds")} for p in resumed["valid_curve"]] == \
        [{k: v for k, v in p.items() if not k.endswith("seconds")} for p in straight["valid_curve"]]
    assert _same_weights(tmp_path / "straight" / "model", cfg["output_path"])  # bit for bit


def _sdpo_config(world: dict, run: Path, **settings) -> dict:
    return {"model_path": str(world["model"]), "train_path": world["train_path"], "valid_path": world["valid_path"],
            "output_dir": str(run / "model"), "checkpoint_dir": str(run / "checkpoints"),
            "result_path": str(run / "result.json"), "seed": 3, "learning_rate": 1e-2, "batch_size": 10,
            "micro_batch_size": 4, "epochs": 1, "valid_ranking_rows": 12, "valid_num_beams": 10, "max_length": 96,
            "device": "cpu", "checkpoint_every": 1, "keep_checkpoints": 10, "num_threads": 1, **settings}


def test_sdpo_two_processes_match_one_and_resume_after_a_kill(tmp_path, world):
    from singer_rec.training import sdpo

    one = sdpo.train(_sdpo_config(world, tmp_path / "one", max_steps=1))
    straight = _launch("singer_rec.training.sdpo", _sdpo_config(world, tmp_path / "straight", max_steps=4))
    # batches of 10 prompts: 5 per process, micro-batches of 4 and 1
    for key in ("loss", "accuracy", "margin"):
        assert straight["history"][0][key] == pytest.approx(one["history"][0][key], rel=1e-5, abs=1e-7), key
    assert straight["valid_curve"][0] == one["valid_curve"][0]  # the start model's ranking, row for row

    cfg = _sdpo_config(world, tmp_path / "killed", max_steps=4)
    assert _kill_after_checkpoint("singer_rec.training.sdpo", cfg, min_step=2) != 0
    left = _checkpoint_steps(cfg)
    assert left and 2 <= max(left) < 4 and not Path(cfg["output_dir"]).exists()
    resumed = _launch("singer_rec.training.sdpo", cfg)
    assert resumed["resumed_from_step"] == max(left) and straight["resumed_from_step"] is None
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in straight["history"]]
    assert resumed["valid_curve"] == straight["valid_curve"]
    assert resumed["best_step"] == straight["best_step"]
    assert _same_weights(tmp_path / "straight" / "model", cfg["output_dir"])  # bit for bit
