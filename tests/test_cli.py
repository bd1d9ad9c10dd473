"""`kedro run --config=<file> --params=...`: the command line's parameters merge over the file's."""
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from kedro import KedroDeprecationWarning
from kedro.framework.cli import project as kedro_project
from kedro.framework.session import KedroSession

from singer_rec import cli as project_cli

CONFIG = """run:
  pipelines: sft
  params:
    seed: 42
    sft:
      train: {learning_rate: 0.001, epochs: 6}
"""


@pytest.fixture
def seen(monkeypatch):
    calls: dict = {}
    monkeypatch.setattr(project_cli, "kedro_run", SimpleNamespace(callback=lambda **kwargs: calls.update(kwargs)))
    return calls


def invoke(args):
    result = CliRunner().invoke(project_cli.cli, ["run", *args])
    assert result.exit_code == 0, result.output
    return result


def test_params_merge_key_by_key_over_the_config_file(tmp_path, seen):
    config = tmp_path / "budget.yml"
    config.write_text(CONFIG)
    invoke(["--config", str(config), "--params", "seed=43,sft.train.epochs=8"])
    assert seen["params"] == {"seed": 43, "sft": {"train": {"learning_rate": 0.001, "epochs": 8}}}
    assert seen["pipelines"] == ["sft"]


def test_config_file_alone_and_params_alone_are_kedros(tmp_path, seen):
    config = tmp_path / "budget.yml"
    config.write_text(CONFIG)
    invoke(["--config", str(config)])
    assert seen["params"] == {"seed": 42, "sft": {"train": {"learning_rate": 0.001, "epochs": 6}}}
    invoke(["--params", "sft.train.epochs=2"])
    assert seen["params"] == {"sft": {"train": {"epochs": 2}}}


def test_merge_params_replaces_leaves_and_keeps_siblings():
    merged = project_cli.merge_params({"a": {"b": 1, "c": {"d": 2}}, "e": [1]}, {"a": {"c": {"d": 3}}, "e": [2], "f": 4})
    assert merged == {"a": {"b": 1, "c": {"d": 3}}, "e": [2], "f": 4}


def test_run_config_script_merges_yaml_valued_overrides_key_by_key():
    """benchmarks/quality/run_config.py: list values, which ``--params`` cannot carry, merged over
    the base file without dropping its other keys."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "quality" / "run_config.py"
    spec = importlib.util.spec_from_file_location("run_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    base = {"run": {"params": {"prompts": {"sft_tasks": ["semantic"]}, "sft": {"train": {"epochs": 6}}}}}
    merged = module.with_overrides(base, ["prompts.rl_tasks=[semantic, title_to_sid]", "prompts.rl_heldout_share=0.2",
                                          "sft.train.epochs=8"])
    assert merged == {"run": {"params": {"prompts": {"sft_tasks": ["semantic"], "rl_tasks": ["semantic", "title_to_sid"],
                                                     "rl_heldout_share": 0.2}, "sft": {"train": {"epochs": 8}}}}}
    assert base["run"]["params"]["sft"]["train"]["epochs"] == 6  # the base mapping is left as it was
    with pytest.raises(ValueError, match="expected key.path=value"):
        module.with_overrides(base, ["prompts.rl_tasks"])


class _RecordingSession(KedroSession):
    """Stands in for the project's session: records what ``kedro run`` would run, runs nothing."""

    runs: list = []

    @classmethod
    def create(cls, **kwargs):
        return cls.__new__(cls)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def run(self, **kwargs):
        self.runs.append(kwargs)
        return {}


@pytest.fixture
def recorded_runs(monkeypatch):
    monkeypatch.setattr(kedro_project, "settings", SimpleNamespace(SESSION_CLASS=_RecordingSession))
    monkeypatch.setattr(_RecordingSession, "runs", [])
    return _RecordingSession.runs


def test_pipelines_selects_the_pipeline_without_a_warning(recorded_runs):
    """The documented form (Kedro 1.7): ``kedro run --pipelines=rl``, through the project's ``run``
    and Kedro's own option handling."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", KedroDeprecationWarning)
        invoke(["--pipelines=rl"])
    assert [run["pipeline_names"] for run in recorded_runs] == [["rl"]]


def test_deprecated_singular_pipeline_still_selects_the_pipeline(recorded_runs):
    """Older commands (``kedro run --pipeline=rl``, e.g. in scripts written before the docs moved to
    ``--pipelines``) still run the same pipeline; Kedro only warns."""
    with pytest.warns(KedroDeprecationWarning, match="--pipelines"):
        invoke(["--pipeline=rl"])
    assert [run["pipeline_names"] for run in recorded_runs] == [["rl"]]
