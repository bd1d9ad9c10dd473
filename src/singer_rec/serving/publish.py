"""Log a model folder as an MLflow pyfunc model (models from code) and register it.

``log_recommender`` copies the folder into the run as the artifact ``model_folder``, logs
``pyfunc_model.py`` as the model's code (nothing is pickled), with a signature, an input example
made of real item ids from the folder's SID map, and the ``model_config`` the served model
starts with. It needs an active MLflow run (``mlflow.start_run``).
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from singer_rec.recommend import read_checked_meta, resolve_model_folder
from singer_rec.serving.model import model_config
from singer_rec.serving.schema import input_example, signature

MODEL_CODE = Path(__file__).with_name("pyfunc_model.py")
REQUIREMENTS = ("mlflow", "torch", "transformers", "safetensors", "pandas", "singer-rec")


def requirements() -> list[str]:
    """The packages the model code imports, pinned to this environment's versions (no inference run)."""
    pins = []
    for name in REQUIREMENTS:
        try:
            pins.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pins.append(name)
    return pins


def log_recommender(model_folder: str | Path, name: str, registered_name: str | None = None,
                    config: dict[str, Any] | None = None):
    """Log (and, with ``registered_name``, register) a model folder in the active run; MLflow's ``ModelInfo``."""
    import mlflow.pyfunc

    folder = resolve_model_folder(model_folder)
    meta = read_checked_meta(folder)
    config = model_config(config)
    example = input_example(list(meta["sid_map"]), k=min(5, config["num_beams"]))
    return mlflow.pyfunc.log_model(
        name=name, python_model=str(MODEL_CODE), artifacts={"model_folder": str(folder)}, model_config=config,
        signature=signature(), input_example=example, pip_requirements=requirements(),
        registered_model_name=registered_name)


@contextlib.contextmanager
def _store(uri: str) -> Iterator[None]:
    """MLflow's fluent API on the store ``uri`` for the block (``MLFLOW_TRACKING_URI``; no run inherited)."""
    saved = {name: os.environ.get(name) for name in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID")}
    os.environ["MLFLOW_TRACKING_URI"] = uri
    os.environ.pop("MLFLOW_RUN_ID", None)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def log_in_new_run(model_folder: str | Path, tracking_uri: str, registered_name: str | None,
                   config: dict[str, Any] | None = None, experiment: str = "singer-rec-serving",
                   artifact_location: str | None = None, name: str = "model"):
    """Log (and register) a model folder in a new run of ``experiment`` in the store ``tracking_uri``.

    For a store of its own (tests, benchmarks, a folder trained elsewhere); the pipeline logs into
    its node's run instead. ``artifact_location`` is used when the experiment is created.
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment, artifact_location)
    with _store(tracking_uri), mlflow.start_run(experiment_id=experiment_id):
        return log_recommender(model_folder, name, registered_name, config)
