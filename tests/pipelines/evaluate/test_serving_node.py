"""log_serving_model: a no-op without an MLflow run; in a node's run it logs the folder as a pyfunc model and
registers it under serving.register_as; the project's serving block passes validation."""
from __future__ import annotations

import logging

import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from conftest import PROJECT_ROOT
from decoding.tiny_folder import build_tiny_folder
from singer_rec.pipeline_registry import validate_run_parameters
from singer_rec.pipelines.evaluate.nodes import log_serving_model, serving_config

EVALUATE = {"num_beams": 12, "ks": [3, 5, 10], "batch_size": 4, "autocast": "off", "device": "cpu"}
SERVING = {"register_as": {"sft": "tiny-sft", "rl": None}, "max_batch": 8, "default_k": 5}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_tiny_folder(tmp_path_factory.mktemp("models") / "sft_model")


def test_no_run_no_op_with_a_log_line(folder, monkeypatch, caplog):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    with caplog.at_level(logging.INFO, logger="singer_rec.pipelines.evaluate.nodes"):
        assert log_serving_model("sft", folder, {}, EVALUATE, SERVING) is None
        log_serving_model("sft", folder, {}, EVALUATE, {**SERVING, "enabled": False})
    assert "serving model sft not logged: no MLflow run (tracking is disabled)" in caplog.text
    assert "serving model sft not logged: serving.enabled is false" in caplog.text


def test_logs_and_registers_in_the_nodes_run(folder, tmp_path, monkeypatch):
    import mlflow.pyfunc

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("nodes", artifact_location=(tmp_path / "artifacts").as_uri())
    run = client.create_run(experiment)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # what the project's hook sets inside a tracked node
    monkeypatch.setenv("MLFLOW_RUN_ID", run.info.run_id)
    log_serving_model("sft", folder, {}, EVALUATE, SERVING)
    log_serving_model("rl", folder, {}, EVALUATE, SERVING)  # register_as null: logged only
    assert [m.name for m in client.search_registered_models()] == ["tiny-sft"]
    (version,) = client.search_model_versions("name='tiny-sft'")
    assert version.run_id == run.info.run_id
    model = mlflow.pyfunc.load_model("models:/tiny-sft/1")
    config = model.model_config
    assert (config["num_beams"], config["default_k"], config["max_batch"], config["device"]) == (12, 5, 8, "cpu")
    frame = model.predict(pd.DataFrame({"history": [["i0"]]}))
    assert list(frame["rank"]) == [1, 2, 3, 4, 5]


def test_project_serving_block_is_valid():
    conf = yaml.safe_load((PROJECT_ROOT / "conf/base/parameters_serving.yml").read_text())
    assert validate_run_parameters(conf) == ["serving"]
    assert serving_config(conf["serving"]).register_as == {"sft": "singer-rec-sft", "rl": "singer-rec"}
    with pytest.raises(ValueError, match="serving.device must be one of"):
        serving_config({"device": "gpu"})
