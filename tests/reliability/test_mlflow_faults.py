"""A tracking store that cannot be written stops the run before any node; one that fails during a
run is reported once per node while the node goes on and its outputs are saved.

Real components throughout: the project hook on a real Kedro runner and catalog, a real MLflow
sqlite store, a real (closed) port on localhost, and a real training process started by
``run_training``.
"""
from __future__ import annotations

import json
import logging
import shutil
import socket
import sqlite3
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from kedro.framework.hooks.manager import _create_hook_manager
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Pipeline, node
from kedro.runner import SequentialRunner
from mlflow.tracking import MlflowClient

from singer_rec import tracking
from singer_rec.hooks import MlflowTrackingHook, TrackingStoreError
from singer_rec.training.launch import run_training

HERE = Path(__file__).resolve().parent


def closed_port() -> int:
    """A localhost port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_hook(tmp_path: Path, uri: str) -> MlflowTrackingHook:
    hook = MlflowTrackingHook()
    hook.after_context_created(SimpleNamespace(
        config_loader={"mlflow": {"mlflow": {"tracking_uri": uri, "experiment": "faults"}}},
        project_path=tmp_path, env="test", params={}))
    return hook


def kedro_run(hook: MlflowTrackingHook, pipeline: Pipeline, catalog: DataCatalog) -> None:
    """What ``KedroSession.run`` does around the runner, with the project hook registered."""
    manager = _create_hook_manager()
    manager.register(hook)
    manager.hook.before_pipeline_run(run_params={"pipeline_name": "faults"}, pipeline=pipeline, catalog=catalog)
    try:
        SequentialRunner().run(pipeline, catalog, hook_manager=manager)
    except Exception as error:
        manager.hook.on_pipeline_error(error=error, run_params={}, pipeline=pipeline, catalog=catalog)
        raise
    manager.hook.after_pipeline_run(run_params={}, run_result={}, pipeline=pipeline, catalog=catalog)


def failure_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(tracking.FAILURE_PREFIX)]


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory) -> Path:
    """An initialised sqlite store with the experiment (MLflow's schema migrations run once)."""
    db = tmp_path_factory.mktemp("store") / "mlflow.db"
    MlflowClient(f"sqlite:///{db}").create_experiment("faults")
    return db


@pytest.fixture
def store(tmp_path, empty_store) -> Path:
    """A copy of the empty store as ``tmp_path/mlflow.db``."""
    db = tmp_path / "mlflow.db"
    shutil.copyfile(empty_store, db)
    return db


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in (tracking.URI_ENV, tracking.RUN_ID_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # MLflow's own knob: fail fast, not in 4 minutes
    tracking.forget_failures()
    yield
    tracking.forget_failures()


def test_read_only_sqlite_store_stops_the_run_before_any_node(tmp_path, store, capfd):
    db = store
    db.chmod(0o444)
    # root ignores file modes; sqlite's read-only open mode makes the file read-only for everyone
    uri = f"sqlite:///file:{db}?mode=ro&uri=true"
    calls = []
    pipeline = Pipeline([node(lambda x: calls.append(x) or x, "x", "y", name="train", tags=["train"])])
    with pytest.raises(TrackingStoreError) as info:
        kedro_run(make_hook(tmp_path, uri), pipeline, DataCatalog({"x": MemoryDataset(1)}))
    message = str(info.value)
    assert message.startswith(f"MLflow tracking store {uri} cannot be written: ")
    assert "attempt to write a readonly database" in message and "Nothing has run" in message
    assert "\n" not in message
    assert calls == []
    assert "SQLAlchemy database error" not in capfd.readouterr().err  # MLflow's own traceback is not shown


def test_unreachable_server_stops_the_run_before_any_node(tmp_path):
    uri = f"http://127.0.0.1:{closed_port()}"
    calls = []
    pipeline = Pipeline([node(lambda x: calls.append(x) or x, "x", "y", name="train", tags=["train"])])
    with pytest.raises(TrackingStoreError, match=rf"MLflow tracking store {uri} cannot be written: the server "
                                                 r"does not answer .*Connection refused"):
        kedro_run(make_hook(tmp_path, uri), pipeline, DataCatalog({"x": MemoryDataset(1)}))
    assert calls == []


def test_store_locked_during_a_node_is_reported_once_and_the_outputs_are_saved(tmp_path, store, caplog):
    """Another process holds an exclusive lock on the sqlite file during part of the node.

    MLflow waits 20 s for a locked sqlite file (its busy timeout) before it gives up: that wait
    happens once for the node, then its remaining calls are skipped even after the lock is gone.
    """
    hook = make_hook(tmp_path, "sqlite:///mlflow.db")
    locker = sqlite3.connect(store, timeout=0, isolation_level=None)

    def train(x):
        tracking.log_metrics({"loss": 1.0}, step=1)
        locker.execute("BEGIN EXCLUSIVE")  # from here on every write to the store fails
        for step in range(2, 6):
            tracking.log_metrics({"loss": 1.0 / step}, step=step)
        locker.execute("ROLLBACK")
        return {"accuracy": 0.5}

    output = tmp_path / "metrics.json"
    pipeline = Pipeline([node(train, "x", "metrics", name="train_model", tags=["train"])])
    catalog = DataCatalog({"x": MemoryDataset(1), "metrics": _json_dataset(output)})
    caplog.set_level(logging.WARNING, logger="singer_rec")
    kedro_run(hook, pipeline, catalog)

    assert json.loads(output.read_text()) == {"accuracy": 0.5}  # the node's output is saved
    client = MlflowClient(f"sqlite:///{store}")
    runs = client.search_runs([client.get_experiment_by_name("faults").experiment_id])
    child = next(r for r in runs if r.data.tags.get("kedro.node") == "train_model")
    assert [m.value for m in client.get_metric_history(child.info.run_id, "loss")] == [1.0]
    assert child.data.metrics == {"loss": 1.0}  # the output metrics were skipped too
    lines = failure_lines(caplog)
    assert len(lines) == 1 and lines[0].split()[5] == child.info.run_id  # one line, not one per metric
    assert "database is locked" in lines[0]
    assert client.get_run(hook_parent(runs)).info.status == "FINISHED"  # the rest of the run is tracked


def hook_parent(runs) -> str:
    return next(r.info.run_id for r in runs if "kedro.pipeline" in r.data.tags)


def _json_dataset(path: Path):
    from kedro_datasets.json import JSONDataset

    return JSONDataset(filepath=str(path))


@pytest.mark.parametrize("fault", ["unreachable server", "read-only sqlite"])
def test_training_process_that_loses_its_store_reports_once_for_the_node(tmp_path, store, caplog, fault):
    """The node's training process can no longer write its store: one warning for the whole node."""
    hook = make_hook(tmp_path, "sqlite:///mlflow.db")
    unreachable = (f"http://127.0.0.1:{closed_port()}" if fault == "unreachable server"
                   else f"sqlite:///file:{store}?mode=ro&uri=true")
    result = tmp_path / "result.json"

    def train(x):
        # MLFLOW_RUN_ID is the node's run; only the store address is gone for the child process
        return run_training("logging_entry", {"steps": 5, "result_path": str(result)},
                            env={tracking.URI_ENV: unreachable, "PYTHONPATH": str(HERE)})

    output = tmp_path / "report.json"
    pipeline = Pipeline([node(train, "x", "report", name="train_model", tags=["train"])])
    caplog.set_level(logging.INFO)
    kedro_run(hook, pipeline, DataCatalog({"x": MemoryDataset(1), "report": _json_dataset(output)}))

    assert json.loads(output.read_text()) == {"steps_done": 5}  # training went on to the end
    reported = [r.getMessage() for r in caplog.records if tracking.FAILURE_PREFIX in r.getMessage()]
    assert len(reported) == 1, reported  # the child's line, streamed once; the hook adds none
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("faults").experiment_id])
    child = next(r for r in runs if r.data.tags.get("kedro.node") == "train_model")
    assert child.info.run_id in reported[0]
    # the node's process skips that run too (no output metrics, no closing call): already reported
    assert client.get_run(child.info.run_id).data.metrics == {}
    assert tracking.run_failed(child.info.run_id)


