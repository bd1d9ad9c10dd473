"""The MLflow hook: one parent run per ``kedro run``, one child run per tracked node.

A node is tracked when it is tagged ``train`` or ``eval``, or when it writes a plot or a report
(a local file whose suffix is in ``artifact_suffixes``). Its ``params:`` inputs become run
parameters, its dict outputs metrics, its saved plots/reports artifacts, and every model folder
it saves (``ModelFolderDataset``) is referenced by two tags, ``<dataset>.path`` and
``<dataset>.fingerprint``. A ``train`` node's run also gets ``training_curves.png``: every
metric it logged at several steps (``singer_rec.curves``). The child run stays open until the
node's last output is saved.

It talks to MLflow through explicit run ids (``MlflowClient``), never the fluent run stack, so
it behaves the same under the sequential, thread and parallel runners. While a pipeline runs it
publishes the store and the run through MLflow's standard ``MLFLOW_TRACKING_URI`` and
``MLFLOW_RUN_ID`` (the parent run between nodes, the child run inside one), restoring the
caller's values afterwards. Settings come from ``conf/<env>/mlflow.yml``::

    mlflow:
      enabled: true
      tracking_uri: sqlite:///mlflow.db   # relative paths are taken from the project root
      experiment: singer-rec
      artifact_location: mlruns           # where a new experiment keeps its artifacts
      artifact_suffixes: [.png, .svg, .pdf, .md, .html]
      model_artifact_max_mb: 0            # > 0: also copy model folders up to this size

The store is checked when the run starts (a parent run is created): a store that cannot be
written stops the run before any node with :class:`TrackingStoreError`. A store that fails
later is reported once per node (``singer_rec.tracking``) and never stops a node.
"""
from __future__ import annotations

import logging
import os
import subprocess
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

from singer_rec import tracking

logger = logging.getLogger(__name__)

TRACKED_TAGS = {"train", "eval"}
ARTIFACT_SUFFIXES = (".png", ".svg", ".pdf", ".md", ".html")
HEALTH_TIMEOUT_S = 5.0


class TrackingStoreError(RuntimeError):
    """The MLflow store cannot be written when the run starts; nothing has run yet."""


def _resolve_uri(uri: str, project_path: Path) -> str:
    """Make ``sqlite:///relative.db`` and plain relative folders absolute under the project."""
    if uri.startswith("sqlite:///") and not uri.startswith(("sqlite:////", "sqlite:///file:")):
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


