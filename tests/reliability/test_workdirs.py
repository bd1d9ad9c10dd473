"""Work folders: finished runs whose model is in the catalog are cleaned (the newest N kept), and a
rerun with changed data trains in a new run folder instead of reusing an old one."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from kedro.config import OmegaConfigLoader
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from singer_rec.training import workdirs
from singer_rec.training.workdirs import RunFolder, clean_finished_runs, run_fingerprint, taken_runs

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "training"))
from tiny_catalog import TINY_MODEL, write_tiny_inputs  # noqa: E402


def make_run(work: Path, name: str, *, result: bool, model: bool, checkpoints: bool = False,
             age_s: int = 0) -> Path:
    run = work / name
    run.mkdir(parents=True)
    if checkpoints:
        (run / "checkpoints" / "step-00000002").mkdir(parents=True)
    if model:
        (run / "model").mkdir()
        (run / "model" / "singer.json").write_text("{}")
    if result:
        (run / "result.json").write_text("{}")
        stamp = 1_700_000_000 - age_s
        os.utime(run / "result.json", (stamp, stamp))
    return run


def test_fingerprint_ignores_only_the_keys_that_do_not_change_what_a_run_computes():
    frames = {"rows": pd.DataFrame({"a": [1, 2]})}
    config = {"learning_rate": 1e-3, "num_threads": 1, "rl": {"beta": 0.1, "checkpoint_every": 10}}
    same = run_fingerprint(config, frames)
    assert run_fingerprint({**config, "num_threads": 2, "log_every": 5, "keep_checkpoints": 3}, frames) == same
    assert run_fingerprint({**config, "rl": {"beta": 0.1, "checkpoint_every": 50}}, frames) == same
    assert run_fingerprint({**config, "rl": {"beta": 0.2, "checkpoint_every": 10}}, frames) != same
    assert run_fingerprint({**config, "learning_rate": 2e-3}, frames) != same
    assert run_fingerprint(config, {"rows": pd.DataFrame({"a": [1, 3]})}) != same


def test_only_finished_runs_whose_model_was_taken_are_cleaned_newest_kept(tmp_path):
    work = tmp_path / "sft_work"
    unfinished = make_run(work, "a" * 16, result=False, model=False, checkpoints=True)
    not_taken = make_run(work, "b" * 16, result=True, model=True, age_s=900)
    oldest = make_run(work, "c" * 16, result=True, model=False, age_s=300)
    middle = make_run(work, "d" * 16, result=True, model=False, age_s=200)
    newest = make_run(work, "e" * 16, result=True, model=False, age_s=100)
    current = make_run(work, "f" * 16, result=True, model=False, age_s=500)
    assert taken_runs(work) == [current, oldest, middle, newest]

    assert clean_finished_runs(work, keep=1, current=current) == [oldest, middle]
    assert sorted(p.name for p in work.iterdir()) == sorted(p.name for p in (unfinished, not_taken, newest, current))
    assert clean_finished_runs(work, keep=1, current=current) == []
    assert clean_finished_runs(work, keep=0) == [current, newest]
    assert sorted(p.name for p in work.iterdir()) == sorted(p.name for p in (unfinished, not_taken))
    assert clean_finished_runs(tmp_path / "absent", keep=0) == []


@pytest.mark.parametrize("keep", [-1, 1.5, "2", True])
def test_keep_must_be_a_non_negative_integer(tmp_path, keep):
    with pytest.raises(ValueError, match=r"keep_finished_runs must be an integer >= 0, got "):
        clean_finished_runs(tmp_path, keep=keep)


def test_a_run_folder_is_reset_unless_resuming_cleans_the_others_and_keeps_only_its_model(tmp_path, monkeypatch):
    work, frames = tmp_path / "work", {"rows": pd.DataFrame({"a": [1, 2]})}
    taken = make_run(work, "a" * 16, result=True, model=False)
    folder = RunFolder.prepare(work, {"lr": 1.0}, frames, resume=True, keep_finished_runs=0)
    assert folder.path == work / run_fingerprint({"lr": 1.0}, frames) and not taken.exists()
    (folder.path / "checkpoints" / "step-00000001").mkdir(parents=True)
    assert RunFolder.prepare(work, {"lr": 1.0}, frames, resume=True, keep_finished_runs=0) == folder
    assert (folder.path / "checkpoints").is_dir()  # resumed: kept
    RunFolder.prepare(work, {"lr": 1.0}, frames, resume=False, keep_finished_runs=0)
    assert not folder.path.exists()  # not resumed: started afresh

    paths = folder.write_inputs(frames)
    assert paths == {"rows": str((folder.path / "inputs" / "rows.parquet").resolve())}
    assert pd.read_parquet(paths["rows"]).equals(frames["rows"])
    outputs = folder.outputs("output_dir")
    assert outputs["output_dir"] == str((folder.path / "model").resolve())

    def training(entry_point, config, num_processes, rendezvous=None):
        for name in ("output_dir", "checkpoint_dir"):
            Path(config[name]).mkdir(parents=True)
        Path(config["result_path"]).write_text("{}")
        return {"loss": 0.5}

    monkeypatch.setattr(workdirs, "run_training", training)
    assert folder.run("entry", {**outputs}, 1, None) == {"loss": 0.5}
    assert sorted(p.name for p in folder.path.iterdir()) == ["model", "result.json"]


def _sft_catalog(tmp_path: Path, params: dict, data_seed: int) -> DataCatalog:
    entries = yaml.safe_load((ROOT / "conf/base/catalog_sft.yml").read_text())
    paths = write_tiny_inputs(tmp_path / f"inputs-{data_seed}", seed=data_seed)
    catalog = DataCatalog.from_config({
        "sft_model": {**entries["sft_model"], "filepath": str(tmp_path / "06_models" / "sft_model")},
    })
    for name, key in (("sft_dataset_train", "train_path"), ("sft_dataset_valid", "valid_path"),
                      ("items", "items_path"), ("item_sids", "item_sids_path")):
        catalog[name] = MemoryDataset(pd.read_parquet(paths[key]))
    catalog["sft_report"] = MemoryDataset()
    for name in ("sft", "prompts", "seed"):
        catalog[f"params:{name}"] = MemoryDataset(params[name])
    return catalog


@pytest.mark.slow
def test_rerun_with_changed_data_trains_anew_and_cleans_the_old_run(tmp_path):
    """Two real SFT runs through the project's pipeline and model-folder catalog entry."""
    from singer_rec.pipelines.sft.pipeline import create_pipeline

    params = OmegaConfigLoader(str(ROOT / "conf"), base_env="base", default_run_env="base")["parameters"]
    work = tmp_path / "sft_work"
    params["sft"].update(work_dir=str(work), keep_finished_runs=0, model={**params["sft"]["model"], **TINY_MODEL})
    params["sft"]["train"].update(batch_size=16, micro_batch_size=16, epochs=1, max_steps=3, max_length=128,
                                  autocast="off", num_threads=1, max_valid_samples=16)

    first = _sft_catalog(tmp_path, params, data_seed=0)
    SequentialRunner().run(create_pipeline(), first)
    [run_a] = list(work.iterdir())
    assert taken_runs(work) == [run_a]  # finished, its model moved into the catalog

    second = _sft_catalog(tmp_path, params, data_seed=1)  # other users' histories: changed data
    SequentialRunner().run(create_pipeline(), second)
    [run_b] = list(work.iterdir())  # keep_finished_runs: 0 -> the first run is gone
    assert run_b.name != run_a.name
    report = second.load("sft_report")
    assert report["steps"] == 3 and "resumed_from_step" not in report  # trained from step 0
    assert len(list((tmp_path / "06_models" / "sft_model").iterdir())) == 2  # both models stay in the catalog
