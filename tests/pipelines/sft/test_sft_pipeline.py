"""sft pipeline: the project's catalog entries (versioned model folder), a Kedro runner, MLflow logs."""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from kedro.config import OmegaConfigLoader
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from singer_rec import modeling, tracking
from singer_rec.curves import sft_curves
from singer_rec.pipelines.sft.pipeline import create_pipeline

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tests" / "training"))
from tiny_catalog import TINY_MODEL, write_tiny_inputs  # noqa: E402
from plot_checks import artifacts_by_node, assert_png  # noqa: E402


def _params(tmp_path: Path) -> dict:
    params = OmegaConfigLoader(str(ROOT / "conf"), base_env="base", default_run_env="base")["parameters"]
    sft = params["sft"]
    sft["work_dir"] = str(tmp_path / "work")
    sft["model"] = {**sft["model"], **TINY_MODEL}
    sft["train"].update({"batch_size": 16, "micro_batch_size": 8, "epochs": 2, "max_length": 128,
                         "autocast": "off", "num_threads": 1, "learning_rate": 3e-3})
    return params


def _catalog(tmp_path: Path, params: dict) -> DataCatalog:
    entries = yaml.safe_load((ROOT / "conf/base/catalog_sft.yml").read_text())
    paths = write_tiny_inputs(tmp_path / "inputs")
    catalog = DataCatalog.from_config({
        "sft_model": {**entries["sft_model"], "filepath": str(tmp_path / "06_models" / "sft_model")},
        "sft_report": {**entries["sft_report"], "filepath": str(tmp_path / "sft" / "train_report.json")},
        "sft_curves_plot": {**entries["sft_curves_plot"], "filepath": str(tmp_path / "sft" / "training_curves.png")},
    })
    frames = {"sft_dataset_train": paths["train_path"], "sft_dataset_valid": paths["valid_path"],
              "items": paths["items_path"], "item_sids": paths["item_sids_path"]}
    for name, path in frames.items():
        catalog[name] = MemoryDataset(pd.read_parquet(path))
    for name in ("sft", "prompts", "seed"):
        catalog[f"params:{name}"] = MemoryDataset(params[name])
    return catalog


@pytest.fixture
def mlflow_run(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    run = client.create_run(client.create_experiment("sft-test"))
    monkeypatch.setenv(tracking.URI_ENV, uri)
    monkeypatch.setenv(tracking.RUN_ID_ENV, run.info.run_id)
    return client, run.info.run_id


def test_sft_pipeline_saves_a_versioned_model_folder_and_logs_to_mlflow(tmp_path, mlflow_run):
    client, run_id = mlflow_run
    params = _params(tmp_path)
    catalog = _catalog(tmp_path, params)
    SequentialRunner().run(create_pipeline(), catalog)

    folder = catalog.load("sft_model")
    assert isinstance(folder, Path) and folder.name == "sft_model" and folder.parent.parent == tmp_path / "06_models" / "sft_model"
    model, tokenizer, meta = modeling.load_model_folder(folder)
    modeling.validate_sid_map(meta["sid_map"], catalog.load("item_sids"))
    assert meta["templates"] == params["prompts"]["templates"]
    report = catalog.load("sft_report")
    assert report["steps"] == 8 and report["epochs_completed"] == 2 and report["samples_per_s"] > 0
    # one point per evaluation (an epoch end), drawn as the training-curves plot
    curves = sft_curves(meta["train"]["result"]["valid_curve"])
    assert list(curves) == ["train_loss", "valid_loss", "valid_NDCG@10", "valid_HR@10"]
    assert all([step for step, _ in points] == [4, 8] for points in curves.values())
    assert [v for _, v in curves["valid_loss"]] == [m.value for m in client.get_metric_history(run_id, "valid_loss")]
    assert_png(tmp_path / "sft" / "training_curves.png")
    # the work folder keeps no checkpoints once the model is saved
    assert not list((tmp_path / "work").rglob("step-*"))

    history = client.get_metric_history(run_id, "train_loss")
    assert [m.step for m in history] == list(range(1, 9))
    assert [m.step for m in client.get_metric_history(run_id, "valid_loss")] == [4, 8]
    assert client.get_metric_history(run_id, "samples_per_s")
    assert client.get_run(run_id).data.tags["sft.model_dir"].endswith("model")


def test_bad_preset_and_sid_mismatch_fail_before_anything_is_written(tmp_path):
    params = _params(tmp_path)
    params["sft"]["model"] = {"preset": "nope"}
    with pytest.raises(Exception, match="unknown model preset 'nope'"):
        SequentialRunner().run(create_pipeline(), _catalog(tmp_path, params))
    params = _params(tmp_path)
    catalog = _catalog(tmp_path, params)
    sids = catalog.load("item_sids")
    sids.loc[0, "sid"] = "<a_3><b_3><c_3>"  # now two items share a SID... and train rows mention the old one
    catalog["item_sids"] = MemoryDataset(sids)
    with pytest.raises(Exception, match="SID"):
        SequentialRunner().run(create_pipeline(), catalog)
    assert not (tmp_path / "work").exists() and not (tmp_path / "06_models").exists()


def test_the_curves_plot_is_an_artifact_of_its_nodes_mlflow_run(tmp_path, monkeypatch):
    """The plot node reads the evaluations a training run wrote into its model folder."""
    import json

    monkeypatch.delenv(tracking.URI_ENV, raising=False)
    monkeypatch.delenv(tracking.RUN_ID_ENV, raising=False)
    folder = tmp_path / "sft_model"
    folder.mkdir()
    curve = [{"step": s, "train_loss": 3.0 / s, "valid_loss": 2.0 / s, "NDCG@10": 0.1 * s, "HR@10": 0.2 * s} for s in (4, 8)]
    (folder / modeling.META_FILE).write_text(json.dumps({"train": {"result": {"valid_curve": curve}}}))
    entries = yaml.safe_load((ROOT / "conf/base/catalog_sft.yml").read_text())
    catalog = DataCatalog.from_config({
        "sft_curves_plot": {**entries["sft_curves_plot"], "filepath": str(tmp_path / "training_curves.png")}})
    catalog["sft_model"] = MemoryDataset(folder, copy_mode="assign")
    pipeline = create_pipeline().only_nodes("plot_sft_training_curves")
    assert artifacts_by_node(pipeline, catalog, tmp_path) == {"plot_sft_training_curves": ["training_curves.png"]}
    assert_png(tmp_path / "training_curves.png")
