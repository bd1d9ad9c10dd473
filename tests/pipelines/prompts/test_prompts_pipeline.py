"""prompts pipeline: the project's own catalog entries and parameters, run by a Kedro runner."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from kedro.config import OmegaConfigLoader
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from singer_rec.pipelines.prompts.pipeline import create_pipeline
from singer_rec.prompts import TASKS

ROOT = Path(__file__).resolve().parents[3]
ITEMS = pd.DataFrame({
    "item_id": ["A", "B", "C"], "title": ["Red Pen", "Blue Pencil", "Eraser"],
    "description": ["A red pen.", "A blue pencil.", "An eraser."], "brand": ["X", "Y", "Z"],
    "categories": [["Office"]] * 3,
})
SIDS = pd.DataFrame({"item_id": ["A", "B", "C"], "sid": ["<a_1><b_2><c_3>", "<a_1><b_2><c_4>", "<a_0><b_5><c_6>"],
                     "codes": [[1, 2, 3], [1, 2, 4], [0, 5, 6]]})
TRAIN = pd.DataFrame({"user_id": ["u1", "u2"], "history": [["A", "B"], ["C"]], "target": ["C", "A"], "timestamp": [1, 2]})
VALID = pd.DataFrame({"user_id": ["u1"], "history": [["A", "B", "C"]], "target": ["A"], "timestamp": [3]})


def _catalog(tmp_path: Path, params: dict) -> DataCatalog:
    entries = yaml.safe_load((ROOT / "conf/base/catalog_sft.yml").read_text())
    config = {}
    for name in ("sft_dataset_train", "sft_dataset_valid", "rl_dataset"):
        config[name] = {**entries[name], "filepath": str(tmp_path / Path(entries[name]["filepath"]).name)}
    catalog = DataCatalog.from_config(config)
    for name, value in {"items": ITEMS, "item_sids": SIDS, "train_sequences": TRAIN, "valid_sequences": VALID,
                        "params:prompts": params["prompts"], "params:seed": 42}.items():
        catalog[name] = MemoryDataset(value)
    return catalog


@pytest.fixture(scope="module")
def params():
    return OmegaConfigLoader(str(ROOT / "conf"), base_env="base", default_run_env="base")["parameters"]


def test_prompts_pipeline_writes_the_three_datasets(tmp_path, params):
    catalog = _catalog(tmp_path, params)
    SequentialRunner().run(create_pipeline(), catalog)
    train = pd.read_parquet(tmp_path / "sft_dataset_train.parquet")
    valid = pd.read_parquet(tmp_path / "sft_dataset_valid.parquet")
    rl = pd.read_parquet(tmp_path / "rl_dataset.parquet")
    assert list(train.columns) == ["task", "prompt", "answer", "user_id", "target"]
    # the demo's SFT tasks: semantic (2 users) and the three item tasks (3 items each)
    assert params["prompts"]["sft_tasks"] == ["semantic", "sid_to_title", "title_to_sid", "description_to_sid"]
    assert train.task.value_counts().to_dict() == {"semantic": 2, "sid_to_title": 3, "title_to_sid": 3, "description_to_sid": 3}
    assert valid.task.tolist() == ["semantic"] and valid.answer.tolist() == ["<a_1><b_2><c_3>"]
    # RL keeps all six: 3 sequence tasks x 2 users + 3 item tasks x 3 items
    assert rl.task.value_counts().to_dict() == {t: (2 if t in ("semantic", "title_history_to_sid", "sid_history_to_title") else 3) for t in TASKS}
    # every conf phrasing is one of the two of its task, and the paper's phrasing comes first
    templates = params["prompts"]["templates"]
    assert templates["sid_to_title"][0] == "What is the title of {sid}?"
    for row in train.itertuples():
        if row.task == "sid_to_title":
            assert row.prompt in {t.format(sid=SIDS.set_index("item_id").sid[row.target]) for t in templates["sid_to_title"]}
    assert "user_id" in rl and rl.loc[rl.task == "semantic", "user_id"].tolist() == ["u1", "u2"]


def test_task_lists_are_parameters(tmp_path, params):
    prompts = {**params["prompts"], "sft_tasks": ["semantic"], "rl_tasks": ["semantic", "title_to_sid"]}
    catalog = _catalog(tmp_path, {"prompts": prompts})
    SequentialRunner().run(create_pipeline(), catalog)
    assert pd.read_parquet(tmp_path / "sft_dataset_train.parquet").task.tolist() == ["semantic"] * 2
    assert pd.read_parquet(tmp_path / "rl_dataset.parquet").task.value_counts().to_dict() == {"semantic": 2, "title_to_sid": 3}


def test_same_seed_same_rows(tmp_path, params):
    for run in ("a", "b"):
        (tmp_path / run).mkdir()
        SequentialRunner().run(create_pipeline(), _catalog(tmp_path / run, params))
    a = pd.read_parquet(tmp_path / "a" / "sft_dataset_train.parquet")
    b = pd.read_parquet(tmp_path / "b" / "sft_dataset_train.parquet")
    pd.testing.assert_frame_equal(a, b)


def test_heldout_users_split_sft_and_rl_sequences(tmp_path, params):
    """Half of the two train users is held out: SFT trains on the other, RL prompts come from the
    held-out one (``heldout``) or the other (``seen``); the item tasks stay in both."""
    seen = {}
    for rl_users in ("heldout", "seen"):
        prompts = {**params["prompts"], "rl_heldout_share": 0.5, "rl_users": rl_users}
        (tmp_path / rl_users).mkdir()
        SequentialRunner().run(create_pipeline(), _catalog(tmp_path / rl_users, {"prompts": prompts}))
        train = pd.read_parquet(tmp_path / rl_users / "sft_dataset_train.parquet")
        rl = pd.read_parquet(tmp_path / rl_users / "rl_dataset.parquet")
        sft_users = set(train.user_id.dropna())
        rl_users_seen = set(rl.user_id.dropna())
        assert len(sft_users) == 1 and len(rl_users_seen) == 1
        assert (rl_users_seen == sft_users) == (rl_users == "seen")
        assert train.task.value_counts().to_dict() == {"semantic": 1, "sid_to_title": 3, "title_to_sid": 3, "description_to_sid": 3}
        assert (rl.task == "description_to_sid").sum() == 3
        seen[rl_users] = sft_users
    assert seen["heldout"] == seen["seen"]  # the same SFT users in both arms: one SFT model serves both
    valid = pd.read_parquet(tmp_path / "seen" / "sft_dataset_valid.parquet")
    assert valid.user_id.tolist() == ["u1"]  # valid is never split


def test_heldout_users_need_a_share_and_keep_users_on_both_sides(tmp_path, params):
    with pytest.raises(ValueError, match=r"prompts.rl_users='heldout' needs prompts.rl_heldout_share > 0"):
        SequentialRunner().run(create_pipeline(), _catalog(tmp_path, {"prompts": {**params["prompts"], "rl_users": "heldout"}}))
    with pytest.raises(ValueError, match=r"prompts.rl_heldout_share on train_sequences: .* of 2 users keeps 0"):
        SequentialRunner().run(create_pipeline(), _catalog(tmp_path, {"prompts": {**params["prompts"], "rl_heldout_share": 0.2}}))
    assert not (tmp_path / "sft_dataset_train.parquet").exists()
