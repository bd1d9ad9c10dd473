"""The MLflow hook against a real sqlite store, under the sequential, thread and parallel runners."""
from pathlib import Path
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


def test_plots_reports_and_model_folders_reach_the_node_runs(tmp_path, monkeypatch):
    """A report node (no train/eval tag) gets a child run holding its plot and markdown; a model
    folder saved by a train node is referenced by path and fingerprint tags (and, under the size
    limit, copied as artifacts)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from singer_rec.datasets.model_folder import folder_fingerprint

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    hook = MlflowTrackingHook()
    hook.after_context_created(SimpleNamespace(
        config_loader={"mlflow": {"mlflow": {"experiment": "a", "model_artifact_max_mb": 1}}},
        project_path=tmp_path, env="test", params={}))

    def train(x):
        for step in (1, 2, 3):
            tracking.log_metrics({"train_loss": 1.0 / step, "lr": 0.1}, step=step)
        tracking.log_metrics({"samples": 7})  # one step only: not a curve
        folder = tmp_path / "work" / "model"
        folder.mkdir(parents=True)
        (folder / "singer.json").write_text('{"preset": "scratch", "sid_map": {}}')
        (folder / "model.safetensors").write_bytes(b"weights")
        return str(folder), {"loss": 0.25}

    def report(model, metrics):
        figure, axis = plt.subplots()
        axis.plot([1, 2], [metrics["loss"], 0.1])
        return figure, f"# Report\n\nloss {metrics['loss']}\n"

    pipeline = Pipeline([
        node(train, "x", ["model", "train_metrics"], name="train", tags=["train"]),
        node(report, ["model", "train_metrics"], ["loss_plot", "report_md"], name="report"),
        node(square, "x", "x_squared", name="square"),  # neither tagged nor writing a file: no run
    ])
    catalog = DataCatalog.from_config({
        "model": {"type": "singer_rec.datasets.model_folder.ModelFolderDataset",
                  "filepath": str(tmp_path / "06_models" / "model"), "versioned": True},
        "loss_plot": {"type": "matplotlib.MatplotlibDataset", "filepath": str(tmp_path / "08" / "loss.png"),
                      "versioned": True},
        "report_md": {"type": "text.TextDataset", "filepath": str(tmp_path / "08" / "report.md")},
    })
    catalog["x"] = MemoryDataset(3)
    manager = _create_hook_manager()
    manager.register(hook)
    hook.before_pipeline_run({"pipeline_name": "art"}, pipeline, catalog)
    SequentialRunner().run(pipeline, catalog, hook_manager=manager)
    hook.after_pipeline_run({}, {}, pipeline, catalog)

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = {r.data.tags.get("kedro.node"): r for r in client.search_runs([client.get_experiment_by_name("a").experiment_id])}
    assert set(runs) == {None, "train", "report"}  # the parent, two child runs
    saved = catalog.load("model")
    train_run, report_run = runs["train"], runs["report"]
    assert train_run.data.tags["model.path"] == str(saved.resolve())
    assert train_run.data.tags["model.fingerprint"] == folder_fingerprint(saved) == folder_fingerprint(
        tmp_path / "06_models" / "model" / saved.parent.name / "model")
    assert len(train_run.data.tags["model.fingerprint"]) == 16
    assert sorted(a.path for a in client.list_artifacts(train_run.info.run_id, "models/model")) == [
        "models/model/model.safetensors", "models/model/singer.json"]
    assert train_run.data.metrics == {"train_metrics.loss": 0.25, "train_loss": 1 / 3, "lr": 0.1, "samples": 7}
    assert sorted(a.path for a in client.list_artifacts(train_run.info.run_id)) == ["models", "training_curves.png"]
    curves = Path(client.download_artifacts(train_run.info.run_id, "training_curves.png", str(tmp_path)))
    assert curves.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(a.path for a in client.list_artifacts(report_run.info.run_id)) == ["loss.png", "report.md"]
    assert Path(report_run.info.artifact_uri.removeprefix("file://")).is_relative_to(tmp_path / "mlruns")
    assert {r.info.status for r in runs.values()} == {"FINISHED"}


def test_curves_are_the_metrics_logged_at_several_steps(tmp_path):
    from singer_rec.curves import curves_figure, metric_histories

    client = MlflowClient(f"sqlite:///{tmp_path / 'c.db'}")
    run_id = client.create_run(client.create_experiment("c")).info.run_id
    for step, (loss, kl) in enumerate([(2.0, 0.0), (1.5, 0.1), (1.0, 0.3)], start=1):
        tracking.log_metrics({"rl": {"loss": loss, "kl": kl}}, step=step, run_id=run_id, uri=f"sqlite:///{tmp_path / 'c.db'}")
    client.log_metric(run_id, "final", 9.0)
    curves = metric_histories(client, run_id)
    assert curves == {"rl.kl": [(1, 0.0), (2, 0.1), (3, 0.3)], "rl.loss": [(1, 2.0), (2, 1.5), (3, 1.0)]}
    figure = curves_figure(curves, title="t")
    assert [axis.get_title() for axis in figure.axes] == ["rl.kl", "rl.loss"]
    with pytest.raises(ValueError, match="no curve to draw"):
        curves_figure({})


def test_fingerprint_follows_content_and_names():
    import tempfile

    from singer_rec.datasets.model_folder import folder_fingerprint

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "a").mkdir()
        (root / "a" / "w.bin").write_bytes(b"1")
        first = folder_fingerprint(root / "a")
        (root / "a" / "w.bin").write_bytes(b"2")
        assert folder_fingerprint(root / "a") != first
        (root / "a" / "w.bin").write_bytes(b"1")
        assert folder_fingerprint(root / "a") == first
        (root / "a" / "w.bin").rename(root / "a" / "v.bin")
        assert folder_fingerprint(root / "a") != first


def test_thread_runner_nodes_side_by_side_log_into_their_own_runs(tmp_path, monkeypatch):
    """Two train nodes run at the same time: each one's metrics, and those of the training process
    one of them starts, land in that node's run (one MLFLOW_RUN_ID cannot name both)."""
    import threading

    from singer_rec.training.launch import run_training

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    both_started = threading.Barrier(2, timeout=60)
    entry_dir = Path(__file__).resolve().parent / "reliability"

    def in_process(x):
        both_started.wait()
        for step in range(1, 4):
            tracking.log_metrics({"in_process": 1.0}, step=step)
        return {"done": 1.0}

    def with_process(x):
        both_started.wait()
        return run_training("logging_entry", {"steps": 3, "result_path": str(tmp_path / "result.json")},
                            env={"PYTHONPATH": str(entry_dir)})

    hook = MlflowTrackingHook()
    hook.after_context_created(SimpleNamespace(config_loader={"mlflow": {"mlflow": {"experiment": "th"}}},
                                               project_path=tmp_path, env="test", params={}))
    manager = _create_hook_manager()
    manager.register(hook)
    pipeline = Pipeline([node(in_process, "x", "a", name="a", tags=["train"]),
                         node(with_process, "x", "b", name="b", tags=["train"])])
    catalog = DataCatalog({"x": MemoryDataset(1), "a": MemoryDataset(), "b": MemoryDataset()})
    hook.before_pipeline_run({"pipeline_name": "th"}, pipeline, catalog)
    ThreadRunner(max_workers=2).run(pipeline, catalog, hook_manager=manager)
    hook.after_pipeline_run({}, {}, pipeline, catalog)

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = {r.data.tags.get("kedro.node"): r for r in client.search_runs([client.get_experiment_by_name("th").experiment_id])}
    assert set(runs["a"].data.metrics) == {"in_process", "a.done"}
    assert set(runs["b"].data.metrics) == {"loss", "b.steps_done"}
    assert [m.step for m in client.get_metric_history(runs["b"].info.run_id, "loss")] == [1, 2, 3]
    assert runs[None].data.metrics == {}  # nothing strayed into the parent
