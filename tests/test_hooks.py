"""The MLflow hook against a real sqlite store, under the sequential, thread and parallel runners."""
from types import SimpleNamespace

import pytest
from kedro.framework.hooks.manager import _create_hook_manager
from kedro.framework.project import configure_project
from kedro.io import DataCatalog, MemoryDataset, SharedMemoryDataCatalog
from kedro.pipeline import Pipeline, node
from kedro.runner import ParallelRunner, SequentialRunner, ThreadRunner
from mlflow.tracking import MlflowClient

from singer_rec import tracking
from singer_rec.hooks import MlflowTrackingHook


def train_model(x, params):
    tracking.log_metrics({"loss": 0.5}, step=1)  # logs into this node's child run
    return {"accuracy": 0.75, "nested": {"f1": 0.5}, "label": "not a number"}


def square(x):
    return x * x


def _pipeline():
    return Pipeline(
        [
            node(train_model, ["x", "params:model"], "train_metrics", name="train_model", tags=["train"]),
            node(square, "x", "x_squared", name="square"),
        ]
    )


@pytest.mark.parametrize("runner_cls", [SequentialRunner, ThreadRunner, ParallelRunner])
def test_parent_and_child_runs(tmp_path, runner_cls, monkeypatch):
    db = tmp_path / "mlflow.db"
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    hook = MlflowTrackingHook()
    context = SimpleNamespace(
        config_loader={"mlflow": {"mlflow": {"tracking_uri": "sqlite:///mlflow.db", "experiment": "t"}}},
        project_path=tmp_path,
        env="test",
        params={},
    )
    hook.after_context_created(context)
    manager = _create_hook_manager()
    manager.register(hook)
    catalog_cls = SharedMemoryDataCatalog if runner_cls is ParallelRunner else DataCatalog
    catalog = catalog_cls(
        {
            "x": MemoryDataset(3),
            "params:model": MemoryDataset({"hidden": 8, "opt": {"lr": 0.1}}),
            "train_metrics": MemoryDataset(),
            "x_squared": MemoryDataset(),
        }
    )
    pipeline = _pipeline()
    hook.before_pipeline_run({"pipeline_name": "demo", "session_id": "s1"}, pipeline, catalog)
    if runner_cls is ParallelRunner:
        # Workers build their hooks from the project's settings: fresh instances that find the
        # parent run through the environment.
        configure_project("singer_rec")
        runner = ParallelRunner(max_workers=2)
    else:
        runner = runner_cls()
    runner.run(pipeline, catalog, hook_manager=manager)
    hook.after_pipeline_run({}, {}, pipeline, catalog)

    client = MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name("t")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert parents[0].data.tags["kedro.pipeline"] == "demo"
    assert len(children) == 1  # only the node tagged `train`
    child = children[0]
    assert child.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
    assert child.data.tags["mlflow.runName"] == "train_model"
    assert child.info.status == "FINISHED"
    assert child.data.params == {"model.hidden": "8", "model.opt.lr": "0.1"}
    assert child.data.metrics == {"train_metrics.accuracy": 0.75, "train_metrics.nested.f1": 0.5, "loss": 0.5}


def test_failed_node_marks_runs_failed(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    hook = MlflowTrackingHook()
    hook.after_context_created(
        SimpleNamespace(config_loader={"mlflow": {}}, project_path=tmp_path, env="test", params={})
    )

    def boom(x):
        raise RuntimeError("bad")

    manager = _create_hook_manager()
    manager.register(hook)
    pipeline = Pipeline([node(boom, "x", "y", name="boom", tags=["eval"])])
    catalog = DataCatalog({"x": MemoryDataset(1)})
    hook.before_pipeline_run({"pipeline_name": "p"}, pipeline, catalog)
    with pytest.raises(RuntimeError, match="bad"):
        SequentialRunner().run(pipeline, catalog, hook_manager=manager)
    hook.on_pipeline_error(RuntimeError("bad"), {}, pipeline, catalog)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("singer-rec").experiment_id])
    assert sorted(r.info.status for r in runs) == ["FAILED", "FAILED"]


def test_tracking_is_noop_outside_tracked_nodes(monkeypatch):
    monkeypatch.delenv(tracking.RUN_ID_ENV, raising=False)
    assert tracking.active_run_id() is None
    tracking.log_metrics({"a": 1})  # must not raise
    assert tracking.numeric_items({"a": {"b": 1, "c": "x", "d": float("nan")}, "e": True}) == {"a.b": 1.0, "e": 1.0}