def check_server(uri: str, timeout: float = HEALTH_TIMEOUT_S) -> None:
    """For an http(s) store, one quick request to its ``/health`` page (MLflow's client would retry for minutes)."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as response:
            response.read(64)
    except urllib.error.HTTPError:
        return  # it answers: a server without /health is still a server
    except (OSError, ValueError) as err:
        raise TrackingStoreError(_store_message(uri, f"the server does not answer ({err})")) from err


def _store_message(uri: str, reason: str) -> str:
    return (f"MLflow tracking store {uri} cannot be written: {reason}. Nothing has run. Fix the store, "
            f"point MLFLOW_TRACKING_URI at a writable one, or set 'enabled: false' in conf/<env>/mlflow.yml")


def saved_path(dataset: Any) -> Path | None:
    """The local file or folder a (possibly versioned) file dataset has just written, else None."""
    filepath = getattr(dataset, "_filepath", None)
    if filepath is None or getattr(dataset, "_protocol", "file") not in ("file", "local", None):
        return None
    if getattr(dataset, "_version", None) is not None:
        filepath = dataset._get_versioned_path(dataset.resolve_save_version())
    return Path(str(filepath))


def _folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _output_dataset(catalog: Any, name: str) -> Any:
    try:
        return catalog.get(name)
    except Exception:  # a catalog without this name (a runtime pattern): not an artifact
        return None


class MlflowTrackingHook:
    def __init__(self) -> None:
        self._enabled = False
        self._uri: str | None = None
        self._experiment = "singer-rec"
        self._artifact_location: str | None = None
        self._artifact_suffixes = ARTIFACT_SUFFIXES
        self._model_artifact_max_bytes = 0
        self._parent_run_id: str | None = None
        self._child_runs: dict[str, str] = {}
        self._pending: dict[str, set[str]] = {}  # node -> outputs not saved yet
        self._catalogs: dict[str, Any] = {}
        self._curve_nodes: set[str] = set()  # train nodes: their run gets a training-curves plot
        self._saved_env: dict[str, str | None] = {}
        self._lock = threading.Lock()
        self._project_path = Path.cwd()
        self._env = None

    # -- configuration ---------------------------------------------------------------------
    @hook_impl
    def after_context_created(self, context) -> None:
        try:
            conf = context.config_loader["mlflow"].get("mlflow", {})
        except KeyError:
            conf = {}
        self._enabled = bool(conf.get("enabled", True))
        self._project_path = Path(context.project_path)
        uri = os.environ.get(tracking.URI_ENV) or conf.get("tracking_uri", "sqlite:///mlflow.db")
        self._uri = _resolve_uri(uri, self._project_path) if self._enabled else None
        self._experiment = conf.get("experiment", "singer-rec")
        location = conf.get("artifact_location", "mlruns")
        self._artifact_location = _resolve_uri(location, self._project_path) if location else None
        self._artifact_suffixes = tuple(conf.get("artifact_suffixes", ARTIFACT_SUFFIXES))
        self._model_artifact_max_bytes = int(float(conf.get("model_artifact_max_mb", 0)) * 2**20)
        self._env = context.env

    def _store_uri(self) -> str | None:
        return self._uri or os.environ.get(tracking.URI_ENV)

    def _client(self):
        return tracking.client(self._store_uri())

    def _experiment_id(self, client) -> str:
        exp = client.get_experiment_by_name(self._experiment)
        if exp is not None:
            return exp.experiment_id
        try:
            return client.create_experiment(self._experiment, artifact_location=self._artifact_location)
        except Exception:  # created meanwhile by a parallel worker
            return client.get_experiment_by_name(self._experiment).experiment_id

    def _publish(self, name: str, value: str) -> None:
        """Set an MLflow variable for the run's duration, remembering the caller's value once."""
        self._saved_env.setdefault(name, os.environ.get(name))
        os.environ[name] = value

    def _restore_env(self) -> None:
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_env = {}

    # -- parent run ------------------------------------------------------------------------
    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        if not self._enabled:
            return
        tracking.forget_failures()
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
        self._parent_run_id = self._start_parent(tags)
        # Published for the node's training processes and the parallel runner's workers, whose
        # hook instances are fresh and find the parent run here.
        self._publish(tracking.URI_ENV, self._uri)
        self._publish(tracking.RUN_ID_ENV, self._parent_run_id)
        extra = run_params.get("runtime_params") or run_params.get("extra_params") or {}
        if extra:
            tracking.log_params({"runtime_params": extra}, run_id=self._parent_run_id, uri=self._uri)
        logger.info("MLflow parent run %s in %s", self._parent_run_id, self._uri)

    def _start_parent(self, tags: dict[str, str]) -> str:
        """Create the parent run: the write check of the store, before any node runs."""
        check_server(self._uri)
        try:
            with tracking.quiet_mlflow():
                client = self._client()
                run = client.create_run(self._experiment_id(client), tags=tags)
                client.log_param(run.info.run_id, "kedro.env", tags["kedro.env"])
        except Exception as err:
            raise TrackingStoreError(_store_message(self._uri, tracking.short_error(err))) from err
        return run.info.run_id

    def _finish_parent(self, status: str) -> None:
        parent, self._parent_run_id = self._parent_run_id, None
        if parent is not None:
            tracking.guarded(parent, "closing the run", lambda: self._client().set_terminated(parent, status=status))
        self._restore_env()

    @hook_impl
    def after_pipeline_run(self, run_params, run_result, pipeline, catalog) -> None:
        self._finish_parent("FINISHED")

    @hook_impl
    def on_pipeline_error(self, error, run_params, pipeline, catalog) -> None:
        for node_name in list(self._child_runs):
            self._finish_child(node_name, "FAILED")
        self._finish_parent("FAILED")

    # -- child runs ------------------------------------------------------------------------
    def _find_parent(self) -> str | None:
        """The parent run: ours, or in a parallel runner's fresh worker hook the one published in the environment."""
        if self._parent_run_id is not None or self._enabled:
            return self._parent_run_id
        run_id, uri = os.environ.get(tracking.RUN_ID_ENV), os.environ.get(tracking.URI_ENV)
        if not (run_id and uri):
            return None
        run = tracking.guarded(run_id, "finding the parent run", lambda: self._client().get_run(run_id))
        if run is None:
            return None
        tags = run.data.tags
        if "kedro.pipeline" in tags:
            self._parent_run_id = run_id  # this worker's nodes all belong to it
        elif "kedro.node" in tags:
            self._parent_run_id = tags.get("mlflow.parentRunId")
        return self._parent_run_id

    def _is_tracked(self, node, catalog) -> bool:
        if TRACKED_TAGS & set(node.tags):
            return True
        return any(self._artifact_file(_output_dataset(catalog, name)) for name in node.outputs)

    def _artifact_file(self, dataset: Any) -> bool:
        filepath = getattr(dataset, "_filepath", None)
        return filepath is not None and str(filepath).lower().endswith(self._artifact_suffixes)

    @hook_impl
    def before_node_run(self, node, catalog, inputs, is_async, run_id) -> None:
        parent = self._find_parent()
        if parent is None or not self._is_tracked(node, catalog):
            return
        tags = {"mlflow.parentRunId": parent, "mlflow.runName": node.name, "kedro.node": node.name,
                "kedro.tags": ",".join(sorted(node.tags))}

        def create() -> str:
            client = self._client()
            return client.create_run(client.get_run(parent).info.experiment_id, tags=tags).info.run_id

        child = tracking.guarded(node.name, "creating the node's run", create)
        if child is None:
            # the node runs untracked: its training process must not log into the parent instead
            tracking.use_run(None)
            return
        with self._lock:
            self._child_runs[node.name] = child
            self._pending[node.name] = set(node.outputs)
            self._catalogs[node.name] = catalog
            if "train" in node.tags:
                self._curve_nodes.add(node.name)
        os.environ[tracking.RUN_ID_ENV] = child
        os.environ.setdefault(tracking.URI_ENV, self._store_uri())
        tracking.use_run(child)
        params = {}
        for name, value in inputs.items():
            if name == "parameters":
                params.update(value if isinstance(value, dict) else {})
            elif name.startswith("params:"):
                key = name[len("params:"):]
                params.update(tracking.flatten(value, key) if isinstance(value, dict) else {key: value})
        tracking.log_params(params, run_id=child, uri=self._store_uri())

    def _finish_child(self, node_name: str, status: str) -> None:
        with self._lock:
            run_id = self._child_runs.pop(node_name, None)
            self._pending.pop(node_name, None)
            self._catalogs.pop(node_name, None)
            curves = node_name in self._curve_nodes
            self._curve_nodes.discard(node_name)
        if run_id is None:
            return
        if curves and status == "FINISHED":
            try:
                self._log_curves(run_id, node_name)
            except Exception as err:  # a plot that cannot be drawn or written never fails the node
                tracking.report_failure(run_id, "drawing the training curves", err)
        tracking.guarded(run_id, "closing the run", lambda: self._client().set_terminated(run_id, status=status))
        tracking.clear_run()
        if os.environ.get(tracking.RUN_ID_ENV) == run_id:
            # back to the parent between nodes (a parallel worker's next node finds it there)
            parent = self._parent_run_id or self._find_parent_of(run_id)
            if parent:
                os.environ[tracking.RUN_ID_ENV] = parent
            else:
                os.environ.pop(tracking.RUN_ID_ENV, None)

    def _log_curves(self, run_id: str, node_name: str) -> None:
        """``training_curves.png`` from the run's own per-step metrics (none logged: no plot)."""
        import tempfile

        from singer_rec.curves import curves_figure, metric_histories

        histories = tracking.guarded(run_id, "reading the curves", lambda: metric_histories(self._client(), run_id))
        if not histories:
            return
        import matplotlib.pyplot as plt

        figure = curves_figure(histories, title=node_name)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "training_curves.png"
            figure.savefig(path, dpi=100)
            plt.close(figure)
            tracking.log_artifact(path, run_id=run_id, uri=self._store_uri())

    def _find_parent_of(self, run_id: str) -> str | None:
        run = tracking.guarded(run_id, "finding the parent run", lambda: self._client().get_run(run_id))
        return run.data.tags.get("mlflow.parentRunId") if run is not None else None

    @hook_impl
    def after_node_run(self, node, catalog, inputs, outputs, is_async, run_id) -> None:
        child = self._child_runs.get(node.name)
        if child is None:
            tracking.clear_run()  # an untracked node: this thread follows MLFLOW_RUN_ID again
            return
        for name, value in outputs.items():
            if isinstance(value, dict):
                tracking.log_metrics({name: value}, run_id=child, uri=self._store_uri())
        if not node.outputs:
            self._finish_child(node.name, "FINISHED")

    @hook_impl
    def after_dataset_saved(self, dataset_name, data, node) -> None:
        """Artifacts and model references of a tracked node; its run closes after its last output."""
        child = self._child_runs.get(node.name)
        if child is None:
            return
        dataset = _output_dataset(self._catalogs.get(node.name), dataset_name)
        try:
            self._log_saved(child, dataset_name, dataset)
        except Exception as err:  # reading back what was saved must not fail the node either
            tracking.report_failure(child, f"logging {dataset_name}", err)
        with self._lock:
            pending = self._pending.get(node.name, set())
            pending.discard(dataset_name)
            done = not pending
        if done:
            self._finish_child(node.name, "FINISHED")

    def _log_saved(self, child: str, dataset_name: str, dataset: Any) -> None:
        from singer_rec.datasets.model_folder import ModelFolderDataset, folder_fingerprint

        path = saved_path(dataset)
        if path is None or not path.exists():
            return
        uri = self._store_uri()
        if isinstance(dataset, ModelFolderDataset):
            tracking.set_tags({f"{dataset_name}.path": path.resolve(),
                               f"{dataset_name}.fingerprint": folder_fingerprint(path)}, run_id=child, uri=uri)
            if self._model_artifact_max_bytes and _folder_size(path) <= self._model_artifact_max_bytes:
                tracking.log_artifact(path, f"models/{dataset_name}", run_id=child, uri=uri)
        elif path.is_file() and self._artifact_file(dataset):
            tracking.log_artifact(path, run_id=child, uri=uri)

    @hook_impl
    def on_node_error(self, error, node, catalog, inputs, is_async, run_id) -> None:
        if node.name in self._child_runs:
            self._finish_child(node.name, "FAILED")
        else:
            tracking.clear_run()  # an untracked node: this thread follows MLFLOW_RUN_ID again
