"""Shared by the pipeline tests that write plots: a PNG check and a run under the MLflow hook."""
from pathlib import Path
from types import SimpleNamespace


def assert_png(path: Path) -> None:
    """A complete PNG image: its signature, decodable, a plot-sized picture."""
    from PIL import Image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and min(image.size) > 100


def artifacts_by_node(pipeline, catalog, tmp_path: Path) -> dict[str, list[str]]:
    """Run ``pipeline`` under the project's MLflow hook (a sqlite store in ``tmp_path``); returns
    each node's child run's artifact paths."""
    from kedro.framework.hooks.manager import _create_hook_manager
    from kedro.runner import SequentialRunner
    from mlflow.tracking import MlflowClient

    from singer_rec.hooks import MlflowTrackingHook

    hook = MlflowTrackingHook()
    hook.after_context_created(SimpleNamespace(
        config_loader={"mlflow": {"mlflow": {"tracking_uri": "sqlite:///mlflow.db", "experiment": "plots"}}},
        project_path=tmp_path, env="test", params={}))
    manager = _create_hook_manager()
    manager.register(hook)
    hook.before_pipeline_run({"pipeline_name": "plots", "session_id": "s"}, pipeline, catalog)
    SequentialRunner().run(pipeline, catalog, hook_manager=manager)
    hook.after_pipeline_run({}, {}, pipeline, catalog)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("plots").experiment_id])
    return {run.data.tags["kedro.node"]: sorted(a.path for a in client.list_artifacts(run.info.run_id))
            for run in runs if "kedro.node" in run.data.tags}
