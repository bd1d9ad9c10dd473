"""The MLflow hook: one parent run per ``kedro run``, one child run per node tagged train/eval.

It talks to MLflow through explicit run ids (``MlflowClient``), never the fluent run stack, so
it behaves the same under the sequential, thread and parallel runners. Settings come from
``conf/<env>/mlflow.yml``::

    mlflow:
      enabled: true
      tracking_uri: sqlite:///mlflow.db   # relative paths are taken from the project root
      experiment: singer-rec
"""
from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

from singer_rec import tracking

logger = logging.getLogger(__name__)

TRACKED_TAGS = {"train", "eval"}
PARENT_RUN_ENV = "SINGER_MLFLOW_PARENT_RUN_ID"


def _resolve_uri(uri: str, project_path: Path) -> str:
    """Make ``sqlite:///relative.db`` and plain relative folders absolute under the project."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{(project_path / uri[len('sqlite:///'):]).resolve()}"
    if "://" not in uri:
        return (project_path / uri).resolve().as_uri()
    return uri


def _git_commit(project_path: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=project_path, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


class MlflowTrackingHook:
    def __init__(self) -> None:
        self._enabled = False
        self._uri: str | None = None
        self._experiment = "singer-rec"
        self._parent_run_id: str | None = None
        self._child_runs: dict[str, str] = {}
        self._project_path = Path.cwd()
        self._env = None

    # -- configuration ---------------------------------------------------------------------
    @hook_impl
    def after_context_created(self, context) -> None:
        try:
            conf = context.config_loader["mlflow"].get("mlflow", {})
        except KeyError:
            conf = {}
        self._enabled = bool(conf.get("enabled", True)) and os.environ.get("SINGER_MLFLOW", "1") != "0"
        self._project_path = Path(context.project_path)
        uri = os.environ.get("MLFLOW_TRACKING_URI") or conf.get("tracking_uri", "sqlite:///mlflow.db")
        self._uri = _resolve_uri(uri, self._project_path)
        self._experiment = conf.get("experiment", "singer-rec")
        self._env = context.env

    def _client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self._uri or os.environ[tracking.URI_ENV])

    def _experiment_id(self, client) -> str:
        exp = client.get_experiment_by_name(self._experiment)
        if exp is not None:
            return exp.experiment_id
        try:
            return client.create_experiment(self._experiment)
        except Exception:  # created meanwhile by a parallel worker
            return client.get_experiment_by_name(self._experiment).experiment_id

    # -- parent run ------------------------------------------------------------------------
    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        if not self._enabled:
            return
        client = self._client()
        exp_id = self._experiment_id(client)
        name = run_params.get("pipeline_names") or run_params.get("pipeline_name") or "__default__"
        if isinstance(name, (list, tuple)):
            name = "+".join(name)
        tags = {
            "mlflow.runName": f"{self._env or 'base'}:{name}",
            "kedro.env": str(self._env or "base"),
            "kedro.pipeline": str(name),
            "kedro.session_id": str(run_params.get("session_id") or run_params.get("run_id") or ""),
        }
        commit = _git_commit(self._project_path)
        if commit:
            tags["mlflow.source.git.commit"] = commit
        run = client.create_run(exp_id, tags=tags)
        self._parent_run_id = run.info.run_id
        # Published for worker processes of the parallel runner, whose hook instances are fresh.
        os.environ[PARENT_RUN_ENV] = self._parent_run_id
        os.environ[tracking.URI_ENV] = self._uri
        extra = run_params.get("runtime_params") or run_params.get("extra_params") or {}
        if extra:
            client.log_param(self._parent_run_id, "runtime_params", str(extra)[: tracking.MAX_PARAM_CHARS])
        logger.info("MLflow parent run %s in %s", self._parent_run_id, self._uri)

    def _finish_parent(self, status: str) -> None:
        if self._parent_run_id is None:
            return
        self._client().set_terminated(self._parent_run_id, status=status)
        self._parent_run_id = None
        os.environ.pop(PARENT_RUN_ENV, None)
        os.environ.pop(tracking.URI_ENV, None)

    @hook_impl
    def after_pipeline_run(self, run_params, run_result, pipeline, catalog) -> None:
        self._finish_parent("FINISHED")

    @hook_impl
    def on_pipeline_error(self, error, run_params, pipeline, catalog) -> None:
        for node_name in list(self._child_runs):
            self._finish_child(node_name, "FAILED")
        self._finish_parent("FAILED")

    # -- child runs ------------------------------------------------------------------------
    @hook_impl
    def before_node_run(self, node, catalog, inputs, is_async, run_id) -> None:
        parent = self._parent_run_id or os.environ.get(PARENT_RUN_ENV)
        if parent is None or not (TRACKED_TAGS & set(node.tags)):
            return
        client = self._client()
        exp_id = client.get_run(parent).info.experiment_id
        child = client.create_run(
            exp_id,
            tags={
                "mlflow.parentRunId": parent,
                "mlflow.runName": node.name,
                "kedro.node": node.name,
                "kedro.tags": ",".join(sorted(node.tags)),
            },
        )
        self._child_runs[node.name] = child.info.run_id
        os.environ[tracking.RUN_ID_ENV] = child.info.run_id
        params = {}
        for name, value in inputs.items():
            if name == "parameters":
                params.update(value if isinstance(value, dict) else {})
            elif name.startswith("params:"):
                key = name[len("params:"):]
                params.update(tracking.flatten(value, key) if isinstance(value, dict) else {key: value})
        tracking.log_params(params, run_id=child.info.run_id)

    def _finish_child(self, node_name: str, status: str) -> None:
        run_id = self._child_runs.pop(node_name, None)
        if run_id is None:
            return
        self._client().set_terminated(run_id, status=status)
        if os.environ.get(tracking.RUN_ID_ENV) == run_id:
            os.environ.pop(tracking.RUN_ID_ENV, None)

    @hook_impl
    def after_node_run(self, node, catalog, inputs, outputs, is_async, run_id) -> None:
        child = self._child_runs.get(node.name)
        if child is None:
            return
        for name, value in outputs.items():
            if isinstance(value, dict):
                tracking.log_metrics({name: value}, run_id=child)
        self._finish_child(node.name, "FINISHED")

    @hook_impl
    def on_node_error(self, error, node, catalog, inputs, is_async, run_id) -> None:
        self._finish_child(node.name, "FAILED")
