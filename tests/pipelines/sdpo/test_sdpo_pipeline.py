"""The sdpo pipeline with the real runner, the project's catalog entries, the training process and model folders."""
import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from kedro.config import OmegaConfigLoader
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from singer_rec import modeling
from singer_rec.pipeline_registry import validate_run_parameters
from singer_rec.pipelines.baselines.nodes import METRIC_COLUMNS
from singer_rec.pipelines.sdpo import create_pipeline

PROJECT_ROOT = Path(__file__).resolve().parents[3]
_spec = importlib.util.spec_from_file_location("tiny_world", PROJECT_ROOT / "tests" / "rl" / "tiny_world.py")
tiny_world = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny_world)

EVALUATE = {"num_beams": 10, "ks": [3, 5, 10], "batch_size": 8, "device": "cpu"}
TRAIN = {"learning_rate": 3e-3, "batch_size": 4, "micro_batch_size": 4, "epochs": 1, "valid_num_beams": 10,
         "max_length": 64, "device": "cpu", "num_threads": 1}


def _catalog(tmp_path, train=TRAIN) -> DataCatalog:
    """The project's sdpo catalog entries (paths moved under tmp_path) + in-memory inputs."""
    conf = yaml.safe_load((PROJECT_ROOT / "conf/base/catalog_sdpo.yml").read_text())
    def move(entry):  # an optional entry holds its file in its inner dataset
        if "dataset" in entry:
            return {**entry, "dataset": move(entry["dataset"])}
        return {**entry, "filepath": str(tmp_path / entry["filepath"].replace("${globals:data_root}/", ""))}

    moved = {name: move(entry) for name, entry in conf.items()}
    catalog = DataCatalog.from_config(moved)
    sft_path, data_path = tiny_world.write(tmp_path / "inputs")
    frame = pd.read_parquet(data_path)
    params = {"work_dir": str(tmp_path / "sdpo_work"), "train": train}
    for name, value in {"sft_model": sft_path, "sft_dataset_train": frame,
                        "sft_dataset_valid": frame[frame["task"] == "semantic"].reset_index(drop=True),
                        "test_sequences": tiny_world.sequences(), "params:sdpo": params, "params:seed": 3,
                        "params:evaluate": EVALUATE}.items():
        catalog[name] = MemoryDataset(value, copy_mode="assign")
    return catalog


@pytest.mark.slow
def test_sdpo_pipeline_trains_in_its_own_process_and_writes_metrics_in_the_baselines_format(tmp_path):
    catalog = _catalog(tmp_path)
    pipeline = create_pipeline()
    assert pipeline.inputs() == {"sft_model", "sft_dataset_train", "sft_dataset_valid", "test_sequences",
                                 "params:sdpo", "params:seed", "params:evaluate"}
    SequentialRunner().run(pipeline, catalog)
    _, _, meta = modeling.load_model_folder(catalog["sdpo_model"].load())
    assert meta["sdpo"]["steps"] == 2 and meta["sdpo"]["settings"]["seed"] == 3  # 8 prompts, 4 per step
    assert meta["sdpo"]["prompts"] == 8 and meta["sid_map"] == modeling.read_meta(tmp_path / "inputs" / "sft_model")["sid_map"]
    metrics = json.loads((tmp_path / "07_model_output" / "sdpo_metrics.json").read_text())
    assert list(metrics) == ["S-DPO"]
    row = metrics["S-DPO"]
    assert list(row) == [*METRIC_COLUMNS, "n", "wall_time_s", "train_s", "decode_s"]
    # the cost of the row: the training stages its model folder records (S-DPO's own included) + the test ranking
    recorded = modeling.training_seconds(meta)
    assert "sdpo" in recorded and recorded["sdpo"] > 0
    assert row["train_s"] == pytest.approx(sum(recorded.values()), abs=0.01)
    assert row["n"] == 8 and row["decode_s"] > 0
    assert row["wall_time_s"] == pytest.approx(row["train_s"] + row["decode_s"], abs=0.02)
    assert all(0 <= metrics["S-DPO"][c] <= 1 for c in METRIC_COLUMNS)
    report = json.loads((tmp_path / "08_reporting" / "sdpo" / "train_report.json").read_text())
    assert report["steps"] == 2 and report["best_step"] in (0, 2)
    # finished: the checkpoints and the input copies are gone, only the result stays in the run folder
    (run_dir,) = list((tmp_path / "sdpo_work").iterdir())
    assert sorted(p.name for p in run_dir.iterdir()) == ["result.json"]


def test_a_misspelled_key_fails_before_training(tmp_path):
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['sdpo.train.lr'\]"):
        SequentialRunner().run(create_pipeline(), _catalog(tmp_path, {**TRAIN, "lr": 1e-3}))
    assert not (tmp_path / "sdpo_work").exists()


def test_project_conf_is_valid_at_run_start():
    loader = OmegaConfigLoader(str(PROJECT_ROOT / "conf"), base_env="base", default_run_env="base")
    params = loader["parameters"]
    assert validate_run_parameters({"sdpo": params["sdpo"]}) == ["sdpo"]
    assert params["sdpo"]["train"]["beta"] == 1.0 and params["sdpo"]["train"]["num_negatives"] == 3
    with pytest.raises(ValueError, match=r"sdpo.train.num_negatives must be >= 1"):
        validate_run_parameters({"sdpo": {**params["sdpo"], "train": {"num_negatives": 0}}})
