"""Project pipelines: every folder under ``pipelines/`` is a stage, ``__default__`` runs them all."""
from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

# Stages left out of the default `kedro run` (run them by name).
NOT_IN_DEFAULT = {"baselines", "report", "ablations", "llm_baselines", "sdpo"}


def register_pipelines() -> dict[str, Pipeline]:
    pipelines = find_pipelines(raise_errors=True)
    pipelines["__default__"] = sum(
        (p for name, p in pipelines.items() if name not in NOT_IN_DEFAULT), Pipeline([])
    )
    return pipelines