def test_parallel_runner_workers_find_the_parent_through_mlflow_run_id(tmp_path, store):
    """A fresh hook (a spawned worker's) finds the parent run in MLflow's standard variables."""
    hook = make_hook(tmp_path, "sqlite:///mlflow.db")
    pipeline = Pipeline([node(lambda x: {"a": 1.0}, "x", "m", name="eval_node", tags=["eval"])])
    catalog = DataCatalog({"x": MemoryDataset(1), "m": MemoryDataset()})
    hook.before_pipeline_run({"pipeline_name": "p"}, pipeline, catalog)
    parent = hook._parent_run_id
    assert tracking.active_run_id() == parent
    worker = MlflowTrackingHook()  # no after_context_created: what a spawned worker builds
    manager = _create_hook_manager()
    manager.register(worker)
    SequentialRunner().run(pipeline, catalog, hook_manager=manager)
    assert tracking.active_run_id() == parent  # back to the parent between nodes
    hook.after_pipeline_run({}, {}, pipeline, catalog)
    assert tracking.active_run_id() is None  # the caller's environment is restored
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    child = next(r for r in client.search_runs([client.get_experiment_by_name("faults").experiment_id])
                 if r.data.tags.get("kedro.node") == "eval_node")
    assert child.data.tags["mlflow.parentRunId"] == parent
    assert child.data.metrics == {"m.a": 1.0} and child.info.status == "FINISHED"


def test_no_custom_mlflow_variables_are_left_in_the_code():
    root = HERE.parents[1]
    offenders = [str(p.relative_to(root)) for p in (root / "src").rglob("*.py")
                 if "SINGER_MLFLOW" in p.read_text(encoding="utf-8")]
    assert offenders == []
    assert (tracking.URI_ENV, tracking.RUN_ID_ENV) == ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID")


@pytest.mark.slow
def test_kedro_run_with_an_unreachable_store_fails_before_reading_data(tmp_path):
    """The real command: ``kedro run`` stops with the store's message and writes no data."""
    import os
    import subprocess

    sys.path.insert(0, str(HERE.parent))
    from test_end_to_end import _project_copy

    root = _project_copy(tmp_path)
    uri = f"http://127.0.0.1:{closed_port()}"
    env = dict(os.environ, KEDRO_DISABLE_TELEMETRY="true", MLFLOW_TRACKING_URI=uri, COLUMNS="200")
    run = subprocess.run([sys.executable, "-m", "kedro", "run", "--to-nodes=build_semantic_ids"], cwd=root,
                         env=env, capture_output=True, text=True, timeout=300)
    output = " ".join((run.stdout + run.stderr).split())
    assert run.returncode != 0
    assert f"TrackingStoreError: MLflow tracking store {uri} cannot be written: the server does not answer" in output
    assert "Running node" not in output
    assert not (root / "data").exists() or not [p for p in (root / "data").rglob("*") if p.is_file()]
