"""MLflow tracking without a global run stack.

The project hook (``singer_rec.hooks``) opens one parent run per ``kedro run`` and one child run
per node tagged ``train`` or ``eval``. It publishes the child run through environment variables,
so that the node, and any training process the node spawns, log into the same run with the
functions here. Outside a tracked node every function is a no-op, so the method's code can call
them unconditionally.
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

RUN_ID_ENV = "SINGER_MLFLOW_RUN_ID"
URI_ENV = "SINGER_MLFLOW_TRACKING_URI"
MAX_PARAM_CHARS = 6000  # MLflow's limit for one parameter value


def _client():
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=os.environ[URI_ENV])


def active_run_id() -> str | None:
    """The child run of the node being executed, or None outside a tracked node."""
    if os.environ.get(URI_ENV) and os.environ.get(RUN_ID_ENV):
        return os.environ[RUN_ID_ENV]
    return None


def flatten(tree: Mapping[str, Any], prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """Nested dicts as one level with dotted keys: {"a": {"b": 1}} -> {"a.b": 1}."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten(value, name, sep))
        else:
            flat[name] = value
    return flat


def numeric_items(tree: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers of a (nested) dict, flattened; everything else is dropped."""
    out = {}
    for key, value in flatten(tree).items():
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, (int, float)) and math.isfinite(float(value)):
            out[key] = float(value)
    return out


def log_params(params: Mapping[str, Any], run_id: str | None = None) -> None:
    run_id = run_id or active_run_id()
    if run_id is None or not params:
        return
    from mlflow.entities import Param

    flat = {k: str(v)[:MAX_PARAM_CHARS] for k, v in flatten(params).items()}
    client = _client()
    items = [Param(k, v) for k, v in flat.items()]
    for start in range(0, len(items), 100):  # the REST/SQL batch limit
        client.log_batch(run_id, params=items[start : start + 100])


def log_metrics(metrics: Mapping[str, Any], step: int | None = None, run_id: str | None = None) -> None:
    """Log the numeric values of ``metrics`` (nested dicts are flattened with dots)."""
    run_id = run_id or active_run_id()
    if run_id is None:
        return
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    items = [Metric(k.replace("@", "_at_"), v, now, step or 0) for k, v in numeric_items(metrics).items()]
    client = _client()
    for start in range(0, len(items), 1000):
        client.log_batch(run_id, metrics=items[start : start + 1000])


def log_artifact(path: str | os.PathLike, artifact_path: str | None = None, run_id: str | None = None) -> None:
    run_id = run_id or active_run_id()
    if run_id is None:
        return
    _client().log_artifact(run_id, str(path), artifact_path)


def set_tags(tags: Mapping[str, Any], run_id: str | None = None) -> None:
    run_id = run_id or active_run_id()
    if run_id is None:
        return
    client = _client()
    for key, value in tags.items():
        client.set_tag(run_id, key, str(value))
