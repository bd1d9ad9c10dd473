"""An RL training process SIGKILLed from outside resumes from its last checkpoint and ends exactly like
an uninterrupted run with the same seed: same step count, same weights, same per-step metrics."""
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from singer_rec.training import common
from singer_rec.training.launch import run_training, training_command
from process_tools import kill_tree
from tiny_world import write

STEPS = 8
SETTINGS = dict(num_generations=4, batch_size=8, micro_batch_size=16, probe_prompts=8, epochs=100, max_steps=STEPS,
                learning_rate=1e-3, alignment="full", checkpoint_every=1, seed=3)


def _config(world: Path, run: Path) -> dict:
    model_path, data_path = world / "sft_model", world / "rl_dataset.parquet"
    return {"rl": SETTINGS, "device": "cpu", "model_path": str(model_path), "reference_path": str(model_path),
            "dataset_path": str(data_path), "output_path": str(run / "model"), "checkpoint_dir": str(run / "checkpoints"),
            "result_path": str(run / "result.json"), "keep_checkpoints": 2}


def _kill_after_checkpoint(config: dict, num_processes: int, min_step: int) -> int:
    """Start the training command a user's run starts; SIGKILL it and its workers once a
    checkpoint >= ``min_step`` exists."""
    path = Path(config["checkpoint_dir"]).parent / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config))
    proc = subprocess.Popen(training_command("singer_rec.training.rl", path, num_processes),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 300
    try:
        while time.time() < deadline and proc.poll() is None:
            steps = [int(p.name.split("-")[1]) for p in common.list_checkpoints(config["checkpoint_dir"])]
            if steps and max(steps) >= min_step:
                kill_tree(proc.pid)
                break
            time.sleep(0.01)
    finally:
        if proc.poll() is None and time.time() >= deadline:
            kill_tree(proc.pid)
    return proc.wait()


def _comparable(history: list[dict]) -> list[dict]:
    """Per-step records without the clock readings (the only thing a resumed run may change)."""
    return [{k: v for k, v in h.items() if not k.startswith("time_") and k not in ("seconds_per_step", "rollout_seconds")}
            for h in history]


@pytest.mark.parametrize("num_processes", [1, 2])
def test_sigkilled_rl_run_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch, num_processes):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    world = tmp_path / "world"
    write(world)
    straight_cfg = _config(world, tmp_path / "straight")
    straight = run_training("singer_rec.training.rl", straight_cfg, num_processes)

    killed_cfg = _config(world, tmp_path / "killed")
    assert _kill_after_checkpoint(killed_cfg, num_processes, min_step=3) != 0
    assert not Path(killed_cfg["output_path"]).exists() and not Path(killed_cfg["result_path"]).exists()
    left = [int(p.name.split("-")[1]) for p in common.list_checkpoints(killed_cfg["checkpoint_dir"])]
    assert left and 3 <= max(left) < STEPS
    resumed = run_training("singer_rec.training.rl", killed_cfg, num_processes)

    assert resumed["start_step"] == max(left) and straight["start_step"] == 0
    # the reported wall time counts the killed attempt up to its checkpoint, not only the last attempt
    assert resumed["wall_seconds_before"] > 0 and straight["wall_seconds_before"] == 0.0
    assert resumed["wall_seconds"] == pytest.approx(resumed["wall_seconds_before"] + resumed["attempt_wall_seconds"])
    assert resumed["total_steps"] == straight["total_steps"] == STEPS
    assert [h["step"] for h in resumed["history"]] == list(range(1, STEPS + 1))
    assert _comparable(resumed["history"]) == _comparable(straight["history"])
    assert resumed["probe"] == straight["probe"]
    a = load_file(str(Path(straight_cfg["output_path"]) / "model.safetensors"))
    b = load_file(str(Path(killed_cfg["output_path"]) / "model.safetensors"))
    assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)  # bit for bit
