"""Run folders of the sft, rl and sdpo nodes: their names are pinned, so that a run started before a
refactoring of the nodes keeps resuming from its checkpoints after it."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from singer_rec import modeling
from singer_rec.pipelines.rl import nodes as rl_nodes
from singer_rec.pipelines.sdpo import nodes as sdpo_nodes
from singer_rec.pipelines.sft import nodes as sft_nodes
from singer_rec.training import workdirs
from singer_rec.training.workdirs import run_fingerprint

ITEMS = pd.DataFrame({"item_id": ["i1", "i2", "i3"], "title": ["A", "B", "C"]})
ITEM_SIDS = pd.DataFrame({"item_id": ["i1", "i2", "i3"], "sid": ["<a_1><b_1>", "<a_1><b_2>", "<a_2><b_1>"]})
TRAIN = pd.DataFrame({"task": ["semantic", "semantic"], "prompt": ["after <a_1><b_1>", "after <a_1><b_2>"],
                      "answer": ["<a_1><b_2>", "<a_2><b_1>"]})
VALID = TRAIN.iloc[:1].reset_index(drop=True)
PROMPTS = {"templates": {"semantic": ["Recommend for {history}"]}}
SEED = 7


def test_run_fingerprint_is_pinned():
    config = {"learning_rate": 1e-3, "num_threads": 1, "rl": {"beta": 0.1, "checkpoint_every": 10},
              "model": {"preset": "scratch"}}
    frames = {"rows": pd.DataFrame({"a": [1, 2], "b": ["x", None]})}
    assert run_fingerprint(config, frames) == "99261bfa93bda6c8"


@pytest.fixture
def launches(tmp_path, monkeypatch):
    """The configs handed to the training process, which here only creates the model folder."""
    monkeypatch.chdir(tmp_path)  # relative paths: the start model's path is part of the rl and sdpo fingerprints
    configs = []

    def fake_run_training(entry_point, config, num_processes, rendezvous=None):
        configs.append(config)
        Path(config.get("output_dir") or config["output_path"]).mkdir(parents=True)
        probe = {"hit_rate": 0.0, "rewards": [0.0]}
        return {"loss": 1.0, "history": [], "total_steps": 1, "probe": {"before": probe, "after": probe}}

    monkeypatch.setattr(workdirs, "run_training", fake_run_training)
    sft_model = Path("sft_model")
    sft_model.mkdir()
    (sft_model / modeling.META_FILE).write_text(json.dumps({"sid_map": dict(zip(ITEM_SIDS["item_id"], ITEM_SIDS["sid"]))}))
    return configs


def _run_name(folder: str) -> str:
    return Path(folder).parent.name


def test_the_sft_run_folder_name_is_pinned(launches):
    params = {"model": {"preset": "scratch", "scratch": {"hidden_size": 32}}, "work_dir": "sft_work",
              "train": {"learning_rate": 1.0e-3, "epochs": 2, "num_threads": 1, "eval_every": None}}
    folder, _ = sft_nodes.train_sft_model(TRAIN, VALID, ITEMS, ITEM_SIDS, params, PROMPTS, SEED)
    assert _run_name(folder) == "49671dd3621bceb7"
    assert launches[0]["seed"] == SEED and "max_length" not in launches[0]  # the keys as given, the global seed
    assert not Path(folder).parent.joinpath("inputs").exists()


def test_the_rl_run_folder_names_are_pinned(launches):
    params = {"settings": {"num_generations": 2, "beta": 0.05, "max_steps": 3}, "work_dir": "rl_work", "device": "cpu"}
    folder, _, _ = rl_nodes.train_rl_model(Path("sft_model"), TRAIN, VALID, ITEMS, ITEM_SIDS, params, PROMPTS, SEED)
    assert _run_name(folder) == "6d1fc192f9347d68"
    assert launches[-1]["rl"]["seed"] == SEED and launches[-1]["valid_path"] is None
    params["settings"] = {**params["settings"], "valid_every": 2, "seed": 5}  # ranks valid; its own seed
    folder, _, _ = rl_nodes.train_rl_model(Path("sft_model"), TRAIN, VALID, ITEMS, ITEM_SIDS, params, PROMPTS, SEED)
    assert _run_name(folder) == "83f1b2219bb0b7dc"
    assert launches[-1]["rl"]["seed"] == 5


def test_the_sdpo_run_folder_name_is_pinned(launches):
    params = {"train": {"beta": 0.5, "epochs": 1}, "work_dir": "sdpo_work"}
    folder, _ = sdpo_nodes.train_sdpo_model(Path("sft_model"), TRAIN, VALID, params, SEED)
    assert _run_name(folder) == "e3a056eeab20335f"
    assert launches[0]["seed"] == SEED
