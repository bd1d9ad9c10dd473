"""`kedro run --config=<file> --params=...`: the command line's parameters merge over the file's."""
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from singer_rec import cli as project_cli

CONFIG = """run:
  pipeline: sft
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
    assert seen["pipeline"] == "sft"


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
