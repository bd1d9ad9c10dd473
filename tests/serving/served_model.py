"""A tiny model folder logged and registered as a pyfunc model in a sqlite MLflow store under ``root``."""
from __future__ import annotations

from pathlib import Path

from decoding.tiny_folder import build_tiny_folder
from singer_rec.serving.publish import log_in_new_run

CONFIG = {"num_beams": 12, "default_k": 5, "max_batch": 4, "batch_size": 4}  # 12 items: beam 12 ranks them all


def log_tiny_model(root: Path, registered_name: str) -> tuple[Path, str]:
    """(the model folder, the store's uri): the folder logged in a run of a fresh store, artifacts under ``root``."""
    folder = build_tiny_folder(root / "sft_model")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    log_in_new_run(folder, uri, registered_name, CONFIG, artifact_location=(root / "artifacts").as_uri(), name="sft")
    return folder, uri
